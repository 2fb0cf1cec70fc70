//! Voice over HTTP: the providers' callback formats and reply XML, behind one request/reply shape.
//!
//! A voice provider calls our URL at each step of a call (answered, digits pressed, recording
//! done, call over) and runs the XML we answer with. Each provider file parses its callback
//! into a `VoiceRequest` and renders a `VoiceReply` as its XML dialect. This module holds the
//! shared shapes, the audio URL builder, the language mapping for text-to-speech and a small
//! XML writer. Nothing here does I/O, loads sessions or runs flows: the dispatcher does that.
//!
//! No-input handling: neither provider calls back when the caller presses nothing, it moves on
//! to the next verb. So every prompt that waits is followed by a redirect to the action URL
//! with `noinput=1` in the query; the parsers turn that flag into `VoiceEvent::NoInput`.

pub mod africastalking;
pub mod twiml;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

pub use crate::channels::ussd::BadRequest;
use crate::engine::Input;
use crate::engine::render::voice::{VoicePart, VoicePrompt};

/// The voice providers Baraza speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoiceProvider {
    /// Africa's Talking Voice (its own XML dialect).
    #[serde(rename = "africastalking")]
    AfricasTalking,
    /// Twilio TwiML, also spoken by SignalWire and Somleng.
    Twiml,
}

impl VoiceProvider {
    /// The provider's name in session keys, logs and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            VoiceProvider::AfricasTalking => "africastalking",
            VoiceProvider::Twiml => "twiml",
        }
    }
}

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    /// The citizen called our number (or flashed it: a missed call).
    Inbound,
    /// We called the citizen.
    Outbound,
}

/// One callback of a call as the provider sent it, provider details removed.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceRequest {
    /// Which provider sent it: part of the session key, and the dialect of the reply.
    pub provider: VoiceProvider,
    /// The provider's call id: the session key for the whole call.
    pub call_id: String,
    /// The number that placed the call, as sent (the citizen on inbound calls).
    pub caller: String,
    /// The number that was called, as sent (the citizen on outbound calls).
    pub callee: String,
    /// Tells which of `caller` and `callee` is the citizen.
    pub direction: CallDirection,
    /// The provider says the call is over. Always true with `Ended`; also true with a
    /// `Recording` delivered on the final callback (the caller hung up while recording), so
    /// the dispatcher stores the answer and then ends the session.
    pub call_over: bool,
    /// What this callback reports.
    pub event: VoiceEvent,
}

impl VoiceRequest {
    /// The citizen's number: the caller on inbound calls, the callee on outbound calls.
    pub fn citizen(&self) -> &str {
        match self.direction {
            CallDirection::Inbound => &self.caller,
            CallDirection::Outbound => &self.callee,
        }
    }
}

/// What happened on the call.
#[derive(Debug, Clone, PartialEq)]
pub enum VoiceEvent {
    /// The call was answered (or the first callback of an inbound call): start or resume.
    CallStarted,
    /// The keys the caller pressed, the finishing `#` removed.
    Digits(String),
    /// The caller pressed nothing (or only the finishing key) before the timeout, or a
    /// recording came back empty.
    NoInput,
    /// A spoken answer, recorded by the provider at `url`.
    Recording { url: String, duration_seconds: u32 },
    /// The call is over: the provider's status word as sent, and its length when given.
    Ended {
        status: String,
        duration_seconds: Option<u32>,
    },
}

impl VoiceEvent {
    /// The engine input this event stands for; `None` for `CallStarted`, whose
    /// `Input::Start` needs what only the dispatcher knows (flow, contact, language).
    pub fn engine_input(&self) -> Option<Input> {
        match self {
            VoiceEvent::CallStarted => None,
            VoiceEvent::Digits(keys) => Some(Input::Answer(keys.clone())),
            VoiceEvent::NoInput => Some(Input::Timeout),
            VoiceEvent::Recording {
                url,
                duration_seconds,
            } => Some(Input::Recording {
                url: url.clone(),
                duration_seconds: *duration_seconds,
            }),
            VoiceEvent::Ended { .. } => Some(Input::Hangup),
        }
    }
}

/// What to tell the provider to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum VoiceReply {
    /// Play a prompt; if it waits for keys or a recording, the provider posts the result to
    /// `action_url` (and `action_url` with `noinput=1` when nothing came).
    Prompt {
        prompt: VoicePrompt,
        action_url: String,
    },
    /// Refuse an inbound call without answering it: free for the caller, and the missed call
    /// itself is the signal (the flow calls back).
    Reject,
    /// End the call, after an optional goodbye.
    Hangup { goodbye: Option<VoicePrompt> },
}

