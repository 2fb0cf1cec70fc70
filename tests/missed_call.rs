//! Missed calls and outbound call placement, end to end: provider callbacks through the real
//! router, and the callback requests arriving at a fake provider API (an axum server this test
//! starts on 127.0.0.1:0 that records every request and can hold its answers).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use baraza::config::{OutboundConfig, OutboundProvider, RetryConfig, RetryOn, VoiceNumber};
use baraza::outbound::{AttemptStatus, CallOutcome, Dialer};
use baraza::result_store::{CallAttemptQuery, CallAttemptStatus};
use common::Stores;
use tokio::sync::{Semaphore, mpsc};

const CITIZEN: &str = "+254711000001";
/// The number citizens flash.
const MISSED_LINE: &str = "+254205550000";
/// The number callbacks come from (not a configured inbound number).
const OUR_NUMBER: &str = "+254205551111";
/// Upper bound on waiting for something that should happen promptly (never a timing claim).
const PATIENCE: Duration = Duration::from_secs(20);

/// One request the fake provider received.
#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    headers: HeaderMap,
    form: HashMap<String, String>,
    /// The call id the fake answered with.
    call_id: String,
}

/// The fake provider's state.
struct Fake {
    /// Answers wait for a permit: tests hold them to keep requests open.
    gate: Semaphore,
    count: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    seen: mpsc::UnboundedSender<Recorded>,
}

/// A running fake provider API.
struct FakeProvider {
    base: String,
    state: Arc<Fake>,
    seen: mpsc::UnboundedReceiver<Recorded>,
}

impl FakeProvider {
    /// Starts it; `held` keeps answers waiting until [`FakeProvider::release`].
    async fn start(held: bool) -> FakeProvider {
        let (tx, seen) = mpsc::unbounded_channel();
        let state = Arc::new(Fake {
            gate: Semaphore::new(if held { 0 } else { Semaphore::MAX_PERMITS }),
            count: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            seen: tx,
        });
        let app = Router::new()
            .route("/call", post(at_call))
            .route("/2010-04-01/Accounts/{sid}/Calls.json", post(twilio_call))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeProvider {
            base: format!("http://{addr}"),
            state,
            seen,
        }
    }

    /// Lets every held and future answer go.
    fn release(&self) {
        self.state.gate.add_permits(10_000);
    }

    fn count(&self) -> usize {
        self.state.requests.lock().expect("lock").len()
    }

    /// The next request received (waiting for it).
    async fn next(&mut self) -> Recorded {
        tokio::time::timeout(PATIENCE, self.seen.recv())
            .await
            .expect("a request reaches the fake provider")
            .expect("fake provider running")
    }
}

async fn record(
    state: &Fake,
    path: String,
    headers: HeaderMap,
    form: HashMap<String, String>,
    prefix: &str,
) -> Recorded {
    let n = state.count.fetch_add(1, Ordering::SeqCst) + 1;
    let recorded = Recorded {
        path,
        headers,
        form,
        call_id: format!("{prefix}{n}"),
    };
    state.requests.lock().expect("lock").push(recorded.clone());
    let _ = state.seen.send(recorded.clone());
    let _permit = state.gate.acquire().await.expect("gate open");
    recorded
}

async fn at_call(
    State(state): State<Arc<Fake>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> impl IntoResponse {
    let to = form.get("to").cloned().unwrap_or_default();
    let r = record(&state, "/call".into(), headers, form, "ATVId_out_").await;
    let body = serde_json::json!({
        "entries": [{"phoneNumber": to, "status": "Queued", "sessionId": r.call_id}],
        "errorMessage": "None"
    });
    (StatusCode::CREATED, axum::Json(body))
}

async fn twilio_call(
    State(state): State<Arc<Fake>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> impl IntoResponse {
    let path = format!("/2010-04-01/Accounts/{sid}/Calls.json");
    let r = record(&state, path, headers, form, "CA_out_").await;
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"sid": r.call_id, "status": "queued"})),
    )
}

fn at_outbound(fake: &FakeProvider, max_concurrent: usize, retry: RetryConfig) -> OutboundConfig {
    OutboundConfig {
        provider: OutboundProvider::AfricasTalking {
            api_url: format!("{}/call", fake.base),
            username: "sandbox".into(),
            api_key: "at-test-key".into(),
            from: OUR_NUMBER.into(),
        },
        max_concurrent_calls: max_concurrent,
        queue_capacity: 100,
        call_timeout_seconds: 1_000_000,
        retry,
    }
}

fn no_retries() -> RetryConfig {
    RetryConfig {
        max_attempts: 1,
        ..RetryConfig::default()
    }
}

/// A gateway whose missed-call line calls back with `grievance`, and its started dialer.
async fn gateway(
    stores: Stores,
    outbound: OutboundConfig,
    tweak: impl FnOnce(&mut baraza::config::MissedCallConfig),
) -> (common::TestGateway, Dialer) {
    gateway_on(stores, outbound, tweak, None).await
}

