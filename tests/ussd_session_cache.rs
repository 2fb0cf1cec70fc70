//! A node's own copies of the sessions it saved (`dispatcher::session_cache`), against the real
//! Redis and PostgreSQL: a session whose steps stay on one node reads Redis once, and two nodes
//! sharing Redis that take turns on one session (or receive each other's retries) record
//! exactly the answers a single node records.
//!
//! The tests hold one lock while they run, so the copy counters read from `/metrics` (global
//! to this test process) change only by what the running test did, and the race test's
//! paused Redis writes stall no other test of this binary.

mod common;

use baraza::result_store::ResponseStatus;
use common::{Stores, TestGateway, start, start_with};

const PHONE: &str = "+254711000222";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The value of the counter `series` (name and labels) at `/metrics`, 0 while never counted.
async fn counter(gw: &TestGateway, series: &str) -> u64 {
    let (_, metrics) = gw.get("/metrics").await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().expect("a number") as u64)
        .unwrap_or(0)
}

/// The value of `baraza_session_cache_total{outcome="<outcome>"}`.
async fn copies(gw: &TestGateway, outcome: &str) -> u64 {
    counter(
        gw,
        &format!("baraza_session_cache_total{{outcome=\"{outcome}\"}}"),
    )
    .await
}

/// A second node on the first one's Redis prefix and PostgreSQL schema.
async fn second_node(first: &TestGateway) -> TestGateway {
    common::from_config(
        first.config.clone(),
        tempfile::tempdir().expect("tempdir"),
        None,
        None,
    )
    .await
}

/// The stored answers of the one response of the survey flow, by result name.
async fn answers(gw: &TestGateway) -> Vec<(String, String)> {
    let rows = gw.responses("e2e_survey").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, ResponseStatus::Completed);
    let mut answers: Vec<(String, String)> = rows[0]
        .answers
        .iter()
        .map(|(name, (value, _))| (name.clone(), value.clone()))
        .collect();
    answers.sort();
    answers
}

fn expected(village: &str, priority: &str, rating: &str) -> Vec<(String, String)> {
    let mut answers = vec![
        ("priority".to_string(), priority.to_string()),
        ("rating".to_string(), rating.to_string()),
        ("village".to_string(), village.to_string()),
    ];
    answers.sort();
    answers
}

#[tokio::test]
async fn steps_on_one_node_after_the_dial_use_its_copy_and_answer_the_same() {
    let _serial = SERIAL.lock().await;
    let gw = start(Stores::RedisPostgres).await;
    let (hits, stale) = (copies(&gw, "hit").await, copies(&gw, "stale").await);
    let inputs = ["1", "Kisumu Ndogo", "98", "0", "3", "7", "4"];
    let replies = gw.at_session("c-1", PHONE, "*999#", &inputs).await;
    assert!(replies[1].starts_with("CON Which village"), "{replies:?}");
    assert!(replies[6].starts_with("CON Sorry"), "{replies:?}");
    assert!(replies[7].starts_with("END Thank you"), "{replies:?}");
    // The dial reads Redis (it may resume); each of the seven answers follows the copy the
    // step before left.
    assert_eq!(copies(&gw, "hit").await - hits, inputs.len() as u64);
    assert_eq!(copies(&gw, "stale").await, stale);
    assert_eq!(answers(&gw).await, expected("Kisumu Ndogo", "roads", "4"));

    // An answer that itself contains `*` cannot be told from two answers, so that step reads
    // Redis; the answer is kept whole either way.
    let hits = copies(&gw, "hit").await;
    gw.at_session("c-2", "+254711000223", "*999#", &["1", "Kisumu*Ndogo"])
        .await;
    assert_eq!(copies(&gw, "hit").await - hits, 1, "only the language step");
    gw.cleanup().await;
}