/// Where recorded prompts are served from, to turn `VoicePart::Play { audio }` into a URL.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioBase {
    /// Public base URL of this gateway, e.g. `https://baraza.example.org`; audio files are
    /// served under `{base_url}/audio/`.
    pub base_url: String,
}

/// An audio path that cannot be turned into a safe URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioPathError {
    /// No path at all.
    #[error("audio path is empty")]
    Empty,
    /// `a//b`, `/a` or `a/`: the server could read these as another folder.
    #[error("audio path `{0}` has an empty segment (leading, trailing or double `/`)")]
    EmptySegment(String),
    /// A segment that would move within or out of the audio folder.
    #[error("audio path `{0}` has a `.` or `..` segment")]
    DotSegment(String),
}

impl AudioBase {
    /// An audio base at `base_url` (a trailing `/` is ignored).
    pub fn new(base_url: impl Into<String>) -> AudioBase {
        AudioBase {
            base_url: base_url.into(),
        }
    }

    /// The absolute URL of an audio file: `{base_url}/audio/{audio}`, each path segment
    /// percent-encoded. Refuses `.`/`..` and empty segments so no URL can climb out of the
    /// audio folder, whatever the server does with the path.
    pub fn url(&self, audio: &str) -> Result<String, AudioPathError> {
        if audio.is_empty() {
            return Err(AudioPathError::Empty);
        }
        let mut url = String::with_capacity(self.base_url.len() + 7 + audio.len());
        url.push_str(self.base_url.trim_end_matches('/'));
        url.push_str("/audio");
        for segment in audio.split('/') {
            if segment.is_empty() {
                return Err(AudioPathError::EmptySegment(audio.to_string()));
            }
            if segment == "." || segment == ".." {
                return Err(AudioPathError::DotSegment(audio.to_string()));
            }
            url.push('/');
            percent_encode_segment(segment, &mut url);
        }
        Ok(url)
    }
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters, so `/`,
/// `?`, `#`, `%` and spaces in a file name cannot change the URL's meaning.
fn percent_encode_segment(segment: &str, out: &mut String) {
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The text-to-speech language code for a flow language: `en` is said as `en-US`, `sw` as
/// `sw-KE`, `fr` as `fr-FR`; any other code is passed through as written.
pub fn tts_language(language: &str) -> &str {
    match language {
        "en" => "en-US",
        "sw" => "sw-KE",
        "fr" => "fr-FR",
        other => other,
    }
}

/// One thing to say or play, with the audio already resolved to a URL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Spoken {
    Say { text: String, language: String },
    Play { url: String },
}

/// Resolves a prompt's parts. A recording whose path cannot be made a safe URL is said with
/// text-to-speech instead (its text in the prompt's language): the caller still hears the
/// question, and the flow checker reports such paths before they get here.
pub(crate) fn spoken_parts(prompt: &VoicePrompt, audio: &AudioBase) -> Vec<Spoken> {
    prompt
        .parts
        .iter()
        .filter_map(|part| match part {
            VoicePart::Say { text, language } => Some(Spoken::Say {
                text: text.clone(),
                language: language.clone(),
            }),
            VoicePart::Play { audio: path, text } => match audio.url(path) {
                Ok(url) => Some(Spoken::Play { url }),
                Err(_) if text.trim().is_empty() => None,
                Err(_) => Some(Spoken::Say {
                    text: text.clone(),
                    language: prompt.language.clone(),
                }),
            },
        })
        .collect()
}

/// `url` with `pair` (already encoded, e.g. `noinput=1`) added to its query.
pub(crate) fn with_query(url: &str, pair: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let separator = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut out = format!("{base}{separator}{pair}");
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// The query flag our no-input redirects carry.
pub(crate) const NO_INPUT_FLAG: &str = "noinput=1";

/// Whether a callback's query string carries the no-input flag.
pub(crate) fn query_says_no_input(query: &str) -> Result<bool, BadRequest> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let fields =
        form_fields(query.as_bytes()).map_err(|e| BadRequest(format!("query string: {}", e.0)))?;
    Ok(fields.get("noinput").is_some_and(|v| v == "1"))
}

/// Form bodies and queries are decoded by the shared channel helper.
pub(crate) use crate::channels::form::form_fields;

// ---------------------------------------------------------------------------------------------
// Field validators shared by the providers
// ---------------------------------------------------------------------------------------------

/// Longest key sequence accepted (a long number answer with room to spare).
const MAX_DIGITS: usize = 64;
/// Longest recording URL accepted.
const MAX_URL: usize = 2048;

/// Reads pressed keys: only `0-9`, `*` and `#`; one trailing `#` (the finishing key) removed.
/// `None` when the field is absent.
pub(crate) fn digits(name: &str, value: Option<&str>) -> Result<Option<String>, BadRequest> {
    let Some(value) = value else {
        return Ok(None);
    };
    let keys = value.trim();
    if keys.chars().count() > MAX_DIGITS {
        return Err(BadRequest(format!(
            "field `{name}` is longer than {MAX_DIGITS} keys"
        )));
    }
    if let Some(bad) = keys
        .chars()
        .find(|c| !c.is_ascii_digit() && *c != '*' && *c != '#')
    {
        return Err(BadRequest(format!(
            "field `{name}` has `{}`, not a phone key",
            bad.escape_debug()
        )));
    }
    Ok(Some(keys.strip_suffix('#').unwrap_or(keys).to_string()))
}

/// Reads a recording URL: `None` when absent or empty (nothing was recorded), else an
/// `http(s)` URL of bounded length without spaces or control characters.
pub(crate) fn recording_url(name: &str, value: Option<&str>) -> Result<Option<String>, BadRequest> {
    let Some(url) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if url.len() > MAX_URL {
        return Err(BadRequest(format!(
            "field `{name}` is longer than {MAX_URL} characters"
        )));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(BadRequest(format!("field `{name}` is not an http(s) URL")));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(BadRequest(format!(
            "field `{name}` contains spaces or control characters"
        )));
    }
    Ok(Some(url.to_string()))
}

/// Reads a whole number of seconds; `None` when absent or empty.
pub(crate) fn seconds(name: &str, value: Option<&str>) -> Result<Option<u32>, BadRequest> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            BadRequest(format!(
                "field `{name}` is not a whole number of seconds: `{}`",
                v.escape_debug()
            ))
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// XML output
// ---------------------------------------------------------------------------------------------

/// A minimal XML writer for reply documents.
///
/// No XML crate is needed: we only ever write (never parse) XML, the vocabulary is a dozen
/// fixed element and attribute names chosen in this code, and the only outside data is text
/// and attribute values, which `escape` makes safe. Elements are closed by the same code that
/// opens them, so the output is balanced by construction (the tests check it too).
pub(crate) struct XmlDoc {
    out: String,
    /// Names of the elements open, innermost last (for closing and indentation).
    open: Vec<&'static str>,
}

impl XmlDoc {
    /// Starts a document with the XML declaration and an open `<Response>`.
    pub(crate) fn response() -> XmlDoc {
        let mut doc = XmlDoc {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            open: Vec::new(),
        };
        doc.start("Response", &[]);
        doc
    }