/// [`gateway`] as the node named `node` in stored call attempts.
async fn gateway_on(
    stores: Stores,
    outbound: OutboundConfig,
    tweak: impl FnOnce(&mut baraza::config::MissedCallConfig),
    node: Option<&str>,
) -> (common::TestGateway, Dialer) {
    let node = node.map(str::to_string);
    let gw = common::start_with(stores, move |c| {
        c.smpp.node = node;
        c.voice.public_url = "https://gw.example.org".into();
        c.voice.default_flow = Some("service_feedback".into());
        c.voice.missed_call.numbers = vec![VoiceNumber {
            number: MISSED_LINE.into(),
            flow: "grievance".into(),
        }];
        tweak(&mut c.voice.missed_call);
        c.voice.outbound = Some(outbound);
    })
    .await;
    let dialer = Dialer::start(&gw.gateway)
        .expect("dialer starts")
        .expect("outbound is configured");
    (gw, dialer)
}

/// An Africa's Talking callback; returns the XML reply.
async fn at_voice(gw: &common::TestGateway, fields: &[(&str, &str)]) -> String {
    let (status, xml) = gw
        .post(
            "/voice/africastalking",
            "application/x-www-form-urlencoded",
            common::form(fields),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    xml
}

/// A citizen flashes the missed-call line (Africa's Talking); returns the reply.
async fn missed_call(gw: &common::TestGateway, call: &str, caller: &str) -> String {
    at_voice(
        gw,
        &[
            ("sessionId", call),
            ("direction", "Inbound"),
            ("callerNumber", caller),
            ("destinationNumber", MISSED_LINE),
            ("isActive", "1"),
        ],
    )
    .await
}

/// Africa's Talking's final callback of an outbound call.
async fn at_outbound_ended(gw: &common::TestGateway, call: &str, to: &str, state: &str) {
    at_voice(
        gw,
        &[
            ("sessionId", call),
            ("direction", "Outbound"),
            ("callerNumber", OUR_NUMBER),
            ("destinationNumber", to),
            ("isActive", "0"),
            ("callSessionState", state),
            ("durationInSeconds", "0"),
        ],
    )
    .await;
}

/// Waits until `ready` holds for the dialer, woken by its change signal.
async fn wait_for(dialer: &Dialer, what: &str, ready: impl Fn(&Dialer) -> bool) {
    let mut changes = dialer.changes();
    tokio::time::timeout(PATIENCE, async {
        while !ready(dialer) {
            changes.changed().await.expect("dialer running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waited for {what}"));
}

fn placed(dialer: &Dialer, number: &str, attempts: usize) -> bool {
    let list = dialer.attempts(number);
    list.len() == attempts && list.iter().all(|a| a.status != AttemptStatus::Placing)
}

fn ended_with(dialer: &Dialer, number: &str, attempt: u32, outcome: CallOutcome) -> bool {
    dialer.attempts(number).iter().any(|a| {
        a.attempt == attempt
            && matches!(&a.status, AttemptStatus::Ended { outcome: o, .. } if *o == outcome)
    })
}

async fn missed_call_is_rejected_and_called_back_once(stores: Stores) {
    let mut fake = FakeProvider::start(false).await;
    let (gw, dialer) = gateway(stores, at_outbound(&fake, 5, no_retries()), |_| {}).await;

    let reply = missed_call(&gw, "ATVId_in_1", CITIZEN).await;
    assert!(reply.contains("<Reject"), "{reply}");
    assert!(
        !reply.contains("<Say") && !reply.contains("<GetDigits"),
        "{reply}"
    );
    let request = fake.next().await;
    assert_eq!(request.path, "/call");
    assert_eq!(request.headers["apikey"], "at-test-key");
    assert_eq!(request.form["username"], "sandbox");
    assert_eq!(request.form["to"], CITIZEN);
    assert_eq!(request.form["from"], OUR_NUMBER);
    assert_eq!(request.form.len(), 3, "{:?}", request.form);
    assert_eq!(dialer.accepted(), 1);

    // Within the window: rejected again, no new callback.
    let again = missed_call(&gw, "ATVId_in_2", CITIZEN).await;
    assert!(again.contains("<Reject"), "{again}");
    assert_eq!(
        dialer.accepted(),
        1,
        "a second missed call within the window"
    );
    // Another caller is still called back, and only that one.
    let other = "+254711000002";
    missed_call(&gw, "ATVId_in_3", other).await;
    let next = fake.next().await;
    assert_eq!(next.form["to"], other);
    wait_for(&dialer, "the other callback placed", |d| {
        placed(d, other, 1)
    })
    .await;
    assert_eq!(fake.count(), 2);
    assert_eq!(dialer.attempts(CITIZEN).len(), 1);
    gw.cleanup().await;
}

#[tokio::test]
async fn a_missed_call_is_rejected_and_called_back_once_memory() {
    missed_call_is_rejected_and_called_back_once(Stores::MemorySqlite).await;
}

#[tokio::test]
async fn a_missed_call_is_rejected_and_called_back_once_redis() {
    missed_call_is_rejected_and_called_back_once(Stores::RedisPostgres).await;
}

/// Two gateway nodes sharing one Redis: the second node sees the first node's claim.
#[tokio::test]
async fn the_window_holds_across_nodes_sharing_redis() {
    let fake = FakeProvider::start(false).await;
    let (first, first_dialer) = gateway(
        Stores::RedisPostgres,
        at_outbound(&fake, 5, no_retries()),
        |_| {},
    )
    .await;
    let config = first.config.clone();
    let second =
        common::from_config(config, tempfile::tempdir().expect("tempdir"), None, None).await;
    let second_dialer = Dialer::start(&second.gateway)
        .expect("starts")
        .expect("configured");
    missed_call(&first, "ATVId_n1", CITIZEN).await;
    let reply = missed_call(&second, "ATVId_n2", CITIZEN).await;
    assert!(reply.contains("<Reject"), "{reply}");
    assert_eq!(first_dialer.accepted() + second_dialer.accepted(), 1);
    first.cleanup().await;
}

/// Daily counters are keyed by the UTC day: a test that counts must not straddle midnight.
/// Waits out the last seconds of a day (a known, bounded wait, not a guess at readiness).
async fn clear_of_midnight() {
    const DAY_MS: u128 = 86_400_000;
    const GUARD_MS: u128 = 20_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    let left = DAY_MS - now % DAY_MS;
    if left < GUARD_MS {
        tokio::time::sleep(Duration::from_millis(left as u64 + 100)).await;
    }
}

#[tokio::test]
async fn daily_caps_per_number_and_per_flow_refuse_further_callbacks() {
    clear_of_midnight().await;
    let fake = FakeProvider::start(false).await;
    let (gw, dialer) = gateway(
        Stores::MemorySqlite,
        at_outbound(&fake, 5, no_retries()),
        |m| {
            m.dedup_window_seconds = 60;
            m.daily_cap_per_number = 2;
            m.daily_cap_per_flow = 3;
        },
    )
    .await;
    // Per number: two callbacks, then the window passes again and the cap refuses.
    for (n, expected) in [(1, 1), (2, 2), (3, 2)] {
        missed_call(&gw, &format!("ATVId_cap_{n}"), CITIZEN).await;
        assert_eq!(dialer.accepted(), expected, "missed call {n}");
        wait_for(&dialer, "callbacks placed", |d| {
            placed(d, CITIZEN, expected as usize)
        })
        .await;
        // Past the de-duplication window (the in-memory store runs on Tokio's clock).
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(61)).await;
        tokio::time::resume();
    }
    // Per flow: one more caller fits under the flow's cap of 3, the next does not.
    missed_call(&gw, "ATVId_cap_4", "+254711000004").await;
    assert_eq!(dialer.accepted(), 3);
    missed_call(&gw, "ATVId_cap_5", "+254711000005").await;
    assert_eq!(dialer.accepted(), 3, "the flow's daily cap");
    wait_for(&dialer, "the last callback placed", |d| {
        placed(d, "+254711000004", 1)
    })
    .await;
    assert_eq!(fake.count(), 3);
    gw.cleanup().await;
}

#[tokio::test]
async fn never_more_calls_in_flight_than_the_limit() {
    let mut fake = FakeProvider::start(true).await;
    let (gw, dialer) = gateway(
        Stores::MemorySqlite,
        at_outbound(&fake, 2, no_retries()),
        |_| {},
    )
    .await;
    let callers: Vec<String> = (1..=5).map(|n| format!("+25471100010{n}")).collect();
    for (n, caller) in callers.iter().enumerate() {
        let reply = missed_call(&gw, &format!("ATVId_c{n}"), caller).await;
        assert!(reply.contains("<Reject"), "{reply}");
    }
    assert_eq!(dialer.accepted(), 5);
    // Two requests arrive and are held by the fake provider.
    let mut open = vec![fake.next().await, fake.next().await];
    assert_eq!(dialer.in_flight(), 2);
    fake.release();
    for r in &open {
        let to = r.form["to"].clone();
        wait_for(&dialer, "held calls placed", |d| placed(d, &to, 1)).await;
    }
    // Both calls ring: no third request until one of them ends.
    assert_eq!(fake.count(), 2);
    assert_eq!(dialer.in_flight(), 2);
    let mut ended = 0;
    while let Some(done) = open.pop() {
        at_outbound_ended(&gw, &done.call_id, &done.form["to"], "Completed").await;
        ended += 1;
        if fake.count() < callers.len() {
            // A slot is free: the next queued call goes out.
            let next = fake.next().await;
            let to = next.form["to"].clone();
            wait_for(&dialer, "next call placed", |d| placed(d, &to, 1)).await;
            open.push(next);
        }
        assert!(
            fake.count() - ended <= 2,
            "{} requests, {ended} ended",
            fake.count()
        );
        assert!(dialer.in_flight() <= 2);
    }
    wait_for(&dialer, "every slot free", |d| d.in_flight() == 0).await;
    assert_eq!(fake.count(), 5);
    assert_eq!(ended, 5);
    assert_eq!(dialer.in_flight(), 0);
    let mut called: Vec<String> = fake
        .state
        .requests
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.form["to"].clone())
        .collect();
    called.sort();
    assert_eq!(called, callers);
    gw.cleanup().await;
}

/// The Twilio status callback of an outbound call.
async fn twilio_status(gw: &common::TestGateway, call: &str, status: &str) {
    // The Twilio account's auth token (see the test's outbound config) signs the callback.
    let (code, body) = gw
        .post_twilio(
            "/voice/twiml/status",
            "tw-secret",
            common::form(&[
                ("CallSid", call),
                ("AccountSid", "AC_test"),
                ("From", OUR_NUMBER),
                ("To", CITIZEN),
                ("Direction", "outbound-api"),
                ("CallStatus", status),
            ]),
        )
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
}

/// Advances Tokio's clock by `by` while no request is in flight, then lets time run again.
async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn busy_and_no_answer_are_retried_spaced_up_to_max_attempts_over_twilio() {
    let mut fake = FakeProvider::start(false).await;
    let outbound = OutboundConfig {
        provider: OutboundProvider::Twilio {
            api_url: fake.base.clone(),
            account_sid: "AC_test".into(),
            auth_token: "tw-secret".into(),
            from: OUR_NUMBER.into(),
        },
        max_concurrent_calls: 5,
        queue_capacity: 100,
        call_timeout_seconds: 1_000_000,
        retry: RetryConfig {
            max_attempts: 3,
            spacing_seconds: 300,
            on: vec![RetryOn::Busy, RetryOn::NoAnswer, RetryOn::Failed],
        },
    };
    let (gw, dialer) = gateway(Stores::MemorySqlite, outbound, |_| {}).await;
    let (code, reply) = gw
        .post_twilio(
            "/voice/twiml",
            "tw-secret",
            common::form(&[
                ("CallSid", "CA_in_1"),
                ("AccountSid", "AC_test"),
                ("From", CITIZEN),
                ("To", MISSED_LINE),
                ("Direction", "inbound"),
                ("CallStatus", "ringing"),
            ]),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert!(reply.contains("<Reject"), "{reply}");

    let first = fake.next().await;
    assert_eq!(first.path, "/2010-04-01/Accounts/AC_test/Calls.json");
    // "AC_test:tw-secret" in base64.
    assert_eq!(
        first.headers["authorization"],
        "Basic QUNfdGVzdDp0dy1zZWNyZXQ="
    );
    assert_eq!(first.form["To"], CITIZEN);
    assert_eq!(first.form["From"], OUR_NUMBER);
    assert_eq!(first.form["Url"], "https://gw.example.org/voice/twiml");
    assert_eq!(
        first.form["StatusCallback"],
        "https://gw.example.org/voice/twiml/status"
    );
    assert_eq!(first.form["StatusCallbackEvent"], "completed");
    wait_for(&dialer, "first call placed", |d| placed(d, CITIZEN, 1)).await;

    let mut previous = first;
    for (attempt, status, outcome) in [
        (1, "busy", CallOutcome::Busy),
        (2, "no-answer", CallOutcome::NoAnswer),
    ] {
        twilio_status(&gw, &previous.call_id, status).await;
        wait_for(&dialer, "the status recorded", |d| {
            ended_with(d, CITIZEN, attempt, outcome)
        })
        .await;
        assert_eq!(dialer.in_flight(), 0, "the slot is free while waiting");
        advance(Duration::from_secs(299)).await;
        assert_eq!(fake.count(), attempt as usize, "not before the spacing");
        assert_eq!(dialer.attempts(CITIZEN).len(), attempt as usize);
        advance(Duration::from_secs(1)).await;
        let next = fake.next().await;
        assert_eq!(next.form["To"], CITIZEN);
        wait_for(&dialer, "retry placed", |d| {
            placed(d, CITIZEN, attempt as usize + 1)
        })
        .await;
        previous = next;
    }
    // The third attempt is busy too: no fourth.
    twilio_status(&gw, &previous.call_id, "busy").await;
    wait_for(&dialer, "third status", |d| {
        ended_with(d, CITIZEN, 3, CallOutcome::Busy)
    })
    .await;
    advance(Duration::from_secs(3600)).await;
    tokio::task::yield_now().await;
    assert_eq!(fake.count(), 3);
    let attempts = dialer.attempts(CITIZEN);
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(attempts.iter().all(|a| {
        a.call_id
            .as_deref()
            .is_some_and(|id| id.starts_with("CA_out_"))
    }));
    gw.cleanup().await;
}

#[tokio::test]
async fn the_answered_callback_runs_the_missed_call_flow() {
    let mut fake = FakeProvider::start(false).await;
    let (gw, dialer) = gateway(
        Stores::MemorySqlite,
        at_outbound(&fake, 5, no_retries()),
        |_| {},
    )
    .await;
    missed_call(&gw, "ATVId_in_9", CITIZEN).await;
    let request = fake.next().await;
    wait_for(&dialer, "callback placed", |d| placed(d, CITIZEN, 1)).await;
    let call = request.call_id.as_str();
    let outbound = |fields: &[(&'static str, &'static str)]| {
        let mut all = vec![
            ("sessionId", call),
            ("direction", "Outbound"),
            ("callerNumber", OUR_NUMBER),
            ("destinationNumber", CITIZEN),
        ];
        all.extend_from_slice(fields);
        all
    };
    // The citizen answers: the grievance flow (not the default flow) starts.
    let first = at_voice(&gw, &outbound(&[("isActive", "1")])).await;
    assert!(
        first.contains("<GetDigits") && first.contains("Choose language"),
        "{first}"
    );
    let category = at_voice(&gw, &outbound(&[("isActive", "1"), ("dtmfDigits", "1")])).await;
    assert!(
        category.contains("For Water and sewage, press 1."),
        "{category}"
    );
    at_voice(
        &gw,
        &outbound(&[
            ("isActive", "0"),
            ("callSessionState", "Completed"),
            ("durationInSeconds", "40"),
        ]),
    )
    .await;
    wait_for(&dialer, "the call completed", |d| {
        ended_with(d, CITIZEN, 1, CallOutcome::Completed)
    })
    .await;
    let rows = gw.responses("grievance").await;
    assert_eq!(rows.len(), 1, "the answers of the callback are stored");
    assert_eq!(dialer.in_flight(), 0);
    gw.cleanup().await;
}

/// A callback whose first call is busy and whose retry is answered leaves two attempt rows in
/// the result store, each with its final status, the provider's call id and the call length.
async fn busy_then_answered_leaves_two_stored_attempts(stores: Stores) {
    let mut fake = FakeProvider::start(false).await;
    let retry = RetryConfig {
        max_attempts: 3,
        spacing_seconds: 60,
        on: vec![RetryOn::Busy, RetryOn::NoAnswer],
    };
    let (gw, dialer) = gateway(stores, at_outbound(&fake, 5, retry), |_| {}).await;
    missed_call(&gw, "ATVId_in_busy", CITIZEN).await;
    let first = fake.next().await;
    wait_for(&dialer, "first call placed", |d| placed(d, CITIZEN, 1)).await;
    let stored = gw
        .gateway
        .results
        .call_attempts(CallAttemptQuery::CallId(first.call_id.clone()))
        .await
        .expect("read attempts");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, CallAttemptStatus::Placed, "{stored:?}");

    at_outbound_ended(&gw, &first.call_id, CITIZEN, "Busy").await;
    wait_for(&dialer, "busy recorded", |d| {
        ended_with(d, CITIZEN, 1, CallOutcome::Busy)
    })
    .await;
    advance(Duration::from_secs(60)).await;
    let second = fake.next().await;
    wait_for(&dialer, "retry placed", |d| placed(d, CITIZEN, 2)).await;
    let outbound = |fields: &[(&'static str, &'static str)]| {
        let mut all = vec![
            ("sessionId", second.call_id.as_str()),
            ("direction", "Outbound"),
            ("callerNumber", OUR_NUMBER),
            ("destinationNumber", CITIZEN),
        ];
        all.extend_from_slice(fields);
        all
    };
    at_voice(&gw, &outbound(&[("isActive", "1")])).await;
    let ended = outbound(&[
        ("isActive", "0"),
        ("callSessionState", "Completed"),
        ("durationInSeconds", "40"),
    ]);
    at_voice(&gw, &ended).await;
    wait_for(&dialer, "the retry completed", |d| {
        ended_with(d, CITIZEN, 2, CallOutcome::Completed)
    })
    .await;
    // The provider repeats its final callback: nothing changes.
    at_voice(&gw, &ended).await;

    let rows = gw
        .gateway
        .results
        .call_attempts(CallAttemptQuery::Subscriber(CITIZEN.into()))
        .await
        .expect("read attempts");
    let summary: Vec<_> = rows
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.status,
                a.outcome.as_deref(),
                a.provider_status.as_deref(),
                a.provider_call_id.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                1,
                CallAttemptStatus::Ended,
                Some("busy"),
                Some("Busy"),
                Some(first.call_id.clone())
            ),
            (
                2,
                CallAttemptStatus::Ended,
                Some("completed"),
                Some("Completed"),
                Some(second.call_id.clone())
            ),
        ]
    );
    for row in &rows {
        assert_eq!(row.provider, "africastalking");
        assert_eq!(row.purpose, "missed_call");
        assert_eq!(row.flow_id, "grievance");
        assert_eq!(row.subscriber, CITIZEN);
        assert!(row.ended_at_ms.is_some());
    }
    assert_eq!(rows[0].duration_seconds, Some(0));
    assert_eq!(rows[1].duration_seconds, Some(40));
    assert_ne!(rows[0].attempt_id, rows[1].attempt_id);
    let memory: Vec<String> = dialer
        .attempts(CITIZEN)
        .iter()
        .map(|a| a.attempt_id.clone())
        .collect();
    assert_eq!(
        memory,
        rows.iter()
            .map(|a| a.attempt_id.clone())
            .collect::<Vec<_>>(),
        "the stored rows are the dialer's attempts"
    );

    // The admin route lists them too (numbers pseudonymised), by number or by call id.
    let (status, body) = gw.get("/admin/call-attempts?number=%2B254711000001").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2, "{body}");
    assert_eq!(listed[0]["outcome"], "busy");
    assert_eq!(listed[1]["outcome"], "completed");
    assert_eq!(listed[1]["duration_seconds"], 40);
    assert!(!body.contains(CITIZEN), "no raw numbers: {body}");
    let (status, body) = gw
        .get(&format!("/admin/call-attempts?call_id={}", second.call_id))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"attempt\":2"), "{body}");
    let (status, _) = gw.get("/admin/call-attempts").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    gw.cleanup().await;
}

