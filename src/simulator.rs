//! The terminal phone simulator: runs a flow through the engine as a basic phone would show it.
//!
//! USSD screens appear in a narrow box, SMS texts with their encoding and segment count, voice
//! prompts as what would be played or said with the keys to press. Answers come from the
//! keyboard, or from a script (`--input "1,2,hello"`) for tests and examples. Between every step
//! the session state is encoded and decoded exactly as the gateway stores it, so a transcript
//! also proves the state survives storage. The simulator never touches a network or a store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Write};

use crate::encoding::gsm7::Encoding;
use crate::engine::render::Rendered;
use crate::engine::{self, Action, Channel, CompiledFlow, Input, SessionState, Start, Step};

/// Width of the USSD box, in characters (a basic phone shows about 20-30).
const BOX_WIDTH: usize = 26;

/// One scripted input: an answer, or an event of the session.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptItem {
    Answer(String),
    /// `!timeout`: the channel's timer fired.
    Timeout,
    /// `!hangup`: the network dropped the session.
    Hangup,
    /// `!dial`: the respondent dials again (a new session; may offer to resume).
    Dial,
    /// `!record` or `!record 25`: on voice, the respondent speaks an answer for that many
    /// seconds (10 by default) and the provider sends the recording.
    Recording {
        seconds: u32,
    },
}

/// Length of a `!record` answer when the script gives none.
const DEFAULT_RECORDING_SECONDS: u32 = 10;

/// The event named by one trimmed script item, if it is one.
fn event(item: &str) -> Option<ScriptItem> {
    match item {
        "!timeout" => Some(ScriptItem::Timeout),
        "!hangup" => Some(ScriptItem::Hangup),
        "!dial" => Some(ScriptItem::Dial),
        "!record" => Some(ScriptItem::Recording {
            seconds: DEFAULT_RECORDING_SECONDS,
        }),
        _ => {
            let seconds = item.strip_prefix("!record ")?.trim().parse().ok()?;
            Some(ScriptItem::Recording { seconds })
        }
    }
}

/// Splits `"1,2,hello"` into items; `\,` is a literal comma; `!timeout`, `!hangup`, `!dial`
/// and `!record [seconds]` are events.
pub fn parse_script(script: &str) -> Vec<ScriptItem> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = script.chars().peekable();
    let push = |s: &mut String, items: &mut Vec<ScriptItem>| {
        let item = event(s.trim()).unwrap_or_else(|| ScriptItem::Answer(std::mem::take(s)));
        s.clear();
        items.push(item);
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            ',' => push(&mut current, &mut items),
            _ => current.push(c),
        }
    }
    if !current.is_empty() || !items.is_empty() || !script.is_empty() {
        push(&mut current, &mut items);
    }
    items
}

/// Settings of one simulated session.
#[derive(Debug, Clone)]
pub struct Options {
    pub channel: Channel,
    /// Language to start in (the flow's default otherwise).
    pub language: Option<String>,
    pub contact: BTreeMap<String, String>,
    /// Simulated clock at the start, in ms; each step advances it by `step_ms`.
    pub start_ms: i64,
    pub step_ms: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            channel: Channel::Ussd,
            language: None,
            contact: BTreeMap::new(),
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z: fixed so transcripts are stable
            step_ms: 5_000,
        }
    }
}

/// A simulated session: the flow, the stored state bytes, and the transcript so far.
pub struct Simulation<'a> {
    flow: &'a CompiledFlow,
    options: Options,
    stored: Option<Vec<u8>>,
    now: i64,
    sessions: u32,
    /// Recordings made so far, to give each a distinct file name.
    recordings: u32,
    pub transcript: String,
    /// Every answer saved, in order: (result, value, label). After a restart this holds the
    /// abandoned response's answers too; `current_answers` has only the latest response's.
    pub saved: Vec<(String, String, Option<String>)>,
    /// Index in `saved` where the latest response's answers begin.
    response_start: usize,
    /// Responses begun so far (a restart after a drop begins a new one).
    responses: u32,
    pub finished: bool,
}

impl<'a> Simulation<'a> {
    pub fn new(flow: &'a CompiledFlow, options: Options) -> Simulation<'a> {
        let now = options.start_ms;
        Simulation {
            flow,
            options,
            stored: None,
            now,
            sessions: 0,
            recordings: 0,
            transcript: String::new(),
            saved: Vec::new(),
            response_start: 0,
            responses: 0,
            finished: false,
        }
    }

    /// Loads the stored state, checking that it decodes to exactly what was encoded.
    fn load(&mut self) -> Option<SessionState> {
        let bytes = self.stored.as_ref()?;
        match SessionState::decode(bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                let _ = writeln!(self.transcript, "!! stored state unreadable: {e}");
                None
            }
        }
    }

