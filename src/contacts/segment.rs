//! Segments: named filters over contact fields, declared in YAML (by default
//! `flows/campaigns/segments.yaml`, a subfolder so the flow loader never reads it; config
//! `contacts.segments_file`), checked against the fields the config declares, and evaluated
//! on a stream of contacts.
//!
//! ```yaml
//! segments:
//!   nairobi_women:
//!     all:
//!       - { field: county, equals: Nairobi }
//!       - { field: gender, equals: female }
//!   born_1990s: { field: birth_year, min: 1990, max: 1999 }
//!   active_chvs: { field: chv_status, one_of: [active, on_leave] }
//!   no_ward: { field: ward, missing: true }
//!   seen_lately: { last_seen_since: 30d }       # or a date: 2026-11-01
//!   not_sms: { not: { field: channel, equals: sms } }
//! ```
//!
//! A condition is `field` with exactly one of `equals`, `one_of`, `min`/`max` (inclusive,
//! for numbers, dates and birth years), `present: true` or `missing: true`; or
//! `last_seen_since`; combined with `all`, `any` and `not`. Values are read the way an import
//! reads them (`equals: Mwanamke` is `female`; text compares without case). An opted-out
//! contact is in no segment, whatever its filter says. Evaluation never touches the store:
//! callers stream contacts through [`Segment::contains`].

use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use super::dates::{Date, parse_date};
use super::import::value_of;
use super::{ContactSchema, Field};
use crate::config::FieldKind;
use crate::result_store::{ConsentStatus, ContactRecord};

/// A segments file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentsFile {
    segments: IndexMap<String, Spec>,
}

/// One filter as written: the keys are checked after parsing, so each mistake gets its own
/// sentence.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    all: Option<Vec<Spec>>,
    any: Option<Vec<Spec>>,
    not: Option<Box<Spec>>,
    field: Option<String>,
    equals: Option<Scalar>,
    one_of: Option<Vec<Scalar>>,
    min: Option<Scalar>,
    max: Option<Scalar>,
    present: Option<bool>,
    missing: Option<bool>,
    last_seen_since: Option<Scalar>,
}

/// A value in a filter, as YAML typed it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Text(t) => t.clone(),
        }
    }
}

/// A checked filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    /// The field's value is one of these (stored forms; text lowercased).
    OneOf(Field, Vec<String>),
    /// The field's value lies in the range (both ends included).
    Range(Field, Bound, Bound),
    /// The field has a value.
    Present(Field),
    /// The contact reached the gateway at or after this point.
    LastSeenSince(Since),
}

/// One end of a range.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Open,
    Number(f64),
    /// `YYYY-MM-DD`, compared as text (it sorts as the dates do).
    Date(String),
}

/// When "last seen since" starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This many days before the evaluation.
    Days(u32),
    /// Midnight UTC of this date.
    Date(Date),
}

/// A named, checked segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub name: String,
    pub filter: Filter,
}

/// A mistake in a segments file: where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentError {
    pub file: PathBuf,
    /// The segment and the path inside it (`nairobi_women: all[1]`), or empty for the file.
    pub at: String,
    pub message: String,
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.at, self.message)
        }
    }
}

/// Every segment of a file, in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Segments {
    pub segments: Vec<Segment>,
}

impl Segments {
    /// Reads and checks the segments file; every mistake, or the segments.
    pub fn load(path: &Path, schema: &ContactSchema) -> Result<Segments, Vec<SegmentError>> {
        let file_error = |message: String| {
            vec![SegmentError {
                file: path.to_path_buf(),
                at: String::new(),
                message,
            }]
        };
        let source = std::fs::read_to_string(path).map_err(|e| {
            file_error(if e.kind() == std::io::ErrorKind::NotFound {
                "no segments file here; create it (see README: Contacts) or set contacts.segments_file".into()
            } else {
                format!("cannot read: {e}")
            })
        })?;
        Segments::parse(path, &source, schema)
    }