/// Africa's Talking steps alternating between two nodes after the first two. Each node's copy
/// is a step behind when the session comes back to it, so it must not be used: read as one
/// answer, the text `1*Kisumu Ndogo*98` against the first node's copy taken after `1` would
/// store `Kisumu Ndogo*98` as the village.
#[tokio::test]
async fn africastalking_steps_alternating_between_two_nodes_store_the_right_answers() {
    let _serial = SERIAL.lock().await;
    let first = start(Stores::RedisPostgres).await;
    let second = second_node(&first).await;
    let stale = copies(&first, "stale").await;
    let inputs = ["1", "Kisumu Ndogo", "98", "0", "3", "7", "4"];
    let mut replies = vec![first.at("c-3", PHONE, "*999#", "").await];
    for i in 1..=inputs.len() {
        let node = if i % 2 == 1 { &first } else { &second };
        replies.push(node.at("c-3", PHONE, "*999#", &inputs[..i].join("*")).await);
    }
    assert!(
        replies[2].contains("What should the county fix first"),
        "{replies:?}"
    );
    assert!(replies[3].contains("7. Something else"), "{replies:?}");
    assert!(replies[7].starts_with("END Thank you"), "{replies:?}");
    assert_eq!(
        answers(&first).await,
        expected("Kisumu Ndogo", "roads", "4")
    );
    assert_eq!(copies(&first, "stale").await, stale, "no copy was taken");
    first.cleanup().await;
}

/// A retry that reaches the other node after the first one answered it: the other node's copy
/// is one step behind and the request directly follows it, so the copy is used, the same
/// answer is committed again (one row), and the save finds the copy stale; the step is done
/// again from Redis, which sees a duplicate and returns the first node's screen.
#[tokio::test]
async fn a_retry_on_the_node_with_the_older_copy_returns_the_same_screen() {
    let _serial = SERIAL.lock().await;
    let first = start(Stores::RedisPostgres).await;
    let second = second_node(&first).await;
    let stale = copies(&first, "stale").await;
    first.at("c-4", PHONE, "*999#", "").await;
    first.at("c-4", PHONE, "*999#", "1").await;
    let answered = second.at("c-4", PHONE, "*999#", "1*Kisumu Ndogo").await;
    assert!(
        answered.contains("What should the county fix first"),
        "{answered}"
    );
    let retried = first.at("c-4", PHONE, "*999#", "1*Kisumu Ndogo").await;
    assert_eq!(retried, answered);
    assert_eq!(copies(&first, "stale").await - stale, 1);
    // The session goes on from where the second node left it, on either node.
    for (node, text) in [
        (&first, "1*Kisumu Ndogo*3"),
        (&second, "1*Kisumu Ndogo*3*4"),
    ] {
        node.at("c-4", PHONE, "*999#", text).await;
    }
    assert_eq!(
        answers(&first).await,
        expected("Kisumu Ndogo", "roads", "4")
    );
    first.cleanup().await;
}

/// Hubtel carries only the newest input and a sequence number: a copy is used only for the
/// next sequence number, so a node that missed a step reads Redis.
#[tokio::test]
async fn hubtel_steps_alternating_between_two_nodes_store_the_right_answers() {
    let _serial = SERIAL.lock().await;
    let first = start(Stores::RedisPostgres).await;
    let second = second_node(&first).await;
    let phone = "233200000002";
    first.hubtel("c-5", phone, "Initiation", "*999#", 1).await;
    let steps = [
        (&first, "2", "Unaishi kijiji"),
        (&second, "Gilgil", "Kaunti"),
        (&first, "1", "Umeridhika"),
        (&second, "5", "Asante"),
    ];
    for (i, (node, answer, expect)) in steps.iter().enumerate() {
        let reply = node
            .hubtel("c-5", phone, "Response", answer, i as u32 + 2)
            .await;
        let message = reply["Message"].as_str().unwrap_or("");
        assert!(message.starts_with(expect), "step {i}: {reply}");
    }
    assert_eq!(answers(&first).await, expected("Gilgil", "water", "5"));
    first.cleanup().await;
}