    fn store(&mut self, state: &SessionState) {
        let bytes = state.encode();
        match SessionState::decode(&bytes) {
            Ok(back) if &back == state => {}
            Ok(_) => {
                let _ = writeln!(self.transcript, "!! state changed through encode/decode");
            }
            Err(e) => {
                let _ = writeln!(self.transcript, "!! state does not decode: {e}");
            }
        }
        self.stored = Some(bytes);
    }

    /// Dials in: starts a session (or offers to resume the stored one).
    pub fn dial(&mut self) {
        self.sessions += 1;
        let _ = writeln!(
            self.transcript,
            "--- dial ({} session {}) ---",
            self.options.channel.as_str(),
            self.sessions
        );
        let start = Start {
            session_id: format!("sim-{}", self.sessions),
            channel: self.options.channel,
            contact: self.options.contact.clone(),
            language: self.options.language.clone(),
        };
        let prior = self.load();
        self.step(prior, Input::Start(start));
    }

    /// Feeds one scripted item.
    pub fn feed(&mut self, item: &ScriptItem) {
        match item {
            ScriptItem::Dial => self.dial(),
            ScriptItem::Answer(text) => {
                let _ = writeln!(self.transcript, "> {text}");
                let prior = self.load();
                self.step(prior, Input::Answer(text.clone()));
            }
            ScriptItem::Timeout => {
                let _ = writeln!(self.transcript, "> (no answer: timeout)");
                let prior = self.load();
                self.step(prior, Input::Timeout);
            }
            ScriptItem::Hangup => {
                let _ = writeln!(self.transcript, "> (network drops the session)");
                let prior = self.load();
                self.step(prior, Input::Hangup);
            }
            ScriptItem::Recording { seconds } => {
                self.recordings += 1;
                let url = format!("recordings/sim-{}-{}.wav", self.sessions, self.recordings);
                let _ = writeln!(self.transcript, "> (speaks for {seconds} s: {url})");
                let prior = self.load();
                self.step(
                    prior,
                    Input::Recording {
                        url,
                        duration_seconds: *seconds,
                    },
                );
            }
        }
    }

    fn step(&mut self, prior: Option<SessionState>, input: Input) {
        self.now += self.options.step_ms;
        let Step { state, actions } = engine::advance(self.flow, prior, input, self.now);
        for action in &actions {
            match action {
                Action::AnswerSaved(a) => {
                    self.saved
                        .push((a.result.clone(), a.value.clone(), a.label.clone()))
                }
                Action::Reply(reply) => {
                    let shown = show(&reply.rendered);
                    self.transcript.push_str(&shown);
                }
                Action::LanguageChanged { language } => {
                    let _ = writeln!(self.transcript, "(language: {language})");
                }
                Action::StatusChanged { status } => {
                    let _ = writeln!(self.transcript, "(session {})", status.as_str());
                }
                Action::ResponseStarted { response_id, .. } => {
                    self.responses += 1;
                    self.response_start = self.saved.len();
                    if self.responses > 1 {
                        let _ = writeln!(
                            self.transcript,
                            "(new response {response_id}; the earlier answers stay with the unfinished one)"
                        );
                    }
                }
            }
        }
        self.finished = state.status.is_terminal();
        self.store(&state);
    }

    /// The answers saved in the latest response, in order: (result, value, label).
    pub fn current_answers(&self) -> &[(String, String, Option<String>)] {
        self.saved.get(self.response_start..).unwrap_or_default()
    }

    /// The answers of the latest response, as a table.
    pub fn answers_table(&self) -> String {
        let mut latest: Vec<(String, String, Option<String>)> = Vec::new();
        for (r, v, l) in self.current_answers() {
            if let Some(slot) = latest.iter_mut().find(|(name, _, _)| name == r) {
                *slot = (r.clone(), v.clone(), l.clone());
            } else {
                latest.push((r.clone(), v.clone(), l.clone()));
            }
        }
        let mut out = String::from("Saved answers:\n");
        if latest.is_empty() {
            out.push_str("  (none)\n");
        }
        let width = latest.iter().map(|(r, _, _)| r.len()).max().unwrap_or(0);
        for (r, v, l) in latest {
            match l {
                Some(l) if l != v => {
                    let _ = writeln!(out, "  {r:width$}  {v} ({l})");
                }
                _ => {
                    let _ = writeln!(out, "  {r:width$}  {v}");
                }
            }
        }
        out
    }
}

