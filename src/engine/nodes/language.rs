//! Language nodes: the respondent picks the language of the rest of the flow.
//!
//! Each option is shown in its own language (`Kiswahili`, `English`), numbered 1, 2, ...

use crate::engine::screen::{Choice, Expect, Line, Screen};
use crate::engine::state::SessionState;
use crate::engine::{Outcome, Run};
use crate::flow::model::LanguageNode;

pub(crate) fn screen(
    run: &Run<'_>,
    s: &SessionState,
    node: &LanguageNode,
    lead: Vec<Line>,
) -> Screen {
    Screen {
        lead,
        prompt: run.line(s, &node.prompt),
        choices: node
            .options
            .iter()
            .enumerate()
            .map(|(i, o)| Choice {
                key: (i + 1).to_string(),
                label: o.label.clone(),
                audio: o.audio.clone(),
            })
            .collect(),
        expect: Expect::Choice,
        end: false,
        language: s.language.clone(),
        back: false,
    }
}

pub(crate) fn answer(node: &LanguageNode, input: &str) -> Outcome {
    let chosen = node.options.iter().enumerate().find(|(i, o)| {
        input == (i + 1).to_string()
            || input.eq_ignore_ascii_case(&o.label)
            || input.eq_ignore_ascii_case(&o.language)
    });
    match chosen {
        Some((_, o)) => Outcome::Next {
            save: node.result.clone().map(|r| (r, o.language.clone())),
            language: Some(o.language.clone()),
            next: node.next.clone(),
        },
        None => Outcome::Invalid,
    }
}
