//! End nodes: the final message; the session is completed when it is shown.

use crate::engine::screen::{Expect, Line, Screen};
use crate::flow::model::{EndNode, Flow};

use super::Fill;

pub(in crate::engine) fn screen(
    flow: &Flow,
    node: &EndNode,
    lead: Vec<Line>,
    fill: &impl Fill,
) -> Screen {
    Screen {
        lead,
        prompt: super::line(flow, &node.prompt, fill),
        choices: Vec::new(),
        expect: Expect::Nothing,
        end: true,
        language: fill.language().to_string(),
        back: false,
    }
}