#[tokio::test]
async fn busy_then_answered_leaves_two_stored_attempts_sqlite() {
    busy_then_answered_leaves_two_stored_attempts(Stores::MemorySqlite).await;
}

#[tokio::test]
async fn busy_then_answered_leaves_two_stored_attempts_postgres() {
    busy_then_answered_leaves_two_stored_attempts(Stores::RedisPostgres).await;
}

#[tokio::test]
async fn without_outbound_config_a_missed_call_is_still_rejected() {
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.voice.missed_call.numbers = vec![VoiceNumber {
            number: MISSED_LINE.into(),
            flow: "grievance".into(),
        }];
    })
    .await;
    assert!(Dialer::start(&gw.gateway).expect("no error").is_none());
    let reply = missed_call(&gw, "ATVId_x", CITIZEN).await;
    assert!(reply.contains("<Reject"), "{reply}");
    gw.cleanup().await;
}

#[tokio::test]
async fn a_bad_api_url_or_a_missing_secret_is_refused_at_start_with_the_reason() {
    for (api_url, api_key, expected) in [
        ("ftp://voice.example/call", "k", "https://"),
        ("https://voice.example/call", "", "BARAZA_AT_API_KEY"),
    ] {
        let gw = common::start_with(Stores::MemorySqlite, |c| {
            c.voice.outbound = Some(OutboundConfig {
                provider: OutboundProvider::AfricasTalking {
                    api_url: api_url.into(),
                    username: "sandbox".into(),
                    api_key: api_key.into(),
                    from: OUR_NUMBER.into(),
                },
                max_concurrent_calls: 5,
                queue_capacity: 10,
                call_timeout_seconds: 600,
                retry: RetryConfig::default(),
            });
        })
        .await;
        let error = Dialer::start(&gw.gateway).expect_err("refused");
        assert!(error.to_string().contains(expected), "{error}");
        gw.cleanup().await;
    }
}

