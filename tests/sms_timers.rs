//! SMS sessions wait hours: one reminder of an unanswered question after `sms.reminder_after`,
//! then the session times out. The timers live in the session store (memory or Redis), so any
//! gateway node fires them, once.

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
