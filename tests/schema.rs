//! `flows/schema.json` is generated from the Rust types and must be current.

#[test]
fn committed_schema_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = baraza::flow::schema::generate();
    assert!(
        committed == generated,
        "flows/schema.json is stale: run `cargo run -- schema > flows/schema.json`"
    );
}

#[test]
fn schema_describes_every_node_kind() {
    let schema: serde_json::Value =
        serde_json::from_str(&baraza::flow::schema::generate()).expect("schema is JSON");
    let text = schema.to_string();
    for kind in ["message", "menu", "question", "branch", "language", "end"] {
        assert!(
            text.contains(&format!("\"{kind}\"")),
            "schema lacks node kind {kind}"
        );
    }
    assert_eq!(schema["title"], "Baraza flow");
    assert!(
        schema["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|v| v == "nodes"))
    );
}
