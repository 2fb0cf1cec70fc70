//! SMS through an Africa's Talking route, end to end, against a small fake of its messaging
//! API written here (axum on a free loopback port) and a real SQLite result store: a two-way
//! survey (incoming callback, replies sent to the fake, delivery report stored), a timeout
//! that leaves `unknown` and is never resent, 429s that slow the route and lose nothing, and
//! a forged callback refused.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use baraza::config::{AtSmsRoute, SmsRouteConfig};
use baraza::server::{self, AppState};
use baraza::sms::binds::Binds;
use baraza::sms::outbox::NewSms;
use common::{Stores, TestGateway, form, sms_finished as finished, within};

const CITIZEN: &str = "+254711000001";
const SHORTCODE: &str = "22384";
const FORM: &str = "application/x-www-form-urlencoded";

/// How the fake answers one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// 201 with the recipient taken (`statusCode` 101) and a fresh `messageId`.
    Take,
    /// 429 without `Retry-After`.
    Throttle,
    /// Never answers.
    Hang,
}

/// One request the fake received.
#[derive(Debug, Clone)]
struct Seen {
    form: HashMap<String, String>,
    api_key: Option<String>,
    at: Instant,
    /// The `messageId` answered, when taken.
    message_id: Option<String>,
}

/// The fake messaging API: answers from a script (then `Take`), remembers every request.
#[derive(Default)]
struct FakeAt {
    script: Mutex<VecDeque<Answer>>,
    seen: Mutex<Vec<Seen>>,
}

