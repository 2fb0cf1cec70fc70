//! Reading one flow file: YAML text in, a `Flow` (with its path and source kept for the
//! checker's positions) or diagnostics out.
//!
//! Booleans are strict (`true`/`false` only), so `yes` and `no` stay texts. Deserializer
//! errors become diagnostics placed on the offending key or value (the deserializer itself
//! reports some of them at the start of the enclosing node) with a plain message. Loading never
//! judges the flow's logic: that is `check`. The only I/O is `load_file` reading its file.

use std::path::{Path, PathBuf};

use crate::flow::diagnostic::{Diagnostic, did_you_mean};
use crate::flow::model::Flow;
use crate::flow::positions::{LineCol, Positions, Seg};

/// A flow together with the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFlow {
    /// The file as given (used in every diagnostic about this flow).
    pub path: PathBuf,
    /// The file's text, for positions and for showing the offending line.
    pub source: String,
    /// The parsed flow.
    pub flow: Flow,
}

/// The YAML options every flow is read with: strict booleans, so `yes`/`no` stay strings.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

/// Parses `source` as a flow; `path` only labels the diagnostics.
pub fn load_str(
    path: impl Into<PathBuf>,
    source: impl Into<String>,
) -> Result<SourceFlow, Vec<Diagnostic>> {
    let path = path.into();
    let source = source.into();
    match serde_saphyr::from_str_with_options::<Flow>(&source, yaml_options()) {
        Ok(flow) => Ok(SourceFlow { path, source, flow }),
        Err(error) => Err(vec![diagnose(&path, &source, &error)]),
    }
}

/// Reads and parses one flow file.
pub fn load_file(path: impl AsRef<Path>) -> Result<SourceFlow, Vec<Diagnostic>> {
    let path = path.as_ref();
    match std::fs::read_to_string(path) {
        Ok(source) => load_str(path, source),
        Err(e) => Err(vec![Diagnostic::error(
            path,
            (0, 0),
            "unreadable",
            format!("cannot read the file: {e}"),
        )]),
    }
}

