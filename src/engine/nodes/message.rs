//! Message nodes: say something and go on without waiting.
//!
//! The engine's walk (`Run::enter`) adds the message to the lead lines of the next screen, so on
//! USSD it shares a screen with the next prompt, on SMS it goes in the same text, and on voice
//! it is said first. Nothing here waits for input.

use crate::engine::Line;
use crate::flow::model::{Flow, MessageNode};

use super::Fill;

/// The line a message adds before the next prompt.
pub fn lead_line(flow: &Flow, node: &MessageNode, fill: &impl Fill) -> Line {
    super::line(flow, &node.prompt, fill)
}