/// The daily counters on Redis: distinct callers (no de-duplication in play) up to the
/// flow's cap, then refusals; a repeated caller within the window counts once.
#[tokio::test]
async fn the_flow_cap_holds_on_redis() {
    clear_of_midnight().await;
    let fake = FakeProvider::start(false).await;
    let (gw, dialer) = gateway(
        Stores::RedisPostgres,
        at_outbound(&fake, 5, no_retries()),
        |m| m.daily_cap_per_flow = 2,
    )
    .await;
    for (n, caller, expected) in [
        (1, "+254711000201", 1),
        (2, "+254711000201", 1),
        (3, "+254711000202", 2),
        (4, "+254711000203", 2),
    ] {
        let reply = missed_call(&gw, &format!("ATVId_r{n}"), caller).await;
        assert!(reply.contains("<Reject"), "{reply}");
        assert_eq!(dialer.accepted(), expected, "missed call {n}");
    }
    wait_for(&dialer, "both callbacks placed", |d| {
        placed(d, "+254711000201", 1) && placed(d, "+254711000202", 1)
    })
    .await;
    assert_eq!(fake.count(), 2);
    gw.cleanup().await;
}

/// Retries on busy only (a `Completed` with no duration counts as no-answer, not retried).
fn busy_retry_once() -> RetryConfig {
    RetryConfig {
        max_attempts: 2,
        spacing_seconds: 60,
        on: vec![RetryOn::Busy],
    }
}

