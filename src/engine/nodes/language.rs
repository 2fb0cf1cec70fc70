//! Language nodes: the respondent picks the language of the rest of the flow.
//!
//! Each option is shown in its own language (`Kiswahili`, `English`), numbered 1, 2, ...

use crate::engine::Outcome;
use crate::engine::screen::{Choice, Expect, Line, Screen};
use crate::flow::model::{Flow, LanguageNode};

use super::Fill;

pub(in crate::engine) fn screen(
    flow: &Flow,
    node: &LanguageNode,
    lead: Vec<Line>,
    fill: &impl Fill,
) -> Screen {
    Screen {
        lead,
        prompt: super::line(flow, &node.prompt, fill),
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
        language: fill.language().to_string(),
        back: false,
    }
}

pub(in crate::engine) fn answer(node: &LanguageNode, input: &str) -> Outcome {
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
