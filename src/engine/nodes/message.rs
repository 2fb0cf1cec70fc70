//! Message nodes: say something and go on without waiting.
//!
//! The engine's walk (`Run::enter`) adds the message to the lead lines of the next screen, so on
//! USSD it shares a screen with the next prompt, on SMS it goes in the same text, and on voice
//! it is said first. Nothing here waits for input.

use crate::engine::Line;
use crate::engine::Run;
use crate::engine::state::SessionState;
use crate::flow::model::MessageNode;

/// The line a message adds before the next prompt.
#[allow(dead_code)]
pub(crate) fn lead_line(run: &Run<'_>, s: &SessionState, node: &MessageNode) -> Line {
    run.line(s, &node.prompt)
}