/// How one rendered reply looks on the phone.
pub fn show(rendered: &Rendered) -> String {
    let mut out = String::new();
    match rendered {
        Rendered::Ussd(u) => {
            let encoding = match u.encoding {
                Encoding::Gsm7 => "GSM-7",
                Encoding::Ucs2 => "UCS-2",
            };
            let limit = u.limit;
            let page = if u.pages > 1 {
                format!(" page {}/{}", u.page + 1, u.pages)
            } else {
                String::new()
            };
            let _ = writeln!(out, "USSD [{}/{} {encoding}{page}]", u.units, limit);
            let _ = writeln!(out, "+{}+", "-".repeat(BOX_WIDTH));
            for line in wrap(&u.text, BOX_WIDTH) {
                let pad = BOX_WIDTH.saturating_sub(line.chars().count());
                let _ = writeln!(out, "|{line}{}|", " ".repeat(pad));
            }
            let _ = writeln!(out, "+{}+", "-".repeat(BOX_WIDTH));
        }
        Rendered::Sms(s) => {
            let encoding = match s.info.encoding {
                Encoding::Gsm7 => "GSM-7",
                Encoding::Ucs2 => "UCS-2",
            };
            let _ = writeln!(
                out,
                "SMS [{encoding}, {} segment{}, {} units]",
                s.info.segments,
                if s.info.segments == 1 { "" } else { "s" },
                s.info.units
            );
            for line in s.text.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        Rendered::Voice(v) => {
            let _ = writeln!(out, "VOICE [{}]", v.language);
            for line in v.transcript().lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    out
}

/// Word-wraps `text` to `width` characters per line, keeping explicit line breaks.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split(' ') {
            let mut word = word.to_string();
            while word.chars().count() > width {
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                let head: String = word.chars().take(width).collect();
                word = word.chars().skip(width).collect();
                lines.push(head);
            }
            let needed =
                line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
            if needed > width && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        lines.push(line);
    }
    lines
}

/// Runs a whole script and returns the transcript with the saved answers at the end.
pub fn run_script(flow: &CompiledFlow, options: Options, script: &[ScriptItem]) -> String {
    let mut sim = Simulation::new(flow, options);
    sim.dial();
    for item in script {
        if sim.finished && !matches!(item, ScriptItem::Dial) {
            let _ = writeln!(sim.transcript, "(session over; input ignored)");
            break;
        }
        sim.feed(item);
    }
    let mut out = std::mem::take(&mut sim.transcript);
    out.push_str(&sim.answers_table());
    out
}

/// Runs the flow interactively: prints each screen and reads answers from `input`.
pub fn run_interactive(
    flow: &CompiledFlow,
    options: Options,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> std::io::Result<()> {
    let mut sim = Simulation::new(flow, options);
    sim.dial();
    writeln!(
        output,
        "(type an answer and press Enter; !hangup, !timeout, !dial, !record; Ctrl-D quits)"
    )?;
    loop {
        output.write_all(sim.transcript.as_bytes())?;
        sim.transcript.clear();
        if sim.finished {
            break;
        }
        write!(output, "> ")?;
        output.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            writeln!(output)?;
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let item = parse_script(line)
            .into_iter()
            .next()
            .unwrap_or(ScriptItem::Answer(String::new()));
        match &item {
            ScriptItem::Answer(_) => {
                // The transcript echoes typed answers; drop that line here (already on screen).
                sim.feed(&item);
                if let Some(rest) = sim.transcript.split_once('\n') {
                    sim.transcript = rest.1.to_string();
                }
            }
            _ => sim.feed(&item),
        }
    }
    output.write_all(sim.answers_table().as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_on_commas_with_escapes_and_events() {
        assert_eq!(
            parse_script("1,a\\,b,!hangup,!dial,!timeout"),
            vec![
                ScriptItem::Answer("1".into()),
                ScriptItem::Answer("a,b".into()),
                ScriptItem::Hangup,
                ScriptItem::Dial,
                ScriptItem::Timeout,
            ]
        );
        assert_eq!(parse_script(""), vec![]);
        assert_eq!(
            parse_script("!record,!record 25,!record soon"),
            vec![
                ScriptItem::Recording { seconds: 10 },
                ScriptItem::Recording { seconds: 25 },
                ScriptItem::Answer("!record soon".into()),
            ]
        );
    }

    #[test]
    fn wrap_keeps_lines_within_width() {
        for line in wrap("Karibu! Huu ni utafiti wa mahitaji ya jamii.\n1. Ndiyo", 10) {
            assert!(line.chars().count() <= 10, "{line}");
        }
    }
}
