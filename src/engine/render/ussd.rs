//! USSD screens: numbered options, at most 182 GSM-7 characters (80 when a character forces
//! UCS-2, or the flow's own lower limit), paginated with 'more' and 'back' keys when too long.
//!
//! Pagination is deterministic: the same screen always splits into the same pages, so the
//! engine can keep only the page number in the session. No page ever exceeds the limit: a
//! single line too long for any page is cut (the checker reports such flows before they run).

use serde::Serialize;

use crate::encoding::gsm7::{self, Encoding};
use crate::engine::screen::Screen;
use crate::engine::ui_text;
use crate::flow::model::{Flow, UiKey};

/// How a flow lays out USSD screens.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The flow's own limit, if lower than the standard one.
    pub max_chars: Option<usize>,
    /// The line offering the next page, e.g. `98. More`.
    pub more_line: String,
    /// The line offering the previous page, e.g. `0. Back`.
    pub back_line: String,
    /// The line offering to skip an optional question, e.g. `00. Skip`.
    pub skip_line: String,
}

impl Layout {
    pub fn for_flow(flow: &Flow, lang: &str) -> Layout {
        Layout {
            max_chars: flow.ussd.max_chars.map(usize::from),
            more_line: format!(
                "{}. {}",
                flow.ussd.more_key,
                ui_text::raw(flow, UiKey::More, lang)
            ),
            back_line: format!(
                "{}. {}",
                flow.ussd.back_key,
                ui_text::raw(flow, UiKey::Back, lang)
            ),
            skip_line: format!(
                "{}. {}",
                flow.ussd.skip_key,
                ui_text::raw(flow, UiKey::Skip, lang)
            ),
        }
    }

    /// The most units a screen with this text may hold.
    pub fn limit(&self, encoding: Encoding) -> usize {
        let standard = gsm7::ussd_limit(encoding);
        self.max_chars.map_or(standard, |m| m.min(standard))
    }

    /// Whether `text` fits on one screen.
    pub fn fits(&self, text: &str) -> bool {
        let encoding = gsm7::encoding_for(text);
        gsm7::units(text, encoding) <= self.limit(encoding)
    }
}

/// One USSD screen as sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UssdScreen {
    pub text: String,
    /// 0-based page shown, and how many pages the screen has.
    pub page: usize,
    pub pages: usize,
    pub encoding: Encoding,
    /// Length in the encoding's units (septets or UTF-16 code units).
    pub units: usize,
    /// The most units this screen may hold: the standard limit for its encoding, or the
    /// flow's lower `ussd.max_chars` (so tools can show how close a screen is to being cut).
    pub limit: usize,
}

/// The lines of a screen before pagination.
pub fn lines(screen: &Screen, layout: &Layout) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in &screen.lead {
        if !line.text.trim().is_empty() {
            out.push(line.text.trim_end().to_string());
        }
    }
    if !screen.prompt.text.trim().is_empty() {
        out.push(screen.prompt.text.trim_end().to_string());
    }
    for c in &screen.choices {
        out.push(format!("{}. {}", c.key, c.label));
    }
    if screen.skip().is_some() {
        out.push(layout.skip_line.clone());
    }
    out
}