    /// Checks the segments in `source` (`path` labels the errors).
    pub fn parse(
        path: &Path,
        source: &str,
        schema: &ContactSchema,
    ) -> Result<Segments, Vec<SegmentError>> {
        let file: SegmentsFile =
            serde_saphyr::from_str_with_options(source, crate::flow::load::yaml_options())
                .map_err(|e| {
                    vec![SegmentError {
                        file: path.to_path_buf(),
                        at: String::new(),
                        message: e.to_string(),
                    }]
                })?;
        let mut checker = Checker {
            file: path,
            schema,
            errors: Vec::new(),
        };
        let mut segments = Vec::new();
        for (name, spec) in &file.segments {
            if let Some(filter) = checker.filter(name, spec) {
                segments.push(Segment {
                    name: name.clone(),
                    filter,
                });
            }
        }
        if checker.errors.is_empty() {
            Ok(Segments { segments })
        } else {
            Err(checker.errors)
        }
    }

    /// The segment called `name`, or an error listing the known ones.
    pub fn get(&self, name: &str) -> Result<&Segment, String> {
        self.segments
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.segments.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "no segment `{name}` (segments: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )
            })
    }
}

/// Turns specs into filters, collecting every mistake.
struct Checker<'a> {
    file: &'a Path,
    schema: &'a ContactSchema,
    errors: Vec<SegmentError>,
}

