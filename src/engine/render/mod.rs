//! Rendering a `Screen` for a channel: a USSD screen, an SMS text, or a voice prompt.
//!
//! One file per channel's way of showing things. These are presentation rules (numbering,
//! pagination, "Reply 1, 2 or 3", "For water, press 1"), not wire formats: `CON`/`END`, SMPP
//! PDUs and provider XML are the channels' business. Pure functions, no I/O.

pub mod sms;
pub mod ussd;
pub mod voice;

use serde::Serialize;

use crate::engine::screen::Screen;
use crate::engine::state::Channel;
use crate::flow::model::{Flow, UiKey};

/// A screen as one channel shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "channel")]
pub enum Rendered {
    Ussd(ussd::UssdScreen),
    Sms(sms::SmsText),
    Voice(voice::VoicePrompt),
}

impl Rendered {
    /// The text a person would read (for logs and the simulator).
    pub fn text(&self) -> String {
        match self {
            Rendered::Ussd(u) => u.text.clone(),
            Rendered::Sms(s) => s.text.clone(),
            Rendered::Voice(v) => v.transcript(),
        }
    }
}

/// Looks up an interface text in the screen's language with extra variables filled in.
pub type UiLookup<'a> = &'a dyn Fn(UiKey, &[(&'static str, String)]) -> String;

/// Renders `screen` for `channel`; `page` is the USSD page to show.
pub fn render(
    flow: &Flow,
    channel: Channel,
    screen: &Screen,
    page: usize,
    ui: UiLookup<'_>,
) -> Rendered {
    match channel {
        Channel::Ussd => {
            let layout = ussd::Layout::for_flow(flow, &screen.language);
            Rendered::Ussd(ussd::render(screen, &layout, page))
        }
        Channel::Sms => Rendered::Sms(sms::render(screen, ui)),
        Channel::Voice => Rendered::Voice(voice::render(flow, screen, ui)),
    }
}

/// "1, 2 or 3": the keys of a screen's choices joined for a sentence.
pub fn key_list(keys: &[&str], or_word: &str) -> String {
    match keys {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} {or_word} {last}", init.join(", ")),
    }
}
