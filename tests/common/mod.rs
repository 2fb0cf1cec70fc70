//! Shared harness for the USSD end-to-end tests: a gateway built from config exactly as
//! `baraza serve` builds it, driven through its axum router (in process) with real stores.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use baraza::config::{Config, ResultsConfig, ServiceCode, SessionsConfig};
use baraza::dispatcher::Gateway;
use baraza::server::{self, AppState};

pub mod servers;

pub fn redis_url() -> String {
    std::env::var("BARAZA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn postgres_url() -> String {
    std::env::var("BARAZA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A name no other test (or test run) uses: key prefixes and schemas.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}_{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stores {
    /// In-memory sessions, embedded SQLite results.
    MemorySqlite,
    /// Redis sessions, PostgreSQL results.
    RedisPostgres,
}

pub struct TestGateway {
    pub app: Router,
    pub gateway: Arc<Gateway>,
    pub config: Config,
    pub dir: tempfile::TempDir,
    /// Set for Redis: the key prefix; for PostgreSQL: the schema (dropped on `cleanup`).
    pub redis_prefix: Option<String>,
    pub pg_schema: Option<String>,
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A folder holding the example flows plus the e2e fixture flow.
pub fn flows_folder(dir: &Path) -> PathBuf {
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).expect("create flows folder");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join("flows"))
        .expect("read flows/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    sources.push(manifest_dir().join("tests/fixtures/e2e/e2e_survey.yaml"));
    for source in sources {
        let name = source.file_name().expect("file name");
        std::fs::copy(&source, flows.join(name)).expect("copy flow");
    }
    flows
}

pub fn config_for(stores: Stores, dir: &Path) -> (Config, Option<String>, Option<String>) {
    let mut config = Config::embedded();
    config.flows_dir = flows_folder(dir);
    config.pseudonym_secret = Some("test-pseudonym-secret".into());
    config.ussd.service_codes.push(ServiceCode {
        code: "*999#".into(),
        flow: "e2e_survey".into(),
    });
    let (mut prefix, mut schema) = (None, None);
    match stores {
        Stores::MemorySqlite => {
            config.sessions = SessionsConfig::Memory;
            config.results = ResultsConfig::Sqlite {
                path: dir.join("data/results.sqlite3"),
            };
        }
        Stores::RedisPostgres => {
            let p = unique("gw");
            let s = unique("gw");
            config.sessions = SessionsConfig::Redis {
                url: Some(redis_url().into()),
                key_prefix: p.clone(),
                response_timeout_ms: 1000,
                node_cache_entries: 50_000,
            };
            config.results = ResultsConfig::Postgres {
                url: Some(postgres_url().into()),
                schema: Some(s.clone()),
            };
            prefix = Some(p);
            schema = Some(s);
        }
    }
    (config, prefix, schema)
}

pub async fn start(stores: Stores) -> TestGateway {
    start_with(stores, |_| {}).await
}

pub async fn start_with(stores: Stores, tweak: impl FnOnce(&mut Config)) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut config, redis_prefix, pg_schema) = config_for(stores, dir.path());
    tweak(&mut config);
    from_config(config, dir, redis_prefix, pg_schema).await
}

pub async fn from_config(
    config: Config,
    dir: tempfile::TempDir,
    redis_prefix: Option<String>,
    pg_schema: Option<String>,
) -> TestGateway {
    let gateway = Arc::new(
        server::build_gateway(config.clone())
            .await
            .expect("gateway builds"),
    );
    let app = server::router(
        AppState::new(
            Arc::clone(&gateway),
            baraza::telemetry::install_metrics(),
            None,
        )
        .expect("access rules parse"),
    )
    .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    TestGateway {
        app,
        gateway,
        config,
        dir,
        redis_prefix,
        pg_schema,
    }
}

/// `application/x-www-form-urlencoded` component encoding.
pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

