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
    let routes = baraza::routing::Routes::from_config(&dev);
    assert_eq!(routes.flow_for_code("*384*12*3#"), Some("grievance"));
    assert_eq!(routes.flow_for_code("384*12"), Some("community_needs"));
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
fn production_config_refuses_to_start_without_callback_and_admin_secrets() {
    use baraza::server::auth::{Guard, check_exposure};
    let mut production = example("production.yaml");
    assert!(production.callbacks.required);
    let guard = Guard::from_config(&production).expect("rules parse");
    let error = check_exposure(&production, &guard, production.listen).expect_err("refused");
    assert!(error.contains("admin token"), "{error}");
    production.admin.token = Some("an-admin-token".into());
    let guard = Guard::from_config(&production).expect("rules parse");
    let error = check_exposure(&production, &guard, production.listen).expect_err("refused");
    assert!(error.contains("africastalking, hubtel, twilio"), "{error}");
    // What the environment gives in production (as `apply_env` reads it).
    production.callbacks.africastalking.token = Some("at".into());
    production.callbacks.hubtel.token = Some("hb".into());
    production.callbacks.twilio.auth_token = Some("tw".into());
    let guard = Guard::from_config(&production).expect("rules parse");
    assert_eq!(
        check_exposure(&production, &guard, production.listen),
        Ok(())
    );
}

#[test]
fn no_secret_shows_in_debug_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "sessions:\n  store: redis\n  url: redis://:redis-pw-1@cache:6379\n\
         results:\n  store: postgres\n  url: postgres://baraza:pg-pw-2@db/baraza\n\
         admin:\n  token: admin-token-3\n\
         pseudonym_secret: pseudonym-secret-4-long-enough\n\
         callbacks:\n  hubtel:\n    token: hubtel-token-5\n  twilio:\n    auth_token: twilio-6\n\
         voice:\n  outbound:\n    provider:\n      africastalking: { username: u, api_key: at-key-7, from: \"+254\" }\n\
         smpp:\n  operators:\n    - { name: op, host: h, system_id: s, password: smpp-pw-8 }\n",
    )
    .expect("write");
    let config = Config::from_file(&path).expect("valid");
    let printed = format!("{config:?} {:?}", config.smpp.operators[0].bind_config());
    for secret in [
        "redis-pw-1",
        "pg-pw-2",
        "admin-token-3",
        "pseudonym-secret-4",
        "hubtel-token-5",
        "twilio-6",
        "at-key-7",
        "smpp-pw-8",
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert_eq!(
        baraza::config::redacted_url("postgres://baraza:pg-pw-2@db/baraza?sslmode=require"),
        "postgres://baraza:***@db/baraza?sslmode=require"
    );
    assert_eq!(
        baraza::config::redacted_url("redis://cache:6379"),
        "redis://cache:6379"
    );
}

