//! TLS to the stores, against private servers that speak only TLS (tests/common/servers.rs):
//! a `redis-server` with `--port 0 --tls-port`, and a PostgreSQL cluster whose `pg_hba.conf`
//! has `hostssl` lines only, so a connection that works there was encrypted. Certificates are
//! made here (a test CA, and a second CA that must not be trusted).
//!
//! What is checked: sessions work over `rediss://` with the configured CA and are refused
//! with any other CA or none (a private CA is not a Mozilla root) or a certificate for another
//! name; a plain `redis://` URL to the TLS port fails at once; the result store commits and
//! reads over TLS for each `sslmode`, `verify-full` checks the host's name and `verify-ca` does
//! not, a wrong CA fails verification with rustls's reason, `sslmode=disable` is refused by the
//! server; mutual TLS (a client certificate) with both servers; a gateway built from config
//! uses both stores over TLS; bad TLS files are start errors naming the file.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use baraza::config::{ResultsConfig, SessionsConfig, TlsFiles};
use baraza::result_store::{AnswerRecord, ResponseStart, ResultStore, ResultStoreError, Write};
use baraza::session_store::{RedisSessions, SaveOutcome, SessionKey, SessionStore, Stored};
use baraza::tls::{TlsError, TlsMaterial};
use common::Stores;
use common::servers::{IssuedCertificate, PrivatePostgres, PrivateRedis, TestCa};

const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// The server certificate names both ways a test reaches the server.
const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// Trusting `certificate`'s CA and presenting `certificate` (mutual TLS).
fn presenting(certificate: &IssuedCertificate) -> TlsMaterial {
    TlsMaterial::load(&TlsFiles {
        ca_file: Some(certificate.ca_file.clone()),
        client_cert_file: Some(certificate.cert_file.clone()),
        client_key_file: Some(certificate.key_file.clone()),
    })
    .expect("the client certificate loads")
}

fn trusting(ca_file: &Path) -> TlsMaterial {
    TlsMaterial::load(&TlsFiles {
        ca_file: Some(ca_file.to_path_buf()),
        ..TlsFiles::default()
    })
    .expect("the CA file loads")
}

/// A CA file of a CA that signed nothing the servers use.
fn stranger_ca(dir: &Path) -> PathBuf {
    TestCa::new("baraza test: a stranger").write_ca(&dir.join("stranger-ca.crt"))
}

// ---------------------------------------------------------------------------------------------
// Redis

