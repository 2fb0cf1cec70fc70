//! Faults at small scale, against real servers the test owns (so no other test is disturbed):
//! a private Redis stopped and restarted under a running gateway. While it is down a step gets
//! the polite "busy" answer within the step deadline and nothing half-done is stored; once it
//! is back, new sessions work without restarting the gateway (what Redis itself lost, the live
//! sessions, is all that is lost).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use baraza::config::SessionsConfig;
use common::Stores;

/// A `redis-server` of this test's own, on `port`, keeping nothing on disk.
fn redis_on(port: u16) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts (installed by .ci/services.sh)")
}

/// Waits (bounded) until the private Redis answers PING.
async fn until_up(port: u16) {
    let url = format!("redis://127.0.0.1:{port}");
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(client) = redis::Client::open(url.as_str())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "private redis on {port} never answered");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_costs_the_live_sessions_and_nothing_else() {
    let port = free_port();
    let mut redis = redis_on(port);
    until_up(port).await;
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.sessions = SessionsConfig::Redis {
            url: Some(format!("redis://127.0.0.1:{port}").into()),
            key_prefix: "faults".into(),
            response_timeout_ms: 300,
            node_cache_entries: 0,
        };
    })
    .await;
    let phone = "+254700900001";
    assert!(
        gw.at("f-1", phone, "*999#", "")
            .await
            .starts_with("CON Choose language")
    );
    assert!(
        gw.at("f-1", phone, "*999#", "1")
            .await
            .starts_with("CON Which village")
    );

    // Redis goes away.
    redis.kill().expect("stop redis");
    redis.wait().expect("reaped");
    let started = std::time::Instant::now();
    let down = gw.at("f-1", phone, "*999#", "1*Kisumu").await;
    assert!(down.starts_with("END ") && down.contains("busy"), "{down}");
    assert!(
        started.elapsed() < Duration::from_millis(gw.config.ussd.step_deadline_ms + 1_000),
        "answered within the step deadline"
    );
    let rows = gw.responses("e2e_survey").await;
    assert!(
        rows.iter().all(|r| !r.answers.contains_key("village")),
        "no answer stored for a step that failed: {rows:?}"
    );

    // Redis is back (empty: it keeps nothing): a new dial works on the same gateway.
    let mut redis = redis_on(port);
    until_up(port).await;
    let again = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let reply = gw.at("f-2", phone, "*999#", "").await;
            if reply.starts_with("CON ") {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the gateway reconnects to Redis");
    assert!(again.contains("Choose language"), "{again}");
    assert!(
        gw.at("f-2", phone, "*999#", "1")
            .await
            .starts_with("CON Which village")
    );
    let _ = redis.kill();
    let _ = redis.wait();
    gw.cleanup().await;
}