/// Splits a screen into pages that each fit the limit, navigation lines included.
pub fn paginate(screen: &Screen, layout: &Layout) -> Vec<String> {
    let blocks = lines(screen, layout);
    let whole = blocks.join("\n");
    if layout.fits(&whole) {
        return vec![whole];
    }
    // Pages as lists of lines; every page but the last gets the 'more' line, every page but
    // the first the 'back' line. Breaks are chosen as if 'more' were always present, so the
    // last page (which drops it) always fits too.
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let page_text = |body: &[String], first: bool, layout: &Layout| {
        let mut lines: Vec<&str> = body.iter().map(String::as_str).collect();
        lines.push(&layout.more_line);
        if !first {
            lines.push(&layout.back_line);
        }
        lines.join("\n")
    };
    for block in blocks {
        let first = pages.is_empty();
        let mut candidate = current.clone();
        candidate.push(block.clone());
        if layout.fits(&page_text(&candidate, first, layout)) {
            current = candidate;
            continue;
        }
        if !current.is_empty() {
            pages.push(std::mem::take(&mut current));
        }
        let first = pages.is_empty();
        if layout.fits(&page_text(std::slice::from_ref(&block), first, layout)) {
            current.push(block);
            continue;
        }
        // One line longer than a page: cut it into pieces that fit (never exceed the limit).
        let mut rest: &str = &block;
        while !rest.is_empty() {
            let first = pages.is_empty();
            let nav = page_text(&[], first, layout);
            let taken = longest_prefix_fitting(rest, &nav, layout);
            let (piece, tail) = rest.split_at(taken);
            current.push(piece.to_string());
            rest = tail;
            if !rest.is_empty() {
                pages.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        pages.push(current);
    }
    let count = pages.len();
    pages
        .into_iter()
        .enumerate()
        .map(|(i, mut body)| {
            if i + 1 < count {
                body.push(layout.more_line.clone());
            }
            if i > 0 {
                body.push(layout.back_line.clone());
            }
            body.join("\n")
        })
        .collect()
}

/// Byte length of the longest prefix of `text` that fits on a page beside `nav`; at least one
/// character so pagination always makes progress.
fn longest_prefix_fitting(text: &str, nav: &str, layout: &Layout) -> usize {
    let mut end = 0;
    for (i, c) in text.char_indices() {
        let next = i + c.len_utf8();
        let candidate = format!("{}\n{}", &text[..next], nav);
        if !layout.fits(&candidate) {
            break;
        }
        end = next;
    }
    if end == 0 {
        text.chars().next().map_or(text.len(), char::len_utf8)
    } else {
        end
    }
}

/// The one page of a final screen. The session closes with it, so nobody can ask for a second
/// page: when it does not fit, the lines before the prompt (a "Sorry" notice, messages passed
/// through) give way to the end text, and an end text still too long is cut at the limit.
fn final_page(screen: &Screen, layout: &Layout) -> String {
    let whole = lines(screen, layout).join("\n");
    if layout.fits(&whole) {
        return whole;
    }
    let bare = Screen {
        lead: Vec::new(),
        ..screen.clone()
    };
    let text = lines(&bare, layout).join("\n");
    if layout.fits(&text) {
        return text;
    }
    let mut end = 0;
    for (i, c) in text.char_indices() {
        let next = i + c.len_utf8();
        if !layout.fits(&text[..next]) {
            break;
        }
        end = next;
    }
    text[..end].to_string()
}

/// Renders page `page` of the screen (the last page when `page` is past the end). A final
/// screen is never paginated (see `final_page`).
pub fn render(screen: &Screen, layout: &Layout, page: usize) -> UssdScreen {
    let pages = if screen.end {
        vec![final_page(screen, layout)]
    } else {
        paginate(screen, layout)
    };
    let count = pages.len();
    let index = page.min(count.saturating_sub(1));
    let text = pages.into_iter().nth(index).unwrap_or_default();
    let encoding = gsm7::encoding_for(&text);
    let units = gsm7::units(&text, encoding);
    UssdScreen {
        text,
        page: index,
        pages: count,
        encoding,
        units,
        limit: layout.limit(encoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::screen::{Expect, Line};

    fn layout(max_chars: usize) -> Layout {
        Layout {
            max_chars: Some(max_chars),
            more_line: "98. More".into(),
            back_line: "0. Back".into(),
            skip_line: "00. Skip".into(),
        }
    }

    fn final_screen(lead: &str, prompt: &str) -> Screen {
        Screen {
            lead: vec![Line::text(lead)],
            prompt: Line::text(prompt),
            choices: Vec::new(),
            expect: Expect::Nothing,
            end: true,
            language: "en".into(),
            back: false,
        }
    }

    #[test]
    fn a_final_screen_that_fits_keeps_its_lead() {
        let shown = render(&final_screen("Sorry.", "Goodbye."), &layout(60), 0);
        assert_eq!(shown.text, "Sorry.\nGoodbye.");
        assert_eq!(shown.pages, 1);
    }

    #[test]
    fn a_final_screen_too_long_drops_its_lead_rather_than_paginate() {
        let end = "Thank you. Your reference is K3M7-Q9XA.";
        let shown = render(&final_screen(&"x".repeat(40), end), &layout(60), 0);
        assert_eq!(shown.text, end);
        assert_eq!(shown.pages, 1);
    }

    #[test]
    fn a_final_text_too_long_for_any_screen_is_cut_at_the_limit() {
        let shown = render(&final_screen("", &"y".repeat(100)), &layout(60), 0);
        assert_eq!(shown.text, "y".repeat(60));
        assert_eq!(shown.units, 60);
        assert_eq!(shown.limit, 60);
    }
}