/// Turns a deserializer error into a diagnostic at the offending key or value.
fn diagnose(path: &Path, source: &str, error: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::Error as E;

    let positions = Positions::parse(source);
    let reported: LineCol = error
        .location()
        .map(|l| (to_usize(l.line()), to_usize(l.column())))
        .filter(|(line, _)| *line > 0)
        .unwrap_or((1, 1));
    let mut inner = error.without_snippet();
    while let E::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    // What the deserializer points at (errors inside a node are reported at its start or at
    // its first key), and the collection around it, where the culprit is searched for.
    let pointed: Vec<Seg> = positions
        .path_at(reported)
        .map(<[Seg]>::to_vec)
        .unwrap_or_default();
    let around = positions.container_of(&pointed);
    let find_scalar = |value: &str| -> Option<(Vec<Seg>, LineCol)> {
        if positions.scalar(&pointed) == Some(value) && positions.value(&pointed) == reported {
            return Some((pointed.clone(), reported));
        }
        positions
            .find_scalar(&around, value)
            .map(|(p, at)| (p.to_vec(), at))
    };
    let error_at = |code, at, message: String| Diagnostic::error(path, at, code, message);

    match inner {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            unknown_field(path, &positions, &around, reported, field, expected)
        }
        E::Message { msg, .. } if msg.starts_with("unknown field `") => {
            let field = msg["unknown field `".len()..]
                .split('`')
                .next()
                .unwrap_or_default();
            unknown_field(path, &positions, &around, reported, field, Vec::new())
        }
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let (found, at) = find_scalar(variant).unwrap_or((pointed.clone(), reported));
            let hint = did_you_mean(variant, expected.iter().copied());
            let parent = &found[..found.len().saturating_sub(1)];
            let what = match found.last() {
                Some(Seg::Key(k)) if k == "type" => "node type".to_string(),
                Some(Seg::Key(k)) if k == "answer" => "answer type".to_string(),
                Some(Seg::Key(k)) => format!("value for `{k}`"),
                _ => "value".to_string(),
            };
            error_at(
                "unknown-value",
                at,
                format!(
                    "unknown {what} `{variant}` {}; expected one of {}{hint}",
                    describe(&positions, parent),
                    expected.join(", ")
                ),
            )
        }
        E::SerdeMissingField { field, .. } => {
            let (container, at) = missing_field_owner(&positions, &around, field)
                .unwrap_or_else(|| (around.clone(), reported));
            error_at(
                "missing-field",
                at,
                format!(
                    "missing field `{field}` {}",
                    describe(&positions, &container)
                ),
            )
        }
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | E::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => {
            let (found, at) = quoted_value(unexpected)
                .and_then(find_scalar)
                .unwrap_or((pointed.clone(), reported));
            let hint = if expected.contains("boolean") {
                " (yes, no, on and off are texts here, not booleans)"
            } else {
                ""
            };
            error_at(
                "wrong-type",
                at,
                format!(
                    "expected {}, found {unexpected} {}{hint}",
                    human_type(expected),
                    describe_value(&positions, &found)
                ),
            )
        }
        E::InvalidBooleanStrict { .. } => error_at(
            "wrong-type",
            reported,
            format!(
                "expected true or false {} (yes, no, on and off are texts here, not booleans)",
                describe_value(&positions, &pointed)
            ),
        ),
        E::InvalidScalar { ty, .. } => error_at(
            "wrong-type",
            reported,
            format!(
                "expected {} {}",
                human_type(ty),
                describe_value(&positions, &pointed)
            ),
        ),
        E::DuplicateMappingKey { key, .. } => {
            let name = key.clone().unwrap_or_else(|| "this key".to_string());
            let container = positions.container_of(&pointed[..pointed.len().saturating_sub(1)]);
            let message = match container.as_slice() {
                [Seg::Key(nodes)] if nodes == "nodes" => {
                    format!("node `{name}` is defined twice; give each node its own name")
                }
                _ => format!(
                    "`{name}` is written twice {}; keep one",
                    describe(&positions, &container)
                ),
            };
            error_at("duplicate-key", reported, message)
        }
        E::Message { msg, .. } => error_at(
            "invalid-value",
            reported,
            format!("{msg} {}", describe_value(&positions, &pointed)),
        ),
        E::Eof { .. } => error_at(
            "yaml-syntax",
            reported,
            "the file ends where more was expected (is it empty or cut short?)".to_string(),
        ),
        E::MultipleDocuments { .. } => error_at(
            "yaml-syntax",
            reported,
            "the file holds more than one YAML document (`---`); put one flow per file".to_string(),
        ),
        other => error_at(
            "yaml-syntax",
            reported,
            with_yaml_hint(&strip_location(&other.to_string())),
        ),
    }
}

/// The option or rule of a node that lacks `field`, when the node itself does not take it
/// (the deserializer reports a missing field inside a node at the node's start).
fn missing_field_owner(
    positions: &Positions,
    node: &[Seg],
    field: &str,
) -> Option<(Vec<Seg>, LineCol)> {
    if node.len() != 2 || node.first() != Some(&Seg::from("nodes")) {
        return None;
    }
    if node_fields(positions, node).iter().any(|f| f == field) {
        return None;
    }
    for (list, fields) in [
        ("options", &["next", "label", "language"][..]),
        ("rules", &["when", "next"][..]),
    ] {
        if !fields.contains(&field) {
            continue;
        }
        for i in 0.. {
            let item = [node, &[Seg::from(list), Seg::Index(i)]].concat();
            if !positions.exists(&item) {
                break;
            }
            let with_field = [item.as_slice(), &[Seg::from(field)]].concat();
            if !positions.exists(&with_field) {
                let at = positions.value(&item);
                return Some((item, at));
            }
        }
    }
    None
}