/// A second gateway node on the same Redis and PostgreSQL as `first`, named `node`.
async fn second_node(first: &common::TestGateway, node: &str) -> (common::TestGateway, Dialer) {
    let mut config = first.config.clone();
    config.smpp.node = Some(node.into());
    let gw = common::from_config(config, tempfile::tempdir().expect("tempdir"), None, None).await;
    let dialer = Dialer::start(&gw.gateway)
        .expect("dialer starts")
        .expect("outbound is configured");
    (gw, dialer)
}

/// The stored attempts to call `number`, oldest first.
async fn stored_attempts(
    gw: &common::TestGateway,
    number: &str,
) -> Vec<baraza::result_store::CallAttemptRecord> {
    gw.gateway
        .results
        .call_attempts(CallAttemptQuery::Subscriber(number.into()))
        .await
        .expect("read attempts")
}

/// Two nodes share Redis and PostgreSQL; node A places the call (one slot), the provider
/// posts its final `Busy` to node B. B stores it by the provider's call id, A's slot frees
/// within one status poll (a second callback queued behind it is placed at once, long before
/// the call timeout), and the retry is placed exactly once, by A.
#[tokio::test]
async fn a_final_status_posted_to_another_node_ends_the_call_and_retries_once() {
    let mut fake = FakeProvider::start(false).await;
    let (a, dialer_a) = gateway_on(
        Stores::RedisPostgres,
        at_outbound(&fake, 1, busy_retry_once()),
        |_| {},
        Some("node-a"),
    )
    .await;
    assert_eq!(dialer_a.node(), "node-a");
    let (b, dialer_b) = second_node(&a, "node-b").await;
    wait_for(&dialer_a, "A's recovery", Dialer::recovered).await;
    wait_for(&dialer_b, "B's recovery", Dialer::recovered).await;

    missed_call(&a, "ATVId_in_x1", CITIZEN).await;
    let first = fake.next().await;
    assert_eq!(first.form["to"], CITIZEN);
    wait_for(&dialer_a, "first call placed", |d| placed(d, CITIZEN, 1)).await;
    // A second callback waits for A's only slot.
    let other = "+254711000002";
    missed_call(&a, "ATVId_in_x2", other).await;
    assert_eq!(dialer_a.in_flight(), 1);
    assert_eq!(fake.count(), 1, "the second callback waits for the slot");

    // The provider's final callback reaches node B.
    at_outbound_ended(&b, &first.call_id, CITIZEN, "Busy").await;
    let stored = stored_attempts(&b, CITIZEN).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0].status, CallAttemptStatus::Ended);
    assert_eq!(stored[0].outcome.as_deref(), Some("busy"));
    assert_eq!(stored[0].provider_status.as_deref(), Some("Busy"));
    assert_eq!(
        stored[0].provider_call_id.as_deref(),
        Some(first.call_id.as_str())
    );
    assert_eq!(stored[1].status, CallAttemptStatus::Scheduled);
    assert_eq!(stored[1].attempt, 2);
    assert_eq!(
        stored[1].node.as_deref(),
        Some("node-a"),
        "A places the retry"
    );

    // A's next status poll finds it: the slot is free and the queued callback goes out.
    advance(baraza::outbound::STATUS_POLL).await;
    let second = fake.next().await;
    assert_eq!(
        second.form["to"], other,
        "placed without waiting for the call timeout"
    );
    wait_for(&dialer_a, "A saw the busy status", |d| {
        ended_with(d, CITIZEN, 1, CallOutcome::Busy)
    })
    .await;
    wait_for(&dialer_a, "the other callback placed", |d| {
        placed(d, other, 1)
    })
    .await;
    // The other call ends on A itself, unanswered (not retried on no-answer).
    at_outbound_ended(&a, &second.call_id, other, "Completed").await;
    wait_for(&dialer_a, "the other call over", |d| d.in_flight() == 0).await;

    // The retry, once, from A, after the spacing.
    advance(Duration::from_secs(60)).await;
    let retry = fake.next().await;
    assert_eq!(retry.form["to"], CITIZEN);
    wait_for(&dialer_a, "the retry placed", |d| placed(d, CITIZEN, 2)).await;
    // The retry is busy too (heard by B again): the last attempt, nothing more.
    at_outbound_ended(&b, &retry.call_id, CITIZEN, "Busy").await;
    advance(baraza::outbound::STATUS_POLL).await;
    wait_for(&dialer_a, "A saw the retry end", |d| {
        ended_with(d, CITIZEN, 2, CallOutcome::Busy) && d.in_flight() == 0
    })
    .await;
    advance(Duration::from_secs(3600)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        fake.count(),
        3,
        "two calls to the citizen, one to the other"
    );
    assert!(dialer_b.attempts(CITIZEN).is_empty(), "B placed nothing");
    let stored = stored_attempts(&a, CITIZEN).await;
    assert_eq!(
        stored
            .iter()
            .map(|r| (r.attempt, r.status, r.outcome.as_deref()))
            .collect::<Vec<_>>(),
        vec![
            (1, CallAttemptStatus::Ended, Some("busy")),
            (2, CallAttemptStatus::Ended, Some("busy")),
        ]
    );
    b.cleanup().await;
    a.cleanup().await;
}

