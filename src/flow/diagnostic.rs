//! One problem found in a flow file: where it is (file:line:column), how bad it is, a stable
//! code, and a message a campaign manager can act on.
//!
//! Diagnostics are plain data: this module formats them and suggests near names, it never
//! reads files and never decides what is a problem (that is `load` and `check`).

use std::fmt;
use std::path::PathBuf;

/// How bad a problem is: errors stop a flow from loading, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The flow cannot run as written; `baraza check` exits with status 1.
    Error,
    /// The flow runs, but probably not as the author meant (or costs more than needed).
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem, placed in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file as given to the checker (relative paths stay relative, for readable output).
    pub path: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file (e.g. it cannot be read).
    pub line: usize,
    /// 1-based column, counted in characters; 0 together with `line` 0.
    pub column: usize,
    /// Stable kebab-case name of the kind of problem (`unknown-target`), for tests and tooling.
    pub code: &'static str,
    /// What is wrong and, where possible, how to fix it, in plain language.
    pub message: String,
}

impl Diagnostic {
    /// An error at `line:column` of `path`.
    pub fn error(
        path: impl Into<PathBuf>,
        (line, column): (usize, usize),
        code: &'static str,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            line,
            column,
            code,
            message: message.into(),
        }
    }

    /// A warning at `line:column` of `path`.
    pub fn warning(
        path: impl Into<PathBuf>,
        (line, column): (usize, usize),
        code: &'static str,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(path, (line, column), code, message)
        }
    }

    /// Whether this diagnostic stops the flow from loading.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `flows/x.yaml:12:15: error[unknown-target]: message` (without `:line:column` when the
    /// problem concerns the whole file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}[{}]: {}", self.severity, self.code, self.message)
    }
}

/// Edit distance between two names (insertions, deletions, substitutions and swaps of two
/// neighbouring characters each cost 1), counted in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the optimal-string-alignment table: two rows back, previous, current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The candidate closest to `wanted`, if it is close enough to be a likely typo (at most a
/// third of the name's length in edits, and at least one edit allowed).
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let allowed = (wanted.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != wanted)
        .map(|c| (edit_distance(&wanted.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)` when a close candidate exists, else nothing.
pub fn did_you_mean<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(wanted, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_typos() {
        assert_eq!(edit_distance("ask_village", "ask_villag"), 1);
        assert_eq!(edit_distance("lable", "label"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions_only_for_near_names() {
        assert_eq!(
            closest("ask_villag", ["ask_age", "ask_village"]),
            Some("ask_village")
        );
        assert_eq!(closest("zzz", ["ask_age", "ask_village"]), None);
        assert_eq!(
            did_you_mean("lable", ["label", "key"]),
            " (did you mean `label`?)"
        );
    }

    #[test]
    fn display_has_file_line_column_severity_and_code() {
        let d = Diagnostic::error("flows/x.yaml", (12, 15), "unknown-target", "bad");
        assert_eq!(
            d.to_string(),
            "flows/x.yaml:12:15: error[unknown-target]: bad"
        );
        let w = Diagnostic::warning("flows/x.yaml", (0, 0), "unreadable", "gone");
        assert_eq!(w.to_string(), "flows/x.yaml: warning[unreadable]: gone");
    }
}
