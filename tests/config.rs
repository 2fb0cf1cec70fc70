//! The example gateway configs are valid and mean what their comments say; bad configs get a
//! clear error naming the file and the field.

use baraza::config::{Config, ResultsConfig, SessionsConfig};

fn example(name: &str) -> Config {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("gateway-config")
        .join(name);
    Config::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn dev_config_is_the_embedded_defaults_written_out() {
    let dev = example("dev.yaml");
    let embedded = Config::embedded();
    assert!(matches!(dev.sessions, SessionsConfig::Memory));
    assert!(matches!(dev.results, ResultsConfig::Sqlite { .. }));
    assert_eq!(dev.listen, embedded.listen);
    let codes = |c: &Config| {
        c.ussd
            .service_codes
            .iter()
            .map(|s| (s.code.clone(), s.flow.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(codes(&dev), codes(&embedded));
    assert!(dev.flows_dir.ends_with("flows"));
    assert_eq!(dev.flow_for_code("*384*12*3#"), Some("grievance"));
    assert_eq!(dev.flow_for_code("384*12"), Some("community_needs"));
}

#[test]
fn production_config_uses_redis_and_postgres_from_the_environment() {
    let production = example("production.yaml");
    match &production.sessions {
        SessionsConfig::Redis {
            url, key_prefix, ..
        } => {
            assert!(url.is_none(), "the URL comes from BARAZA_REDIS_URL");
            assert_eq!(key_prefix, "baraza");
        }
        other => panic!("production sessions should be redis: {other:?}"),
    }
    assert!(matches!(production.results, ResultsConfig::Postgres { .. }));
    assert_eq!(production.voice.numbers.len(), 1);
}

#[test]
fn a_bad_config_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:8080\nsessions:\n  store: redis\n  urll: redis://x\n",
    )
    .expect("write");
    let error = Config::from_file(&path)
        .expect_err("unknown field")
        .to_string();
    assert!(
        error.contains("gateway.yaml") && error.contains("urll"),
        "{error}"
    );
    let missing = Config::from_file(&dir.path().join("nope.yaml"))
        .expect_err("missing")
        .to_string();
    assert!(missing.contains("nope.yaml"), "{missing}");
}