impl TestGateway {
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", content_type)
            .body(Body::from(body))
            .expect("request");
        self.send(request).await
    }

    /// A TwiML callback to `path`, signed as Twilio signs it (over the public URL and the
    /// form) with `auth_token`.
    pub async fn post_twilio(
        &self,
        path: &str,
        auth_token: &str,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let url = format!(
            "{}{path}",
            self.config.voice.public_url.trim_end_matches('/')
        );
        let signature =
            baraza::channels::voice::twiml::signature(auth_token, &url, &body).expect("signs");
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(Body::from(body))
            .expect("request");
        self.send(request).await
    }

    /// Any request through the router: its status and body.
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, String) {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method("GET")
            .uri(path)
            .body(Body::empty())
            .expect("request");
        self.send(request).await
    }

    /// One Africa's Talking callback; returns the body (`CON ...` / `END ...`).
    pub async fn at(&self, session: &str, phone: &str, code: &str, text: &str) -> String {
        let body = form(&[
            ("sessionId", session),
            ("serviceCode", code),
            ("phoneNumber", phone),
            ("networkCode", "63902"),
            ("text", text),
        ]);
        let (status, reply) = self
            .post(
                "/ussd/africastalking",
                "application/x-www-form-urlencoded",
                body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "AT callback refused: {reply}");
        reply
    }

    /// Drives a whole Africa's Talking session: the dial, then each input, with the cumulative
    /// `text` the aggregator sends. Returns every reply.
    pub async fn at_session(
        &self,
        session: &str,
        phone: &str,
        code: &str,
        inputs: &[&str],
    ) -> Vec<String> {
        let mut replies = vec![self.at(session, phone, code, "").await];
        for i in 1..=inputs.len() {
            let text = inputs[..i].join("*");
            replies.push(self.at(session, phone, code, &text).await);
        }
        replies
    }

    /// One Hubtel callback; returns the parsed JSON reply.
    pub async fn hubtel(
        &self,
        session: &str,
        phone: &str,
        kind: &str,
        message: &str,
        sequence: u32,
    ) -> serde_json::Value {
        let body = serde_json::json!({
            "Type": kind,
            "Message": message,
            "ServiceCode": "*999#",
            "Operator": "vodafone",
            "ClientState": "",
            "Mobile": phone,
            "SessionId": session,
            "Sequence": sequence,
            "Platform": "USSD",
        });
        let (status, reply) = self
            .post(
                "/ussd/hubtel",
                "application/json",
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "Hubtel callback refused: {reply}");
        serde_json::from_str(&reply).expect("Hubtel reply is JSON")
    }

    /// Every stored response of `flow`, with its answers, as the export reads them.
    pub async fn responses(&self, flow: &str) -> Vec<baraza::result_store::ResponseRow> {
        self.gateway
            .results
            .responses(flow)
            .await
            .expect("responses")
    }

    pub async fn cleanup(self) {
        if let Some(schema) = &self.pg_schema {
            drop_schema(schema).await;
        }
        if let Some(prefix) = &self.redis_prefix {
            delete_keys(prefix).await;
        }
    }
}

pub async fn drop_schema(schema: &str) {
    if let Ok((client, connection)) =
        tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await
    {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}

pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connects")
}

/// `CLIENT PAUSE <millis> <mode>` (`ALL`, or `WRITE`: reads are still served) on `conn`;
/// lifted early by `CLIENT UNPAUSE`. It stalls every client of the server, so a test that
/// pauses must not run beside other tests that use Redis.
pub async fn pause_redis(conn: &mut redis::aio::MultiplexedConnection, millis: u64, mode: &str) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(millis)
        .arg(mode)
        .query_async(conn)
        .await
        .expect("CLIENT PAUSE");
}

pub async fn delete_keys(prefix: &str) {
    let mut conn = redis_connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}

/// Fails the test instead of hanging it when something never happens (30 s).
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Reads an outbound SMS until `ready` holds (the outbox works in the background).
pub async fn wait_for_sms(
    results: &baraza::result_store::ResultStore,
    id: &str,
    ready: impl Fn(&baraza::result_store::SmsRow) -> bool,
) -> baraza::result_store::SmsRow {
    within(&format!("message {id}"), async {
        loop {
            if let Some(row) = results.sms_message(id).await.expect("read")
                && ready(&row)
            {
                return row;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Whether an outbound SMS reached a final state.
pub fn sms_finished(row: &baraza::result_store::SmsRow) -> bool {
    baraza::result_store::SmsState::parse(&row.state)
        .is_some_and(baraza::result_store::SmsState::is_final)
}
