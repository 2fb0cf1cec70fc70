//! USSD over HTTP, end to end: Africa's Talking and Hubtel callbacks through the real router,
//! dispatcher, engine and stores (in-memory + SQLite, and the real Redis + PostgreSQL).

mod common;

use axum::http::StatusCode;
use baraza::result_store::ResponseStatus;
use baraza::session_store::SessionKey;
use common::{Stores, TestGateway, start, start_with};

const PHONE: &str = "+254711000111";

async fn survey_over_africastalking(stores: Stores) {
    let gw = start(stores).await;
    let replies = gw
        .at_session(
            "s-1",
            PHONE,
            "*999#",
            &["1", "Kisumu Ndogo", "98", "0", "3", "7", "4"],
        )
        .await;
    assert!(
        replies[0].starts_with("CON Choose language"),
        "{}",
        replies[0]
    );
    assert!(
        replies[1].starts_with("CON Which village"),
        "{}",
        replies[1]
    );
    // The priority menu does not fit one screen: page 1, `98` for more, `0` back.
    assert!(replies[2].contains("What should the county fix first in Kisumu Ndogo?"));
    assert!(replies[2].contains("98. More") && !replies[2].contains("7. Something else"));
    assert!(replies[3].contains("7. Something else") && replies[3].contains("0. Back"));
    assert_eq!(replies[4], replies[2], "back shows the first page again");
    assert!(
        replies[5].starts_with("CON How satisfied"),
        "{}",
        replies[5]
    );
    assert!(
        replies[6].starts_with("CON Sorry"),
        "7 is out of range: {}",
        replies[6]
    );
    assert!(
        replies[7].starts_with("END Thank you. Your reference is "),
        "{}",
        replies[7]
    );
    for reply in &replies {
        assert!(reply.chars().count() <= 4 + 182, "screen too long: {reply}");
    }

    let rows = gw.responses("e2e_survey").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.status, ResponseStatus::Completed);
    assert_eq!(row.channel, "ussd");
    assert_eq!(row.language, "en");
    assert_eq!(row.subscriber, PHONE);
    let value = |name: &str| row.answers.get(name).map(|(v, _)| v.clone());
    assert_eq!(value("village").as_deref(), Some("Kisumu Ndogo"));
    assert_eq!(value("priority").as_deref(), Some("roads"));
    assert_eq!(value("rating").as_deref(), Some("4"));
    assert_eq!(
        row.answers
            .get("priority")
            .and_then(|(_, l)| l.clone())
            .as_deref(),
        Some("Roads that work in the rainy season")
    );
    gw.cleanup().await;
}

#[tokio::test]
async fn survey_over_africastalking_memory_sqlite() {
    survey_over_africastalking(Stores::MemorySqlite).await;
}

#[tokio::test]
async fn survey_over_africastalking_redis_postgres() {
    survey_over_africastalking(Stores::RedisPostgres).await;
}

async fn survey_over_hubtel(stores: Stores) {
    let gw = start(stores).await;
    let first = gw
        .hubtel("h-1", "233200000001", "Initiation", "*999#", 1)
        .await;
    assert_eq!(first["Type"], "response");
    assert!(
        first["Message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Choose language")
    );
    let steps = [
        ("2", "Unaishi kijiji"),
        ("Gilgil", "Kaunti"),
        ("1", "Umeridhika"),
        ("5", "Asante"),
    ];
    for (i, (answer, expect)) in steps.iter().enumerate() {
        let reply = gw
            .hubtel("h-1", "233200000001", "Response", answer, i as u32 + 2)
            .await;
        let message = reply["Message"].as_str().unwrap_or("");
        assert!(message.starts_with(expect), "step {i}: {reply}");
        let expected_type = if i == steps.len() - 1 {
            "release"
        } else {
            "response"
        };
        assert_eq!(reply["Type"], expected_type, "step {i}: {reply}");
        assert_eq!(reply["SessionId"], "h-1");
    }
    let rows = gw.responses("e2e_survey").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, ResponseStatus::Completed);
    assert_eq!(rows[0].language, "sw");
    assert_eq!(rows[0].provider, "hubtel");
    assert_eq!(
        rows[0].answers.get("priority").map(|(v, _)| v.as_str()),
        Some("water")
    );
    gw.cleanup().await;
}

#[tokio::test]
async fn survey_over_hubtel_memory_sqlite() {
    survey_over_hubtel(Stores::MemorySqlite).await;
}

#[tokio::test]
async fn survey_over_hubtel_redis_postgres() {
    survey_over_hubtel(Stores::RedisPostgres).await;
}

