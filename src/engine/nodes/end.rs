//! End nodes: the final message; the session is completed when it is shown.

use crate::engine::Run;
use crate::engine::screen::{Expect, Line, Screen};
use crate::engine::state::SessionState;
use crate::flow::model::EndNode;

pub(crate) fn screen(run: &Run<'_>, s: &SessionState, node: &EndNode, lead: Vec<Line>) -> Screen {
    Screen {
        lead,
        prompt: run.line(s, &node.prompt),
        choices: Vec::new(),
        expect: Expect::Nothing,
        end: true,
        language: s.language.clone(),
        back: false,
    }
}
