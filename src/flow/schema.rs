//! The JSON Schema of the flow format, generated from the Rust types in `model`.
//!
//! Committed as `flows/schema.json` so editors validate and autocomplete flows; a test checks
//! the committed file is current (`baraza schema > flows/schema.json` refreshes it).

use crate::flow::model::Flow;

/// The schema as pretty-printed JSON, ending with a newline.
pub fn generate() -> String {
    let mut schema = schemars::schema_for!(Flow);
    schema.insert(
        "title".into(),
        serde_json::Value::String("Baraza flow".into()),
    );
    let mut out = serde_json::to_string_pretty(&schema).unwrap_or_default();
    out.push('\n');
    out
}