/// `unknown field `x` in option 2 of menu `ask`; expected one of ...`, at the key itself.
fn unknown_field(
    path: &Path,
    positions: &Positions,
    around: &[Seg],
    reported: LineCol,
    field: &str,
    expected: Vec<String>,
) -> Diagnostic {
    let (found, at) = match positions.find_key(around, field) {
        Some((p, at)) => (p.to_vec(), at),
        None => ([around, &[Seg::Key(field.to_string())]].concat(), reported),
    };
    let parent = &found[..found.len().saturating_sub(1)];
    let expected = if expected.is_empty() {
        node_fields(positions, parent)
    } else {
        expected
    };
    let list = if expected.is_empty() {
        String::new()
    } else {
        format!("; expected one of {}", expected.join(", "))
    };
    let mut hint = did_you_mean(field, expected.iter().map(String::as_str));
    if hint.is_empty() && field.chars().any(|c| c == ' ' || c.is_uppercase()) {
        hint = " (if this is the end of a text, a comma inside `{...}` cut it: put the text in quotes)"
            .to_string();
    }
    Diagnostic::error(
        path,
        at,
        "unknown-field",
        format!(
            "unknown field `{field}` {}{list}{hint}",
            describe(positions, parent)
        ),
    )
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The value inside serde's description of an unexpected value: `string "yes"` -> `yes`.
fn quoted_value(unexpected: &str) -> Option<&str> {
    for (open, close) in [('"', '"'), ('`', '`')] {
        if let Some(start) = unexpected.find(open) {
            let rest = &unexpected[start + 1..];
            if let Some(end) = rest.rfind(close) {
                return Some(&rest[..end]);
            }
        }
    }
    None
}

fn human_type(ty: &str) -> &str {
    match ty {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" | "u64" | "usize" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" | "a boolean" => "true or false",
        "char" => "a single character",
        "a string" => "a text",
        other => other,
    }
}

/// The parser's message, followed by what usually causes it in a hand-written flow.
fn with_yaml_hint(message: &str) -> String {
    let lower = message.to_lowercase();
    let hint = if lower.contains("mapping values are not allowed") {
        "a `: ` inside a text starts a new field; put the whole text in quotes"
    } else if lower.contains("tab") {
        "indent with spaces, not tabs"
    } else if lower.contains("quoted scalar") || lower.contains("unclosed quote") {
        "a quote is not closed, or the lines after it are not indented"
    } else if lower.contains("flow sequence")
        || lower.contains("flow mapping")
        || lower.contains("',' or ']'")
        || lower.contains("',' or '}'")
        || lower.contains("illegal placement")
    {
        "a `[` or `{` is not closed, or a text inside it holds a comma or colon (quote it)"
    } else if lower.contains("indent") || lower.contains("expected key") {
        "check the indentation: the fields of one node or option must line up"
    } else {
        return message.to_string();
    };
    format!("{message}: {hint}")
}

/// The deserializer's message without its trailing ` at line L, column C`.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Where a value is, for messages: "for `next` in message `welcome`".
fn describe_value(positions: &Positions, path: &[Seg]) -> String {
    match path.last() {
        Some(Seg::Key(k)) if path.len() > 2 || path.first() != Some(&Seg::from("nodes")) => {
            format!("for `{k}` {}", describe(positions, &path[..path.len() - 1]))
        }
        _ => describe(positions, path),
    }
}

/// Where a mapping is, in words a campaign manager knows: "in option 2 of menu `ask`".
pub(crate) fn describe(positions: &Positions, path: &[Seg]) -> String {
    let node_kind = |id: &str| {
        positions
            .scalar(&[Seg::from("nodes"), Seg::from(id), Seg::from("type")])
            .map(|kind| match kind {
                "language" => "language choice".to_string(),
                "end" => "end node".to_string(),
                other => other.replace('_', " "),
            })
            .unwrap_or_else(|| "node".to_string())
    };
    match path {
        [] => "at the top level of the flow".to_string(),
        [Seg::Key(k)] if k == "nodes" => "in `nodes`".to_string(),
        [Seg::Key(k)] => format!("in `{k}`"),
        [Seg::Key(n), Seg::Key(id)] if n == "nodes" => format!("in {} `{id}`", node_kind(id)),
        [Seg::Key(n), Seg::Key(id), Seg::Key(o), Seg::Index(i)]
            if n == "nodes" && o == "options" =>
        {
            format!("in option {} of {} `{id}`", i + 1, node_kind(id))
        }
        [Seg::Key(n), Seg::Key(id), Seg::Key(r), Seg::Index(i)] if n == "nodes" && r == "rules" => {
            format!("in rule {} of {} `{id}`", i + 1, node_kind(id))
        }
        [
            Seg::Key(n),
            Seg::Key(id),
            Seg::Key(r),
            Seg::Index(i),
            Seg::Key(w),
        ] if n == "nodes" && r == "rules" && w == "when" => {
            format!(
                "in the condition of rule {} of {} `{id}`",
                i + 1,
                node_kind(id)
            )
        }
        [Seg::Key(n), Seg::Key(id), rest @ ..] if n == "nodes" => {
            format!("in `{}` of {} `{id}`", dotted(rest), node_kind(id))
        }
        _ => format!("in `{}`", dotted(path)),
    }
}

/// `options[2].label` style path text.
fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The fields a node of the kind written at `node_path` accepts, from the flow's JSON Schema
/// (so the list never drifts from the model). Empty when the path is not a node.
fn node_fields(positions: &Positions, node_path: &[Seg]) -> Vec<String> {
    let [Seg::Key(n), Seg::Key(id)] = node_path else {
        return Vec::new();
    };
    if n != "nodes" {
        return Vec::new();
    }
    let Some(kind) = positions.scalar(&[Seg::from("nodes"), Seg::from(id), Seg::from("type")])
    else {
        return Vec::new();
    };
    let schema = schemars::schema_for!(Flow);
    let value = schema.as_value();
    let variants = value
        .pointer("/$defs/Node/oneOf")
        .and_then(serde_json::Value::as_array);
    for variant in variants.into_iter().flatten() {
        let tag = variant.pointer("/properties/type/const").or_else(|| {
            variant
                .pointer("/properties/type/enum/0")
                .filter(|_| variant.pointer("/properties/type/enum/1").is_none())
        });
        if tag.and_then(serde_json::Value::as_str) != Some(kind) {
            continue;
        }
        let Some(props) = variant
            .pointer("/properties")
            .and_then(serde_json::Value::as_object)
        else {
            continue;
        };
        // `type` first, then the rest in the schema's order.
        let mut fields: Vec<String> = vec!["type".to_string()];
        fields.extend(props.keys().filter(|k| *k != "type").cloned());
        return fields;
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_error(source: &str) -> Diagnostic {
        match load_str("f.yaml", source) {
            Ok(_) => panic!("expected an error"),
            Err(mut d) => d.remove(0),
        }
    }

    const BASE: &str = "\
id: demo
version: 1
name: Demo
languages: [en]
default_language: en
start: ask
nodes:
  ask:
    type: menu
    text: Pick
    result: pick
    options:
      - {label: One, next: bye}
      - label: Two
        next: bye
  bye:
    type: end
    text: Bye
";

    #[test]
    fn a_valid_flow_loads() {
        let loaded = load_str("f.yaml", BASE).expect("loads");
        assert_eq!(loaded.flow.nodes.len(), 2);
    }

    #[test]
    fn unknown_field_in_a_buffered_node_points_at_the_key() {
        let d = first_error(&BASE.replace("      - label: Two", "      - lable: Two"));
        assert_eq!((d.line, d.column, d.code), (14, 9, "unknown-field"));
        assert!(
            d.message.contains("in option 2 of menu `ask`"),
            "{}",
            d.message
        );
        assert!(d.message.contains("did you mean `label`?"), "{}", d.message);
    }

    #[test]
    fn unknown_field_of_a_node_lists_its_fields() {
        let d =
            first_error(&BASE.replace("    result: pick\n", "    result: pick\n    colour: red\n"));
        assert_eq!((d.line, d.column, d.code), (12, 5, "unknown-field"));
        assert!(
            d.message.contains("expected one of type, "),
            "{}",
            d.message
        );
        assert!(d.message.contains("options"), "{}", d.message);
    }

    #[test]
    fn yes_is_not_a_boolean() {
        let d = first_error(
            &BASE.replace("    result: pick\n", "    result: pick\n    retries: yes\n"),
        );
        assert_eq!(d.code, "wrong-type");
        assert_eq!((d.line, d.column), (12, 14));
    }

    #[test]
    fn unknown_node_type_suggests_the_right_one() {
        let d = first_error(&BASE.replace("type: end", "type: ned"));
        assert_eq!((d.line, d.column, d.code), (17, 11, "unknown-value"));
        assert!(d.message.contains("did you mean `end`?"), "{}", d.message);
    }

    #[test]
    fn a_missing_field_of_an_option_points_at_the_option() {
        let d =
            first_error(&BASE.replace("      - {label: One, next: bye}", "      - {label: One}"));
        assert_eq!((d.line, d.column, d.code), (13, 9, "missing-field"));
        assert!(
            d.message.contains("in option 1 of menu `ask`"),
            "{}",
            d.message
        );
    }

    #[test]
    fn wrong_types_are_named_in_plain_words() {
        let d = first_error(&BASE.replace("version: 1", "version: -1"));
        assert_eq!((d.line, d.column, d.code), (2, 10, "wrong-type"));
        assert!(
            d.message.contains("a whole number (0 or more)"),
            "{}",
            d.message
        );
    }
}
