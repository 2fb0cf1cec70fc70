//! SMS texts: the prompt, options one per line, and a reply hint ("Reply 1, 2 or 3"), with
//! the encoding and segment count the text will need. Splitting into parts is the SMPP layer's.

use serde::Serialize;

use crate::encoding::gsm7::{self, SmsInfo};
use crate::engine::render::{UiLookup, key_list};
use crate::engine::screen::{Expect, Screen};
use crate::flow::model::UiKey;

/// One SMS reply as sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmsText {
    pub text: String,
    pub info: SmsInfo,
}

pub fn render(screen: &Screen, ui: UiLookup<'_>) -> SmsText {
    let mut lines: Vec<String> = Vec::new();
    for line in screen.lead.iter().chain(std::iter::once(&screen.prompt)) {
        if !line.text.trim().is_empty() {
            lines.push(line.text.trim_end().to_string());
        }
    }
    for c in &screen.choices {
        lines.push(format!("{}. {}", c.key, c.label));
    }
    if matches!(screen.expect, Expect::Choice) && !screen.choices.is_empty() {
        let keys: Vec<&str> = screen.choices.iter().map(|c| c.key.as_str()).collect();
        let or_word = ui(UiKey::Or, &[]);
        lines.push(ui(
            UiKey::SmsReplyHint,
            &[("keys", key_list(&keys, &or_word))],
        ));
    }
    if let Some(skip) = screen.skip() {
        lines.push(format!("{} = {}", skip.sms, skip.label));
    }
    let text = lines.join("\n");
    let info = gsm7::sms_info(&text);
    SmsText { text, info }
}
