//! The flow checker behind `baraza check`: finds every problem a campaign manager can fix
//! before a flow goes live, each placed at file:line:column with a plain message.
//!
//! Errors (the flow is refused): unknown or missing nodes, unreachable nodes, nodes with no
//! path to an end, duplicate choice keys, missing translations, template variables that may be
//! unset where they are shown, USSD lines that cannot fit even on a page of their own, bad
//! languages, impossible ranges, template syntax, and the same flow id and version in two files.
//! Warnings (the flow runs): SMS texts over three parts, characters that force UCS-2, settings
//! that do nothing, one result name saved as two kinds of answers.
//!
//! Reading order: `check_paths` (files and folders), `check` (one flow, one pass per concern),
//! the graph analysis (reachability, ends, which answers are set), texts and templates, then
//! screens. The checker never runs a session and never changes a flow; its only I/O is
//! `check_paths` reading the files it is given.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::encoding::gsm7;
use crate::engine::CompiledFlow;
use crate::engine::nodes;
use crate::engine::render::{sms, ussd};
use crate::engine::screen::{Expect, Line, Screen};
use crate::engine::ui_text;
use crate::flow::diagnostic::did_you_mean;
pub use crate::flow::diagnostic::{Diagnostic, Severity};
use crate::flow::load::{self, SourceFlow};
use crate::flow::model::{AnswerType, Condition, Flow, Node, NodeId, Text, UiKey};
use crate::flow::positions::{LineCol, Positions, Seg, ypath};

/// Most SMS parts a text may take before the checker warns (each part is paid for).
pub const MAX_SMS_SEGMENTS: usize = 3;

/// Variables every text may use, besides the interface texts' own (`min`, `keys`, ...).
const ROOT_VARIABLES: [&str; 5] = ["answers", "labels", "contact", "flow", "session"];

/// The outcome of checking files and folders.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// The flows without errors (warnings allowed), in the order checked.
    pub flows: Vec<SourceFlow>,
    /// Every problem found, sorted by file, line and column.
    pub diagnostics: Vec<Diagnostic>,
    /// Every file checked (loaded or not), in the order checked.
    pub files: Vec<PathBuf>,
    /// File text by path, to show the offending line in `render_report`.
    sources: HashMap<PathBuf, String>,
}

impl CheckReport {
    /// Whether any problem is an error (`baraza check` then exits with status 1).
    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    /// How many problems are errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// How many problems are warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// What the checker needs to know beyond the flow files.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// The folder recorded prompts are served from (`voice.audio_dir` of the gateway config);
    /// when given, every recording a flow names must exist in it.
    pub audio_dir: Option<PathBuf>,
}

/// Checks every flow file named in `paths`; a folder stands for its `*.yaml` and `*.yml` files
/// (not its sub-folders). A path that does not exist is an error.
pub fn check_paths(paths: &[PathBuf]) -> CheckReport {
    check_paths_with(paths, &CheckOptions::default())
}

/// [`check_paths`] with options (the audio folder).
pub fn check_paths_with(paths: &[PathBuf], options: &CheckOptions) -> CheckReport {
    let mut report = CheckReport::default();
    for path in paths {
        if path.is_dir() {
            match flow_files_in(path) {
                Ok(files) if files.is_empty() => report.diagnostics.push(Diagnostic::warning(
                    path,
                    (0, 0),
                    "no-flows",
                    "this folder holds no .yaml or .yml flow files",
                )),
                Ok(files) => report.files.extend(files),
                Err(e) => report.diagnostics.push(Diagnostic::error(
                    path,
                    (0, 0),
                    "unreadable",
                    format!("cannot read the folder: {e}"),
                )),
            }
        } else if path.exists() {
            report.files.push(path.clone());
        } else {
            report.diagnostics.push(Diagnostic::error(
                path,
                (0, 0),
                "missing-path",
                "no such file or folder",
            ));
        }
    }

    // A file named twice (`flows flows/a.yaml`) is checked once, not reported as its own twin.
    let mut seen = HashSet::new();
    report
        .files
        .retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));

    // Load and check each file; keep every parsed flow for the duplicate-id check.
    let mut parsed: Vec<(SourceFlow, bool)> = Vec::new();
    for file in report.files.clone() {
        let source = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) => {
                report.diagnostics.push(Diagnostic::error(
                    &file,
                    (0, 0),
                    "unreadable",
                    format!("cannot read the file: {e}"),
                ));
                continue;
            }
        };
        report.sources.insert(file.clone(), source.clone());
        match load::load_str(&file, source) {
            Ok(flow) => {
                let found = check_with(&flow, options);
                let clean = !found.iter().any(Diagnostic::is_error);
                report.diagnostics.extend(found);
                parsed.push((flow, clean));
            }
            Err(found) => report.diagnostics.extend(found),
        }
    }

    // The same flow id and version in two files: the gateway could not tell which to run.
    let mut by_key: BTreeMap<(String, u32), Vec<usize>> = BTreeMap::new();
    for (i, (f, _)) in parsed.iter().enumerate() {
        by_key
            .entry((f.flow.id.clone(), f.flow.version))
            .or_default()
            .push(i);
    }
    for ((id, version), holders) in by_key.into_iter().filter(|(_, h)| h.len() > 1) {
        let places: Vec<(PathBuf, LineCol)> = holders
            .iter()
            .map(|i| {
                let f = &parsed[*i].0;
                (
                    f.path.clone(),
                    Positions::parse(&f.source).value(&ypath!["id"]),
                )
            })
            .collect();
        for (i, (path, at)) in holders.iter().zip(&places) {
            let others: Vec<String> = places
                .iter()
                .filter(|(p, _)| p != path)
                .map(|(p, (l, c))| format!("{}:{l}:{c}", p.display()))
                .collect();
            report.diagnostics.push(Diagnostic::error(
                path,
                *at,
                "duplicate-flow",
                format!(
                    "flow `{id}` version {version} is also defined in {}; give each file its own id, or raise `version`",
                    others.join(", ")
                ),
            ));
            parsed[*i].1 = false;
        }
    }

    report.flows = parsed
        .into_iter()
        .filter(|(_, clean)| *clean)
        .map(|(f, _)| f)
        .collect();
    sort_and_dedup(&mut report.diagnostics);
    report
}

/// The flow files directly inside `folder`, sorted by name.
fn flow_files_in(folder: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        let is_flow = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if is_flow && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn sort_and_dedup(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| {
        (&a.path, a.line, a.column, a.severity, a.code)
            .cmp(&(&b.path, b.line, b.column, b.severity, b.code))
    });
    diagnostics.dedup_by(|a, b| {
        a.path == b.path && a.line == b.line && a.column == b.column && a.code == b.code
    });
}

