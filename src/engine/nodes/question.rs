//! Question nodes: free text, a number within a range, yes/no, or a date.
//!
//! Invalid answers become `Outcome::Invalid` (a re-prompt with a helpful notice); an optional
//! question can be skipped with the channel's skip key, leaving its result unset.

use crate::engine::answer;
use crate::engine::screen::{Choice, Expect, Line, Screen, SkipKeys};
use crate::engine::state::{Channel, SessionState};
use crate::engine::ui_text;
use crate::engine::{Outcome, Run};
use crate::flow::model::{AnswerType, Flow, QuestionNode, UiKey};

use super::Fill;

pub(in crate::engine) fn screen(
    flow: &Flow,
    node: &QuestionNode,
    lead: Vec<Line>,
    fill: &impl Fill,
) -> Screen {
    let skip = node.optional.then(|| SkipKeys {
        ussd: flow.ussd.skip_key.clone(),
        sms: flow.sms.skip_word.clone(),
        voice: flow.voice.skip_key.clone(),
        label: fill.ui(UiKey::Skip),
    });
    let (choices, expect) = match node.answer {
        AnswerType::YesNo => (
            vec![
                Choice {
                    key: "1".into(),
                    label: fill.ui(UiKey::Yes),
                    audio: None,
                },
                Choice {
                    key: "2".into(),
                    label: fill.ui(UiKey::No),
                    audio: None,
                },
            ],
            Expect::Choice,
        ),
        AnswerType::Number => (Vec::new(), Expect::Number { skip }),
        AnswerType::Date => (Vec::new(), Expect::Date { skip }),
        AnswerType::Text => (
            Vec::new(),
            Expect::Text {
                max_length: node.max_length(),
                record: node.record,
                skip,
            },
        ),
    };
    Screen {
        lead,
        prompt: super::line(flow, &node.prompt, fill),
        choices,
        expect,
        end: false,
        language: fill.language().to_string(),
        back: false,
    }
}

pub(in crate::engine) fn answer(
    run: &Run<'_>,
    s: &SessionState,
    node: &QuestionNode,
    input: &str,
) -> Outcome {
    let flow = &run.flow.flow;
    if node.optional {
        let skip_key = match s.channel {
            Channel::Ussd => &flow.ussd.skip_key,
            Channel::Sms => &flow.sms.skip_word,
            Channel::Voice => &flow.voice.skip_key,
        };
        if input.eq_ignore_ascii_case(skip_key) {
            return Outcome::Next {
                save: None,
                language: None,
                next: node.next.clone(),
            };
        }
    }
    let value = match node.answer {
        AnswerType::Text => answer::text(input, node.max_length()),
        AnswerType::Number => answer::number(input, node.min, node.max, node.decimals),
        AnswerType::Date => answer::date(input),
        AnswerType::YesNo => {
            let yes = ui_text::raw(flow, UiKey::Yes, &s.language);
            let no = ui_text::raw(flow, UiKey::No, &s.language);
            answer::yes_no(input, &[yes], &[no]).map(str::to_string)
        }
    };
    match value {
        Some(v) => Outcome::Next {
            save: Some((node.result.clone(), v)),
            language: None,
            next: node.next.clone(),
        },
        None => Outcome::Invalid,
    }
}

/// The built-in notice for an invalid answer to this question.
pub(in crate::engine) fn default_invalid(
    run: &Run<'_>,
    s: &SessionState,
    node: &QuestionNode,
) -> String {
    match node.answer {
        AnswerType::Number => {
            let min = node
                .min
                .map(answer::format_number)
                .unwrap_or_else(|| "-".into());
            let max = node
                .max
                .map(answer::format_number)
                .unwrap_or_else(|| "-".into());
            run.ui(s, UiKey::InvalidNumber, &[("min", min), ("max", max)])
        }
        AnswerType::Date => run.ui(s, UiKey::InvalidDate, &[]),
        AnswerType::YesNo => run.ui(s, UiKey::InvalidChoice, &[]),
        AnswerType::Text => run.ui(
            s,
            UiKey::InvalidText,
            &[("max", node.max_length().to_string())],
        ),
    }
}
