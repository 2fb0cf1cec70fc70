//! `baraza serve` opens the configured operator binds beside the HTTP server, counts what
//! arrives on them, and unbinds on shutdown.

use std::sync::Arc;
use std::time::Duration;

use baraza::config::{Config, OperatorConfig, ResultsConfig};
use baraza::smpp::smsc_sim::{SimConfig, SimHandle, spawn_smsc_sim};

/// The simulator and `baraza serve` (SQLite results in a temporary folder) with one operator
/// `sim` bound to it; `operator_extra` adds YAML lines to the operator, `tweak` changes the
/// config. `stop` ends the server.
struct Served {
    sim: SimHandle,
    gateway: Arc<baraza::dispatcher::Gateway>,
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn serve_with(operator_extra: &str, tweak: impl FnOnce(&mut Config)) -> Served {
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = sim_listener.local_addr().expect("addr").port();
    let sim = spawn_smsc_sim(SimConfig::default(), sim_listener);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::embedded();
    config.flows_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    config.results = ResultsConfig::Sqlite {
        path: dir.path().join("results.sqlite3"),
    };
    config.pseudonym_secret = Some("test-pseudonym-secret".into());
    let operator: OperatorConfig = serde_saphyr::from_str(&format!(
        "name: sim\nhost: 127.0.0.1\nport: {port}\nsystem_id: baraza\npassword: secret\n{operator_extra}"
    ))
    .expect("operator config");
    config.smpp.operators = vec![operator];
    tweak(&mut config);
    let gateway = Arc::new(
        baraza::server::build_gateway(config)
            .await
            .expect("gateway"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baraza::server::serve(
        Arc::clone(&gateway),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    Served {
        sim,
        gateway,
        base,
        stop,
        server,
        _dir: dir,
    }
}

impl Served {
    async fn shutdown(self) -> SimHandle {
        self.stop.send(()).expect("stop");
        self.server
            .await
            .expect("serve task")
            .expect("serve ends cleanly");
        self.sim
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binds_to_each_operator_and_unbinds_on_shutdown() {
    let served = serve_with("", |_| {}).await;
    let sim = served.sim.clone();
    let bound = sim.wait_until(|s| s.binds >= 1).await;
    assert_eq!(bound.bind_failures, 0);
    // A mobile-originated message reaches the bind and is answered (deliver_sm_resp).
    sim.inject_mo("+254711000001", "20880", "AFYA")
        .expect("inject");
    sim.wait_until(|s| s.deliver_sm_resps >= 1).await;

    let sim = served.shutdown().await;
    let after = sim.wait_until(|s| s.unbinds_received >= 1).await;
    assert_eq!(after.unbinds_received, 1, "one unbind on shutdown");
}

/// Waits until the simulated handset has received `count` messages; returns their texts.
/// Fails the test instead of hanging it when something never happens.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn handset_messages(sim: &baraza::smpp::smsc_sim::SimHandle, count: usize) -> Vec<String> {
    sim.wait_until(|s| s.messages.len() >= count)
        .await
        .messages
        .iter()
        .map(|m| m.text.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_way_sms_survey_with_stop_and_start() {
    let served = serve_with("sender: \"20880\"\n", |_| {}).await;
    let (sim, gateway) = (served.sim.clone(), Arc::clone(&served.gateway));
    sim.wait_until(|s| s.binds >= 1).await;

    let citizen = "+254722000111";
    // The Swahili keyword starts the service feedback flow in Swahili.
    let script = [
        ("AFYA", "Huduma gani?"),
        ("2", "Ungeipa alama gani?"),
        ("5", "Je, ulipata huduma"),
        ("ndiyo", "Ulienda lini?"),
        ("12/03/2026", "Asante!"),
    ];
    for (i, (text, expect)) in script.iter().enumerate() {
        sim.inject_mo(citizen, "20880", text).expect("inject");
        let received = handset_messages(&sim, i + 1).await;
        assert!(
            received[i].contains(expect),
            "after {text}: {:?}",
            received[i]
        );
    }
    let stats = sim.stats();
    assert!(
        stats
            .messages
            .iter()
            // E.164 goes out as TON 1 / NPI 1 digits, without the `+`.
            .all(|m| m.destination == citizen.trim_start_matches('+') && m.source == "20880"),
        "{:?}",
        stats.messages
    );
    let rows = gateway
        .results
        .responses("service_feedback")
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].channel, "sms");
    assert_eq!(rows[0].language, "sw");
    // Response ids are exported as they are: the number appears in them only as its pseudonym.
    let digits = citizen.trim_start_matches('+');
    assert!(
        !rows[0].response_id.contains(digits),
        "{}",
        rows[0].response_id
    );
    assert!(
        rows[0]
            .response_id
            .ends_with(&format!("-sms:{}", gateway.pseudonym(citizen))),
        "{}",
        rows[0].response_id
    );
    assert_eq!(
        rows[0].status,
        baraza::result_store::ResponseStatus::Completed
    );
    assert_eq!(
        rows[0].answers.get("visit_date").map(|(v, _)| v.as_str()),
        Some("2026-03-12")
    );

    // STOP: confirmed once, then nothing reaches the number until START.
    sim.inject_mo(citizen, "20880", "HEALTH").expect("inject");
    handset_messages(&sim, 6).await;
    sim.inject_mo(citizen, "20880", "stop").expect("inject");
    let after_stop = handset_messages(&sim, 7).await;
    assert!(after_stop[6].contains("Send START"), "{:?}", after_stop[6]);
    sim.inject_mo(citizen, "20880", "HEALTH").expect("inject");
    sim.inject_mo(citizen, "20880", "START").expect("inject");
    let after_start = handset_messages(&sim, 8).await;
    assert!(
        after_start[7].contains("Welcome back"),
        "the keyword sent while stopped got no reply: {:?}",
        &after_start[7..]
    );
    let rows = gateway
        .results
        .responses("service_feedback")
        .await
        .expect("rows");
    assert!(
        rows.iter()
            .any(|r| r.status == baraza::result_store::ResponseStatus::OptedOut),
        "the open session ended as opted out: {rows:?}"
    );
    sim.inject_mo(citizen, "20880", "HEALTH").expect("inject");
    let again = handset_messages(&sim, 9).await;
    assert!(again[8].contains("Which service?"), "{:?}", again[8]);
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sms_api_queues_a_message_and_reports_its_receipt() {
    let served = serve_with("sender: BARAZA\n", |config| {
        config.admin.token = Some("s3cret".into());
    })
    .await;
    let (sim, base) = (served.sim.clone(), served.base.clone());
    let client = reqwest::Client::new();
    let post = |body: &str, token: &str| {
        client
            .post(format!("{base}/sms/send"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };

    // Without the admin token: refused, nothing queued.
    let refused = post(r#"{"to":"+254711000061","text":"hi"}"#, "wrong")
        .await
        .expect("post");
    assert_eq!(refused.status(), 401);
    // Bad input gets a clear error naming the problem.
    for (body, status, says) in [
        ("{", 400, "invalid JSON body"),
        (r#"{"to":"+254711000061"}"#, 400, "missing field `text`"),
        (
            r#"{"to":"call me","text":"hi"}"#,
            400,
            "`to` must be a phone number",
        ),
        (
            r#"{"to":"+254711000061","text":""}"#,
            400,
            "`text` must not be empty",
        ),
        (
            r#"{"to":"+254711000061","text":"hi","operator":"nope"}"#,
            422,
            "unknown operator `nope`",
        ),
    ] {
        let response = post(body, "s3cret").await.expect("post");
        assert_eq!(response.status(), status, "{body}");
        let text = response.text().await.expect("body");
        assert!(text.contains(says), "{body}: {text}");
    }

    let accepted = post(
        r#"{"to":"254711000061","text":"Your water point is fixed."}"#,
        "s3cret",
    )
    .await
    .expect("post");
    assert_eq!(accepted.status(), 202);
    let body = json(accepted).await;
    assert_eq!(body["state"], "queued");
    let id = body["id"].as_str().expect("id").to_string();

    let status = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let response = client
                .get(format!("{base}/sms/messages/{id}"))
                .bearer_auth("s3cret")
                .send()
                .await
                .expect("get");
            assert_eq!(response.status(), 200);
            let body = json(response).await;
            if body["delivery"] == "delivered" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("delivered in time");
    assert_eq!(status["state"], "accepted");
    assert_eq!(status["purpose"], "api");
    assert_eq!(status["sender"], "BARAZA");
    assert_eq!(status["parts"][0]["receipt"], "delivered");
    assert_ne!(
        status["recipient"], "+254711000061",
        "the number is pseudonymised by default"
    );
    let raw = json(
        client
            .get(format!("{base}/sms/messages/{id}?raw_numbers=true"))
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(raw["recipient"], "+254711000061");
    let missing = client
        .get(format!("{base}/sms/messages/no-such-id"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    assert_eq!(sim.stats().messages.len(), 1);
    served.shutdown().await;
}

async fn json(response: reqwest::Response) -> serde_json::Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// An inbound SMS is acknowledged only once it is stored. With the store stalled past the
/// bind's patience the SMSC hears ESME_RX_T_APPN (and delivers it again); the message kept
/// after all is handled once, and its later redelivery is acknowledged without being handled
/// a second time: the next answer goes to the next question.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_sms_is_acknowledged_once_stored_and_its_redelivery_handled_once() {
    let served = serve_with("sender: \"20880\"\ndeliver_ack_timeout_ms: 300\n", |_| {}).await;
    let (sim, gateway) = (served.sim.clone(), Arc::clone(&served.gateway));
    sim.wait_until(|s| s.binds >= 1).await;
    let citizen = "+254722000333";
    sim.inject_mo(citizen, "20880", "HEALTH").expect("inject");
    assert!(handset_messages(&sim, 1).await[0].contains("Which service?"));
    let acknowledged = sim.stats().deliver_sm_resps;
    assert_eq!(sim.stats().deliveries_refused, 0);

    // Another connection holds SQLite's write lock: the gateway's commits wait.
    let db = served._dir.path().join("results.sqlite3");
    let blocker = rusqlite::Connection::open(&db).expect("open");
    blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");
    sim.inject_mo(citizen, "20880", "2").expect("inject");
    // The bind gives up waiting and refuses; the SMSC delivers it again (and again: the copies
    // are refused while the first is still being kept) until it gives up.
    let refused = within(
        "the SMSC to give up delivering",
        sim.wait_until(|s| {
            s.deliveries_refused >= u64::from(baraza::smpp::smsc_sim::MAX_DELIVERY_ATTEMPTS)
        }),
    )
    .await;
    assert_eq!(
        refused.messages.len(),
        1,
        "no reply while nothing is stored"
    );
    blocker.execute_batch("ROLLBACK").expect("unlock");
    drop(blocker);
    // Kept after all: handled once, the next question goes out.
    let replies = within("the reply", handset_messages(&sim, 2)).await;
    assert!(replies[1].contains("How would you rate it?"), "{replies:?}");

    // The SMSC's later redelivery of "2": acknowledged (ESME_ROK), not an answer to the rating.
    let before = sim.stats();
    sim.inject_mo(citizen, "20880", "2").expect("inject");
    within(
        "the redelivery's answer",
        sim.wait_until(|s| s.deliver_sm_resps > before.deliver_sm_resps),
    )
    .await;
    assert_eq!(sim.stats().deliveries_refused, before.deliveries_refused);
    sim.inject_mo(citizen, "20880", "4").expect("inject");
    let replies = within("the next reply", handset_messages(&sim, 3)).await;
    assert!(
        replies[2].contains("Did you get the service"),
        "{replies:?}"
    );
    let rows = gateway
        .results
        .responses("service_feedback")
        .await
        .expect("rows");
    let answers: Vec<(&str, &str)> = rows[0]
        .answers
        .iter()
        .map(|(name, (value, _))| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(answers, vec![("rating", "4"), ("service", "water")]);
    assert!(acknowledged >= 1);
    served.shutdown().await;
}
