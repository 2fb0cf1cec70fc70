//! Menu nodes: numbered choices, each leading somewhere; the chosen option's value is saved.
//!
//! Accepts the option's key, or (handy by SMS) its label typed out in any letter case.

use crate::engine::screen::{Choice, Expect, Line, Screen};
use crate::engine::state::SessionState;
use crate::engine::{Outcome, Run};
use crate::flow::model::{Flow, MenuNode};

use super::Fill;

pub(in crate::engine) fn screen(
    flow: &Flow,
    node: &MenuNode,
    lead: Vec<Line>,
    fill: &impl Fill,
) -> Screen {
    let language = fill.language();
    Screen {
        lead,
        prompt: super::line(flow, &node.prompt, fill),
        choices: node
            .options
            .iter()
            .enumerate()
            .map(|(i, o)| Choice {
                key: node.key_of(i).into_owned(),
                label: fill.text(o.label.get(language, &flow.default_language)),
                audio: o.audio.get(language).cloned(),
            })
            .collect(),
        expect: Expect::Choice,
        end: false,
        language: language.to_string(),
        back: false,
    }
}

pub(in crate::engine) fn answer(
    run: &Run<'_>,
    s: &SessionState,
    node: &MenuNode,
    input: &str,
) -> Outcome {
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