    fn indent(&mut self) {
        for _ in 0..self.open.len() {
            self.out.push_str("  ");
        }
    }

    fn tag(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (attribute, value) in attributes {
            self.out.push(' ');
            self.out.push_str(attribute);
            self.out.push_str("=\"");
            escape(value, &mut self.out);
            self.out.push('"');
        }
    }

    /// Opens an element that will hold others.
    pub(crate) fn start(&mut self, name: &'static str, attributes: &[(&str, &str)]) {
        self.indent();
        self.tag(name, attributes);
        self.out.push_str(">\n");
        self.open.push(name);
    }

    /// Closes the innermost open element.
    pub(crate) fn end(&mut self) {
        if let Some(name) = self.open.pop() {
            self.indent();
            self.out.push_str("</");
            self.out.push_str(name);
            self.out.push_str(">\n");
        }
    }

    /// An element with text content.
    pub(crate) fn text(&mut self, name: &str, attributes: &[(&str, &str)], text: &str) {
        self.indent();
        self.tag(name, attributes);
        self.out.push('>');
        escape(text, &mut self.out);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// An element without content: `<Hangup/>`.
    pub(crate) fn empty(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.indent();
        self.tag(name, attributes);
        self.out.push_str("/>\n");
    }

    /// Closes every open element and returns the document.
    pub(crate) fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.end();
        }
        self.out
    }
}

