//! A channel-neutral description of what the respondent is shown at one step.
//!
//! Nodes build a `Screen`; `engine::render` turns it into a USSD screen, an SMS text or a voice
//! prompt. A screen holds finished text (templates already rendered, language chosen); it knows
//! nothing of wire formats.

use serde::Serialize;

/// What the respondent sees or hears now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Screen {
    /// Texts before the prompt: messages passed through on the way, or a "Sorry" notice.
    pub lead: Vec<Line>,
    /// The node's own text.
    pub prompt: Line,
    /// Numbered choices (menus, language choice, yes/no).
    pub choices: Vec<Choice>,
    /// What kind of answer the screen waits for.
    pub expect: Expect,
    /// The session ends after this screen.
    pub end: bool,
    /// Language of the texts (voice picks the recording and text-to-speech voice by it).
    pub language: String,
    /// This screen offers the flow's back key (`voice.back_key`): the session has an earlier
    /// question, and the key cannot be an answer here.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub back: bool,
}

/// One text with its optional recording.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Line {
    pub text: String,
    /// Recorded audio file for this text in the screen's language, relative to the audio folder.
    /// (Always serialized: `Line` is part of the stored session state, encoded by position.)
    pub audio: Option<String>,
}

impl Line {
    pub fn text(text: impl Into<String>) -> Line {
        Line {
            text: text.into(),
            audio: None,
        }
    }
}

/// One numbered choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub key: String,
    pub label: String,
    /// Recorded label, for voice menus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<String>,
}

/// What the screen waits for; renderers use it for hints (voice: finish with #; record).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Nothing: the session ends.
    Nothing,
    /// One of `choices`.
    Choice,
    /// Free text (or a recording on voice when `record`); `skip` is the key that skips it.
    Text {
        max_length: usize,
        record: bool,
        skip: Option<SkipKeys>,
    },
    /// A number typed on the keypad.
    Number { skip: Option<SkipKeys> },
    /// A date typed on the keypad.
    Date { skip: Option<SkipKeys> },
}

/// How to skip an optional question on each channel, with the label to show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkipKeys {
    pub ussd: String,
    pub sms: String,
    pub voice: String,
    pub label: String,
}

impl Screen {
    /// The skip keys of this screen, if its question is optional.
    pub fn skip(&self) -> Option<&SkipKeys> {
        match &self.expect {
            Expect::Text { skip, .. } | Expect::Number { skip } | Expect::Date { skip } => {
                skip.as_ref()
            }
            Expect::Nothing | Expect::Choice => None,
        }
    }
}