/// Each example flow, driven over Africa's Talking with the script its snapshot test uses;
/// the answers stored must be exactly those the simulator saves for the same script.
async fn example_flows(stores: Stores) {
    let gw = start(stores).await;
    for (i, (file, code, script)) in common_scripts().iter().enumerate() {
        let source = std::fs::read_to_string(common::manifest_dir().join("flows").join(file))
            .expect("example flow");
        let flow = baraza::flow::load_str(file, &source)
            .expect("example flow loads")
            .flow;
        let compiled = baraza::engine::CompiledFlow::compile(flow.clone()).expect("compiles");
        let items = baraza::simulator::parse_script(script);
        let mut simulation = baraza::simulator::Simulation::new(&compiled, Default::default());
        simulation.dial();
        for item in &items {
            simulation.feed(item);
        }
        let inputs: Vec<&str> = script.split(',').collect();
        let session = format!("ex-{i}");
        let phone = format!("+2547220000{i:02}");
        let replies = gw.at_session(&session, &phone, code, &inputs).await;
        let last = replies.last().expect("replies");
        assert!(last.starts_with("END "), "{file}: flow did not end: {last}");
        let rows = gw
            .gateway
            .results
            .responses(&flow.id)
            .await
            .expect("responses");
        let row = rows
            .iter()
            .find(|r| r.subscriber == phone)
            .unwrap_or_else(|| panic!("{file}: no response stored"));
        assert_eq!(row.status, ResponseStatus::Completed, "{file}");
        let mut expected = std::collections::BTreeMap::new();
        for (result, value, _) in &simulation.saved {
            expected.insert(result.clone(), value.clone());
        }
        let stored: std::collections::BTreeMap<String, String> = row
            .answers
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        assert_eq!(
            stored, expected,
            "{file}: stored answers differ from the simulator's"
        );
    }
    gw.cleanup().await;
}

/// (flow file, service code, answers) for each example flow: a complete path.
fn common_scripts() -> Vec<(&'static str, &'static str, &'static str)> {
    EXAMPLE_SCRIPTS.to_vec()
}

const EXAMPLE_SCRIPTS: &[(&str, &str, &str)] = &[
    (
        "community_needs.yaml",
        "*384*12*1#",
        "1,1,2,1,3,98,0,98,7,2,3,Water comes only twice a week",
    ),
    ("service_feedback.yaml", "*384*12*2#", "1,2,4,2,00"),
    (
        "grievance.yaml",
        "*384*12*3#",
        "1,1,Pipe burst near Kondele market,Opposite the bus stage",
    ),
];

#[tokio::test]
async fn example_flows_memory_sqlite() {
    example_flows(Stores::MemorySqlite).await;
}

#[tokio::test]
async fn example_flows_redis_postgres() {
    example_flows(Stores::RedisPostgres).await;
}

/// Aggregators retry: the same callback many times at once advances the session once and
/// every copy gets the same screen.
async fn duplicate_callbacks(stores: Stores) {
    // Admission would refuse a dozen requests in a burst from one number; here the point is
    // what the session does with copies that get through.
    let gw = start_with(stores, |c| c.admission.burst = 100).await;
    gw.at("dup", PHONE, "*999#", "").await;
    gw.at("dup", PHONE, "*999#", "1").await;
    let copies = futures_join(&gw, "dup", "1*Kibera", 12).await;
    let first = copies[0].clone();
    assert!(
        first.contains("What should the county fix first in Kibera?"),
        "{first}"
    );
    assert!(
        copies.iter().all(|c| *c == first),
        "copies differ: {copies:?}"
    );
    // The session advanced exactly once: the next answer lands on the priority menu.
    let next = gw.at("dup", PHONE, "*999#", "1*Kibera*2").await;
    assert!(next.starts_with("CON How satisfied"), "{next}");
    let rows = gw.responses("e2e_survey").await;
    assert_eq!(rows.len(), 1, "one response, not one per copy");
    assert_eq!(
        rows[0].answers.get("village").map(|(v, _)| v.as_str()),
        Some("Kibera")
    );
    gw.cleanup().await;
}

async fn futures_join(gw: &TestGateway, session: &str, text: &str, n: usize) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let app = gw.app.clone();
        let body = common::form(&[
            ("sessionId", session),
            ("serviceCode", "*999#"),
            ("phoneNumber", PHONE),
            ("networkCode", "63902"),
            ("text", text),
        ]);
        tasks.spawn(async move {
            use tower::ServiceExt;
            let request = axum::http::Request::builder()
                .method("POST")
                .uri("/ussd/africastalking")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(axum::body::Body::from(body))
                .expect("request");
            let response = app.oneshot(request).await.expect("answer");
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            String::from_utf8_lossy(&bytes).into_owned()
        });
    }
    tasks.join_all().await
}

