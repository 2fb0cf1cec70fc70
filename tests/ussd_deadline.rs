//! The step deadline: with Redis paused (`CLIENT PAUSE`), a step still answers, with a polite
//! `END` in the citizen's language, and the gateway recovers when Redis does.
//!
//! Alone in its own test binary: pausing Redis would stall other tests running beside it.

mod common;

use common::Stores;

#[tokio::test]
async fn a_stalled_redis_gets_a_polite_end_not_an_aggregator_timeout() {
    let gw = common::start_with(Stores::RedisPostgres, |c| {
        if let baraza::config::SessionsConfig::Redis { response_timeout_ms, .. } = &mut c.sessions {
            // Longer than the deadline, so it is the deadline that answers.
            *response_timeout_ms = 10_000;
        }
    })
    .await;
    assert!(gw.at("d-1", "+254777000001", "*999#", "").await.starts_with("CON "));

    let mut conn = common::redis_connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3_000)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .expect("pause");
    let reply = gw.at("d-1", "+254777000001", "*999#", "1").await;
    // Without the deadline this step would have waited for Redis and shown the next question;
    // the Redis timeout (10 s) is longer than the pause, so only the deadline gives this reply.
    // The session could not be read, so its language is unknown: both translations, one screen.
    assert_eq!(
        reply,
        "END Sorry, the service is busy. Please dial again in a few minutes.\nSamahani, huduma ina shughuli nyingi. Tafadhali piga tena baada ya dakika chache."
    );

    let (_, metrics) = gw.get("/metrics").await;
    assert!(metrics.contains("kind=\"deadline\""), "deadline counted: {metrics}");

    // Once Redis resumes, the same citizen can dial again.
    let again = gw.at("d-2", "+254777000001", "*999#", "").await;
    assert!(again.starts_with("CON "), "{again}");
    gw.cleanup().await;
}