#[test]
fn the_pseudonym_secret_is_long_enough_and_its_key_file_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::embedded();
    config.results = ResultsConfig::Sqlite {
        path: dir.path().join("data/results.sqlite3"),
    };
    config.pseudonym_secret = Some("fifteen-bytes!!".into());
    let error = config.pseudonym_key().expect_err("too short").to_string();
    assert!(error.contains("at least 16 bytes"), "{error}");
    config.pseudonym_secret = Some("sixteen-bytes!!!".into());
    assert_eq!(
        config.pseudonym_key().expect("long enough"),
        b"sixteen-bytes!!!"
    );

    // Without a secret, a random key is made once, readable by the owner only, and kept.
    config.pseudonym_secret = None;
    let made = config.pseudonym_key().expect("made");
    assert_eq!(made.len(), 32);
    let file = dir.path().join("data/pseudonym.key");
    let mode = std::fs::metadata(&file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert_eq!(config.pseudonym_key().expect("read back"), made);
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

#[test]
fn production_operator_shows_the_submit_profile_keys() {
    use baraza::smpp::profile::{Concatenation, TonNpi};
    let production = example("production.yaml");
    let operator = &production.smpp.operators[0];
    assert_eq!(operator.concatenation, Concatenation::Udh8);
    assert_eq!(
        operator.validity,
        Some(std::time::Duration::from_secs(86_400))
    );
    assert_eq!(
        operator.source_ton_npi.short_code,
        TonNpi { ton: 3, npi: 0 }
    );
    assert_eq!(operator.submit_retry.attempts, 4);
    let bind = operator.bind_config();
    assert_eq!(bind.temporary_errors.statuses().len(), 5);
}

fn operator_yaml(extra: &str) -> Result<baraza::config::OperatorConfig, String> {
    serde_saphyr::from_str(&format!(
        "name: op\nhost: 127.0.0.1\nsystem_id: baraza\n{extra}"
    ))
    .map_err(|e| e.to_string())
}

#[test]
fn operator_submit_profile_from_yaml() {
    use baraza::encoding::gsm7::GsmCoding;
    use baraza::smpp::CommandStatus;
    use baraza::smpp::profile::{Concatenation, StatusClass, TonNpi};
    let operator = operator_yaml(
        "gsm_data_coding: 1\nconcatenation: sar\nvalidity_seconds: 3600\n\
         temporary_errors: [ESME_RSYSERR, RX_T_APPN, 0x45, \"0x400\", 101]\n\
         submit_retry: { attempts: 2, first_delay_ms: 5, ceiling_ms: 50 }\n\
         dest_ton_npi: { other: { ton: 1, npi: 1 } }\n",
    )
    .expect("parses");
    assert_eq!(operator.gsm_data_coding, GsmCoding::One);
    assert_eq!(operator.concatenation, Concatenation::Sar);
    let bind = operator.bind_config();
    assert_eq!(bind.gsm_coding, GsmCoding::One);
    assert_eq!(bind.validity, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(
        bind.temporary_errors.statuses(),
        &[
            CommandStatus::ESME_RSYSERR,
            CommandStatus::ESME_RX_T_APPN,
            CommandStatus::ESME_RSUBMITFAIL,
            CommandStatus(0x400),
            CommandStatus::ESME_RX_P_APPN,
        ]
    );
    assert_eq!(
        bind.temporary_errors.classify(CommandStatus(0x400)),
        StatusClass::Temporary
    );
    assert_eq!(bind.submit_retry.attempts, 2);
    assert_eq!(bind.dest_addresses.other, TonNpi { ton: 1, npi: 1 });
    assert_eq!(bind.dest_addresses.short_code, TonNpi { ton: 3, npi: 0 });
    // Defaults: 24 h validity, the default temporary list, UDH 8-bit, data_coding 0.
    let plain = operator_yaml("").expect("parses").bind_config();
    assert_eq!(plain.validity, Some(std::time::Duration::from_secs(86_400)));
    assert_eq!(plain.concatenation, Concatenation::Udh8);
    assert_eq!(plain.gsm_coding, GsmCoding::Zero);
    assert_eq!(
        plain.temporary_errors.classify(CommandStatus::ESME_RSYSERR),
        StatusClass::Temporary
    );
    assert_eq!(
        operator_yaml("validity_seconds: 0")
            .expect("parses")
            .validity,
        None
    );
}

#[test]
fn a_bad_submit_profile_is_a_clear_error() {
    for (yaml, says) in [
        ("gsm_data_coding: 3", "must be 0 (SMSC default) or 1"),
        (
            "temporary_errors: [ESME_NOSUCH]",
            "is not an SMPP command_status",
        ),
        (
            "validity_seconds: 9000000",
            "longer than an SMPP relative time",
        ),
        ("concatenation: udh7", "udh7"),
        ("submit_retry: { attempts: 0 }", "at least 1"),
        (
            "submit_retry: { first_delay_ms: 500, ceiling_ms: 100 }",
            "shorter than first_delay_ms",
        ),
    ] {
        let error = operator_yaml(yaml).expect_err(yaml);
        assert!(error.contains(says), "{yaml}: {error}");
    }
}