impl Checker<'_> {
    fn error(&mut self, at: &str, message: String) -> Option<Filter> {
        self.errors.push(SegmentError {
            file: self.file.to_path_buf(),
            at: at.to_string(),
            message,
        });
        None
    }

    fn filter(&mut self, at: &str, spec: &Spec) -> Option<Filter> {
        let combiners = [spec.all.is_some(), spec.any.is_some(), spec.not.is_some()];
        let conditions = [spec.field.is_some(), spec.last_seen_since.is_some()];
        let kinds = combiners.iter().chain(&conditions).filter(|k| **k).count();
        if kinds != 1 {
            return self.error(
                at,
                "write exactly one of: all, any, not, field (with a test), last_seen_since".into(),
            );
        }
        if let Some(list) = spec.all.as_ref().or(spec.any.as_ref()) {
            let word = if spec.all.is_some() { "all" } else { "any" };
            if list.is_empty() {
                return self.error(at, format!("`{word}` needs at least one condition"));
            }
            let parts: Vec<Option<Filter>> = list
                .iter()
                .enumerate()
                .map(|(i, s)| self.filter(&format!("{at}: {word}[{i}]"), s))
                .collect();
            let parts: Option<Vec<Filter>> = parts.into_iter().collect();
            return parts.map(|p| {
                if spec.all.is_some() {
                    Filter::All(p)
                } else {
                    Filter::Any(p)
                }
            });
        }
        if let Some(inner) = &spec.not {
            return self
                .filter(&format!("{at}: not"), inner)
                .map(|f| Filter::Not(Box::new(f)));
        }
        if let Some(since) = &spec.last_seen_since {
            return match parse_since(&since.text()) {
                Some(since) => Some(Filter::LastSeenSince(since)),
                None => self.error(
                    at,
                    format!(
                        "last_seen_since: `{}` is neither days (30d) nor a date (2026-11-01)",
                        since.text()
                    ),
                ),
            };
        }
        self.condition(at, spec)
    }

    fn condition(&mut self, at: &str, spec: &Spec) -> Option<Filter> {
        let name = spec.field.as_deref().unwrap_or_default();
        let Some(field) = self.schema.field_named(name) else {
            let known = self.schema.field_names().join(", ");
            return self.error(
                at,
                format!("unknown field `{name}` (fields: {known}; declare others under contacts: in the config)"),
            );
        };
        let tests = [
            spec.equals.is_some(),
            spec.one_of.is_some(),
            spec.min.is_some() || spec.max.is_some(),
            spec.present.is_some(),
            spec.missing.is_some(),
        ];
        if tests.iter().filter(|t| **t).count() != 1 {
            return self.error(
                at,
                format!("field `{name}`: give exactly one of equals, one_of, min/max, present: true, missing: true"),
            );
        }
        if field == Field::Number || field == Field::LastSeen {
            return self.error(
                at,
                format!(
                    "field `{name}` cannot be filtered this way (use last_seen_since for last_seen)"
                ),
            );
        }
        match (spec.present, spec.missing) {
            (Some(true), _) => return Some(Filter::Present(field)),
            (_, Some(true)) => return Some(Filter::Not(Box::new(Filter::Present(field)))),
            (Some(false), _) | (_, Some(false)) => {
                return self.error(
                    at,
                    "write `present: true` or `missing: true` (not false)".into(),
                );
            }
            (None, None) => {}
        }
        if spec.min.is_some() || spec.max.is_some() {
            let low = self.bound(at, name, field, spec.min.as_ref())?;
            let high = self.bound(at, name, field, spec.max.as_ref())?;
            return Some(Filter::Range(field, low, high));
        }
        let values: Vec<Scalar> = match (&spec.equals, &spec.one_of) {
            (Some(v), _) => vec![v.clone()],
            (_, Some(list)) if !list.is_empty() => list.clone(),
            _ => return self.error(at, "one_of needs at least one value".into()),
        };
        let mut stored = Vec::new();
        for value in values {
            stored.push(self.value(at, name, field, &value.text())?);
        }
        Some(Filter::OneOf(field, stored))
    }

    /// A value as stored, checked the way an import checks it.
    fn value(&mut self, at: &str, name: &str, field: Field, text: &str) -> Option<String> {
        if field == Field::Operator {
            let known = self.schema.operator_names();
            if known.contains(&text) {
                return Some(text.to_string());
            }
            self.error(
                at,
                format!(
                    "field `operator`: `{text}` is not one of {}",
                    known.join(", ")
                ),
            );
            return None;
        }
        match self.schema.normalise_value(field, text, i32::MAX) {
            Ok(Some(value)) if is_text(self.schema, field) => Some(value.to_lowercase()),
            Ok(Some(value)) => Some(value),
            Ok(None) => {
                self.error(
                    at,
                    format!("field `{name}`: an empty value matches nothing; use missing: true"),
                );
                None
            }
            Err(e) => {
                self.error(at, format!("field `{name}`: {e}"));
                None
            }
        }
    }

    fn bound(
        &mut self,
        at: &str,
        name: &str,
        field: Field,
        value: Option<&Scalar>,
    ) -> Option<Bound> {
        let Some(value) = value else {
            return Some(Bound::Open);
        };
        let text = value.text();
        let kind = match field {
            Field::BirthYear => FieldKind::Number,
            Field::Declared(i) => self.schema.declared()[i].kind,
            _ => FieldKind::Text,
        };
        match kind {
            FieldKind::Number => match text.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => Some(Bound::Number(n)),
                _ => {
                    self.error(at, format!("field `{name}`: `{text}` is not a number"));
                    None
                }
            },
            FieldKind::Date => match parse_date(&text) {
                Some(date) => Some(Bound::Date(date.to_iso())),
                None => {
                    self.error(
                        at,
                        format!("field `{name}`: `{text}` is not a date (2026-03-31)"),
                    );
                    None
                }
            },
            FieldKind::Text | FieldKind::Choice => {
                self.error(
                    at,
                    format!(
                        "field `{name}`: min/max need a number or date field; use equals or one_of"
                    ),
                );
                None
            }
        }
    }
}

/// Whether the field holds free text (compared without case).
fn is_text(schema: &ContactSchema, field: Field) -> bool {
    match field {
        Field::Name => true,
        Field::Declared(i) => schema.declared()[i].kind == FieldKind::Text,
        _ => false,
    }
}

/// `30d` (days before now) or a date.
fn parse_since(text: &str) -> Option<Since> {
    let text = text.trim();
    if let Some(days) = text.strip_suffix('d') {
        return days.trim().parse().ok().map(Since::Days);
    }
    parse_date(text).map(Since::Date)
}

const MS_PER_DAY: i64 = 86_400_000;