/// Every diagnostic with its source line and a caret under the column (like rustc), then a
/// summary: `3 flows checked: 1 error, 2 warnings`.
pub fn render_report(report: &CheckReport) -> String {
    let mut out = String::new();
    for d in &report.diagnostics {
        let _ = writeln!(out, "{d}");
        let line = report
            .sources
            .get(&d.path)
            .filter(|_| d.line > 0)
            .and_then(|s| s.lines().nth(d.line - 1));
        if let Some(text) = line {
            let text = text.trim_end_matches('\r');
            let number = d.line.to_string();
            let pad = " ".repeat(number.len());
            let caret: String = text
                .chars()
                .take(d.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{number} | {text}");
            let _ = writeln!(out, "{pad} | {caret}^");
        }
        out.push('\n');
    }
    let files = report.files.len();
    let (errors, warnings) = (report.error_count(), report.warning_count());
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let _ = write!(out, "{} checked: ", plural(files, "flow", "flows"));
    if errors == 0 && warnings == 0 {
        out.push_str("no problems\n");
    } else {
        let _ = writeln!(
            out,
            "{}, {}",
            plural(errors, "error", "errors"),
            plural(warnings, "warning", "warnings")
        );
    }
    out
}

/// Checks one parsed flow; the diagnostics are sorted by line and column.
pub fn check(source: &SourceFlow) -> Vec<Diagnostic> {
    check_with(source, &CheckOptions::default())
}

/// [`check`] with options (the audio folder).
pub fn check_with(source: &SourceFlow, options: &CheckOptions) -> Vec<Diagnostic> {
    let mut ctx = Ctx {
        path: &source.path,
        flow: &source.flow,
        pos: Positions::parse(&source.source),
        out: Vec::new(),
    };
    ctx.languages();
    ctx.node_settings();
    let graph = ctx.graph();
    ctx.results();
    ctx.texts(&graph);
    if !ctx.out.iter().any(|d| d.code == "template-syntax") {
        let at = ctx.pos.value(&ypath!["id"]);
        for problem in engine_compile_problems(ctx.flow) {
            ctx.error(at, "template-syntax", problem);
        }
    }
    ctx.screens(&graph);
    ctx.voice(options);
    ctx.voice_keys();
    let mut out = ctx.out;
    sort_and_dedup(&mut out);
    out
}

/// One flow being checked.
struct Ctx<'a> {
    /// The file, for every diagnostic.
    path: &'a Path,
    flow: &'a Flow,
    /// Where each YAML path is written, to place diagnostics.
    pos: Positions,
    /// Diagnostics found so far.
    out: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    fn error(&mut self, at: LineCol, code: &'static str, message: impl Into<String>) {
        self.out
            .push(Diagnostic::error(self.path, at, code, message));
    }

    fn warning(&mut self, at: LineCol, code: &'static str, message: impl Into<String>) {
        self.out
            .push(Diagnostic::warning(self.path, at, code, message));
    }

    /// `menu `ask_age``: a node named with its kind.
    fn node_name(&self, id: &str) -> String {
        match self.flow.nodes.get(id) {
            Some(node) => format!("{} `{id}`", kind_name(node)),
            None => format!("node `{id}`"),
        }
    }

    // ---- voice: recordings and text-to-speech ------------------------------------------------

    /// Every recording a flow names is a safe relative path (and exists, when the audio folder
    /// is known). A flow that uses voice at all (it names a recording or allows text-to-speech)
    /// must have, for every prompt and menu label in every declared language, a recording or
    /// permission to read it by text-to-speech: otherwise a caller would hear nothing.
    fn voice(&mut self, options: &CheckOptions) {
        let flow = self.flow;
        // (YAML path of the audio map or file, node, what, audio by language)
        let mut sites: Vec<(Vec<Seg>, String, BTreeMap<String, String>)> = Vec::new();
        for (id, node) in &flow.nodes {
            if let Some(prompt) = node.prompt() {
                sites.push((
                    ypath!["nodes", id.as_str()].to_vec(),
                    format!("the text of {}", self.node_name(id)),
                    prompt.audio.clone(),
                ));
            }
            match node {
                Node::Menu(menu) => {
                    for (i, option) in menu.options.iter().enumerate() {
                        sites.push((
                            ypath!["nodes", id.as_str(), "options", i].to_vec(),
                            format!("option {} of {}", i + 1, self.node_name(id)),
                            option.audio.clone(),
                        ));
                    }
                }
                Node::Language(choice) => {
                    for (i, option) in choice.options.iter().enumerate() {
                        let mut audio = BTreeMap::new();
                        if let Some(file) = &option.audio {
                            // A language's own name is said in that language only.
                            audio.insert(option.language.clone(), file.clone());
                        }
                        sites.push((
                            ypath!["nodes", id.as_str(), "options", i].to_vec(),
                            format!("option {} of {}", i + 1, self.node_name(id)),
                            audio,
                        ));
                    }
                }
                _ => {}
            }
        }

        for (path, what, audio) in &sites {
            for (lang, file) in audio {
                // `audio: {sw: file}` on prompts and menu options; `audio: file` on a language
                // option (positions fall back to the nearest written ancestor).
                let mut file_path = path.clone();
                file_path.push(Seg::from("audio"));
                if !what.contains("language choice") || path.len() != 4 {
                    file_path.push(Seg::from(lang.as_str()));
                }
                let at = self.pos.value(&file_path);
                let relative = Path::new(file);
                let escapes = relative.is_absolute()
                    || relative
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)));
                if escapes || file.trim().is_empty() {
                    self.error(
                        at,
                        "bad-audio-path",
                        format!(
                            "recording `{file}` of {what} ({lang}) must be a plain path inside the audio folder (no `..`, not absolute)"
                        ),
                    );
                    continue;
                }
                if let Some(folder) = &options.audio_dir
                    && !folder.join(relative).is_file()
                {
                    self.error(
                        at,
                        "missing-audio",
                        format!(
                            "recording `{file}` of {what} ({lang}) is not in the audio folder {}",
                            folder.display()
                        ),
                    );
                }
            }
        }

        let uses_voice =
            !flow.voice.tts_languages.is_empty() || sites.iter().any(|(_, _, a)| !a.is_empty());
        if !uses_voice {
            return;
        }
        self.menu_keys_against_voice_keys();
        for (path, what, audio) in &sites {
            let missing: Vec<&str> = flow
                .languages
                .iter()
                .filter(|lang| {
                    !audio.contains_key(*lang) && !flow.voice.tts_languages.contains(*lang)
                })
                .map(String::as_str)
                .collect();
            // A language option is said only in its own language.
            let missing: Vec<&str> = if path.len() == 4 && what.contains("language choice") {
                let language = match flow.nodes.get(path_node(path)) {
                    Some(Node::Language(choice)) => path_index(path)
                        .and_then(|i| choice.options.get(i))
                        .map(|o| o.language.as_str()),
                    _ => None,
                };
                missing
                    .into_iter()
                    .filter(|l| Some(*l) == language)
                    .collect()
            } else {
                missing
            };
            if missing.is_empty() {
                continue;
            }
            let at = self.pos.key(path);
            self.error(
                at,
                "voice-no-audio",
                format!(
                    "{what} has no recording in {} and text-to-speech is not allowed for {} (voice.tts_languages): a caller would hear nothing; add `audio:` for {} or allow text-to-speech",
                    missing.join(", "),
                    if missing.len() == 1 { "it" } else { "them" },
                    if missing.len() == 1 { "it" } else { "each" },
                ),
            );
        }
    }

    // ---- voice keys ----------------------------------------------------------------------

    /// The keypad keys of `voice:` must be keys a provider can deliver, and tell each other
    /// apart: the repeat key is read first, so a back or skip key equal to it never works.
    fn voice_keys(&mut self) {
        let voice = &self.flow.voice;
        for (field, key) in [
            ("repeat_key", &voice.repeat_key),
            ("back_key", &voice.back_key),
            ("skip_key", &voice.skip_key),
        ] {
            if key.is_empty() || key.chars().any(|c| !c.is_ascii_digit() && c != '*') {
                self.error(
                    self.pos.value(&ypath!["voice", field]),
                    "bad-voice-key",
                    format!(
                        "`voice.{field}` is `{key}`: a voice key is made of the keys 0-9 and * (the hash key finishes typed answers and never arrives as a key)"
                    ),
                );
            }
        }
        for (field, key) in [("back_key", &voice.back_key), ("skip_key", &voice.skip_key)] {
            if !key.is_empty() && *key == voice.repeat_key {
                self.error(
                    self.pos.value(&ypath!["voice", field]),
                    "voice-key-clash",
                    format!(
                        "`voice.{field}` and `voice.repeat_key` are both `{key}`: the key would say the prompt again and never do what `{field}` promises; choose another key"
                    ),
                );
            }
        }
    }

    /// A menu option keyed like a voice key: on a call the key chooses the option (back key:
    /// the caller cannot go back from that menu) or never chooses it (repeat key).
    fn menu_keys_against_voice_keys(&mut self) {
        let flow = self.flow;
        for (id, node) in &flow.nodes {
            let Node::Menu(menu) = node else {
                continue;
            };
            for i in 0..menu.options.len() {
                let key = menu.key_of(i);
                let at = self
                    .pos
                    .value(&ypath!["nodes", id.as_str(), "options", i, "key"]);
                if key.eq_ignore_ascii_case(&flow.voice.repeat_key) {
                    self.error(
                        at,
                        "voice-key-clash",
                        format!(
                            "option {} of {} has the key `{key}`, which is `voice.repeat_key`: a caller pressing it hears the menu again and can never choose the option; use another key",
                            i + 1,
                            self.node_name(id)
                        ),
                    );
                } else if key.eq_ignore_ascii_case(&flow.voice.back_key) {
                    self.warning(
                        at,
                        "voice-key-clash",
                        format!(
                            "option {} of {} has the key `{key}`, which is `voice.back_key`: on a call the key chooses the option, so callers cannot go back from this menu; use another key or set `voice.back_key`",
                            i + 1,
                            self.node_name(id)
                        ),
                    );
                }
            }
        }
    }

    // ---- languages -----------------------------------------------------------------------

    fn languages(&mut self) {
        let flow = self.flow;
        if !flow.languages.contains(&flow.default_language) {
            let hint = did_you_mean(
                &flow.default_language,
                flow.languages.iter().map(String::as_str),
            );
            self.error(
                self.pos.value(&ypath!["default_language"]),
                "bad-default-language",
                format!(
                    "default_language `{}` is not one of the flow's languages ({}){hint}",
                    flow.default_language,
                    flow.languages.join(", ")
                ),
            );
        }
        let mut seen = HashSet::new();
        for (i, lang) in flow.languages.iter().enumerate() {
            if !seen.insert(lang) {
                self.warning(
                    self.pos.value(&ypath!["languages", i]),
                    "duplicate-language",
                    format!("language `{lang}` is listed twice in `languages`"),
                );
            }
        }
        for (i, lang) in flow.voice.tts_languages.iter().enumerate() {
            if !flow.languages.contains(lang) {
                self.warning(
                    self.pos.value(&ypath!["voice", "tts_languages", i]),
                    "unknown-language",
                    format!("`voice.tts_languages` names `{lang}`, which is not in `languages`"),
                );
            }
        }
        for (id, node) in &flow.nodes {
            if let Node::Language(l) = node {
                if l.options.is_empty() {
                    self.error(
                        self.pos.key(&ypath!["nodes", id, "options"]),
                        "no-options",
                        format!("language choice `{id}` offers no languages"),
                    );
                }
                for (i, option) in l.options.iter().enumerate() {
                    if !flow.languages.contains(&option.language) {
                        let hint = did_you_mean(
                            &option.language,
                            flow.languages.iter().map(String::as_str),
                        );
                        self.error(
                            self.pos
                                .value(&ypath!["nodes", id, "options", i, "language"]),
                            "undeclared-language",
                            format!(
                                "option {} of language choice `{id}` offers `{}`, which is not in `languages` ({}){hint}",
                                i + 1,
                                option.language,
                                flow.languages.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }

    // ---- settings inside nodes -------------------------------------------------------------

    fn node_settings(&mut self) {
        for (id, node) in &self.flow.nodes {
            match node {
                Node::Menu(m) => {
                    if m.options.is_empty() {
                        self.error(
                            self.pos.key(&ypath!["nodes", id, "options"]),
                            "no-options",
                            format!("menu `{id}` has no options"),
                        );
                    }
                    let mut keys: HashMap<String, usize> = HashMap::new();
                    for i in 0..m.options.len() {
                        let key = m.key_of(i).trim().to_lowercase();
                        if let Some(first) = keys.get(&key) {
                            let key_path = ypath!["nodes", id, "options", i, "key"];
                            let at = if self.pos.exists(&key_path) {
                                self.pos.value(&key_path)
                            } else {
                                self.pos.value(&ypath!["nodes", id, "options", i])
                            };
                            self.error(
                                at,
                                "duplicate-key",
                                format!(
                                    "option {} of menu `{id}` uses key `{}`, which option {} already uses; a respondent could never choose it",
                                    i + 1,
                                    m.key_of(i),
                                    first + 1
                                ),
                            );
                        } else {
                            keys.insert(key, i);
                        }
                    }
                }
                Node::Question(q) => self.question_settings(id, q),
                Node::Branch(b) => {
                    for (i, rule) in b.rules.iter().enumerate() {
                        self.condition(id, i, &rule.when);
                    }
                }
                Node::Message(_) | Node::Language(_) | Node::End(_) => {}
            }
        }
    }

    fn question_settings(&mut self, id: &str, q: &crate::flow::model::QuestionNode) {
        if let (Some(min), Some(max)) = (q.min, q.max)
            && min > max
        {
            self.error(
                self.pos.value(&ypath!["nodes", id, "min"]),
                "min-greater-than-max",
                format!(
                    "question `{id}` has `min: {min}` above `max: {max}`, so it accepts no number at all; swap them"
                ),
            );
        }
        let mut ignored: Vec<(&str, &str)> = Vec::new();
        if q.answer != AnswerType::Number {
            if q.min.is_some() {
                ignored.push(("min", "answer: number"));
            }
            if q.max.is_some() {
                ignored.push(("max", "answer: number"));
            }
            if q.decimals {
                ignored.push(("decimals", "answer: number"));
            }
        }
        if q.answer != AnswerType::Text {
            if q.max_length.is_some() {
                ignored.push(("max_length", "answer: text"));
            }
            if q.record {
                ignored.push(("record", "answer: text"));
            }
        }
        for (field, applies) in ignored {
            self.warning(
                self.pos.key(&ypath!["nodes", id, field]),
                "ignored-setting",
                format!(
                    "`{field}` of question `{id}` does nothing: it only applies with `{applies}`"
                ),
            );
        }
    }

    fn condition(&mut self, id: &str, rule: usize, c: &Condition) {
        let at = self.pos.value(&ypath!["nodes", id, "rules", rule, "when"]);
        let place = format!("the condition of rule {} of branch `{id}`", rule + 1);
        match (&c.result, &c.contact) {
            (Some(_), Some(_)) => self.error(
                at,
                "bad-condition",
                format!(
                    "{place} names both a `result` and a `contact` attribute; test one of them"
                ),
            ),
            (None, None) => self.error(
                at,
                "bad-condition",
                format!("{place} tests nothing: give a `result` or a `contact` attribute"),
            ),
            (Some(result), None) => {
                let saved: Vec<&str> = self.flow.nodes.values().filter_map(Node::result).collect();
                if !saved.contains(&result.as_str()) {
                    let hint = did_you_mean(result, saved.iter().copied());
                    self.error(
                        self.pos
                            .value(&ypath!["nodes", id, "rules", rule, "when", "result"]),
                        "unknown-result",
                        format!("{place} tests result `{result}`, but no node saves it{hint}"),
                    );
                }
            }
            (None, Some(_)) => {}
        }
        let tests = usize::from(c.equals.is_some())
            + usize::from(c.one_of.is_some())
            + usize::from(c.min.is_some() || c.max.is_some());
        if tests == 0 {
            self.error(
                at,
                "bad-condition",
                format!("{place} has no test: add `equals`, `one_of`, or `min`/`max`"),
            );
        } else if tests > 1 {
            self.error(
                at,
                "bad-condition",
                format!(
                    "{place} has more than one test; use one of `equals`, `one_of`, or `min`/`max`"
                ),
            );
        }
        if let (Some(min), Some(max)) = (c.min, c.max)
            && min > max
        {
            self.error(
                self.pos
                    .value(&ypath!["nodes", id, "rules", rule, "when", "min"]),
                "min-greater-than-max",
                format!("{place} asks for a number from {min} to {max}: it can never hold"),
            );
        }
    }

    // ---- results -------------------------------------------------------------------------

    /// One result name saved by nodes of different kinds mixes answers in exports.
    fn results(&mut self) {
        let mut first: HashMap<&str, (&str, String)> = HashMap::new();
        for (id, node) in &self.flow.nodes {
            let Some(result) = node.result() else {
                continue;
            };
            let kind = answer_kind(node);
            match first.get(result) {
                None => {
                    first.insert(result, (id.as_str(), kind));
                }
                Some((other, other_kind)) if *other_kind != kind => {
                    let message = format!(
                        "result `{result}` is saved here by {kind} `{id}` and also by {other_kind} `{other}`; exports would mix two kinds of answers (use another result name)"
                    );
                    self.warning(
                        self.pos.value(&ypath!["nodes", id, "result"]),
                        "result-kind",
                        message,
                    );
                }
                Some(_) => {}
            }
        }
    }
}

/// The node id in a `["nodes", id, ...]` path.
fn path_node(path: &[Seg]) -> &str {
    match path.get(1) {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "",
    }
}

/// The option index in a `["nodes", id, "options", i]` path.
fn path_index(path: &[Seg]) -> Option<usize> {
    match path.get(3) {
        Some(Seg::Index(i)) => Some(*i),
        _ => None,
    }
}

/// `menu`, `number question`, `language choice`...: what kind of answer a node saves.
fn answer_kind(node: &Node) -> String {
    match node {
        Node::Question(q) => match q.answer {
            AnswerType::Text if q.record => "recorded question".to_string(),
            AnswerType::Text => "text question".to_string(),
            AnswerType::Number => "number question".to_string(),
            AnswerType::YesNo => "yes/no question".to_string(),
            AnswerType::Date => "date question".to_string(),
        },
        other => kind_name(other).to_string(),
    }
}

/// The kind of a node as campaign managers call it.
fn kind_name(node: &Node) -> &'static str {
    match node {
        Node::Message(_) => "message",
        Node::Menu(_) => "menu",
        Node::Question(_) => "question",
        Node::Branch(_) => "branch",
        Node::Language(_) => "language choice",
        Node::End(_) => "end node",
    }
}

// ---- the graph: reachability, ends, answers set on every path ---------------------------

/// One way from a node to another.
struct Edge {
    /// The node it leads to.
    to: usize,
    /// The result this step is sure to have saved (a chosen option, an answered question, a
    /// rule that held on a result); `None` for fallbacks, skips and defaults.
    saves: Option<String>,
}

/// The flow as a graph over node indices (the order of `nodes`).
struct Graph {
    /// Node names by index.
    ids: Vec<NodeId>,
    /// The ways out of each node (targets that do not exist are left out).
    edges: Vec<Vec<Edge>>,
    /// The start node, when it exists.
    start: Option<usize>,
    /// Whether each node can be reached from the start.
    reachable: Vec<bool>,
    /// Results saved on every path from the start to each node (`None`: unreachable).
    set_on_entry: Vec<Option<BTreeSet<String>>>,
}

impl Graph {
    fn index(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|n| n == id)
    }

    /// A path from the start to `target` on which `result` is never saved, as node names.
    fn path_without(&self, result: &str, target: usize) -> Vec<&str> {
        let Some(start) = self.start else {
            return Vec::new();
        };
        let mut previous: Vec<Option<usize>> = vec![None; self.ids.len()];
        let mut seen = vec![false; self.ids.len()];
        let mut queue = VecDeque::from([start]);
        seen[start] = true;
        while let Some(n) = queue.pop_front() {
            if n == target {
                break;
            }
            for e in &self.edges[n] {
                if e.saves.as_deref() != Some(result) && !seen[e.to] {
                    seen[e.to] = true;
                    previous[e.to] = Some(n);
                    queue.push_back(e.to);
                }
            }
        }
        if !seen[target] {
            return Vec::new();
        }
        let mut path = vec![target];
        let mut at = target;
        while let Some(p) = previous[at] {
            path.push(p);
            at = p;
        }
        path.reverse();
        path.into_iter().map(|i| self.ids[i].as_str()).collect()
    }
}

/// `a → b → c`, shortened in the middle when long.
fn show_path(path: &[&str]) -> String {
    if path.len() <= 8 {
        return path.join(" → ");
    }
    let head = path[..3].join(" → ");
    let tail = path[path.len() - 4..].join(" → ");
    format!("{head} → … → {tail}")
}

/// `options[2].next` -> `["options", 2, "next"]`.
fn field_path(field: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in field.split('.') {
        match part.split_once('[') {
            Some((name, rest)) => {
                out.push(Seg::from(name));
                if let Ok(i) = rest.trim_end_matches(']').parse::<usize>() {
                    out.push(Seg::Index(i));
                }
            }
            None => out.push(Seg::from(part)),
        }
    }
    out
}

/// `option 3 of menu `ask``, `the fallback of question `age``: where a target is written.
fn target_words(field: &str, node: &str) -> String {
    match field_path(field).as_slice() {
        [Seg::Key(k), Seg::Index(i), ..] if k == "options" => format!("option {} of {node}", i + 1),
        [Seg::Key(k), Seg::Index(i), ..] if k == "rules" => format!("rule {} of {node}", i + 1),
        [Seg::Key(k)] if k == "default" => format!("the default of {node}"),
        [Seg::Key(k)] if k == "fallback" => format!("the fallback of {node}"),
        _ => node.to_string(),
    }
}

impl<'a> Ctx<'a> {
    fn graph(&mut self) -> Graph {
        let flow = self.flow;
        let ids: Vec<NodeId> = flow.nodes.keys().cloned().collect();
        let index: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();

        let start = index.get(flow.start.as_str()).copied();
        if start.is_none() {
            let hint = did_you_mean(&flow.start, ids.iter().map(String::as_str));
            self.error(
                self.pos.value(&ypath!["start"]),
                "missing-start",
                format!(
                    "the flow starts at `{}`, which is not a node{hint}",
                    flow.start
                ),
            );
        }

        let mut edges: Vec<Vec<Edge>> = Vec::with_capacity(ids.len());
        for (id, node) in &flow.nodes {
            let mut out = Vec::new();
            for (field, target) in node.targets() {
                let Some(&to) = index.get(target.as_str()) else {
                    let hint = did_you_mean(target, ids.iter().map(String::as_str));
                    let p = ypath!["nodes", id];
                    let p = [p.as_slice(), &field_path(&field)].concat();
                    self.error(
                        self.pos.value(&p),
                        "unknown-target",
                        format!(
                            "{} leads to `{target}`, which does not exist{hint}",
                            target_words(&field, &self.node_name(id))
                        ),
                    );
                    continue;
                };
                out.push(Edge {
                    to,
                    saves: saved_on(node, &field),
                });
            }
            edges.push(out);
        }

        let mut graph = Graph {
            reachable: vec![false; ids.len()],
            set_on_entry: vec![None; ids.len()],
            ids,
            edges,
            start,
        };
        if let Some(s) = start {
            let mut queue = VecDeque::from([s]);
            graph.reachable[s] = true;
            while let Some(n) = queue.pop_front() {
                for e in &graph.edges[n] {
                    if !graph.reachable[e.to] {
                        graph.reachable[e.to] = true;
                        queue.push_back(e.to);
                    }
                }
            }
        }
        self.unreachable(&graph);
        self.dead_ends(&graph);
        self.hop_loops(&graph);
        graph.set_on_entry = answers_set(&graph);
        graph
    }

    /// Unreachable nodes, reported once per region (at the node the region starts from).
    fn unreachable(&mut self, g: &Graph) {
        if g.start.is_none() {
            return;
        }
        let mut covered = vec![false; g.ids.len()];
        for n in 0..g.ids.len() {
            if g.reachable[n] || covered[n] {
                continue;
            }
            // Everything this node leads to that is unreachable too belongs to its region.
            let mut region = Vec::new();
            let mut queue = VecDeque::from([n]);
            covered[n] = true;
            while let Some(m) = queue.pop_front() {
                for e in &g.edges[m] {
                    if !g.reachable[e.to] && !covered[e.to] {
                        covered[e.to] = true;
                        region.push(g.ids[e.to].as_str());
                        queue.push_back(e.to);
                    }
                }
            }
            let also = if region.is_empty() {
                String::new()
            } else {
                format!(
                    "; the nodes it leads to are unreachable too ({})",
                    region
                        .iter()
                        .map(|r| format!("`{r}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let id = &g.ids[n];
            self.error(
                self.pos.key(&ypath!["nodes", id]),
                "unreachable",
                format!(
                    "{} can never be reached: no node on the way from `start` leads to it{also}",
                    self.node_name(id)
                ),
            );
        }
    }

    /// Reachable nodes from which no path reaches an end node, reported where the trap begins.
    fn dead_ends(&mut self, g: &Graph) {
        let Some(start) = g.start else {
            return;
        };
        let count = g.ids.len();
        let mut reverse: Vec<Vec<usize>> = vec![Vec::new(); count];
        for (from, edges) in g.edges.iter().enumerate() {
            for e in edges {
                reverse[e.to].push(from);
            }
        }
        let mut can_end = vec![false; count];
        let mut queue: VecDeque<usize> = VecDeque::new();
        for (i, node) in self.flow.nodes.values().enumerate() {
            if matches!(node, Node::End(_)) {
                can_end[i] = true;
                queue.push_back(i);
            }
        }
        let has_end = !queue.is_empty();
        while let Some(n) = queue.pop_front() {
            for &p in &reverse[n] {
                if !can_end[p] {
                    can_end[p] = true;
                    queue.push_back(p);
                }
            }
        }
        if !has_end {
            self.error(
                self.pos.value(&ypath!["start"]),
                "no-end",
                "the flow has no end node (`type: end`), so no session can ever complete",
            );
            return;
        }
        for n in 0..count {
            if !g.reachable[n] || can_end[n] {
                continue;
            }
            let entered = n == start || reverse[n].iter().any(|&p| g.reachable[p] && can_end[p]);
            if !entered {
                continue;
            }
            // The nodes a respondent can still visit once here.
            let mut trapped = Vec::new();
            let mut seen = vec![false; count];
            let mut queue = VecDeque::from([n]);
            seen[n] = true;
            while let Some(m) = queue.pop_front() {
                trapped.push(g.ids[m].as_str());
                for e in &g.edges[m] {
                    if !seen[e.to] {
                        seen[e.to] = true;
                        queue.push_back(e.to);
                    }
                }
            }
            let id = &g.ids[n];
            let around = if trapped.len() > 1 {
                format!(
                    ": from here a respondent can only go round {}",
                    trapped
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            };
            self.error(
                self.pos.key(&ypath!["nodes", id]),
                "no-end",
                format!(
                    "no path from {} reaches an end node{around}; add a way out to an `end` node",
                    self.node_name(id)
                ),
            );
        }
    }
}

impl<'a> Ctx<'a> {
    /// Cycles through messages and branches only: nothing waits for an answer on the way, so
    /// nothing can change, and a session that enters one goes round until the engine gives up.
    fn hop_loops(&mut self, g: &Graph) {
        let hops: Vec<bool> = self
            .flow
            .nodes
            .values()
            .map(|n| matches!(n, Node::Message(_) | Node::Branch(_)))
            .collect();
        let mut covered = vec![false; g.ids.len()];
        for n in 0..g.ids.len() {
            if !hops[n] || !g.reachable[n] || covered[n] {
                continue;
            }
            // Hop nodes reachable from `n` without waiting; a loop if `n` is among them.
            let mut seen = vec![false; g.ids.len()];
            let mut order = Vec::new();
            let mut queue = VecDeque::from([n]);
            let mut comes_back = false;
            while let Some(m) = queue.pop_front() {
                for e in &g.edges[m] {
                    if e.to == n {
                        comes_back = true;
                    }
                    if hops[e.to] && !seen[e.to] {
                        seen[e.to] = true;
                        order.push(e.to);
                        queue.push_back(e.to);
                    }
                }
            }
            if !comes_back {
                continue;
            }
            let mut names = vec![g.ids[n].as_str()];
            for &m in &order {
                covered[m] = true;
                if m != n {
                    names.push(g.ids[m].as_str());
                }
            }
            covered[n] = true;
            let id = &g.ids[n];
            self.warning(
                self.pos.key(&ypath!["nodes", id]),
                "hop-loop",
                format!(
                    "{} can lead back to itself through {} without waiting for an answer; a session that takes this loop never stops (the gateway ends it as failed)",
                    self.node_name(id),
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
}

/// The result a step through `field` of `node` is sure to have saved.
fn saved_on(node: &Node, field: &str) -> Option<String> {
    if field == "fallback" {
        return None;
    }
    match node {
        Node::Menu(m) => Some(m.result.clone()),
        Node::Question(q) if !q.optional => Some(q.result.clone()),
        Node::Language(l) => l.result.clone(),
        Node::Branch(b) => {
            // A rule on a result only holds when the result is set.
            let segments = field_path(field);
            let [Seg::Key(k), Seg::Index(i), ..] = segments.as_slice() else {
                return None;
            };
            let rule = b.rules.get(*i).filter(|_| k == "rules")?;
            rule.when
                .result
                .clone()
                .filter(|_| rule.when.contact.is_none())
        }
        Node::Question(_) | Node::Message(_) | Node::End(_) => None,
    }
}

/// For each reachable node, the results saved on every path from the start to it: a forward
/// "must" analysis, intersecting at joins, iterated to a fixpoint (cycles included).
fn answers_set(g: &Graph) -> Vec<Option<BTreeSet<String>>> {
    let mut entry: Vec<Option<BTreeSet<String>>> = vec![None; g.ids.len()];
    let Some(start) = g.start else {
        return entry;
    };
    entry[start] = Some(BTreeSet::new());
    let mut queue = VecDeque::from([start]);
    let mut queued = vec![false; g.ids.len()];
    queued[start] = true;
    while let Some(n) = queue.pop_front() {
        queued[n] = false;
        let Some(here) = entry[n].clone() else {
            continue;
        };
        for e in &g.edges[n] {
            let mut out = here.clone();
            if let Some(r) = &e.saves {
                out.insert(r.clone());
            }
            let next = match &entry[e.to] {
                None => out,
                Some(existing) => existing.intersection(&out).cloned().collect(),
            };
            if entry[e.to].as_ref() != Some(&next) {
                entry[e.to] = Some(next);
                if !queued[e.to] {
                    queued[e.to] = true;
                    queue.push_back(e.to);
                }
            }
        }
    }
    entry
}

// ---- texts: translations, UCS-2 characters, templates ----------------------------------

/// One text of the flow and where it is shown.
struct TextSite<'f> {
    /// Where the text is written.
    path: Vec<Seg>,
    text: &'f Text,
    /// The node whose screen shows it (its answers must be set there); `None` for texts shown
    /// anywhere (the flow name, interface texts).
    node: Option<&'f str>,
    /// The text in words: "the text of menu `ask`".
    what: String,
    /// Whether every declared language needs its own translation.
    all_languages: bool,
    /// Variables this text may use besides the usual ones (interface texts' `min`, `keys`...).
    extras: &'static [&'static str],
}

/// A variable reference found in a template: `answers.village` at byte `offset`.
#[derive(Debug, Clone, PartialEq)]
struct VarRef {
    /// The first name (`answers`).
    root: String,
    /// The attribute after it, if any (`village`).
    attr: Option<String>,
    /// Byte offset of `root` in the template, to place diagnostics.
    offset: usize,
    /// Tested in a `{% if %}` (or any statement) or given a `| default(...)`: the text copes
    /// with the value being absent.
    guarded: bool,
}

impl<'a> Ctx<'a> {
    fn text_sites(&self) -> Vec<TextSite<'a>> {
        let flow = self.flow;
        let mut sites = vec![TextSite {
            path: ypath!["name"].to_vec(),
            text: &flow.name,
            node: None,
            what: "the flow name".to_string(),
            all_languages: true,
            extras: &[],
        }];
        for (id, node) in &flow.nodes {
            let name = self.node_name(id);
            if let Some(prompt) = node.prompt() {
                sites.push(TextSite {
                    path: ypath!["nodes", id, "text"].to_vec(),
                    text: &prompt.text,
                    node: Some(id),
                    what: format!("the text of {name}"),
                    all_languages: true,
                    extras: &[],
                });
            }
            let retry = match node {
                Node::Menu(m) => {
                    for (i, o) in m.options.iter().enumerate() {
                        sites.push(TextSite {
                            path: ypath!["nodes", id, "options", i, "label"].to_vec(),
                            text: &o.label,
                            node: Some(id),
                            what: format!("option {} of {name}", i + 1),
                            all_languages: true,
                            extras: &[],
                        });
                    }
                    Some(&m.retry)
                }
                Node::Question(q) => Some(&q.retry),
                Node::Language(l) => Some(&l.retry),
                Node::Message(_) | Node::Branch(_) | Node::End(_) => None,
            };
            if let Some(invalid) = retry.and_then(|r| r.invalid.as_ref()) {
                sites.push(TextSite {
                    path: ypath!["nodes", id, "invalid"].to_vec(),
                    text: invalid,
                    node: Some(id),
                    what: format!("the invalid-answer text of {name}"),
                    all_languages: true,
                    extras: &[],
                });
            }
        }
        for (key, text) in &flow.ui.texts {
            let name = ui_key_name(*key);
            sites.push(TextSite {
                path: ypath!["ui", name.as_str()].to_vec(),
                text,
                node: None,
                what: format!("the interface text `ui.{name}`"),
                // The gateway's own translation fills any language the override leaves out.
                all_languages: false,
                extras: ui_extras(*key),
            });
        }
        sites
    }

    fn texts(&mut self, graph: &Graph) {
        let declared = self.flow.languages.clone();
        for site in self.text_sites() {
            if let Text::PerLanguage(map) = site.text {
                let missing: Vec<String> = declared
                    .iter()
                    .filter(|l| !map.contains_key(*l))
                    .map(|l| format!("`{l}`"))
                    .collect();
                if site.all_languages && !missing.is_empty() {
                    self.error(
                        self.pos.value(&site.path),
                        "missing-translation",
                        format!(
                            "{} has no {} translation (the flow's languages are {})",
                            site.what,
                            missing.join(" or "),
                            declared.join(", ")
                        ),
                    );
                }
                for lang in map.keys().filter(|l| !declared.contains(l)) {
                    let hint = did_you_mean(lang, declared.iter().map(String::as_str));
                    let mut key = site.path.clone();
                    key.push(Seg::from(lang));
                    self.warning(
                        self.pos.key(&key),
                        "unknown-language",
                        format!(
                            "{} has a `{lang}` translation, but `{lang}` is not in `languages`{hint}",
                            site.what
                        ),
                    );
                }
            }
            for (lang, text) in site.text.variants() {
                let mut path = site.path.clone();
                if let Some(lang) = lang {
                    path.push(Seg::from(lang));
                }
                let what = match lang {
                    Some(l) => format!("the `{l}` version of {}", site.what),
                    None => site.what.clone(),
                };
                self.ucs2(&path, &what, text);
                if text.contains("{{") || text.contains("{%") {
                    self.template(&site, &path, &what, text, graph);
                }
            }
        }
        for (id, node) in &self.flow.nodes {
            if let Node::Language(l) = node {
                for (i, o) in l.options.iter().enumerate() {
                    let path = ypath!["nodes", id, "options", i, "label"];
                    let what = format!("option {} of language choice `{id}`", i + 1);
                    self.ucs2(&path, &what, &o.label);
                }
            }
        }
    }

    /// Warns about the first character of `text` that forces UCS-2 for the whole message.
    fn ucs2(&mut self, path: &[Seg], what: &str, text: &str) {
        let offending: Vec<(usize, char)> = text
            .chars()
            .enumerate()
            .filter(|(_, c)| gsm7::septets(*c).is_none())
            .collect();
        let Some(&(offset, c)) = offending.first() else {
            return;
        };
        let suggestion = match gsm_replacement(c) {
            Some("") => "; remove it".to_string(),
            Some(r) => format!("; write `{r}` instead"),
            None => String::new(),
        };
        let more = match offending.len() - 1 {
            0 => String::new(),
            1 => " (1 more such character follows in this text)".to_string(),
            n => format!(" ({n} more such characters follow in this text)"),
        };
        self.warning(
            self.pos.char_in(path, offset),
            "ucs2-character",
            format!(
                "{} in {what} forces UCS-2: a USSD screen then holds 80 characters instead of 182 and an SMS part 67 instead of 153{suggestion}{more}",
                describe_char(c)
            ),
        );
    }

    fn template(&mut self, site: &TextSite<'_>, path: &[Seg], what: &str, text: &str, g: &Graph) {
        let mut tera = tera::Tera::new();
        tera.autoescape_on(Vec::<&str>::new());
        if let Err(e) = tera.add_raw_template("text", text) {
            let (message, offset) = tera_error(&e, text);
            self.error(
                self.pos.char_in(path, offset.unwrap_or(0)),
                "template-syntax",
                format!("{what} is not a valid template: {message}"),
            );
            return;
        }
        let refs = variable_refs(text);
        let char_at = |byte: usize| text[..byte.min(text.len())].chars().count();

        // Names tera sees at the top level (loop variables excluded).
        let mut roots: Vec<String> = tera
            .get_template_variables("text")
            .map(|v| v.into_iter().map(str::to_string).collect())
            .unwrap_or_default();
        roots.sort();
        for root in roots {
            if ROOT_VARIABLES.contains(&root.as_str()) || site.extras.contains(&root.as_str()) {
                continue;
            }
            let offset = refs
                .iter()
                .find(|r| r.root == root)
                .map_or(0, |r| char_at(r.offset));
            let saved: Vec<&str> = self.flow.nodes.values().filter_map(Node::result).collect();
            let hint = if saved.contains(&root.as_str()) {
                format!(" (did you mean `answers.{root}`?)")
            } else {
                did_you_mean(&root, ROOT_VARIABLES.iter().chain(site.extras).copied())
            };
            let extras = if site.extras.is_empty() {
                String::new()
            } else {
                format!(
                    ", {}",
                    site.extras
                        .iter()
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            self.error(
                self.pos.char_in(path, offset),
                "unknown-variable",
                format!(
                    "{what} uses `{root}`, which is not a variable; texts may use `answers.NAME`, `labels.NAME`, `contact.NAME`, `flow.name` and `session.reference`{extras}{hint}"
                ),
            );
        }

        for r in &refs {
            let at = self.pos.char_in(path, char_at(r.offset));
            let Some(attr) = &r.attr else {
                continue;
            };
            match r.root.as_str() {
                "flow" if attr != "name" => self.error(
                    at,
                    "unknown-variable",
                    format!("{what} uses `flow.{attr}`; the only flow variable is `flow.name`"),
                ),
                "session" if attr != "reference" => self.error(
                    at,
                    "unknown-variable",
                    format!(
                        "{what} uses `session.{attr}`; the only session variable is `session.reference`"
                    ),
                ),
                "answers" | "labels" => {
                    // A result the text tests or defaults anywhere is handled when absent.
                    let guarded = refs
                        .iter()
                        .any(|o| o.guarded && o.attr.as_deref() == Some(attr.as_str()));
                    let written = format!("{}.{attr}", r.root);
                    self.answer_ref(site, what, (&written, attr), at, guarded, g);
                }
                _ => {}
            }
        }
    }

    /// `answers.x` / `labels.x` (`written`, naming `result`) must name a saved result, set on
    /// every path to where it shows.
    fn answer_ref(
        &mut self,
        site: &TextSite<'_>,
        what: &str,
        (written, result): (&str, &str),
        at: LineCol,
        guarded: bool,
        g: &Graph,
    ) {
        let savers: Vec<&str> = self
            .flow
            .nodes
            .iter()
            .filter(|(_, n)| n.result() == Some(result))
            .map(|(id, _)| id.as_str())
            .collect();
        if savers.is_empty() {
            let saved: Vec<&str> = self.flow.nodes.values().filter_map(Node::result).collect();
            let hint = did_you_mean(result, saved.iter().copied());
            self.error(
                at,
                "unknown-result",
                format!(
                    "{what} uses `{written}`, but no node saves a result named `{result}`{hint}"
                ),
            );
            return;
        }
        if guarded {
            return;
        }
        let Some(node) = site.node else {
            self.error(
                at,
                "unset-variable",
                format!(
                    "{what} uses `{written}`, but it can be shown before any answer is given; use it in a node's text instead"
                ),
            );
            return;
        };
        let Some(n) = g.index(node) else {
            return;
        };
        let Some(set) = &g.set_on_entry[n] else {
            return; // unreachable: reported already
        };
        if set.contains(result) {
            return;
        }
        let path = g.path_without(result, n);
        let skipped: Vec<&str> = path
            .iter()
            .copied()
            .filter(|p| savers.contains(p))
            .collect();
        let why = if skipped.is_empty() {
            format!(
                "which never passes {}",
                savers
                    .iter()
                    .map(|s| self.node_name(s))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        } else {
            format!(
                "on which `{}` can be skipped or given up on without saving it",
                skipped.join("`, `")
            )
        };
        self.error(
            at,
            "unset-variable",
            format!(
                "{what} uses `{written}`, which may not be set yet: a respondent can get here by {}, {why}",
                show_path(&path)
            ),
        );
    }
}

/// The variables a built-in interface text receives besides the usual ones.
fn ui_extras(key: UiKey) -> &'static [&'static str] {
    match key {
        UiKey::InvalidNumber => &["min", "max"],
        UiKey::InvalidText => &["max"],
        UiKey::SmsReplyHint => &["keys"],
        UiKey::VoicePress => &["label", "key"],
        UiKey::VoiceBack => &["key"],
        _ => &[],
    }
}

/// `invalid_number`: the name of an interface key as written under `ui:`.
fn ui_key_name(key: UiKey) -> String {
    serde_json::to_value(key)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// tera's message, and the character offset in the text it points at.
fn tera_error(e: &tera::Error, text: &str) -> (String, Option<usize>) {
    match e.kind() {
        tera::ErrorKind::SyntaxError(report) => {
            let byte = report.span().range.start.min(text.len());
            let offset = text.get(..byte).map(|s| s.chars().count());
            (report.message().to_string(), offset)
        }
        tera::ErrorKind::Msg(message) => {
            // "error: Unknown filter `x`\n --> text:1:19\n ...": take the message and place.
            let first = message
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_string();
            let offset = message.lines().find_map(|l| {
                let place = l.trim().strip_prefix("--> text:")?;
                let (line, col) = place.split_once(':')?;
                let (line, col): (usize, usize) = (line.parse().ok()?, col.parse().ok()?);
                let before: usize = text
                    .split('\n')
                    .take(line.saturating_sub(1))
                    .map(|l| l.chars().count() + 1)
                    .sum();
                Some(before + col.saturating_sub(1))
            });
            (first, offset)
        }
        _ => (e.to_string(), None),
    }
}

/// Every `answers.x`, `labels["x"]`, `flow.name`... inside the `{{ }}` and `{% %}` tags of a
/// template, with the byte offset of its first name. Strings inside tags are skipped. (Filter
/// and keyword names come out as roots too; callers only look up the names they care about.)
fn variable_refs(text: &str) -> Vec<VarRef> {
    let mut refs = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(open) = find_tag(text, i) {
        let close = if &text[open..open + 2] == "{{" {
            "}}"
        } else {
            "%}"
        };
        let body_start = open + 2;
        let body_end = text[body_start..]
            .find(close)
            .map_or(text.len(), |e| body_start + e);
        let mut j = body_start;
        let mut previous_dot = false;
        while j < body_end {
            let c = bytes[j];
            if c == b'"' || c == b'\'' {
                j = text[j + 1..body_end]
                    .find(char::from(c))
                    .map_or(body_end, |e| j + 1 + e + 1);
                previous_dot = false;
                continue;
            }
            if c.is_ascii_alphabetic() || c == b'_' {
                let start = j;
                while j < body_end && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                if !previous_dot {
                    let root = text[start..j].to_string();
                    let attr = attribute_after(&text[j..body_end]);
                    let after: String = text[j..body_end]
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .collect();
                    refs.push(VarRef {
                        root,
                        attr,
                        offset: start,
                        guarded: close == "%}" || after.contains("|default"),
                    });
                }
                previous_dot = false;
                continue;
            }
            if !c.is_ascii_whitespace() {
                previous_dot = c == b'.';
            }
            j += 1;
        }
        i = (body_end + 2).min(text.len());
    }
    refs
}

fn find_tag(text: &str, from: usize) -> Option<usize> {
    let rest = text.get(from..)?;
    [rest.find("{{"), rest.find("{%")]
        .into_iter()
        .flatten()
        .min()
        .map(|i| from + i)
}

/// `.village` or `["village"]` right after a name.
fn attribute_after(rest: &str) -> Option<String> {
    let rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('.') {
        let name: String = after
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        return (!name.is_empty()).then_some(name);
    }
    let inside = rest.strip_prefix('[')?.trim_start();
    let quote = inside.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let inner = &inside[1..];
    inner.find(quote).map(|end| inner[..end].to_string())
}

/// `'’' (U+2019)`.
fn describe_char(c: char) -> String {
    let shown = if c.is_control() || c.is_whitespace() {
        String::new()
    } else {
        format!("'{c}' ")
    };
    format!("{shown}(U+{:04X})", u32::from(c))
}

/// The GSM-7 character(s) to write instead of a common character that forces UCS-2.
fn gsm_replacement(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{00B4}' | '`' => "'",
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{2033}' | '\u{00AB}' | '\u{00BB}' => "\"",
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2212}' => "-",
        '\u{2026}' => "...",
        '\u{00A0}' | '\u{2007}' | '\u{202F}' | '\t' => " ",
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{FEFF}' => "",
        '\u{2022}' | '\u{00B7}' => "-",
        'á' | 'â' | 'ã' | 'ā' => "a",
        'ç' => "c",
        'ê' | 'ë' | 'ē' => "e",
        'í' | 'î' | 'ï' => "i",
        'ó' | 'ô' | 'õ' => "o",
        'ú' | 'û' => "u",
        'œ' => "oe",
        'À' | 'Á' | 'Â' => "A",
        'È' | 'Ê' | 'Ë' => "E",
        'Ô' => "O",
        _ => return None,
    })
}

// ---- screens: USSD fit and SMS length -------------------------------------------------------

/// Where a line of a screen comes from, to report a problem at its text.
#[derive(Clone)]
struct LineOrigin {
    /// Where the text of the line is written.
    path: Vec<Seg>,
    /// The text in words, for messages.
    what: String,
}

/// A screen as the engine would build it, with placeholders for template variables, and the
/// origin of each of its lines (in the order of `ussd::lines`).
struct BuiltScreen {
    screen: Screen,
    /// One per line of `ussd::lines(screen)`; `None` for lines the flow did not write
    /// (built-in Yes/No, the skip line).
    origins: Vec<Option<LineOrigin>>,
}

/// A problem of one line of a USSD screen, found by the same arithmetic the engine paginates by.
#[derive(Debug, Clone, PartialEq)]
pub struct UssdLineProblem {
    /// Index of the line in `ussd::lines(screen)`.
    pub line: usize,
    /// Its length in the units of its encoding.
    pub units: usize,
    /// The encoding of the line on a page of its own (UCS-2 lowers the limit to 80).
    pub encoding: gsm7::Encoding,
    /// The most units a line can have on a page of its own, beside the navigation lines.
    pub room: usize,
}

/// Lines of `screen` that pagination would have to cut because they do not fit even on a page
/// of their own (with the `more` and `back` lines); empty when every line fits.
pub fn ussd_block_limit_problems(screen: &Screen, layout: &ussd::Layout) -> Vec<UssdLineProblem> {
    let pages = ussd::paginate(screen, layout);
    let lines = ussd::lines(screen, layout);
    let mut problems = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if pages.iter().any(|p| p.contains(line.as_str())) {
            continue;
        }
        let nav = format!("\n{}\n{}", layout.more_line, layout.back_line);
        let encoding = gsm7::encoding_for(&format!("{line}{nav}"));
        let limit = layout.limit(encoding);
        problems.push(UssdLineProblem {
            line: i,
            units: gsm7::units(line, encoding),
            encoding,
            room: limit.saturating_sub(gsm7::units(&nav, encoding)),
        });
    }
    problems
}

impl<'a> Ctx<'a> {
    fn screens(&mut self, g: &Graph) {
        let flow = self.flow;
        let languages = flow.languages.clone();
        for (id, node) in &flow.nodes {
            if matches!(node, Node::Branch(_)) {
                continue;
            }
            let reachable = g.index(id).is_some_and(|n| g.reachable[n]);
            for lang in &languages {
                let Some(own) = self.build_screen(id, lang, Vec::new()) else {
                    continue;
                };
                self.ussd_fit(id, lang, &own);
                // A custom invalid-answer notice is shown above the prompt.
                if let Some(invalid) = retry_invalid(node) {
                    let origin = LineOrigin {
                        path: variant_path(&ypath!["nodes", id, "invalid"], invalid, lang),
                        what: format!("the invalid-answer text of {}", self.node_name(id)),
                    };
                    let text = self.fill(invalid.get(lang, &flow.default_language), lang, &[]);
                    if let Some(with_notice) =
                        self.build_screen(id, lang, vec![(Line::text(text), Some(origin))])
                    {
                        self.ussd_fit(id, lang, &with_notice);
                    }
                }
                if reachable {
                    self.sms_length(id, node, lang, &own);
                }
            }
        }
    }

    /// The screen of node `id` in `lang`, after `lead` lines; messages are followed through
    /// to the node that waits (their text becomes lead lines), as the engine does. The screen
    /// is the engine's own (`engine::nodes::screen`), its texts filled with the longest values
    /// they can take; the checker adds where each line comes from.
    fn build_screen(
        &self,
        id: &str,
        lang: &str,
        mut lead: Vec<(Line, Option<LineOrigin>)>,
    ) -> Option<BuiltScreen> {
        let flow = self.flow;
        let fill = LongestFill { ctx: self, lang };
        let mut current = id;
        let mut seen = HashSet::new();
        let node = loop {
            let node = flow.nodes.get(current)?;
            match node {
                Node::Message(m) if seen.insert(current) => {
                    let origin = LineOrigin {
                        path: variant_path(&ypath!["nodes", current, "text"], &m.prompt.text, lang),
                        what: format!("the text of message `{current}`"),
                    };
                    lead.push((nodes::message::lead_line(flow, m, &fill), Some(origin)));
                    current = &m.next;
                }
                Node::Message(_) | Node::Branch(_) => break None,
                _ => break Some(node),
            }
        };
        let mut origins: Vec<Option<LineOrigin>> = Vec::new();
        let lead_lines: Vec<Line> = lead
            .into_iter()
            .map(|(line, origin)| {
                if !line.text.trim().is_empty() {
                    origins.push(origin);
                }
                line
            })
            .collect();
        let Some(node) = node else {
            // The messages lead to a branch: show them as the engine would before routing.
            return Some(BuiltScreen {
                screen: Screen {
                    lead: lead_lines,
                    prompt: Line::text(""),
                    choices: Vec::new(),
                    expect: Expect::Nothing,
                    end: false,
                    language: lang.to_string(),
                    back: false,
                },
                origins,
            });
        };
        let screen = nodes::screen(flow, node, lead_lines, &fill)?;
        origins.extend(self.origins_of(current, node, &screen, lang));
        Some(BuiltScreen { screen, origins })
    }

    /// Where the lines of `node`'s own part of `screen` come from, in the order the screen
    /// shows them: the prompt (when it shows), each choice, the skip line.
    fn origins_of(
        &self,
        id: &str,
        node: &Node,
        screen: &Screen,
        lang: &str,
    ) -> Vec<Option<LineOrigin>> {
        let name = self.node_name(id);
        let mut origins = Vec::new();
        if let Some(prompt) = node.prompt()
            && !screen.prompt.text.trim().is_empty()
        {
            origins.push(Some(LineOrigin {
                path: variant_path(&ypath!["nodes", id, "text"], &prompt.text, lang),
                what: format!("the text of {name}"),
            }));
        }
        for i in 0..screen.choices.len() {
            let path = match node {
                Node::Menu(m) => variant_path(
                    &ypath!["nodes", id, "options", i, "label"],
                    &m.options[i].label,
                    lang,
                ),
                Node::Language(_) => ypath!["nodes", id, "options", i, "label"].to_vec(),
                // Yes and no are interface texts, not the flow's.
                _ => {
                    origins.push(None);
                    continue;
                }
            };
            origins.push(Some(LineOrigin {
                path,
                what: format!("option {} of {name}", i + 1),
            }));
        }
        if screen.skip().is_some() {
            origins.push(None);
        }
        origins
    }

    fn ussd_fit(&mut self, id: &str, lang: &str, built: &BuiltScreen) {
        let layout = ussd::Layout::for_flow(self.flow, lang);
        for problem in ussd_block_limit_problems(&built.screen, &layout) {
            let Some(Some(origin)) = built.origins.get(problem.line) else {
                continue;
            };
            let encoding = match problem.encoding {
                gsm7::Encoding::Gsm7 => "GSM-7",
                gsm7::Encoding::Ucs2 => "UCS-2",
            };
            let what = if origin.path.last() == Some(&Seg::from(lang)) {
                format!("the `{lang}` version of {}", origin.what)
            } else {
                origin.what.clone()
            };
            self.error(
                self.pos.value(&origin.path),
                "ussd-too-long",
                format!(
                    "{what} does not fit on a USSD screen even when paginated: its line is {} {encoding} characters, and a page has room for {} beside `{}` and `{}`; shorten it or split it into two nodes",
                    problem.units, problem.room, layout.more_line, layout.back_line
                ),
            );
        }
        // Keys that collide with the page keys of a paginated menu cannot be chosen there.
        if let Some(Node::Menu(m)) = self.flow.nodes.get(id)
            && ussd::paginate(&built.screen, &layout).len() > 1
        {
            for i in 0..m.options.len() {
                let key = m.key_of(i);
                let nav = &self.flow.ussd;
                if key == nav.more_key.as_str() || key == nav.back_key.as_str() {
                    let key_path = ypath!["nodes", id, "options", i, "key"];
                    let at = if self.pos.exists(&key_path) {
                        self.pos.value(&key_path)
                    } else {
                        self.pos.value(&ypath!["nodes", id, "options", i])
                    };
                    self.warning(
                        at,
                        "key-conflict",
                        format!(
                            "option {} of menu `{id}` uses key `{key}`, which also turns the page of this long USSD menu (`ussd.more_key`/`ussd.back_key`); choose another key",
                            i + 1
                        ),
                    );
                }
            }
        }
    }

    fn sms_length(&mut self, id: &str, node: &Node, lang: &str, own: &BuiltScreen) {
        let flow = self.flow;
        let ui = |key: UiKey, extra: &[(&'static str, String)]| {
            self.fill(ui_text::raw(flow, key, lang), lang, extra)
        };
        let info = sms::render(&own.screen, &ui).info;
        if info.segments <= MAX_SMS_SEGMENTS {
            return;
        }
        // For a message, warn only where the text tips over: the screen after it fits.
        if let Node::Message(m) = node
            && let Some(after) = self.build_screen(&m.next, lang, Vec::new())
            && sms::render(&after.screen, &ui).info.segments > MAX_SMS_SEGMENTS
        {
            return;
        }
        let Some(prompt) = node.prompt() else {
            return;
        };
        let path = variant_path(&ypath!["nodes", id, "text"], &prompt.text, lang);
        let (per_part, encoding) = match info.encoding {
            gsm7::Encoding::Gsm7 => (153, "GSM-7"),
            gsm7::Encoding::Ucs2 => (67, "UCS-2"),
        };
        let with = if matches!(node, Node::Message(_)) {
            " with the screen that follows it"
        } else {
            ""
        };
        self.warning(
            self.pos.value(&path),
            "long-sms",
            format!(
                "in `{lang}`, {}{with} makes an SMS of {} parts ({} {encoding} characters); keep it within {MAX_SMS_SEGMENTS} parts ({} characters) to save cost and keep it readable",
                self.node_name(id),
                info.segments,
                info.units,
                MAX_SMS_SEGMENTS * per_part
            ),
        );
    }

    /// The text with its template tags replaced by plausible values (the longest label a
    /// variable can take, a typical reference...), for measuring screens and SMS.
    fn fill(&self, text: &str, lang: &str, extra: &[(&'static str, String)]) -> String {
        if !text.contains("{{") && !text.contains("{%") {
            return text.to_string();
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(open) = find_tag(rest, 0) {
            out.push_str(&rest[..open]);
            let is_output = rest[open..].starts_with("{{");
            let close = if is_output { "}}" } else { "%}" };
            let Some(end) = rest[open + 2..].find(close) else {
                rest = &rest[open..];
                break;
            };
            let body = &rest[open + 2..open + 2 + end];
            if is_output {
                out.push_str(&self.placeholder(body, lang, extra));
            }
            rest = &rest[open + 2 + end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// A plausible value for the expression inside `{{ }}`.
    fn placeholder(
        &self,
        expression: &str,
        lang: &str,
        extra: &[(&'static str, String)],
    ) -> String {
        let flow = self.flow;
        let Some(r) = variable_refs(&format!("{{{{{expression}}}}}"))
            .into_iter()
            .next()
        else {
            return "xxxxxxxxxx".to_string();
        };
        if let Some((_, value)) = extra.iter().find(|(name, _)| *name == r.root) {
            return value.clone();
        }
        let attr = r.attr.unwrap_or_default();
        match r.root.as_str() {
            "flow" => ui_free(flow.name.get(lang, &flow.default_language)),
            "session" => "ABCD-EFGH".to_string(),
            "answers" | "labels" => self.answer_placeholder(&attr, r.root == "labels", lang),
            "min" | "max" => "1000".to_string(),
            _ => "xxxxxxxxxx".to_string(),
        }
    }

    /// The longest value (or label) the result can hold, or a typical one for free answers.
    fn answer_placeholder(&self, result: &str, label: bool, lang: &str) -> String {
        let flow = self.flow;
        let longest = |items: Vec<String>| {
            items
                .into_iter()
                .max_by_key(|s| s.chars().count())
                .unwrap_or_default()
        };
        let Some(node) = flow.nodes.values().find(|n| n.result() == Some(result)) else {
            return "xxxxxxxxxx".to_string();
        };
        match node {
            Node::Menu(m) if label => longest(
                m.options
                    .iter()
                    .map(|o| ui_free(o.label.get(lang, &flow.default_language)))
                    .collect(),
            ),
            Node::Menu(m) => longest(
                (0..m.options.len())
                    .map(|i| m.value_of(i).into_owned())
                    .collect(),
            ),
            Node::Language(l) if label => {
                longest(l.options.iter().map(|o| o.label.clone()).collect())
            }
            Node::Language(l) => longest(l.options.iter().map(|o| o.language.clone()).collect()),
            Node::Question(q) => match q.answer {
                AnswerType::YesNo if label => longest(vec![
                    ui_text::raw(flow, UiKey::Yes, lang).to_string(),
                    ui_text::raw(flow, UiKey::No, lang).to_string(),
                ]),
                AnswerType::YesNo => "yes".to_string(),
                AnswerType::Number => q
                    .max
                    .map(crate::engine::answer::format_number)
                    .unwrap_or_else(|| "1000".to_string()),
                AnswerType::Date => "1990-12-25".to_string(),
                AnswerType::Text if q.record => "recording".to_string(),
                AnswerType::Text => "x".repeat(q.max_length().min(20)),
            },
            Node::Message(_) | Node::Branch(_) | Node::End(_) => "xxxxxxxxxx".to_string(),
        }
    }
}

/// A screen's texts filled with the longest values they can take (the checker's
/// [`nodes::Fill`]): a screen that fits with these fits with any answers.
struct LongestFill<'c, 'a> {
    ctx: &'c Ctx<'a>,
    lang: &'c str,
}

impl nodes::Fill for LongestFill<'_, '_> {
    fn language(&self) -> &str {
        self.lang
    }

    fn text(&self, source: &str) -> String {
        self.ctx.fill(source, self.lang, &[])
    }

    fn ui(&self, key: UiKey) -> String {
        self.ctx
            .fill(ui_text::raw(self.ctx.flow, key, self.lang), self.lang, &[])
    }
}

/// A text with any template markup removed (a label inside a label is not expanded twice).
fn ui_free(text: &str) -> String {
    crate::engine::template::strip_markup(text)
}

/// The custom invalid-answer text of a node, if it has one.
fn retry_invalid(node: &Node) -> Option<&Text> {
    match node {
        Node::Menu(m) => m.retry.invalid.as_ref(),
        Node::Question(q) => q.retry.invalid.as_ref(),
        Node::Language(l) => l.retry.invalid.as_ref(),
        Node::Message(_) | Node::Branch(_) | Node::End(_) => None,
    }
}

/// The path of the variant of `text` shown in `lang`: `path.lang` for a per-language text
/// (or the language it falls back to), `path` itself for a single text.
fn variant_path(path: &[Seg], text: &Text, lang: &str) -> Vec<Seg> {
    let mut path = path.to_vec();
    if let Text::PerLanguage(map) = text {
        if map.contains_key(lang) {
            path.push(Seg::from(lang));
        } else if let Some(first) = map.keys().next() {
            path.push(Seg::from(first));
        }
    }
    path
}

/// The engine's own template compilation errors: a safety net, so a text the checker missed
/// still gets a diagnostic (at the flow's id).
fn engine_compile_problems(flow: &Flow) -> Vec<String> {
    match CompiledFlow::compile(flow.clone()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}