/// Escapes text for element content and double-quoted attribute values alike. Characters XML
/// 1.0 cannot carry at all (most control characters, U+FFFE, U+FFFF) become spaces; a line
/// break in a prompt is a pause to a speech engine, so it is kept.
pub(crate) fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push(' '),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_urls_encode_each_segment() {
        let base = AudioBase::new("https://gw.example.org/");
        assert_eq!(
            base.url("sw/q1 intro.mp3").as_deref(),
            Ok("https://gw.example.org/audio/sw/q1%20intro.mp3")
        );
        assert_eq!(
            base.url("a?b#c%d&e/ü.wav").as_deref(),
            Ok("https://gw.example.org/audio/a%3Fb%23c%25d%26e/%C3%BC.wav")
        );
        // A `..` already percent-encoded stays a literal name: `%` itself is encoded.
        assert_eq!(
            base.url("%2e%2e/x.mp3").as_deref(),
            Ok("https://gw.example.org/audio/%252e%252e/x.mp3")
        );
        // Dots inside a name are fine.
        assert_eq!(
            base.url("..hidden..mp3").as_deref(),
            Ok("https://gw.example.org/audio/..hidden..mp3")
        );
    }

    #[test]
    fn audio_paths_cannot_climb_out() {
        let base = AudioBase::new("https://gw.example.org");
        for bad in [
            "..",
            "../secret.mp3",
            "en/../../etc/passwd",
            "en/./a.mp3",
            ".",
        ] {
            assert_eq!(
                base.url(bad),
                Err(AudioPathError::DotSegment(bad.into())),
                "{bad}"
            );
        }
        for bad in ["/etc/passwd", "en//a.mp3", "en/"] {
            assert_eq!(
                base.url(bad),
                Err(AudioPathError::EmptySegment(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(base.url(""), Err(AudioPathError::Empty));
    }

    #[test]
    fn query_flags_are_added_correctly() {
        assert_eq!(
            with_query("https://a/v", "noinput=1"),
            "https://a/v?noinput=1"
        );
        assert_eq!(
            with_query("https://a/v?flow=x", "noinput=1"),
            "https://a/v?flow=x&noinput=1"
        );
        assert_eq!(
            with_query("https://a/v?", "noinput=1"),
            "https://a/v?noinput=1"
        );
        assert_eq!(
            with_query("https://a/v?x=1#f", "noinput=1"),
            "https://a/v?x=1&noinput=1#f"
        );
    }

    #[test]
    fn escaping_covers_markup_and_forbidden_characters() {
        let mut out = String::new();
        escape("a<b>&\"c'\u{0}\u{1b}\n\u{FFFF}é", &mut out);
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;c&apos;  \n é");
    }

    #[test]
    fn digits_are_phone_keys_only() {
        assert_eq!(digits("d", Some("12#")), Ok(Some("12".into())));
        assert_eq!(digits("d", Some("*#")), Ok(Some("*".into())));
        assert_eq!(digits("d", Some("#")), Ok(Some(String::new())));
        assert_eq!(digits("d", None), Ok(None));
        assert!(digits("d", Some("1a")).is_err_and(|e| e.0.contains("`d`")));
        assert!(digits("d", Some(&"1".repeat(65))).is_err());
    }

    #[test]
    fn events_map_to_engine_inputs() {
        assert_eq!(VoiceEvent::CallStarted.engine_input(), None);
        assert_eq!(
            VoiceEvent::Digits("42".into()).engine_input(),
            Some(Input::Answer("42".into()))
        );
        assert_eq!(VoiceEvent::NoInput.engine_input(), Some(Input::Timeout));
        assert_eq!(
            VoiceEvent::Recording {
                url: "https://r/1.mp3".into(),
                duration_seconds: 7
            }
            .engine_input(),
            Some(Input::Recording {
                url: "https://r/1.mp3".into(),
                duration_seconds: 7
            })
        );
        assert_eq!(
            VoiceEvent::Ended {
                status: "completed".into(),
                duration_seconds: None
            }
            .engine_input(),
            Some(Input::Hangup)
        );
    }

    #[test]
    fn languages_map_to_tts_codes() {
        assert_eq!(tts_language("en"), "en-US");
        assert_eq!(tts_language("sw"), "sw-KE");
        assert_eq!(tts_language("fr"), "fr-FR");
        assert_eq!(tts_language("luo"), "luo");
    }
}