/// A callback whose first call was busy waits for its retry; the node stops and starts again:
/// the new dialer finds the stored retry and places it once, at its due time.
#[tokio::test]
async fn a_scheduled_retry_survives_a_restart_and_is_placed_once() {
    let mut fake = FakeProvider::start(false).await;
    let (gw, dialer) = gateway(
        Stores::RedisPostgres,
        at_outbound(&fake, 5, busy_retry_once()),
        |_| {},
    )
    .await;
    wait_for(&dialer, "recovery", Dialer::recovered).await;
    missed_call(&gw, "ATVId_in_r1", CITIZEN).await;
    let first = fake.next().await;
    wait_for(&dialer, "first call placed", |d| placed(d, CITIZEN, 1)).await;
    at_outbound_ended(&gw, &first.call_id, CITIZEN, "Busy").await;
    wait_for(&dialer, "busy recorded", |d| {
        ended_with(d, CITIZEN, 1, CallOutcome::Busy)
    })
    .await;

    // The node stops while the retry waits.
    dialer.shutdown();
    gw.gateway
        .results
        .flush_and_close()
        .await
        .expect("store closed");
    let common::TestGateway {
        config,
        dir,
        redis_prefix,
        pg_schema,
        ..
    } = gw;
    drop(dialer);
    advance(Duration::from_secs(3600)).await;
    tokio::task::yield_now().await;
    assert_eq!(fake.count(), 1, "the stopped node places nothing");

    // Started again (same node name, same stores): the retry is recovered and placed once.
    let restarted = common::from_config(config, dir, redis_prefix, pg_schema).await;
    let dialer = Dialer::start(&restarted.gateway)
        .expect("starts")
        .expect("configured");
    wait_for(&dialer, "recovery", Dialer::recovered).await;
    advance(Duration::from_secs(60)).await;
    let retry = fake.next().await;
    assert_eq!(retry.form["to"], CITIZEN);
    wait_for(&dialer, "the retry placed", |d| placed(d, CITIZEN, 1)).await;
    assert_eq!(dialer.attempts(CITIZEN)[0].attempt, 2);
    advance(Duration::from_secs(3600)).await;
    tokio::task::yield_now().await;
    assert_eq!(fake.count(), 2, "the retry is placed once");
    let stored = stored_attempts(&restarted, CITIZEN).await;
    assert_eq!(
        stored
            .iter()
            .map(|r| (r.attempt, r.status))
            .collect::<Vec<_>>(),
        vec![
            (1, CallAttemptStatus::Ended),
            (2, CallAttemptStatus::Placed)
        ]
    );
    restarted.cleanup().await;
}

