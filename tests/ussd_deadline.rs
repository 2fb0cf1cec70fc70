//! The step deadline: with Redis paused (`CLIENT PAUSE`), a step still answers, with a polite
//! `END` in the citizen's language, and the gateway recovers when Redis does.
//!
//! Alone in its own test binary: pausing Redis would stall other tests running beside it.

mod common;

use common::Stores;

/// A gateway on Redis whose per-command timeout is longer than the step deadline, so that a
/// stalled Redis is answered by the deadline; with or without its own session copies.
async fn redis_gateway(copies: usize) -> common::TestGateway {
    common::start_with(Stores::RedisPostgres, |c| {
        if let baraza::config::SessionsConfig::Redis {
            response_timeout_ms,
            node_cache_entries,
            ..
        } = &mut c.sessions
        {
            *response_timeout_ms = 10_000;
            *node_cache_entries = copies;
        }
    })
    .await
}

#[tokio::test]
async fn a_stalled_redis_gets_a_polite_end_not_an_aggregator_timeout() {
    // Without copies the step stalls reading the session; with them (the step after the dial
    // is done from this node's copy) it stalls saving it.
    let gw = redis_gateway(0).await;
    let with_copies = redis_gateway(1000).await;
    for node in [&gw, &with_copies] {
        assert!(
            node.at("d-1", "+254777000001", "*999#", "")
                .await
                .starts_with("CON ")
        );
    }

    let mut conn = common::redis_connection().await;
    common::pause_redis(&mut conn, 3_000, "ALL").await;
    let (reply, reply_with_copy) = tokio::join!(
        gw.at("d-1", "+254777000001", "*999#", "1"),
        with_copies.at("d-1", "+254777000001", "*999#", "1"),
    );
    // Without the deadline this step would have waited for Redis and shown the next question;
    // the Redis timeout (10 s) is longer than the pause, so only the deadline gives this reply.
    // The session could not be read, so its language is unknown: both translations, one screen.
    assert_eq!(
        reply,
        "END Sorry, the service is busy. Please dial again in a few minutes.\nSamahani, huduma ina shughuli nyingi. Tafadhali piga tena baada ya dakika chache."
    );
    // From the copy the language is known (English was chosen with `1`).
    assert_eq!(
        reply_with_copy,
        "END Sorry, the service is busy. Please dial again in a few minutes."
    );

    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains("kind=\"deadline\""),
        "deadline counted: {metrics}"
    );

    // Once Redis resumes, the same citizen can dial again.
    let again = gw.at("d-2", "+254777000001", "*999#", "").await;
    assert!(again.starts_with("CON "), "{again}");
    gw.cleanup().await;
    with_copies.cleanup().await;
}

#[tokio::test]
async fn a_stalled_result_store_gets_a_polite_end_and_the_answer_is_still_kept() {
    let gw = common::start_with(Stores::RedisPostgres, |c| {
        c.sessions = baraza::config::SessionsConfig::Memory;
        c.ussd.step_deadline_ms = 1_000;
    })
    .await;
    let schema = gw.pg_schema.clone().expect("schema");
    assert!(
        gw.at("pg-1", "+254777000002", "*999#", "")
            .await
            .starts_with("CON ")
    );
    let english = gw.at("pg-1", "+254777000002", "*999#", "1").await;
    assert!(english.starts_with("CON Which village"), "{english}");

    // Another client holds the answers table: the step's commit cannot finish in time.
    let (client, connection) =
        tokio_postgres::connect(&common::postgres_url(), tokio_postgres::NoTls)
            .await
            .expect("postgres");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".answers IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .expect("lock");
    let reply = gw.at("pg-1", "+254777000002", "*999#", "1*Kakamega").await;
    // The session is known, so the apology comes in its language only.
    assert_eq!(
        reply,
        "END Sorry, the service is busy. Please dial again in a few minutes."
    );
    client.batch_execute("ROLLBACK").await.expect("unlock");

    // The commit was queued, not dropped: once the table is free it lands.
    let rows = wait_for_answer(&gw, "village").await;
    assert_eq!(rows.as_deref(), Some("Kakamega"));
    gw.cleanup().await;
}

/// Waits (on the store's own flush, not on a timer) until `result` is stored.
async fn wait_for_answer(gw: &common::TestGateway, result: &str) -> Option<String> {
    for _ in 0..200 {
        let rows = gw.responses("e2e_survey").await;
        if let Some(value) = rows
            .first()
            .and_then(|r| r.answers.get(result))
            .map(|(v, _)| v.clone())
        {
            return Some(value);
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    None
}
