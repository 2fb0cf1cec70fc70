//! Menu nodes: numbered choices, each leading somewhere; the chosen option's value is saved.
//!
//! Accepts the option's key, or (handy by SMS) its label typed out in any letter case.

use crate::engine::screen::{Choice, Expect, Line, Screen};
use crate::engine::state::SessionState;
use crate::engine::{Outcome, Run};
use crate::flow::model::MenuNode;

pub(crate) fn screen(run: &Run<'_>, s: &SessionState, node: &MenuNode, lead: Vec<Line>) -> Screen {
    let flow = &run.flow.flow;
    Screen {
        lead,
        prompt: run.line(s, &node.prompt),
        choices: node
            .options
            .iter()
            .enumerate()
            .map(|(i, o)| Choice {
                key: node.key_of(i).into_owned(),
                label: run.text(s, o.label.get(&s.language, &flow.default_language)),
                audio: o.audio.get(&s.language).cloned(),
            })
            .collect(),
        expect: Expect::Choice,
        end: false,
        language: s.language.clone(),
        back: false,
    }
}

pub(crate) fn answer(run: &Run<'_>, s: &SessionState, node: &MenuNode, input: &str) -> Outcome {
    let flow = &run.flow.flow;
    let by_key = (0..node.options.len()).find(|&i| node.key_of(i).eq_ignore_ascii_case(input));
    let chosen = by_key.or_else(|| {
        (0..node.options.len()).find(|&i| {
            let label = node.options[i]
                .label
                .get(&s.language, &flow.default_language);
            !input.is_empty() && label.eq_ignore_ascii_case(input)
        })
    });
    match chosen {
        Some(i) => Outcome::Next {
            save: Some((node.result.clone(), node.value_of(i).into_owned())),
            language: None,
            next: node.options[i].next.clone(),
        },
        None => Outcome::Invalid,
    }
}