/// What a node that stopped abruptly leaves: a call it was placing (closed `timed_out` at the
/// next start and never placed again: the provider may have placed it) and a call it had
/// placed (followed again: its final status is recorded and its retry placed). Another node's
/// row is left alone.
#[tokio::test]
async fn a_restart_closes_calls_being_placed_and_follows_placed_ones() {
    let mut fake = FakeProvider::start(false).await;
    let (gw, dialer) = gateway_on(
        Stores::MemorySqlite,
        at_outbound(&fake, 5, busy_retry_once()),
        |_| {},
        Some("node-r"),
    )
    .await;
    wait_for(&dialer, "recovery", Dialer::recovered).await;
    dialer.shutdown();
    drop(dialer);
    let other = "+254711000002";
    let third = "+254711000003";
    let long_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        - 10_000;
    let row =
        |id: &str, number: &str, status: CallAttemptStatus, call: Option<&str>, node: &str| {
            baraza::result_store::Write::CallAttempt(baraza::result_store::CallAttemptRecord {
                attempt_id: id.into(),
                provider: "africastalking".into(),
                subscriber: number.into(),
                flow_id: "grievance".into(),
                purpose: "missed_call".into(),
                attempt: 1,
                placed_at_ms: long_ago,
                status,
                outcome: None,
                provider_status: None,
                duration_seconds: None,
                provider_call_id: call.map(str::to_string),
                reason: None,
                updated_at_ms: long_ago,
                ended_at_ms: None,
                node: Some(node.into()),
                due_at_ms: None,
            })
        };
    gw.gateway
        .results
        .commit(vec![
            row(
                "old-1-1",
                CITIZEN,
                CallAttemptStatus::Placing,
                None,
                "node-r",
            ),
            row(
                "old-2-1",
                other,
                CallAttemptStatus::Placed,
                Some("ATVId_out_old"),
                "node-r",
            ),
            row(
                "old-3-1",
                third,
                CallAttemptStatus::Scheduled,
                None,
                "node-s",
            ),
        ])
        .await
        .expect("rows stored");
    gw.gateway
        .results
        .flush_and_close()
        .await
        .expect("store closed");
    let common::TestGateway {
        config,
        dir,
        redis_prefix,
        pg_schema,
        ..
    } = gw;

    let restarted = common::from_config(config, dir, redis_prefix, pg_schema).await;
    let dialer = Dialer::start(&restarted.gateway)
        .expect("starts")
        .expect("configured");
    wait_for(&dialer, "recovery", Dialer::recovered).await;
    let closed = stored_attempts(&restarted, CITIZEN).await;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].status, CallAttemptStatus::TimedOut);
    assert!(
        closed[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("not placed again")),
        "{closed:?}"
    );
    assert!(placed(&dialer, other, 1), "the placed call is followed");

    // Its final status arrives: recorded, and its retry placed once.
    at_outbound_ended(&restarted, "ATVId_out_old", other, "Busy").await;
    wait_for(&dialer, "the old call ended", |d| {
        ended_with(d, other, 1, CallOutcome::Busy)
    })
    .await;
    advance(Duration::from_secs(60)).await;
    let retry = fake.next().await;
    assert_eq!(retry.form["to"], other);
    wait_for(&dialer, "the retry placed", |d| placed(d, other, 2)).await;
    advance(Duration::from_secs(3600)).await;
    tokio::task::yield_now().await;
    assert_eq!(fake.count(), 1, "nothing else is placed");
    let elsewhere = stored_attempts(&restarted, third).await;
    assert_eq!(
        elsewhere[0].status,
        CallAttemptStatus::Scheduled,
        "not ours"
    );
    restarted.cleanup().await;
}
