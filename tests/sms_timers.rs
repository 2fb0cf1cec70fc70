//! SMS sessions wait hours: one reminder of an unanswered question after `sms.reminder_after`,
//! then the session times out. The timers live in the session store (memory or Redis), so any
//! gateway node fires them, once. Two messages that arrive together are answered in turn.

mod common;

use baraza::dispatcher::now_ms;
use baraza::result_store::ResponseStatus;
use common::Stores;

const HOUR: i64 = 3_600_000;

async fn reminder_then_timeout(stores: Stores) {
    let gw = common::start(stores).await;
    let citizen = "+254733555001";
    let first = gw.gateway.sms_step(citizen, "HEALTH").await;
    assert_eq!(first.len(), 1);
    assert!(first[0].text.contains("Which service?"), "{first:?}");
    let asked_at = now_ms();

    assert!(
        gw.gateway.sms_due(asked_at + HOUR).await.is_empty(),
        "not due after 1 h"
    );
    // service_feedback: `sms.reminder_after: 6h`, `sms.session_timeout: 48h`.
    let reminder = gw.gateway.sms_due(asked_at + 6 * HOUR + 1_000).await;
    assert_eq!(reminder.len(), 1, "one reminder after 6 h: {reminder:?}");
    assert_eq!(reminder[0].to, citizen);
    assert!(reminder[0].text.starts_with("Reminder:"), "{reminder:?}");
    assert!(reminder[0].text.contains("Which service?"), "{reminder:?}");
    assert!(
        gw.gateway
            .sms_due(asked_at + 6 * HOUR + 2_000)
            .await
            .is_empty(),
        "only one reminder"
    );
    assert!(
        gw.gateway.sms_due(asked_at + 47 * HOUR).await.is_empty(),
        "still open at 47 h"
    );

    // Nobody answers: the session ends at the flow's SMS timeout, without a message.
    let ended = gw.gateway.sms_due(asked_at + 49 * HOUR).await;
    assert!(ended.is_empty(), "{ended:?}");
    let rows = gw
        .gateway
        .results
        .responses("service_feedback")
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, ResponseStatus::TimedOut);

    // Completing the flow removes the timer: nothing fires later.
    let other = "+254733555002";
    for answer in ["HEALTH", "2", "5", "1", "SKIP"] {
        gw.gateway.sms_step(other, answer).await;
    }
    let rows = gw
        .gateway
        .results
        .responses("service_feedback")
        .await
        .expect("rows");
    assert!(
        rows.iter()
            .any(|r| r.subscriber == other && r.status == ResponseStatus::Completed),
        "{rows:?}"
    );
    assert!(gw.gateway.sms_due(now_ms() + 100 * HOUR).await.is_empty());
    gw.cleanup().await;
}

#[tokio::test]
async fn sms_reminder_then_timeout_memory() {
    reminder_then_timeout(Stores::MemorySqlite).await;
}

#[tokio::test]
async fn sms_reminder_then_timeout_redis() {
    reminder_then_timeout(Stores::RedisPostgres).await;
}

#[tokio::test]
async fn stop_cancels_the_timer_and_start_lifts_the_stop() {
    let gw = common::start(Stores::RedisPostgres).await;
    let citizen = "+254733555003";
    gw.gateway.sms_step(citizen, "HEALTH").await;
    let stop = gw.gateway.sms_step(citizen, "STOP").await;
    assert!(stop[0].text.contains("Send START"), "{stop:?}");
    assert!(
        gw.gateway.sms_due(now_ms() + 7 * HOUR).await.is_empty(),
        "no reminder after STOP"
    );
    assert!(
        gw.gateway.sms_step(citizen, "HEALTH").await.is_empty(),
        "nothing while stopped"
    );
    let start = gw.gateway.sms_step(citizen, "start").await;
    assert!(start[0].text.contains("Welcome back"), "{start:?}");
    assert!(!gw.gateway.sms_step(citizen, "HEALTH").await.is_empty());
    gw.cleanup().await;
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Whatever citizens text, in any order, the SMS path answers (or stays silent) and never
    /// panics; replies are never empty strings.
    #[test]
    fn sms_step_never_panics(messages in proptest::collection::vec("(HEALTH|AFYA|STOP|START|SKIP|[0-9]{1,3}|\\PC{0,40})", 1..12)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let gw = common::start(Stores::MemorySqlite).await;
            for text in &messages {
                for reply in gw.gateway.sms_step("+254733555999", text).await {
                    assert!(!reply.text.trim().is_empty(), "empty reply to {text:?}");
                }
            }
            let _ = gw.gateway.sms_due(now_ms() + 100 * HOUR).await;
            gw.cleanup().await;
        });
    }
}

