//! Where things are in a flow file: maps a YAML path (`nodes.ask_village.options[2].next`) to
//! the line and column of its key or value, and a character inside a text to its own line and
//! column.
//!
//! Built once per file by walking saphyr-parser's events and their markers. It never judges a
//! flow and never fails: on a YAML error it keeps what it saw up to that point, and lookups of
//! unknown paths fall back to the nearest known ancestor (or line 1, column 1).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// 1-based line and column (in characters).
pub type LineCol = (usize, usize);

/// One step of a YAML path: a mapping key or a sequence index (0-based).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Seg {
        Seg::Key(s.to_string())
    }
}

impl From<&String> for Seg {
    fn from(s: &String) -> Seg {
        Seg::Key(s.clone())
    }
}

impl From<String> for Seg {
    fn from(s: String) -> Seg {
        Seg::Key(s)
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

/// Builds a YAML path (an array of `Seg`) from keys and indices:
/// `ypath!["nodes", id, "options", 2]`.
macro_rules! ypath {
    ($($seg:expr),* $(,)?) => {
        [$($crate::flow::positions::Seg::from($seg)),*]
    };
}
pub(crate) use ypath;

/// One YAML node seen in the file.
#[derive(Debug, Clone)]
struct Entry {
    path: Vec<Seg>,
    /// Where its key starts, when it is a mapping value.
    key: Option<LineCol>,
    /// Character index where the node starts (a quoted scalar starts at its quote).
    start: usize,
    /// Character index just past the node (set when a collection closes).
    end: usize,
    /// Scalar style and decoded value, for scalars.
    scalar: Option<(ScalarStyle, String)>,
}

/// A collection being walked.
enum Frame {
    Map {
        path: Vec<Seg>,
        /// The key read, waiting for its value (text and position).
        key: Option<(String, LineCol)>,
        entry: usize,
    },
    Seq {
        path: Vec<Seg>,
        next: usize,
        entry: usize,
    },
    /// A collection used as a mapping key: ignored, only its end matters.
    ComplexKey { key_at: LineCol },
}

/// Positions of every node of one YAML file.
pub struct Positions {
    chars: Vec<char>,
    /// Character index of the first character of each line.
    line_starts: Vec<usize>,
    entries: Vec<Entry>,
    by_path: HashMap<Vec<Seg>, usize>,
}

impl Positions {
    /// Walks the whole file; stops quietly at the first YAML error.
    pub fn parse(source: &str) -> Positions {
        let chars: Vec<char> = source.chars().collect();
        let mut line_starts = vec![0];
        for (i, c) in chars.iter().enumerate() {
            if *c == '\n' {
                line_starts.push(i + 1);
            }
        }
        let mut positions = Positions {
            chars,
            line_starts,
            entries: Vec::new(),
            by_path: HashMap::new(),
        };
        positions.walk(source);
        positions
    }

    fn walk(&mut self, source: &str) {
        let mut parser = Parser::new_from_str(source);
        let mut stack: Vec<Frame> = Vec::new();
        let mut root_seen = false;
        while let Some(Ok((event, span))) = parser.next_event() {
            let here = (span.start.line(), span.start.col() + 1);
            match event {
                Event::Scalar(value, style, _, _) => {
                    if let Some(Frame::Map {
                        key: key @ None, ..
                    }) = stack.last_mut()
                    {
                        *key = Some((value.into_owned(), here));
                        continue;
                    }
                    if matches!(stack.last(), Some(Frame::ComplexKey { .. })) {
                        continue;
                    }
                    if let Some(i) = self.record(&mut stack, &mut root_seen, span.start.index()) {
                        self.entries[i].end = span.end.index();
                        self.entries[i].scalar = Some((style, value.into_owned()));
                    }
                }
                Event::Alias(_) => {
                    if let Some(Frame::Map {
                        key: key @ None, ..
                    }) = stack.last_mut()
                    {
                        *key = Some(("*".to_string(), here));
                        continue;
                    }
                    if matches!(stack.last(), Some(Frame::ComplexKey { .. })) {
                        continue;
                    }
                    if let Some(i) = self.record(&mut stack, &mut root_seen, span.start.index()) {
                        self.entries[i].end = span.end.index();
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    let as_key = matches!(
                        stack.last(),
                        Some(Frame::Map { key: None, .. } | Frame::ComplexKey { .. })
                    );
                    if as_key {
                        stack.push(Frame::ComplexKey { key_at: here });
                        continue;
                    }
                    let Some(entry) = self.record(&mut stack, &mut root_seen, span.start.index())
                    else {
                        // A second document: positions describe the first one only.
                        break;
                    };
                    let path = self.entries[entry].path.clone();
                    stack.push(if is_map {
                        Frame::Map {
                            path,
                            key: None,
                            entry,
                        }
                    } else {
                        Frame::Seq {
                            path,
                            next: 0,
                            entry,
                        }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => match stack.pop() {
                    Some(Frame::Map { entry, .. } | Frame::Seq { entry, .. }) => {
                        self.entries[entry].end = span.end.index();
                    }
                    Some(Frame::ComplexKey { key_at }) => {
                        if let Some(Frame::Map {
                            key: key @ None, ..
                        }) = stack.last_mut()
                        {
                            *key = Some(("?".to_string(), key_at));
                        }
                    }
                    None => {}
                },
                Event::StreamEnd => break,
                Event::Nothing
                | Event::StreamStart
                | Event::DocumentStart(_)
                | Event::DocumentEnd => {}
            }
        }
    }

    /// Records a node in value position; returns its entry index (None for a second root).
    fn record(&mut self, stack: &mut [Frame], root_seen: &mut bool, start: usize) -> Option<usize> {
        let (path, key) = match stack.last_mut() {
            None => {
                if *root_seen {
                    return None;
                }
                *root_seen = true;
                (Vec::new(), None)
            }
            Some(Frame::Map { path, key, .. }) => {
                let (name, at) = key.take().unwrap_or_else(|| (String::new(), (0, 0)));
                let mut p = path.clone();
                p.push(Seg::Key(name));
                (p, Some(at))
            }
            Some(Frame::Seq { path, next, .. }) => {
                let mut p = path.clone();
                p.push(Seg::Index(*next));
                *next += 1;
                (p, None)
            }
            Some(Frame::ComplexKey { .. }) => return None,
        };
        let index = self.entries.len();
        self.by_path.entry(path.clone()).or_insert(index);
        self.entries.push(Entry {
            path,
            key,
            start,
            end: start,
            scalar: None,
        });
        Some(index)
    }

    /// Line and column of a character index.
    fn line_col(&self, index: usize) -> LineCol {
        let line = self.line_starts.partition_point(|s| *s <= index).max(1);
        (line, index - self.line_starts[line - 1] + 1)
    }

    fn entry(&self, path: &[Seg]) -> Option<&Entry> {
        self.by_path.get(path).map(|i| &self.entries[*i])
    }

    /// The nearest entry at `path` or above it.
    fn nearest(&self, path: &[Seg]) -> Option<&Entry> {
        (0..=path.len()).rev().find_map(|n| self.entry(&path[..n]))
    }

    /// Whether the file has a node at `path`.
    pub fn exists(&self, path: &[Seg]) -> bool {
        self.by_path.contains_key(path)
    }

    /// Where the value at `path` starts (or its nearest ancestor's, or 1:1).
    pub fn value(&self, path: &[Seg]) -> LineCol {
        self.nearest(path)
            .map(|e| self.line_col(e.start))
            .unwrap_or((1, 1))
    }

    /// Where the key of the value at `path` starts (its value when it has no key, e.g. a
    /// sequence item; the nearest ancestor's key when the path does not exist).
    pub fn key(&self, path: &[Seg]) -> LineCol {
        match self.nearest(path) {
            Some(e) => e.key.unwrap_or_else(|| self.line_col(e.start)),
            None => (1, 1),
        }
    }

    /// Where the character at `offset` (in characters) of the decoded string at `path` is
    /// written; the string's start when it cannot be told (e.g. an escape sequence).
    pub fn char_in(&self, path: &[Seg], offset: usize) -> LineCol {
        let Some(entry) = self.entry(path) else {
            return self.value(path);
        };
        let Some((style, decoded)) = &entry.scalar else {
            return self.line_col(entry.start);
        };
        let end = entry.end.min(self.chars.len());
        let start = entry.start.min(end);
        let quoted = matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted);
        let raw_start = if quoted { (start + 1).min(end) } else { start };
        let raw = &self.chars[raw_start..end];
        match align(raw, *style, decoded, offset) {
            Some(i) => self.line_col(raw_start + i),
            None => self.line_col(entry.start),
        }
    }

    /// The decoded scalar at `path`, if there is one.
    pub fn scalar(&self, path: &[Seg]) -> Option<&str> {
        self.entry(path)?.scalar.as_ref().map(|(_, v)| v.as_str())
    }

    /// `path` itself when it is a collection, else its nearest collection ancestor.
    pub fn container_of(&self, path: &[Seg]) -> Vec<Seg> {
        (0..=path.len())
            .rev()
            .map(|n| &path[..n])
            .find(|p| self.entry(p).is_some_and(|e| e.scalar.is_none()))
            .unwrap_or_default()
            .to_vec()
    }

    /// The path of the node whose key or value starts at `at` (keys first); used to place
    /// errors reported by the deserializer at the start of a whole node.
    pub fn path_at(&self, at: LineCol) -> Option<&[Seg]> {
        self.entries
            .iter()
            .find(|e| e.key == Some(at))
            .or_else(|| self.entries.iter().find(|e| self.line_col(e.start) == at))
            .map(|e| e.path.as_slice())
    }

    /// The first key named `name` at or below `prefix`, in file order, with its full path.
    pub fn find_key(&self, prefix: &[Seg], name: &str) -> Option<(&[Seg], LineCol)> {
        self.entries.iter().find_map(|e| {
            let under = e.path.len() > prefix.len() && e.path.starts_with(prefix);
            let named = matches!(e.path.last(), Some(Seg::Key(k)) if k == name);
            match (under && named, e.key) {
                (true, Some(at)) => Some((e.path.as_slice(), at)),
                _ => None,
            }
        })
    }

    /// The first scalar value `value` at or below `prefix`, in file order, with its full path.
    pub fn find_scalar(&self, prefix: &[Seg], value: &str) -> Option<(&[Seg], LineCol)> {
        self.entries.iter().find_map(|e| {
            let under = e.path.starts_with(prefix);
            let same = matches!(&e.scalar, Some((_, v)) if v == value);
            (under && same).then(|| (e.path.as_slice(), self.line_col(e.start)))
        })
    }
}

/// The index in `raw` (the scalar as written, without its opening quote) where decoded
/// character `target` is written. Walks both in step: equal characters match; whitespace and
/// line breaks the YAML folding removed are skipped; escapes (`\u2019`, `''`) match the one
/// character they stand for. `None` when the two cannot be matched up.
fn align(raw: &[char], style: ScalarStyle, decoded: &str, target: usize) -> Option<usize> {
    let decoded: Vec<char> = decoded.chars().collect();
    let (mut r, mut d) = (0, 0);
    while d < decoded.len() && r < raw.len() {
        let (rc, dc) = (raw[r], decoded[d]);
        if style == ScalarStyle::DoubleQuoted && rc == '\\' {
            let width = match raw.get(r + 1) {
                Some('\n' | '\r') => {
                    // An escaped line break joins lines: it stands for nothing.
                    r += 2;
                    continue;
                }
                Some('x') => 4,
                Some('u') => 6,
                Some('U') => 10,
                Some(_) => 2,
                None => 1,
            };
            if d == target {
                return Some(r);
            }
            r += width;
            d += 1;
            continue;
        }
        if style == ScalarStyle::SingleQuoted && rc == '\'' && raw.get(r + 1) == Some(&'\'') {
            if d == target {
                return Some(r);
            }
            r += 2;
            d += 1;
            continue;
        }
        if rc == dc {
            if d == target {
                return Some(r);
            }
            r += 1;
            d += 1;
            continue;
        }
        if matches!(rc, ' ' | '\t' | '\n' | '\r') {
            r += 1;
            continue;
        }
        if matches!(dc, ' ' | '\n') {
            if d == target {
                return Some(r);
            }
            d += 1;
            continue;
        }
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "\
id: demo
nodes:
  ask:
    type: menu
    text: {en: 'it''s ’x', sw: \"q\\u2019 ’\"}
    options:
      - {label: One, next: a}
      - label: |
          line one
          two ’
        next: b
  plain:
    text: plain ’ text
      continued ’
";

    #[test]
    fn keys_and_values_of_paths() {
        let p = Positions::parse(SOURCE);
        assert_eq!(p.value(&ypath!["id"]), (1, 5));
        assert_eq!(p.key(&ypath!["nodes", "ask"]), (3, 3));
        assert_eq!(
            p.value(&ypath!["nodes", "ask", "options", 0_usize, "next"]),
            (7, 28)
        );
        assert_eq!(
            p.key(&ypath!["nodes", "ask", "options", 1_usize, "next"]),
            (11, 9)
        );
        assert_eq!(p.value(&ypath!["nodes", "ask", "text", "sw"]), (5, 32));
        // A missing path falls back to its nearest ancestor.
        assert_eq!(p.value(&ypath!["nodes", "ask", "text", "fr"]), (5, 11));
        assert!(!p.exists(&ypath!["nodes", "missing"]));
    }

    #[test]
    fn characters_inside_scalars_of_every_style() {
        let p = Positions::parse(SOURCE);
        // Single-quoted with a doubled quote before the character.
        assert_eq!(p.char_in(&ypath!["nodes", "ask", "text", "en"], 5), (5, 23));
        // Double-quoted: an escape stands for one character.
        assert_eq!(p.char_in(&ypath!["nodes", "ask", "text", "sw"], 1), (5, 34));
        assert_eq!(p.char_in(&ypath!["nodes", "ask", "text", "sw"], 3), (5, 41));
        // Literal block.
        let label = ypath!["nodes", "ask", "options", 1_usize, "label"];
        assert_eq!(p.char_in(&label, 13), (10, 15));
        // Plain scalar over two lines.
        let plain = ypath!["nodes", "plain", "text"];
        assert_eq!(p.char_in(&plain, 6), (13, 17));
        assert_eq!(p.char_in(&plain, 23), (14, 17));
    }

    #[test]
    fn nodes_found_from_deserializer_positions() {
        let p = Positions::parse(SOURCE);
        let node = p.path_at((3, 3)).expect("node key").to_vec();
        assert_eq!(node, ypath!["nodes", "ask"]);
        let (path, at) = p.find_key(&node, "next").expect("a next key");
        assert_eq!(at, (7, 22));
        assert_eq!(
            path,
            ypath!["nodes", "ask", "options", 0_usize, "next"].as_slice()
        );
        assert_eq!(p.find_scalar(&node, "b").map(|(_, at)| at), Some((11, 15)));
    }

    #[test]
    fn broken_yaml_keeps_what_came_before() {
        let p = Positions::parse("a: 1\nb: [\n");
        assert_eq!(p.value(&ypath!["a"]), (1, 4));
        assert_eq!(p.value(&ypath!["zzz"]), (1, 1));
    }
}