async fn connect_redis(url: &str, tls: &TlsMaterial) -> Result<RedisSessions, String> {
    RedisSessions::connect_with_tls(url, "tls", RESPONSE_TIMEOUT, tls)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_rediss_trust_the_configured_ca_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("baraza test redis CA");
    let certificate = ca.server_certificate(dir.path(), "redis", SERVER_NAMES);
    let mut redis = PrivateRedis::start_tls(&certificate);

    let sessions = connect_redis(&redis.url(), &trusting(&certificate.ca_file))
        .await
        .expect("rediss:// with the right CA connects");
    let store = SessionStore::Redis(sessions);
    let key = SessionKey::new("africastalking", "tls-1");
    assert_eq!(
        store
            .save(&key, None, b"over tls", Duration::from_secs(60))
            .await
            .expect("save over TLS"),
        SaveOutcome::Saved { version: 1 }
    );
    assert_eq!(
        store.load(&key).await.expect("load over TLS"),
        Some(Stored {
            version: 1,
            data: b"over tls".to_vec()
        })
    );

    // A reconnection (the shared connection lost with the server) is TLS too.
    redis.restart();
    let key = SessionKey::new("africastalking", "tls-2");
    let mut saved = Err("no attempt".to_string());
    for _ in 0..20 {
        saved = store
            .save(&key, None, b"after restart", Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string());
        if saved.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(saved, Ok(SaveOutcome::Saved { version: 1 }));

    // The name is checked too: `localhost` is in the certificate, another name is not.
    let by_name = redis.url().replace("127.0.0.1", "localhost");
    connect_redis(&by_name, &trusting(&certificate.ca_file))
        .await
        .expect("rediss://localhost with the right CA connects");

    // Mutual TLS: a server that wants a client certificate from its CA.
    let mutual = PrivateRedis::start_mutual_tls(&certificate);
    let client = ca.client_certificate(dir.path(), "redis-client", "baraza");
    connect_redis(&mutual.url(), &presenting(&client))
        .await
        .expect("a client certificate from the server's CA is accepted");

    let elsewhere = TestCa::new("baraza test redis CA 2").server_certificate(
        dir.path(),
        "elsewhere",
        &["db.example.org"],
    );
    let misnamed = PrivateRedis::start_tls(&elsewhere);
    let ours = trusting(&certificate.ca_file);
    let stranger = trusting(&stranger_ca(dir.path()));
    let elsewhere_ca = trusting(&elsewhere.ca_file);
    let none = TlsMaterial::default();
    let plain = format!("redis://127.0.0.1:{}", redis.port());
    let refusals = [
        (redis.url(), &stranger, "UnknownIssuer"),
        // A private CA is not among the Mozilla roots.
        (redis.url(), &none, "UnknownIssuer"),
        // A certificate for another name, although its CA is trusted.
        (misnamed.url(), &elsewhere_ca, "not valid for name"),
        // No client certificate where the server wants one.
        (mutual.url(), &ours, "client_cert_file"),
        // Plain to the TLS port: the connection's own error (not a timeout).
        (plain.clone(), &none, "redis: "),
        // A CA file with a plain URL is a configuration mistake.
        (
            plain.clone(),
            &ours,
            "certificates are configured (store_tls.redis) but the URL is not rediss://",
        ),
    ];
    // Together: each refusal first spends the connection manager's few retries.
    let outcomes = futures_util::future::join_all(
        refusals.iter().map(|(url, tls, _)| connect_redis(url, tls)),
    )
    .await;
    for ((url, _, expected), outcome) in refusals.iter().zip(outcomes) {
        match outcome {
            Ok(_) => panic!("{url} should have been refused"),
            Err(e) => assert!(e.contains(expected), "{url}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

fn start(id: &str, at: i64) -> Write {
    Write::Start(ResponseStart {
        response_id: id.to_string(),
        flow_id: "tls_flow".to_string(),
        flow_version: 1,
        channel: "ussd".to_string(),
        provider: "africastalking".to_string(),
        subscriber: "+254700000001".to_string(),
        language: "en".to_string(),
        started_at_ms: at,
    })
}

fn answer(id: &str, value: &str, at: i64) -> Write {
    Write::Answer(AnswerRecord {
        response_id: id.to_string(),
        result: "village".to_string(),
        value: value.to_string(),
        label: None,
        node: "ask_village".to_string(),
        step: 1,
        answered_at_ms: at,
    })
}

async fn open(url: &str, tls: &TlsMaterial) -> Result<ResultStore, ResultStoreError> {
    ResultStore::open_postgres_with_tls(url, Some("tls"), tls).await
}

/// Opens the store at `url`, commits one response with an answer and reads it back.
async fn round_trip(pg: &PrivatePostgres, url: &str, tls: &TlsMaterial, id: &str) {
    let store = match open(url, tls).await {
        Ok(store) => store,
        Err(e) => panic!("{url}: {e}\nserver log:\n{}", pg.log()),
    };
    store
        .commit(vec![start(id, 1_000), answer(id, "Kisumu", 2_000)])
        .await
        .expect("commit over TLS");
    let rows = store.responses("tls_flow").await.expect("read over TLS");
    let row = rows
        .iter()
        .find(|r| r.response_id == id)
        .expect("the committed response is read back");
    assert_eq!(
        row.answers.get("village").map(|(value, _)| value.as_str()),
        Some("Kisumu")
    );
    store.flush_and_close().await.expect("close");
}

/// Opening the store at `url` fails, with `expected` in the message.
async fn refused(url: &str, tls: &TlsMaterial, expected: &str) {
    match open(url, tls).await {
        Ok(_) => panic!("{url} should have been refused"),
        Err(e) => assert!(e.to_string().contains(expected), "{url}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_tls_follow_sslmode_and_the_configured_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("baraza test postgres CA");
    let certificate = ca.server_certificate(dir.path(), "postgres", SERVER_NAMES);
    let pg = PrivatePostgres::start_tls_only(&certificate);
    let ours = trusting(&certificate.ca_file);
    let stranger = trusting(&stranger_ca(dir.path()));
    let none = TlsMaterial::default();
    let local = |query: &str| pg.url("127.0.0.1", query);
    // Reached at 127.0.0.1 under a name the certificate does not carry.
    let misnamed = |query: &str| pg.url("db.example.org", query);

    // The server accepts TLS only, so each of these was encrypted.
    round_trip(&pg, &local("sslmode=verify-full"), &ours, "r-verify-full").await;
    round_trip(&pg, &local("sslmode=verify-ca"), &ours, "r-verify-ca").await;
    round_trip(&pg, &misnamed("sslmode=verify-ca"), &ours, "r-ca-no-name").await;
    round_trip(&pg, &local("sslmode=require"), &none, "r-require").await;
    round_trip(&pg, &local(""), &none, "r-prefer-default").await;
    // Mutual TLS: `template1` wants a client certificate naming the user.
    let client = ca.client_certificate(dir.path(), "pg-client", "postgres");
    let mutual = pg.url_of("template1", "127.0.0.1", "sslmode=verify-full");
    round_trip(&pg, &mutual, &presenting(&client), "r-mutual").await;

    let refusals = [
        (
            misnamed("sslmode=verify-full"),
            &ours,
            "not valid for name \"db.example.org\"",
        ),
        (local("sslmode=verify-full"), &stranger, "UnknownIssuer"),
        // With a CA file, `require` checks the chain (libpq's rule).
        (local("sslmode=require"), &stranger, "UnknownIssuer"),
        // Without a CA file, the Mozilla roots: a private CA is not one of them.
        (local("sslmode=verify-ca"), &none, "UnknownIssuer"),
        // The server itself refuses a plain connection.
        (
            local("sslmode=disable"),
            &none,
            "no encryption (SQLSTATE 28000)",
        ),
        // Certificates that would do nothing are a configuration mistake.
        (local("sslmode=disable"), &ours, "store_tls.postgres"),
        (
            local("sslmode=allow"),
            &none,
            "sslmode=allow is not supported",
        ),
        // No client certificate where the server wants one.
        (mutual.clone(), &ours, "requires a valid client certificate"),
    ];
    for (url, tls, expected) in refusals {
        refused(&url, tls, expected).await;
    }
}

/// `baraza serve`'s own path: the gateway built from config, both stores over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_from_config_uses_tls_to_both_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("baraza test stores CA");
    let redis_certificate = ca.server_certificate(dir.path(), "redis", SERVER_NAMES);
    let pg_certificate = ca.server_certificate(dir.path(), "postgres", SERVER_NAMES);
    let redis = PrivateRedis::start_tls(&redis_certificate);
    let pg = PrivatePostgres::start_tls_only(&pg_certificate);
    let ca_file = |c: &IssuedCertificate| TlsFiles {
        ca_file: Some(c.ca_file.clone()),
        ..TlsFiles::default()
    };
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.sessions = SessionsConfig::Redis {
            url: Some(redis.url().into()),
            key_prefix: "tls-gw".into(),
            response_timeout_ms: 1_000,
            node_cache_entries: 0,
        };
        c.results = ResultsConfig::Postgres {
            url: Some(pg.url("localhost", "sslmode=verify-full").into()),
            schema: Some("gateway".into()),
        };
        c.store_tls.redis = ca_file(&redis_certificate);
        c.store_tls.postgres = ca_file(&pg_certificate);
    })
    .await;
    let phone = "+254700900077";
    assert!(
        gw.at("tls-1", phone, "*999#", "")
            .await
            .starts_with("CON Choose language")
    );
    assert!(
        gw.at("tls-1", phone, "*999#", "1")
            .await
            .starts_with("CON Which village")
    );
    assert!(
        gw.at("tls-1", phone, "*999#", "1*Kisumu")
            .await
            .starts_with("CON ")
    );
    let rows = gw.responses("e2e_survey").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]
            .answers
            .get("village")
            .map(|(value, _)| value.as_str()),
        Some("Kisumu")
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn tls_files_are_checked_at_start_and_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load = |files: TlsFiles| TlsMaterial::load(&files);

    let missing = dir.path().join("missing-ca.pem");
    let error = load(TlsFiles {
        ca_file: Some(missing.clone()),
        ..TlsFiles::default()
    })
    .expect_err("a missing CA file");
    assert!(matches!(&error, TlsError::Read { path, .. } if *path == missing));
    assert!(error.to_string().contains("missing-ca.pem"), "{error}");

    let not_pem = dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "this is no certificate\n").expect("write");
    let error = load(TlsFiles {
        ca_file: Some(not_pem.clone()),
        ..TlsFiles::default()
    })
    .expect_err("a file without certificates");
    assert!(error.to_string().contains("not-pem.txt"), "{error}");
    assert!(
        error.to_string().contains("no PEM CERTIFICATE block"),
        "{error}"
    );

    let certificate = TestCa::new("baraza test client CA").server_certificate(
        dir.path(),
        "client",
        &["client.example"],
    );
    let error = load(TlsFiles {
        client_cert_file: Some(certificate.cert_file.clone()),
        ..TlsFiles::default()
    })
    .expect_err("a certificate without its key");
    assert!(error.to_string().contains("client_key_file"), "{error}");

    let error = load(TlsFiles {
        client_cert_file: Some(certificate.cert_file.clone()),
        client_key_file: Some(not_pem.clone()),
        ..TlsFiles::default()
    })
    .expect_err("a key file without a key");
    assert!(error.to_string().contains("not-pem.txt"), "{error}");

    let other_key = TestCa::new("baraza test other").server_certificate(
        dir.path(),
        "other",
        &["other.example"],
    );
    let error = load(TlsFiles {
        client_cert_file: Some(certificate.cert_file.clone()),
        client_key_file: Some(other_key.key_file.clone()),
        ..TlsFiles::default()
    })
    .expect_err("a key that is not the certificate's");
    assert!(
        error.to_string().contains("client.crt") && error.to_string().contains("other.key"),
        "{error}"
    );

    let material = load(TlsFiles {
        ca_file: Some(certificate.ca_file.clone()),
        client_cert_file: Some(certificate.cert_file.clone()),
        client_key_file: Some(certificate.key_file.clone()),
    })
    .expect("a matching pair loads");
    let key = std::fs::read_to_string(&certificate.key_file).expect("key");
    let body = key.lines().nth(1).expect("a line of the key");
    let debug = format!("{material:?}");
    assert!(
        debug.contains("client.key") && !debug.contains(body),
        "{debug}"
    );
}

/// The commented `store_tls` example in `gateway-config/production.yaml`, uncommented, is a
/// valid config; relative paths are taken from the config file's folder.
#[test]
fn the_production_example_parses_and_paths_are_relative_to_the_config() {
    let production =
        std::fs::read_to_string(common::manifest_dir().join("gateway-config/production.yaml"))
            .expect("production.yaml");
    let example: String = production
        .lines()
        .skip_while(|line| *line != "# store_tls:")
        .take_while(|line| line.starts_with('#'))
        .map(|line| format!("{}\n", line.trim_start_matches('#').get(1..).unwrap_or("")))
        .collect();
    assert!(example.starts_with("store_tls:\n"), "{example}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, &example).expect("write");
    let config = baraza::config::Config::from_file(&file).expect("the example parses");
    assert_eq!(
        config.store_tls.redis.ca_file.as_deref(),
        Some(Path::new("/etc/baraza/tls/redis-ca.pem"))
    );
    assert!(config.store_tls.redis.client_key_file.is_some());
    assert!(config.store_tls.postgres.ca_file.is_some());

    std::fs::write(
        &file,
        "store_tls:\n  postgres:\n    ca_file: certs/ca.pem\n",
    )
    .expect("write");
    let config = baraza::config::Config::from_file(&file).expect("relative paths parse");
    assert_eq!(
        config.store_tls.postgres.ca_file,
        Some(dir.path().join("certs/ca.pem"))
    );
    let unknown = "store_tls:\n  redis:\n    ca: x.pem\n";
    std::fs::write(&file, unknown).expect("write");
    let error = baraza::config::Config::from_file(&file).expect_err("an unknown key");
    assert!(error.to_string().contains("unknown field `ca`"), "{error}");
}
