//! Voice prompts: what to play or say, and which keys to collect.
//!
//! A line with a recording in the screen's language is played; otherwise its text is said by
//! the provider's text-to-speech (the checker reports where the flow does not allow that).
//! Menus are read as "For water, press 1", then the skip and back keys where the screen offers
//! them ("To go back, press 0"). The provider XML is the voice channels' business.

use serde::Serialize;

use crate::engine::render::UiLookup;
use crate::engine::screen::{Expect, Line, Screen};
use crate::flow::model::{Flow, UiKey};

/// One thing to play or say.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum VoicePart {
    /// Text-to-speech in `language`.
    Say { text: String, language: String },
    /// A recording, by its path under the audio folder; `text` is what it says (for logs).
    Play { audio: String, text: String },
}

/// Which keys to collect after the prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gather {
    /// Stop after this many digits (menus); `None` means wait for `finish_on_key`.
    pub num_digits: Option<usize>,
    pub finish_on_key: Option<char>,
    /// Seconds to wait for the first key.
    pub timeout_seconds: u8,
}

/// Record a spoken answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordSpec {
    pub max_length_seconds: u16,
    pub finish_on_key: char,
}

/// A voice prompt as the provider will play it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VoicePrompt {
    pub parts: Vec<VoicePart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gather: Option<Gather>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordSpec>,
    pub language: String,
    pub end: bool,
}

impl VoicePrompt {
    /// What a listener hears, as text (simulator and logs): recordings shown as `[play file]`.
    pub fn transcript(&self) -> String {
        let mut out: Vec<String> = self
            .parts
            .iter()
            .map(|p| match p {
                VoicePart::Say { text, .. } => text.clone(),
                VoicePart::Play { audio, text } => format!("[play {audio}] {text}"),
            })
            .collect();
        if let Some(g) = &self.gather {
            let mut keys = String::from("(waits for keys");
            if let Some(n) = g.num_digits {
                keys.push_str(&format!(", {n} digit{}", if n == 1 { "" } else { "s" }));
            }
            if let Some(k) = g.finish_on_key {
                keys.push_str(&format!(", ends with {k}"));
            }
            keys.push(')');
            out.push(keys);
        }
        if self.record.is_some() {
            out.push("(records the answer; press # to finish)".into());
        }
        out.join("\n")
    }
}

fn part(line: &Line, language: &str) -> VoicePart {
    match &line.audio {
        Some(audio) => VoicePart::Play {
            audio: audio.clone(),
            text: line.text.clone(),
        },
        None => VoicePart::Say {
            text: line.text.clone(),
            language: language.to_string(),
        },
    }
}

pub fn render(flow: &Flow, screen: &Screen, ui: UiLookup<'_>) -> VoicePrompt {
    let language = screen.language.clone();
    let mut parts: Vec<VoicePart> = Vec::new();
    for line in screen.lead.iter().chain(std::iter::once(&screen.prompt)) {
        if !line.text.trim().is_empty() || line.audio.is_some() {
            parts.push(part(line, &language));
        }
    }
    for c in &screen.choices {
        let said = ui(
            UiKey::VoicePress,
            &[("label", c.label.clone()), ("key", c.key.clone())],
        );
        parts.push(part(
            &Line {
                text: said,
                audio: c.audio.clone(),
            },
            &language,
        ));
    }
    let timeout_seconds = flow.voice.input_timeout;
    let mut record = None;
    let gather = match &screen.expect {
        Expect::Nothing => None,
        Expect::Choice => Some(Gather {
            num_digits: screen.choices.iter().map(|c| c.key.chars().count()).max(),
            finish_on_key: None,
            timeout_seconds,
        }),
        // Every answer that ends with the hash key says so: a caller cannot see the screen.
        Expect::Number { .. } | Expect::Date { .. } | Expect::Text { record: false, .. } => {
            parts.push(part(
                &Line::text(ui(UiKey::VoiceFinishHash, &[])),
                &language,
            ));
            Some(Gather {
                num_digits: None,
                finish_on_key: Some('#'),
                timeout_seconds,
            })
        }
        Expect::Text { record: true, .. } => {
            parts.push(part(
                &Line::text(ui(UiKey::VoiceFinishHash, &[])),
                &language,
            ));
            record = Some(RecordSpec {
                max_length_seconds: 60,
                finish_on_key: '#',
            });
            None
        }
    };
    if let Some(skip) = screen.skip() {
        let said = ui(
            UiKey::VoicePress,
            &[("label", skip.label.clone()), ("key", skip.voice.clone())],
        );
        parts.push(part(&Line::text(said), &language));
    }
    if screen.back {
        let said = ui(UiKey::VoiceBack, &[("key", flow.voice.back_key.clone())]);
        parts.push(part(&Line::text(said), &language));
    }
    VoicePrompt {
        parts,
        gather,
        record,
        language,
        end: screen.end,
    }
}