/// A citizen who types fast sends the answers to two questions before the first reply came:
/// both steps run, in turn, each answering its own question, and both get a reply.
async fn two_messages_at_once_are_both_answered(stores: Stores) {
    let gw = common::start(stores).await;
    let citizen = "+254733555009";
    let first = gw.gateway.sms_step(citizen, "HEALTH").await;
    assert!(first[0].text.contains("Which service?"), "{first:?}");
    let (a, b) = tokio::join!(
        gw.gateway.sms_step(citizen, "2"),
        gw.gateway.sms_step(citizen, "5"),
    );
    assert_eq!((a.len(), b.len()), (1, 1), "both answered: {a:?} {b:?}");
    let rows = gw.responses("service_feedback").await;
    assert_eq!(rows.len(), 1);
    let answers: Vec<(&str, &str)> = rows[0]
        .answers
        .iter()
        .map(|(name, (value, _))| (name.as_str(), value.as_str()))
        .collect();
    // "2" chose the second service (stored by its value), "5" rated it.
    assert_eq!(
        answers,
        vec![("rating", "5"), ("service", "water")],
        "in the order they came"
    );
    gw.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_at_once_memory() {
    two_messages_at_once_are_both_answered(Stores::MemorySqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_at_once_redis() {
    two_messages_at_once_are_both_answered(Stores::RedisPostgres).await;
}

/// The same citizen's two quick answers reach two nodes (each on its own bind): both are
/// answered, in turn, and each answer is stored against its own question. Without a turn held
/// across nodes the second node answered the same question over the first, and its answer
/// replaced the first one's in the result store (so the store said `office` and `5` for a
/// citizen who chose water and rated it 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_at_once_on_two_nodes_are_both_answered() {
    let a = common::start(Stores::RedisPostgres).await;
    let b = common::from_config(
        a.config.clone(),
        tempfile::tempdir().expect("tempdir"),
        None,
        None,
    )
    .await;
    let citizens: Vec<String> = (0..12).map(|i| format!("+2547335561{i:02}")).collect();
    for citizen in &citizens {
        let first = a.gateway.sms_step(citizen, "HEALTH").await;
        assert!(first[0].text.contains("Which service?"), "{first:?}");
        let (x, y) = tokio::join!(
            a.gateway.sms_step(citizen, "2"),
            b.gateway.sms_step(citizen, "5"),
        );
        assert_eq!((x.len(), y.len()), (1, 1), "both answered: {x:?} {y:?}");
    }
    let rows = a.responses("service_feedback").await;
    assert_eq!(rows.len(), citizens.len());
    for row in rows {
        let answers: Vec<(&str, &str)> = row
            .answers
            .iter()
            .map(|(name, (value, _))| (name.as_str(), value.as_str()))
            .collect();
        // "2" then "5": water, rated 5; "5" then "2": the county office, rated 2.
        assert!(
            answers == [("rating", "5"), ("service", "water")]
                || answers == [("rating", "2"), ("service", "office")],
            "each answer against its own question: {answers:?}"
        );
    }
    a.cleanup().await;
}

/// Opt-outs an older gateway kept in the session store are carried over to the result store's
/// consent when a gateway starts, logged as from the session store, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_outs_kept_in_the_session_store_are_carried_over_at_start() {
    let a = common::start(Stores::RedisPostgres).await;
    let number = "+254733556201";
    a.gateway
        .sessions
        .set_opted_out(number, true)
        .await
        .expect("an old-style opt-out");
    assert!(!a.gateway.is_opted_out(number).await.expect("read"));
    let restarted = common::from_config(
        a.config.clone(),
        tempfile::tempdir().expect("tempdir"),
        None,
        None,
    )
    .await;
    assert!(restarted.gateway.is_opted_out(number).await.expect("read"));
    let log = restarted.gateway.consent().log(number).await.expect("log");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        log[0].consent.source,
        baraza::result_store::ConsentSource::SessionStore
    );
    // Started again: nothing more is logged.
    let again = common::from_config(
        a.config.clone(),
        tempfile::tempdir().expect("tempdir"),
        None,
        None,
    )
    .await;
    assert_eq!(
        again
            .gateway
            .consent()
            .log(number)
            .await
            .expect("log")
            .len(),
        1
    );
    a.cleanup().await;
}