impl FakeAt {
    fn script(&self, answers: &[Answer]) {
        self.script.lock().unwrap().extend(answers.iter().copied());
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived.
    async fn wait_for_requests(&self, n: usize) -> Vec<Seen> {
        within(&format!("{n} requests at the fake"), async {
            loop {
                let seen = self.seen();
                if seen.len() >= n {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

async fn messaging(
    State(fake): State<Arc<FakeAt>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let answer = fake
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Take);
    let api_key = headers
        .get("apiKey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut seen = Seen {
        form: form.clone(),
        api_key,
        at: Instant::now(),
        message_id: None,
    };
    match answer {
        Answer::Take => {
            let id = format!("ATXid_{}", fake.seen().len() + 1);
            seen.message_id = Some(id.clone());
            fake.seen.lock().unwrap().push(seen);
            let body = serde_json::json!({
                "SMSMessageData": {
                    "Message": "Sent to 1/1 Total Cost: KES 0.8000",
                    "Recipients": [{
                        "statusCode": 101,
                        "number": form.get("to"),
                        "status": "Success",
                        "cost": "KES 0.8000",
                        "messageId": id,
                    }]
                }
            });
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Answer::Throttle => {
            fake.seen.lock().unwrap().push(seen);
            (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response()
        }
        Answer::Hang => {
            fake.seen.lock().unwrap().push(seen);
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
    }
}

/// Starts the fake on a free port; returns it and its base URL.
async fn start_fake() -> (Arc<FakeAt>, String) {
    let fake = Arc::new(FakeAt::default());
    let app = Router::new()
        .route("/version1/messaging", axum::routing::post(messaging))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("fake serves");
    });
    (fake, format!("http://{addr}"))
}

/// A gateway (in-memory sessions, SQLite results) with one Africa's Talking route `at`
/// pointing at the fake, its outbox, and its router with the outbox wired in.
async fn gateway(base_url: &str, extra: &str, token: Option<&str>) -> (TestGateway, Binds) {
    let route: AtSmsRoute = serde_saphyr::from_str(&format!(
        "name: at\nusername: sandbox\napi_key: test-key\nsender: \"{SHORTCODE}\"\n\
         base_url: \"{base_url}\"\nrate_per_second: 50\ntimeout_ms: 400\n\
         throttle_pause_ms: 200\n{extra}"
    ))
    .expect("route config");
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut config, _, _) = common::config_for(Stores::MemorySqlite, dir.path());
    config.smpp.node = Some("node-at".into());
    config.smpp.http_routes = vec![SmsRouteConfig::AfricasTalking(route)];
    config.callbacks.africastalking.token = token.map(Into::into);
    let built = Arc::new(
        server::build_gateway(config.clone())
            .await
            .expect("gateway builds"),
    );
    let binds = Binds::start(Arc::clone(&built));
    assert!(binds.outbox().has_routes());
    let app = server::router(
        AppState::new(Arc::clone(&built), None, Some(Arc::clone(binds.outbox())))
            .expect("access rules"),
    )
    .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let gw = TestGateway {
        app,
        gateway: built,
        config,
        dir,
        redis_prefix: None,
        pg_schema: None,
    };
    (gw, binds)
}

fn sms(to: &str, text: &str) -> NewSms {
    NewSms {
        operator: None,
        to: to.into(),
        from: None,
        text: text.into(),
        purpose: "api".into(),
    }
}

/// Our id of the message Africa's Talking knows as `provider_id` (read from the store file).
fn message_with_provider_id(gw: &TestGateway, provider_id: &str) -> String {
    let path = gw.dir.path().join("data/results.sqlite3");
    let db = rusqlite::Connection::open(path).expect("open results");
    db.query_row(
        "SELECT message_id FROM sms_parts WHERE smsc_id = ?1",
        [provider_id],
        |row| row.get(0),
    )
    .expect("the part with the provider's id")
}

async fn incoming(gw: &TestGateway, path: &str, id: &str, text: &str) -> (StatusCode, String) {
    let body = form(&[
        ("from", CITIZEN),
        ("to", SHORTCODE),
        ("text", text),
        ("id", id),
        ("date", "2026-12-07 10:00:00"),
        ("linkId", "link-1"),
        ("networkCode", "63902"),
    ]);
    gw.post(path, FORM, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_way_survey_runs_through_the_route_and_reports_are_stored() {
    let (fake, url) = start_fake().await;
    let (gw, _binds) = gateway(&url, "", None).await;

    // The keyword: kept, answered 200, the first question sent through the fake.
    let (status, body) = incoming(&gw, "/sms/africastalking", "in-1", "HEALTH").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = fake.wait_for_requests(1).await;
    let first = &seen[0];
    assert_eq!(first.api_key.as_deref(), Some("test-key"));
    assert_eq!(
        first.form.get("username").map(String::as_str),
        Some("sandbox")
    );
    assert_eq!(first.form.get("to").map(String::as_str), Some(CITIZEN));
    assert_eq!(first.form.get("from").map(String::as_str), Some(SHORTCODE));
    assert_eq!(first.form.get("bulkSMSMode").map(String::as_str), Some("1"));
    let question = first.form.get("message").cloned().unwrap_or_default();
    assert!(!question.is_empty());

    // The answer: the next question goes out the same way.
    let (status, _) = incoming(&gw, "/sms/africastalking", "in-2", "1").await;
    assert_eq!(status, StatusCode::OK);
    let seen = fake.wait_for_requests(2).await;
    // Africa's Talking posts it again (our 200 was lost): taken, not handled a second time
    // (it would have answered the next question with "1").
    let (status, body) = incoming(&gw, "/sms/africastalking", "in-2", "1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("kept already"), "{body}");
    assert_eq!(seen[1].form.get("to").map(String::as_str), Some(CITIZEN));
    assert_ne!(seen[1].form.get("message"), Some(&question));

    // Both replies stored accepted with the provider's id; a report joins the first.
    let provider_id = first.message_id.clone().expect("taken");
    let ours = message_with_provider_id(&gw, &provider_id);
    let row = common::wait_for_sms(&gw.gateway.results, &ours, finished).await;
    assert_eq!(row.state, "accepted");
    assert_eq!(row.operator, "at");
    assert_eq!(row.delivery(), Some("pending"));
    for (status, expected) in [
        ("Submitted", "pending"),
        ("Success", "delivered"),
        // A later intermediate report does not undo a final one.
        ("Buffered", "delivered"),
    ] {
        let report = form(&[
            ("id", &provider_id),
            ("status", status),
            ("phoneNumber", CITIZEN),
            ("networkCode", "63902"),
            ("retryCount", "0"),
        ]);
        let (code, body) = gw.post("/sms/africastalking/delivery", FORM, report).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let row = gw
            .gateway
            .results
            .sms_message(&ours)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(row.delivery(), Some(expected), "after {status}");
    }

    // Bad callbacks get a clear 400, never a 500; a report for no route is not taken.
    let refused: [(&str, Vec<u8>, StatusCode, &str); 3] = [
        (
            "/sms/africastalking",
            form(&[("to", SHORTCODE)]),
            StatusCode::BAD_REQUEST,
            "missing field `from`",
        ),
        (
            "/sms/africastalking/delivery",
            form(&[("id", "x"), ("status", "Delivered")]),
            StatusCode::BAD_REQUEST,
            "unknown status",
        ),
        (
            "/sms/africastalking/delivery?route=elsewhere",
            form(&[("id", "x"), ("status", "Success")]),
            StatusCode::SERVICE_UNAVAILABLE,
            "try again",
        ),
    ];
    for (path, body, expected, message) in refused {
        let (code, answer) = gw.post(path, FORM, body).await;
        assert_eq!(code, expected, "{path}: {answer}");
        assert!(answer.contains(message), "{path}: {answer}");
    }
    assert_eq!(fake.seen().len(), 2, "nothing else was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_unknown_and_never_resent() {
    let (fake, url) = start_fake().await;
    fake.script(&[Answer::Hang]);
    let (gw, binds) = gateway(&url, "", None).await;
    let ids = binds
        .outbox()
        .enqueue(vec![sms(CITIZEN, "Habari")])
        .await
        .expect("queued");
    let row = common::wait_for_sms(&gw.gateway.results, &ids[0], finished).await;
    assert_eq!(row.state, "unknown");
    assert!(
        row.detail.as_deref().unwrap_or("").contains("in time"),
        "{row:?}"
    );
    // Neither a sweep nor a restart's recovery sends it again.
    assert_eq!(
        binds.outbox().sweep(Duration::ZERO).await.expect("sweep"),
        (0, 0)
    );
    assert_eq!(binds.outbox().recover().await.expect("recover"), (0, 0));
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_slows_the_route_and_loses_nothing() {
    let (fake, url) = start_fake().await;
    fake.script(&[Answer::Throttle, Answer::Throttle]);
    let (gw, binds) = gateway(&url, "throttle_retries: 5\n", None).await;
    let numbers = ["+254711000011", "+254711000012", "+254711000013"];
    let ids = binds
        .outbox()
        .enqueue(numbers.iter().map(|n| sms(n, "Karibu")).collect())
        .await
        .expect("queued");
    for id in &ids {
        let row = common::wait_for_sms(&gw.gateway.results, id, finished).await;
        assert_eq!(row.state, "accepted", "{row:?}");
    }
    let seen = fake.seen();
    assert_eq!(seen.len(), 5, "two refused, three taken");
    // Each number was taken exactly once.
    for number in numbers {
        let taken = seen
            .iter()
            .filter(|s| {
                s.message_id.is_some() && s.form.get("to").map(String::as_str) == Some(number)
            })
            .count();
        assert_eq!(taken, 1, "{number}");
    }
    // After each 429 the route paused (200 ms here) before its next request.
    for pair in seen.windows(2).take(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(190), "gap {gap:?}");
    }

    // Still throttled after its retries: back to `queued` (never taken), sent by the sweep.
    let (fake, url) = start_fake().await;
    fake.script(&[Answer::Throttle, Answer::Throttle]);
    let (gw, binds) = gateway(&url, "throttle_retries: 1\n", None).await;
    let ids = binds
        .outbox()
        .enqueue(vec![sms(CITIZEN, "Karibu tena")])
        .await
        .expect("queued");
    let row = common::wait_for_sms(&gw.gateway.results, &ids[0], |r| {
        r.detail
            .as_deref()
            .is_some_and(|d| d.contains("queued again"))
    })
    .await;
    assert_eq!(row.state, "queued");
    assert_eq!(
        binds.outbox().sweep(Duration::ZERO).await.expect("sweep"),
        (1, 0)
    );
    let row = common::wait_for_sms(&gw.gateway.results, &ids[0], finished).await;
    assert_eq!(row.state, "accepted");
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_callback_is_refused_and_stores_nothing() {
    let (fake, url) = start_fake().await;
    let (gw, binds) = gateway(&url, "", Some("callback-secret")).await;
    for path in [
        "/sms/africastalking",
        "/sms/africastalking?token=wrong",
        "/sms/africastalking/delivery",
    ] {
        let (status, _) = incoming(&gw, path, "forged-1", "HEALTH").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let kept = gw
        .gateway
        .results
        .sms_inbound_unhandled(binds.outbox().node())
        .await
        .expect("read");
    assert!(kept.is_empty(), "{kept:?}");
    // The real one, with the token, is taken and answered.
    let (status, _) = incoming(
        &gw,
        "/sms/africastalking?token=callback-secret",
        "real-1",
        "HEALTH",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = fake.wait_for_requests(1).await;
    assert_eq!(seen.len(), 1);
}