/// Copies of a dial at once: one session, one response (copies that start in a later
/// millisecond than the winner lose the save and withdraw theirs), the same first screen.
async fn duplicate_dials(stores: Stores) {
    let gw = start_with(stores, |c| c.admission.burst = 100).await;
    let copies = futures_join(&gw, "dup-dial", "", 12).await;
    assert!(copies[0].starts_with("CON "), "{copies:?}");
    assert!(
        copies.iter().all(|c| *c == copies[0]),
        "copies differ: {copies:?}"
    );
    let rows = gw.responses("e2e_survey").await;
    assert_eq!(rows.len(), 1, "one response, not one per copy: {rows:?}");
    let next = gw.at("dup-dial", PHONE, "*999#", "1").await;
    assert!(next.starts_with("CON Which village"), "{next}");
    gw.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_concurrent_dials_memory() {
    duplicate_dials(Stores::MemorySqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_concurrent_dials_redis() {
    duplicate_dials(Stores::RedisPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_concurrent_callbacks_memory() {
    duplicate_callbacks(Stores::MemorySqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_concurrent_callbacks_redis() {
    duplicate_callbacks(Stores::RedisPostgres).await;
}

#[tokio::test]
async fn redis_ttl_is_set_from_the_flow_and_refreshed_on_each_step() {
    let gw = start(Stores::RedisPostgres).await;
    gw.at("ttl", PHONE, "*999#", "").await;
    let key = SessionKey::new("africastalking", "ttl");
    let ttl = gw
        .gateway
        .sessions
        .ttl_millis(&key)
        .await
        .expect("ttl")
        .expect("key has a TTL");
    assert!(
        (170_000..=180_000).contains(&ttl),
        "TTL should be the flow's 180 s: {ttl}"
    );
    // Shorten the TTL behind the gateway's back; the next step must set it again.
    let mut conn = common::redis_connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!(
            "{}:s:*",
            gw.redis_prefix.as_deref().expect("prefix")
        ))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 1, "one session key: {keys:?}");
    let _: () = redis::cmd("PEXPIRE")
        .arg(&keys[0])
        .arg(5_000)
        .query_async(&mut conn)
        .await
        .expect("pexpire");
    let shortened = gw
        .gateway
        .sessions
        .ttl_millis(&key)
        .await
        .expect("ttl")
        .expect("ttl");
    assert!(shortened <= 5_000);
    gw.at("ttl", PHONE, "*999#", "1").await;
    let refreshed = gw
        .gateway
        .sessions
        .ttl_millis(&key)
        .await
        .expect("ttl")
        .expect("ttl");
    assert!(
        refreshed > 170_000,
        "TTL refreshed by the step: {refreshed}"
    );
    gw.cleanup().await;
}

async fn resume_after_drop(stores: Stores) {
    let gw = start(stores).await;
    let phone = "+254733000222";
    gw.at_session("r-1", phone, "*999#", &["2", "Nyeri"]).await;
    // The network drops the session; Africa's Talking reports it.
    let (status, _) = gw
        .post(
            "/ussd/africastalking/events",
            "application/x-www-form-urlencoded",
            common::form(&[
                ("sessionId", "r-1"),
                ("phoneNumber", phone),
                ("serviceCode", "*999#"),
                ("status", "Incomplete"),
                ("durationInMillis", "41000"),
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows = gw.responses("e2e_survey").await;
    assert_eq!(rows[0].status, ResponseStatus::Dropped);

    // Dialling again within the resume window offers to continue, in Swahili.
    let offer = gw.at("r-2", phone, "*999#", "").await;
    assert!(offer.starts_with("CON "), "{offer}");
    assert!(offer.contains("1.") && offer.contains("2."), "{offer}");
    let resumed = gw.at("r-2", phone, "*999#", "1").await;
    assert!(
        resumed.contains("Kaunti irekebishe nini kwanza Nyeri?"),
        "continues at priority: {resumed}"
    );
    let rating = gw.at("r-2", phone, "*999#", "1*2").await;
    assert!(rating.starts_with("CON Umeridhika"), "{rating}");
    let done = gw.at("r-2", phone, "*999#", "1*2*3").await;
    assert!(done.starts_with("END Asante"), "{done}");
    let rows = gw.responses("e2e_survey").await;
    assert_eq!(
        rows.len(),
        1,
        "the resumed session continues the same response"
    );
    assert_eq!(rows[0].status, ResponseStatus::Completed);
    assert_eq!(
        rows[0].answers.get("village").map(|(v, _)| v.as_str()),
        Some("Nyeri")
    );
    assert_eq!(
        rows[0].answers.get("rating").map(|(v, _)| v.as_str()),
        Some("3")
    );

    // A later dial of a completed flow starts afresh: no resume offer.
    let fresh = gw.at("r-3", phone, "*999#", "").await;
    assert!(fresh.starts_with("CON Choose language"), "{fresh}");
    gw.cleanup().await;
}

#[tokio::test]
async fn resume_after_drop_memory() {
    resume_after_drop(Stores::MemorySqlite).await;
}

#[tokio::test]
async fn resume_after_drop_redis() {
    resume_after_drop(Stores::RedisPostgres).await;
}

#[tokio::test]
async fn restart_with_start_again_keeps_nothing_of_the_old_answers_in_the_new_response() {
    let gw = start(Stores::MemorySqlite).await;
    let phone = "+254733000333";
    gw.at_session("a-1", phone, "*999#", &["1", "Embu"]).await;
    gw.post(
        "/ussd/africastalking/events",
        "application/x-www-form-urlencoded",
        common::form(&[
            ("sessionId", "a-1"),
            ("phoneNumber", phone),
            ("status", "Incomplete"),
        ]),
    )
    .await;
    let replies = gw.at_session("a-2", phone, "*999#", &["2"]).await;
    assert!(
        replies[1].starts_with("CON Choose language"),
        "start again: {:?}",
        replies
    );
    gw.cleanup().await;
}

#[tokio::test]
async fn garbage_inputs_get_clear_errors() {
    let gw = start(Stores::MemorySqlite).await;
    let form_ct = "application/x-www-form-urlencoded";
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "/ussd/africastalking",
            form_ct,
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "sessionId",
        ),
        (
            "/ussd/africastalking",
            form_ct,
            b"sessionId=x&serviceCode=*999%23&text=".to_vec(),
            StatusCode::BAD_REQUEST,
            "phoneNumber",
        ),
        (
            "/ussd/africastalking",
            form_ct,
            b"sessionId=x&serviceCode=*999%23&phoneNumber=hello&text=".to_vec(),
            StatusCode::BAD_REQUEST,
            "phoneNumber",
        ),
        (
            "/ussd/africastalking",
            form_ct,
            b"sessionId=%FF%FE&serviceCode=1&phoneNumber=%2B2547&text=".to_vec(),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            "/ussd/africastalking",
            form_ct,
            vec![0xff, 0x00, 0x13],
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            "/ussd/hubtel",
            "application/json",
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "Hubtel",
        ),
        (
            "/ussd/hubtel",
            "application/json",
            br#"{"Type":"Initiation","Mobile":"233200000001","ServiceCode":"*999#"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "SessionId",
        ),
        (
            "/ussd/hubtel",
            "application/json",
            br#"{"Type":"Dance","Mobile":"233200000001","ServiceCode":"*999#","SessionId":"q"}"#
                .to_vec(),
            StatusCode::BAD_REQUEST,
            "Type",
        ),
        (
            "/ussd/africastalking/events",
            form_ct,
            b"status=Success".to_vec(),
            StatusCode::BAD_REQUEST,
            "sessionId",
        ),
        (
            "/ussd/africastalking",
            form_ct,
            vec![b'a'; 64 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
    ];
    for (path, content_type, body, expected, mentions) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (status, reply) = gw.post(path, content_type, body).await;
        assert_eq!(status, expected, "{path} {shown:?}: {reply}");
        assert!(
            reply.contains(mentions),
            "{path} {shown:?}: message should name `{mentions}`: {reply}"
        );
        assert!(!reply.contains("panicked"), "{reply}");
    }
    // An unknown service code is a polite END, not an error.
    let reply = gw.at("u-1", PHONE, "*123*45#", "").await;
    assert_eq!(
        reply,
        "END Sorry, this service code is not in use.\nSamahani, huduma hii haipatikani."
    );
    // The gateway still works after all that.
    assert!(gw.at("ok-1", PHONE, "*999#", "").await.starts_with("CON "));
    gw.cleanup().await;
}

#[tokio::test]
async fn a_number_sending_too_fast_is_refused_before_any_session_loads() {
    let gw = start_with(Stores::MemorySqlite, |c| {
        c.admission.per_subscriber_per_minute = 1;
        c.admission.burst = 3;
    })
    .await;
    let phone = "+254744000444";
    let mut replies = Vec::new();
    for i in 0..5 {
        replies.push(gw.at(&format!("fast-{i}"), phone, "*999#", "").await);
    }
    assert!(
        replies[..3].iter().all(|r| r.starts_with("CON ")),
        "{replies:?}"
    );
    assert!(
        replies[3].starts_with("END Sorry, too many requests"),
        "{replies:?}"
    );
    // Refused requests start nothing.
    let rows = gw.responses("e2e_survey").await;
    assert_eq!(rows.len(), 3);
    // Another number is not affected.
    assert!(
        gw.at("other", "+254744000555", "*999#", "")
            .await
            .starts_with("CON ")
    );
    gw.cleanup().await;
}

#[tokio::test]
async fn health_and_metrics() {
    let gw = start(Stores::RedisPostgres).await;
    let (status, body) = gw.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["status"], "ok");
    assert!(
        health["flows"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "e2e_survey@1"))
    );
    gw.at_session("m-1", PHONE, "*999#", &["1"]).await;
    let (status, metrics) = gw.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("baraza_steps_total"), "{metrics}");
    assert!(metrics.contains("baraza_step_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("baraza_sessions_total"), "{metrics}");
    gw.cleanup().await;
}

#[tokio::test]
async fn reload_refuses_a_broken_flow_and_in_flight_sessions_keep_their_version() {
    let gw = start(Stores::MemorySqlite).await;
    let flows = gw.config.flows_dir.clone();
    // A session starts on version 1 and answers the first question.
    gw.at_session("v-1", PHONE, "*999#", &["1", "Meru"]).await;

    // A broken edit is refused with the checker's message; version 1 keeps running.
    let path = flows.join("e2e_survey.yaml");
    let original = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, original.replace("next: priority", "next: priorty")).expect("write");
    let (status, body) = gw.post("/admin/reload", "text/plain", Vec::new()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("priorty"), "names the problem: {body}");

    // Version 2 changes the rating question; the session under way finishes on version 1.
    let v2 = original.replace("version: 1", "version: 2").replace(
        "How satisfied are you with county services?",
        "Version two question?",
    );
    std::fs::write(&path, v2).expect("write");
    let (status, body) = gw.post("/admin/reload", "text/plain", Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("e2e_survey@2"), "{body}");
    let old = gw.at("v-1", PHONE, "*999#", "1*Meru*1").await;
    assert!(
        old.starts_with("CON How satisfied"),
        "in-flight session stays on v1: {old}"
    );
    let new = gw
        .at_session("v-2", "+254700000999", "*999#", &["1", "Meru", "1"])
        .await;
    assert!(
        new[3].starts_with("CON Version two question?"),
        "new sessions use v2: {new:?}"
    );
    gw.cleanup().await;
}

#[tokio::test]
async fn export_writes_one_row_per_response_with_pseudonymised_numbers() {
    let gw = start(Stores::MemorySqlite).await;
    gw.at_session("e-1", "+254755000001", "*999#", &["1", "Kitui", "5", "2"])
        .await;
    gw.at_session("e-2", "+254755000002", "*999#", &["2", "Machakos"])
        .await;
    let rows = gw.responses("e2e_survey").await;
    let names: Vec<String> = ["village", "priority", "rating"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut out = Vec::new();
    baraza::result_store::export::export_csv(
        &rows,
        &names,
        Some(&baraza::pseudonym::Pseudonymiser::new(b"test-secret")),
        &mut out,
    )
    .expect("export");
    let csv = String::from_utf8(out).expect("utf8");
    assert_eq!(csv.lines().count(), 3, "header + 2 responses:\n{csv}");
    assert!(
        !csv.contains("+254755000001"),
        "numbers pseudonymised:\n{csv}"
    );
    assert!(csv.contains("Kitui") && csv.contains("Machakos"));
    assert!(csv.contains("completed") && csv.contains("active"), "{csv}");
    gw.cleanup().await;
}

#[tokio::test]
async fn only_the_configured_providers_have_routes() {
    let gw = start_with(Stores::MemorySqlite, |c| {
        c.ussd.providers = vec![baraza::channels::ussd::UssdProvider::Hubtel];
        c.voice.providers = Vec::new();
    })
    .await;
    let (status, _) = gw
        .post(
            "/ussd/africastalking",
            "application/x-www-form-urlencoded",
            common::form(&[("sessionId", "x")]),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gw
        .post(
            "/voice/twiml",
            "application/x-www-form-urlencoded",
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let reply = gw
        .hubtel("only-hubtel", "233200000001", "Initiation", "*999#", 1)
        .await;
    assert_eq!(reply["Type"], "response");
    gw.cleanup().await;
}