impl Segment {
    /// Whether `contact` is in the segment at `now_ms`: never when it is opted out.
    pub fn contains(&self, schema: &ContactSchema, contact: &ContactRecord, now_ms: i64) -> bool {
        let opted_out = contact
            .consent
            .as_ref()
            .is_some_and(|c| c.status == ConsentStatus::OptedOut);
        !opted_out && self.filter.matches(schema, contact, now_ms)
    }
}

impl Filter {
    /// Whether `contact` passes the filter (consent aside; see [`Segment::contains`]).
    pub fn matches(&self, schema: &ContactSchema, contact: &ContactRecord, now_ms: i64) -> bool {
        match self {
            Filter::All(parts) => parts.iter().all(|f| f.matches(schema, contact, now_ms)),
            Filter::Any(parts) => parts.iter().any(|f| f.matches(schema, contact, now_ms)),
            Filter::Not(inner) => !inner.matches(schema, contact, now_ms),
            Filter::Present(field) => field_value(schema, contact, *field).is_some(),
            Filter::OneOf(field, values) => field_value(schema, contact, *field).is_some_and(|v| {
                let v = if is_text(schema, *field) {
                    v.to_lowercase()
                } else {
                    v
                };
                values.contains(&v)
            }),
            Filter::Range(field, low, high) => {
                field_value(schema, contact, *field).is_some_and(|v| within(&v, low, high))
            }
            Filter::LastSeenSince(since) => {
                let from = match since {
                    Since::Days(days) => now_ms - i64::from(*days) * MS_PER_DAY,
                    Since::Date(date) => date.start_ms(),
                };
                contact.last_seen_at_ms.is_some_and(|seen| seen >= from)
            }
        }
    }
}

/// A field's value in a contact, consent included (`opted_in` / `opted_out`).
pub fn field_value(
    schema: &ContactSchema,
    contact: &ContactRecord,
    field: Field,
) -> Option<String> {
    match field {
        Field::Consent => contact
            .consent
            .as_ref()
            .map(|c| c.status.as_str().to_string()),
        other => value_of(schema, contact, other),
    }
}

fn within(value: &str, low: &Bound, high: &Bound) -> bool {
    let fits = |bound: &Bound, ok: fn(std::cmp::Ordering) -> bool| match bound {
        Bound::Open => true,
        Bound::Number(n) => value
            .parse::<f64>()
            .ok()
            .and_then(|v| v.partial_cmp(n))
            .is_some_and(ok),
        Bound::Date(d) => ok(value.cmp(d.as_str())),
    };
    fits(low, |o| o.is_ge()) && fits(high, |o| o.is_le())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> ContactSchema {
        ContactSchema::from_config(&crate::config::ContactsConfig::default()).expect("valid")
    }

    #[test]
    fn every_mistake_is_reported_with_its_place() {
        let source = "segments:\n  a: { field: wrd, equals: x }\n  b: { all: [ { field: gender, equals: robot }, { field: name, min: 3 } ] }\n  c: { field: ward }\n  d: { last_seen_since: soon }\n";
        let errors = Segments::parse(Path::new("s.yaml"), source, &schema()).expect_err("bad");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 5, "{text:#?}");
        assert!(
            text[0].starts_with("s.yaml: a: unknown field `wrd`"),
            "{}",
            text[0]
        );
        assert!(text[1].starts_with("s.yaml: b: all[0]: field `gender`: gender: `robot` is not one of female, male, intersex, other"), "{}", text[1]);
        assert!(
            text[2].contains("b: all[1]: field `name`: min/max need a number or date"),
            "{}",
            text[2]
        );
        assert!(
            text[3].contains("c: field `ward`: give exactly one of"),
            "{}",
            text[3]
        );
        assert!(
            text[4].contains("d: last_seen_since: `soon`"),
            "{}",
            text[4]
        );
    }

    #[test]
    fn unknown_keys_are_syntax_errors() {
        let source = "segments:\n  a: { field: ward, equal: x }\n";
        let errors = Segments::parse(Path::new("s.yaml"), source, &schema()).expect_err("bad");
        assert!(errors[0].message.contains("equal"), "{}", errors[0]);
    }
}