/// With the copies turned off every step reads Redis, and nothing is counted.
#[tokio::test]
async fn copies_can_be_turned_off() {
    let _serial = SERIAL.lock().await;
    let gw = start_with(Stores::RedisPostgres, |c| {
        if let baraza::config::SessionsConfig::Redis {
            node_cache_entries, ..
        } = &mut c.sessions
        {
            *node_cache_entries = 0;
        }
    })
    .await;
    let hits = copies(&gw, "hit").await;
    gw.at_session("c-6", PHONE, "*999#", &["1", "Kisumu Ndogo", "3", "4"])
        .await;
    assert_eq!(copies(&gw, "hit").await, hits);
    assert_eq!(answers(&gw).await, expected("Kisumu Ndogo", "roads", "4"));
    gw.cleanup().await;
}

/// The value of `baraza_sessions_total{event="withdrawn"}`.
async fn withdrawn(gw: &TestGateway) -> u64 {
    counter(gw, "baraza_sessions_total{event=\"withdrawn\"}").await
}

/// Waits until the survey flow has `n` responses stored (each node commits its start before
/// it saves the session), and returns them.
async fn responses_once_stored(
    gw: &TestGateway,
    n: usize,
) -> Vec<baraza::result_store::ResponseRow> {
    let waited = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let rows = gw.responses("e2e_survey").await;
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("{n} responses were not stored within 5 s"))
}

/// Two copies of one dial on two nodes, both read before either is saved, started in
/// different milliseconds (so under different response ids): both commit their response,
/// one save wins, and the node whose save lost withdraws its response, so the flow has one
/// response, which the session goes on with. Redis holds writes (`CLIENT PAUSE ... WRITE`;
/// reads are still served) until both responses are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_copy_that_loses_the_save_on_another_node_withdraws_its_response() {
    let _serial = SERIAL.lock().await;
    // Longer than the held writes can last, so the held steps are not cut by the deadline.
    let first = start_with(Stores::RedisPostgres, |c| c.ussd.step_deadline_ms = 30_000).await;
    let second = second_node(&first).await;
    let before = withdrawn(&first).await;
    let mut control = common::redis_connection().await;
    common::pause_redis(&mut control, 8_000, "WRITE").await;
    let second_dial = async {
        let started = responses_once_stored(&first, 1).await[0].started_at_ms;
        // A later millisecond than the first copy's start, so a different response id.
        while baraza::dispatcher::now_ms() <= started {
            tokio::task::yield_now().await;
        }
        let release = async {
            let stored = responses_once_stored(&first, 2).await;
            let _: () = redis::cmd("CLIENT")
                .arg("UNPAUSE")
                .query_async(&mut control)
                .await
                .expect("unpause");
            stored
        };
        tokio::join!(second.at("c-race", PHONE, "*999#", ""), release)
    };
    let (on_first, (on_second, both)) =
        tokio::join!(first.at("c-race", PHONE, "*999#", ""), second_dial);
    assert_ne!(both[0].response_id, both[1].response_id, "{both:?}");
    assert!(on_first.starts_with("CON "), "{on_first}");
    assert_eq!(
        on_first, on_second,
        "the losing copy answers with the winner's screen"
    );
    let kept = first.responses("e2e_survey").await;
    assert_eq!(kept.len(), 1, "one response, not one per copy: {kept:?}");
    assert_eq!(withdrawn(&first).await - before, 1);

    // The session goes on with the response that was kept.
    let inputs = ["1", "Kisumu Ndogo", "98", "0", "3", "7", "4"];
    for i in 1..=inputs.len() {
        let node = if i % 2 == 1 { &second } else { &first };
        node.at("c-race", PHONE, "*999#", &inputs[..i].join("*"))
            .await;
    }
    assert_eq!(
        answers(&first).await,
        expected("Kisumu Ndogo", "roads", "4")
    );
    assert_eq!(
        first.responses("e2e_survey").await[0].response_id,
        kept[0].response_id
    );
    first.cleanup().await;
}
