//! The outbound SMS queue against `baraza smsc-sim` (in process, loopback TCP) and a real
//! SQLite result store: every message is stored before it is submitted, ends in a recorded
//! state, never goes out twice, and its delivery receipts are joined to its parts.

use std::sync::Arc;
use std::time::Duration;

use baraza::config::{Config, OperatorConfig, ResultsConfig};
use baraza::dispatcher::Gateway;
use baraza::result_store::{QueuedSms, ResultStore, SmsState, SmsStateUpdate, Write};
use baraza::smpp::smsc_sim::{SimConfig, SimHandle, spawn_smsc_sim};
use baraza::sms::binds::Binds;
use baraza::sms::outbox::{NewSms, OutboxError};

mod common;

use common::{sms_finished as finished, wait_for_sms as wait_for, within};

async fn start_sim(config: SimConfig) -> (SimHandle, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (spawn_smsc_sim(config, listener), port)
}

fn operator(name: &str, port: u16, extra: &str) -> OperatorConfig {
    serde_saphyr::from_str(&format!(
        "name: {name}\nhost: 127.0.0.1\nport: {port}\nsystem_id: baraza\npassword: secret\n\
         sender: BARAZA\n{extra}"
    ))
    .expect("operator config")
}

async fn gateway(
    dir: &std::path::Path,
    node: &str,
    operators: Vec<OperatorConfig>,
) -> Arc<Gateway> {
    let mut config = Config::embedded();
    config.flows_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    config.results = ResultsConfig::Sqlite {
        path: dir.join("results.sqlite3"),
    };
    config.pseudonym_secret = Some("test-pseudonym-secret".into());
    config.smpp.node = Some(node.to_string());
    config.smpp.operators = operators;
    Arc::new(
        baraza::server::build_gateway(config)
            .await
            .expect("gateway"),
    )
}

/// The simulator, a gateway (node `node`) with one operator `sim` bound to it, and its binds,
/// once the bind is up.
async fn bound(node: &str) -> (SimHandle, Arc<Gateway>, Binds, tempfile::TempDir) {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = gateway(dir.path(), node, vec![operator("sim", port, "")]).await;
    let binds = Binds::start(Arc::clone(&gateway));
    within("bind", sim.wait_until(|s| s.binds >= 1)).await;
    (sim, gateway, binds, dir)
}

/// A message row as a node left it in the store (for recovery and sweep tests).
fn stored_row(id: &str, node: &str, to: &str, purpose: &str, created_at_ms: i64) -> Write {
    Write::SmsQueued(QueuedSms {
        message_id: id.to_string(),
        node: node.to_string(),
        operator: "sim".to_string(),
        recipient: to.to_string(),
        sender: "BARAZA".to_string(),
        body: format!("text of {id}"),
        purpose: purpose.to_string(),
        created_at_ms,
    })
}

fn sms(to: &str, text: &str) -> NewSms {
    NewSms {
        operator: None,
        to: to.to_string(),
        from: None,
        text: text.to_string(),
        purpose: "api".to_string(),
    }
}

/// An operator opting a number out through the API.
fn api_actor() -> baraza::contacts::consent::ConsentActor {
    baraza::contacts::consent::ConsentActor {
        source: baraza::result_store::ConsentSource::Api,
        channel: None,
        by: Some("test".to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_message_is_stored_sent_and_its_receipts_join_its_parts() {
    // The SMSC answers submit_sm with hex ids and writes receipts in decimal: only the
    // operator's id normalisation makes them meet.
    let (sim, port) = start_sim(SimConfig {
        receipt_id_decimal: true,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = gateway(
        dir.path(),
        "node-1",
        vec![operator(
            "sim",
            port,
            "receipt_ids:\n  conversion: hex_to_decimal\n",
        )],
    )
    .await;
    let binds = Binds::start(Arc::clone(&gateway));
    let long = "Asante kwa maoni yako. ".repeat(10);
    let ids = binds
        .outbox()
        .enqueue(vec![sms("+254711000001", &long)])
        .await
        .expect("queued");
    assert_eq!(ids.len(), 1);
    assert!(ids[0].starts_with("node-1-"), "{}", ids[0]);

    let row = wait_for(&gateway.results, &ids[0], |r| {
        r.delivery() == Some("delivered")
    })
    .await;
    assert_eq!(row.state, "accepted");
    assert_eq!(row.operator, "sim");
    assert_eq!(row.sender, "BARAZA");
    assert_eq!(row.body, long);
    assert_eq!(row.parts.len(), 2, "{row:?}");
    for part in &row.parts {
        assert_eq!(part.outcome, "accepted");
        let smsc_id = part.smsc_id.as_deref().expect("smsc id");
        assert!(
            smsc_id.chars().all(|c| c.is_ascii_digit()),
            "stored in the receipts' decimal form: {smsc_id}"
        );
        assert_eq!(part.receipt.as_deref(), Some("delivered"));
    }
    let stats = sim.stats();
    assert_eq!(stats.messages.len(), 1);
    assert_eq!(stats.messages[0].text, long);
    binds.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_window_loses_nothing_and_records_unknown_outcomes() {
    let (sim, gateway, binds, _dir) = bound("node-1").await;
    sim.set_hold_responses(true);
    let mut held = Vec::new();
    for n in 0..4 {
        let to = format!("+25471100001{n}");
        held.extend(
            binds
                .outbox()
                .enqueue(vec![sms(&to, &format!("held {n}"))])
                .await
                .expect("queued"),
        );
    }
    within("held submits", sim.wait_until(|s| s.held == 4)).await;
    // Written and unanswered: stored as `sending` (a crash now would make them unknown).
    for id in &held {
        let row = gateway.results.sms_message(id).await.expect("read");
        assert_eq!(row.expect("stored").state, "sending");
    }
    sim.set_hold_responses(false);
    assert_eq!(sim.drop_connections(), 1);
    for id in &held {
        let row = wait_for(&gateway.results, id, finished).await;
        assert_eq!(row.state, "unknown", "{row:?}");
        assert_eq!(row.parts.len(), 1);
        assert_eq!(row.parts[0].outcome, "unknown");
    }
    // After the reconnect new messages go out; the unknown ones are never resent.
    let later = binds
        .outbox()
        .enqueue(vec![sms("+254711000020", "after the drop")])
        .await
        .expect("queued");
    let row = wait_for(&gateway.results, &later[0], finished).await;
    assert_eq!(row.state, "accepted");
    let stats = sim.stats();
    assert_eq!(stats.submits, 5, "each message submitted exactly once");
    assert_eq!(stats.binds, 2, "one reconnect");
    let texts: Vec<&str> = stats.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec!["after the drop"]);
    binds.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_queued_messages_go_out_and_in_flight_ones_become_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    // What a node that crashed left behind: one message queued, one handed to a bind, and a
    // queued message of another node sharing the database.
    {
        let store = ResultStore::open_sqlite(&dir.path().join("results.sqlite3"))
            .await
            .expect("store");
        let queued_at = baraza::dispatcher::now_ms() - 60_000;
        let queued = |id: &str, node: &str, to: &str| stored_row(id, node, to, "api", queued_at);
        store
            .commit(vec![
                queued("left-queued", "node-1", "+254711000031"),
                queued("left-sending", "node-1", "+254711000032"),
                queued("other-node", "node-2", "+254711000033"),
                Write::SmsState(SmsStateUpdate {
                    message_id: "left-sending".to_string(),
                    state: SmsState::Sending,
                    detail: None,
                    at_ms: 1_001,
                }),
            ])
            .await
            .expect("commit");
        store.flush_and_close().await.expect("close");
    }
    let (sim, port) = start_sim(SimConfig::default()).await;
    let gateway = gateway(dir.path(), "node-1", vec![operator("sim", port, "")]).await;
    let binds = Binds::start(Arc::clone(&gateway));
    let (queued, unknown) = binds.outbox().recover().await.expect("recover");
    assert_eq!((queued, unknown), (1, 1));

    let sent = wait_for(&gateway.results, "left-queued", finished).await;
    assert_eq!(sent.state, "accepted");
    let lost = wait_for(&gateway.results, "left-sending", finished).await;
    assert_eq!(lost.state, "unknown");
    assert!(lost.detail.as_deref().unwrap_or("").contains("not resent"));
    let other = gateway
        .results
        .sms_message("other-node")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(other.state, "queued", "another node's message is not taken");
    let stats = sim.wait_until(|s| !s.messages.is_empty()).await;
    let texts: Vec<&str> = stats.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec!["text of left-queued"]);
    assert_eq!(stats.submits, 1);
    // Recovering again finds nothing left to do.
    assert_eq!(binds.outbox().recover().await.expect("recover"), (0, 0));
    binds.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_an_opted_out_number_are_suppressed_but_the_stop_confirmation_goes() {
    let (sim, gateway, binds, _dir) = bound("node-1").await;
    let number = "+254711000041";
    gateway
        .consent()
        .opt_out(number, &api_actor(), baraza::dispatcher::now_ms())
        .await
        .expect("opt out");
    let ids = binds
        .outbox()
        .enqueue(vec![
            sms(number, "a reminder nobody wants"),
            NewSms {
                purpose: baraza::sms::outbox::PURPOSE_STOP_CONFIRMATION.to_string(),
                ..sms(number, "You will get no more messages")
            },
        ])
        .await
        .expect("queued");
    let suppressed = wait_for(&gateway.results, &ids[0], finished).await;
    assert_eq!(suppressed.state, "suppressed");
    assert!(suppressed.parts.is_empty());
    let confirmation = wait_for(&gateway.results, &ids[1], finished).await;
    assert_eq!(confirmation.state, "accepted");
    let texts: Vec<String> = sim
        .wait_until(|s| !s.messages.is_empty())
        .await
        .messages
        .iter()
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(texts, vec!["You will get no more messages"]);
    binds.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_routed_by_prefix_across_operators_and_their_binds() {
    let (safari, safari_port) = start_sim(SimConfig::default()).await;
    let (airtel, airtel_port) = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = gateway(
        dir.path(),
        "node-1",
        vec![
            // Two transmitter binds and a separate receiver bind for one operator.
            operator(
                "safari",
                safari_port,
                "bind: transmitter\nbinds: 2\nreceiver_binds: 1\nprefixes: [\"+25471\", \"+25472\"]\n",
            ),
            operator("airtel", airtel_port, "prefixes: [\"+25473\"]\n"),
        ],
    )
    .await;
    let binds = Binds::start(Arc::clone(&gateway));
    assert_eq!(
        binds.operators(),
        vec!["safari", "safari", "safari", "airtel"]
    );
    let outbox = binds.outbox();
    let ids = outbox
        .enqueue(vec![
            sms("+254711000051", "to safari"),
            sms("254731000052", "to airtel"),
        ])
        .await
        .expect("queued");
    for id in &ids {
        assert_eq!(
            wait_for(&gateway.results, id, finished).await.state,
            "accepted"
        );
    }
    match outbox
        .enqueue(vec![sms("+255761000053", "nobody carries")])
        .await
    {
        Err(OutboxError::NoRoute(_)) => {}
        other => panic!("expected no route, got {other:?}"),
    }
    match outbox
        .enqueue(vec![NewSms {
            operator: Some("nope".into()),
            ..sms("+254711000054", "x")
        }])
        .await
    {
        Err(OutboxError::UnknownOperator(name)) => assert_eq!(name, "nope"),
        other => panic!("expected unknown operator, got {other:?}"),
    }
    let safari_stats = safari.wait_until(|s| s.binds >= 3).await;
    assert_eq!(safari_stats.bound_transmitters, 2);
    assert_eq!(safari_stats.bound_receivers, 1);
    let texts = |sim: &SimHandle| -> Vec<String> {
        sim.stats()
            .messages
            .iter()
            .map(|m| m.text.clone())
            .collect()
    };
    assert_eq!(texts(&safari), vec!["to safari"]);
    assert_eq!(texts(&airtel), vec!["to airtel"]);
    // Receipts come back on the receiver bind and still join the part sent on a transmitter.
    let row = wait_for(&gateway.results, &ids[0], |r| {
        r.delivery() == Some("delivered")
    })
    .await;
    assert_eq!(row.parts[0].receipt.as_deref(), Some("delivered"));
    binds.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_finishes_abandoned_messages_but_never_touches_one_in_flight() {
    let (sim, gateway, binds, _dir) = bound("node-1").await;
    sim.set_hold_responses(true);
    let live = binds
        .outbox()
        .enqueue(vec![sms("+254711000061", "in flight")])
        .await
        .expect("queued");
    within("held submit", sim.wait_until(|s| s.held == 1)).await;
    // Rows this process no longer holds a task for (a send task whose state commit failed).
    let old = baraza::dispatcher::now_ms() - 120_000;
    let row = |id: &str, to: &str| stored_row(id, "node-1", to, "api", old);
    gateway
        .results
        .commit(vec![
            row("abandoned-queued", "+254711000062"),
            row("abandoned-sending", "+254711000063"),
            Write::SmsState(SmsStateUpdate {
                message_id: "abandoned-sending".to_string(),
                state: SmsState::Sending,
                detail: None,
                at_ms: old,
            }),
        ])
        .await
        .expect("commit");
    let outbox = binds.outbox();
    // Too young for a 60 s sweep; a sweep of any age still leaves the live message alone.
    assert_eq!(
        outbox.sweep(Duration::from_secs(600)).await.expect("sweep"),
        (0, 0)
    );
    assert_eq!(outbox.sweep(Duration::ZERO).await.expect("sweep"), (1, 1));
    within("second held submit", sim.wait_until(|s| s.held == 2)).await;
    // While both are in flight, sweeping again starts nothing twice.
    assert_eq!(outbox.sweep(Duration::ZERO).await.expect("sweep"), (0, 0));
    // The connection drops with both unanswered: the send tasks record why.
    sim.set_hold_responses(false);
    assert_eq!(sim.drop_connections(), 1);
    for id in [live[0].as_str(), "abandoned-queued"] {
        let row = wait_for(&gateway.results, id, finished).await;
        assert_eq!(row.state, "unknown");
        let detail = row.detail.unwrap_or_default();
        assert!(
            detail.contains("connection lost"),
            "recorded by its send task, not by a sweep: {detail}"
        );
    }
    let orphan = wait_for(&gateway.results, "abandoned-sending", finished).await;
    assert_eq!(orphan.state, "unknown");
    assert!(orphan.detail.unwrap_or_default().contains("not resent"));
    let stats = sim.stats();
    assert_eq!(stats.submits, 2, "each message submitted once");
    binds.shutdown(Duration::from_secs(5)).await;
}

/// Two senders pick up the same queued messages (the start-up recovery and a sweep of one
/// node, here two outboxes of that node so that both surely read every row as `queued`
/// before either can send): the store's guarded claim lets exactly one submit each message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_of_one_queue_submit_each_message_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The SMSC's port is reserved but not served yet, so neither outbox can bind (and so
    // neither can claim) until both have read the queue.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let gateway = gateway(dir.path(), "node-1", vec![operator("sim", port, "")]).await;
    let ids: Vec<String> = (0..10).map(|n| format!("left-{n}")).collect();
    gateway
        .results
        .commit(
            ids.iter()
                .enumerate()
                .map(|(n, id)| {
                    stored_row(
                        id,
                        "node-1",
                        &format!("+2547110004{n:02}"),
                        "api",
                        baraza::dispatcher::now_ms() - 60_000,
                    )
                })
                .collect(),
        )
        .await
        .expect("commit");
    let first = Binds::start(Arc::clone(&gateway));
    let second = Binds::start(Arc::clone(&gateway));
    assert_eq!(first.outbox().recover().await.expect("recover").0, 10);
    assert_eq!(second.outbox().recover().await.expect("recover").0, 10);

    let sim = spawn_smsc_sim(SimConfig::default(), listener);
    for id in &ids {
        let row = wait_for(&gateway.results, id, finished).await;
        assert_eq!(row.state, "accepted", "{id}");
    }
    let stats = sim.wait_until(|s| s.messages.len() >= 10).await;
    let mut texts: Vec<&str> = stats.messages.iter().map(|m| m.text.as_str()).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 10, "each message once");
    first.shutdown(Duration::from_secs(5)).await;
    second.shutdown(Duration::from_secs(5)).await;
    assert_eq!(sim.stats().submits, 10, "no message submitted twice");
}

/// An inbound SMS kept and acknowledged by a node that stopped before its step ran is
/// handled at the next start (or sweep), once: its step marks it handled in the same commit
/// as its answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_inbound_sms_left_unhandled_is_handled_once_after_a_restart() {
    let (sim, gateway, binds, _dir) = bound("node-k").await;
    let kept = |id: &str, node: &str| {
        Write::SmsInbound(baraza::result_store::InboundSms {
            inbound_id: id.to_string(),
            node: node.to_string(),
            operator: "sim".to_string(),
            sender: "+254711000501".to_string(),
            recipient: "20880".to_string(),
            body: "HEALTH".to_string(),
            received_at_ms: 1_000,
        })
    };
    gateway
        .results
        .commit(vec![kept("left-in", "node-k"), kept("other-in", "node-z")])
        .await
        .expect("commit");
    let now = baraza::dispatcher::now_ms();
    assert_eq!(
        binds.recover_inbound(now).await,
        1,
        "only this node's message"
    );
    let stats = within("the reply", sim.wait_until(|s| !s.messages.is_empty())).await;
    assert!(
        stats.messages[0].text.contains("Which service?"),
        "{:?}",
        stats.messages
    );
    assert_eq!(binds.recover_inbound(now).await, 0, "handled once");
    let unhandled = gateway
        .results
        .sms_inbound_unhandled("node-z")
        .await
        .expect("read");
    assert_eq!(unhandled.len(), 1, "another node's message is left to it");
    binds.shutdown(Duration::from_secs(5)).await;
}

/// An SMS step's reply is stored in the step's own commit and named in the session it saves:
/// a node that stops between that and the submit sends it after its restart, once; a stored
/// reply no session names (its step's save never happened) is withdrawn, never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_stored_with_its_step_goes_out_once_after_a_restart() {
    let (sim, gateway, first, _dir) = bound("node-s").await;
    let citizen = "+254711000601";
    let reply_id = {
        let outbox = Arc::clone(first.outbox());
        let next_id = move || outbox.next_message_id();
        let via = |_: &str| Some(("sim".to_string(), "20880".to_string()));
        let route = baraza::dispatcher::ReplyRoute {
            node: "node-s",
            via: &via,
            next_id: &next_id,
        };
        // The step runs and saves; the node stops before submitting its reply.
        let outcome = gateway
            .sms_step_marked(citizen, "HEALTH", None, Some(&route))
            .await;
        assert!(outcome.to_queue.is_empty(), "{outcome:?}");
        assert_eq!(outcome.stored.len(), 1, "{outcome:?}");
        outcome.stored[0].message_id.clone()
    };
    let row = gateway
        .results
        .sms_message(&reply_id)
        .await
        .expect("read")
        .expect("stored with the step");
    assert_eq!(row.state, "queued");
    // A reply stored by a step whose session save never happened.
    gateway
        .results
        .commit(vec![stored_row(
            "orphan",
            "node-s",
            "+254711000602",
            "reply",
            baraza::dispatcher::now_ms() - 60_000,
        )])
        .await
        .expect("commit");
    first.shutdown(Duration::from_secs(5)).await;
    assert_eq!(sim.stats().submits, 0, "nothing left before the stop");

    let restarted = Binds::start(Arc::clone(&gateway));
    restarted.outbox().recover().await.expect("recover");
    let sent = wait_for(&gateway.results, &reply_id, finished).await;
    assert_eq!(sent.state, "accepted");
    let orphan = wait_for(&gateway.results, "orphan", finished).await;
    assert_eq!(orphan.state, "not_sent");
    assert_eq!(
        orphan.detail.as_deref(),
        Some(baraza::dispatcher::WITHDRAWN)
    );
    let stats = within("the reply", sim.wait_until(|s| !s.messages.is_empty())).await;
    assert!(stats.messages[0].text.contains("Which service?"));
    assert_eq!(restarted.outbox().recover().await.expect("recover"), (0, 0));
    restarted.shutdown(Duration::from_secs(5)).await;
    assert_eq!(sim.stats().submits, 1, "the reply once, the orphan never");
}

/// A stop word's confirmation goes in the commit that opts the number out, as a step's reply
/// does: a node that stops before submitting it sends it after its restart, once, although the
/// number is now opted out (the confirmation is the one message it still gets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_confirmation_stored_with_the_stop_goes_out_once_after_a_restart() {
    let (sim, gateway, first, _dir) = bound("node-q").await;
    let citizen = "+254711000611";
    assert_eq!(gateway.sms_step(citizen, "HEALTH").await.len(), 1);
    let confirmation_id = {
        let outbox = Arc::clone(first.outbox());
        let next_id = move || outbox.next_message_id();
        let via = |_: &str| Some(("sim".to_string(), "20880".to_string()));
        let route = baraza::dispatcher::ReplyRoute {
            node: "node-q",
            via: &via,
            next_id: &next_id,
        };
        let outcome = gateway
            .sms_step_marked(citizen, "STOP", None, Some(&route))
            .await;
        assert!(outcome.to_queue.is_empty(), "{outcome:?}");
        assert_eq!(outcome.stored.len(), 1, "{outcome:?}");
        assert_eq!(
            outcome.stored[0].purpose,
            baraza::sms::outbox::PURPOSE_STOP_CONFIRMATION
        );
        outcome.stored[0].message_id.clone()
    };
    let row = gateway
        .results
        .sms_message(&confirmation_id)
        .await
        .expect("read")
        .expect("stored with the stop");
    assert_eq!(row.state, "queued");
    assert!(gateway.is_opted_out(citizen).await.expect("read"));
    first.shutdown(Duration::from_secs(5)).await;
    assert_eq!(sim.stats().submits, 0, "nothing submitted before the stop");

    let restarted = Binds::start(Arc::clone(&gateway));
    restarted.outbox().recover().await.expect("recover");
    let sent = wait_for(&gateway.results, &confirmation_id, finished).await;
    assert_eq!(sent.state, "accepted");
    assert_eq!(restarted.outbox().recover().await.expect("recover"), (0, 0));
    restarted.shutdown(Duration::from_secs(5)).await;
    assert_eq!(sim.stats().submits, 1, "the confirmation once");
}

/// A STOP holds where the truth is, the result store's consent: after the session store is
/// wiped (the in-memory store's restart, as a Redis flush would) and the gateway restarted, a
/// send to the number is suppressed and the flow it asks for gets no reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_outlives_the_session_store_and_a_restart() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let citizen = "+254711000631";
    let first = gateway(dir.path(), "node-o", vec![operator("sim", port, "")]).await;
    assert!(
        first.sms_step(citizen, "HEALTH").await[0]
            .text
            .contains("Which service?")
    );
    let stopped = first.sms_step(citizen, "STOP").await;
    assert_eq!(
        stopped[0].purpose,
        baraza::sms::outbox::PURPOSE_STOP_CONFIRMATION
    );
    first.results.flush_and_close().await.expect("flushed");
    drop(first);

    let restarted = gateway(dir.path(), "node-o", vec![operator("sim", port, "")]).await;
    assert!(
        restarted
            .sessions
            .opted_out_numbers()
            .await
            .expect("read")
            .is_empty(),
        "the session store remembers nothing"
    );
    assert!(restarted.is_opted_out(citizen).await.expect("read"));
    assert!(
        restarted.sms_step(citizen, "HEALTH").await.is_empty(),
        "a flow asked for by an opted-out number sends nothing"
    );
    let binds = Binds::start(Arc::clone(&restarted));
    within("bind", sim.wait_until(|s| s.binds >= 1)).await;
    let ids = binds
        .outbox()
        .enqueue(vec![sms(citizen, "a broadcast")])
        .await
        .expect("queued");
    let row = wait_for(&restarted.results, &ids[0], finished).await;
    assert_eq!(row.state, "suppressed");
    binds.shutdown(Duration::from_secs(5)).await;
    assert_eq!(sim.stats().submits, 0, "nothing reached the SMSC");
}

/// A message left queued for longer than the operator's validity (a node that stayed down
/// for a day) is not sent when the node is back: it ends `not_sent`, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_longer_than_its_validity_is_not_sent() {
    let (sim, gateway, binds, _dir) = bound("node-v").await;
    let a_day_ago = baraza::dispatcher::now_ms() - 25 * 3_600_000;
    gateway
        .results
        .commit(vec![stored_row(
            "stale",
            "node-v",
            "+254711000641",
            "api",
            a_day_ago,
        )])
        .await
        .expect("commit");
    binds.outbox().recover().await.expect("recover");
    let row = wait_for(&gateway.results, "stale", finished).await;
    assert_eq!(row.state, "not_sent");
    assert!(
        row.detail
            .as_deref()
            .is_some_and(|d| d.contains("validity")),
        "{row:?}"
    );
    binds.shutdown(Duration::from_secs(5)).await;
    assert_eq!(sim.stats().submits, 0);
}

/// A reminder is stored in its timer step's own commit (routed by the number's prefix), named
/// in the session, then submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_is_stored_with_its_timer_step_and_sent() {
    let (sim, gateway, binds, _dir) = bound("node-r2").await;
    let citizen = "+254711000701";
    let asked = gateway.sms_step(citizen, "HEALTH").await;
    assert_eq!(asked.len(), 1);
    // service_feedback reminds after 6 hours.
    let later = baraza::dispatcher::now_ms() + 6 * 3_600_000 + 1_000;
    binds.send_due_reminders(later).await;
    let stats = within("the reminder", sim.wait_until(|s| !s.messages.is_empty())).await;
    assert!(
        stats.messages[0].text.starts_with("Reminder:"),
        "{:?}",
        stats.messages
    );
    binds.send_due_reminders(later + 1_000).await;
    binds.shutdown(Duration::from_secs(5)).await;
    assert_eq!(sim.stats().messages.len(), 1, "one reminder");
}

/// A part refused with a temporary status is submitted again within the message's claim,
/// and the stored part (what `GET /sms/messages/{id}` shows) says how many attempts it took
/// and what refused them; a permanent status ends the message `rejected` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_rejections_are_retried_and_recorded_on_the_part() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = gateway(
        dir.path(),
        "node-1",
        vec![operator(
            "sim",
            port,
            "temporary_errors: [ESME_RSYSERR, 0x45]\n\
             submit_retry: { attempts: 3, first_delay_ms: 10, ceiling_ms: 20 }\n",
        )],
    )
    .await;
    let binds = Binds::start(Arc::clone(&gateway));
    within("bind", sim.wait_until(|s| s.binds >= 1)).await;
    sim.reject_next([
        baraza::smpp::CommandStatus::ESME_RSYSERR,
        baraza::smpp::CommandStatus::ESME_RSUBMITFAIL,
    ]);
    let ids = binds
        .outbox()
        .enqueue(vec![sms("+254711000071", "swali la kwanza")])
        .await
        .expect("queued");
    let row = wait_for(&gateway.results, &ids[0], finished).await;
    assert_eq!(row.state, "accepted", "{row:?}");
    assert_eq!(row.parts.len(), 1);
    let detail = row.parts[0].detail.clone().unwrap_or_default();
    assert!(
        detail.contains("accepted on attempt 3")
            && detail.contains("ESME_RSYSERR")
            && detail.contains("ESME_RSUBMITFAIL"),
        "{detail}"
    );
    // ESME_RX_T_APPN is not in this operator's list: rejected after one submission.
    sim.reject_next([baraza::smpp::CommandStatus::ESME_RX_T_APPN]);
    let ids = binds
        .outbox()
        .enqueue(vec![sms("+254711000072", "swali la pili")])
        .await
        .expect("queued");
    let row = wait_for(&gateway.results, &ids[0], finished).await;
    assert_eq!(row.state, "rejected");
    assert!(
        row.detail.unwrap_or_default().contains("ESME_RX_T_APPN"),
        "{:?}",
        row.parts
    );
    let stats = sim.stats();
    assert_eq!((stats.submits, stats.rejected, stats.accepted), (4, 3, 1));
    binds.shutdown(Duration::from_secs(5)).await;
}

/// `binds: 2, tps: 5`: the operator's two binds share one limiter, so the SMSC never sees
/// more than 5 parts in a second from them together (counted over its arrival times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_tps_holds_across_its_binds() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = gateway(
        dir.path(),
        "node-1",
        vec![operator("sim", port, "binds: 2\ntps: 5\n")],
    )
    .await;
    let binds = Binds::start(Arc::clone(&gateway));
    within("binds", sim.wait_until(|s| s.bound_transmitters == 2)).await;
    // One enqueue per message: each gets its own send task, so both binds are used at once.
    let mut ids = Vec::new();
    for n in 0..12 {
        let message = sms(&format!("+2547110008{n:02}"), &format!("tps {n}"));
        ids.extend(binds.outbox().enqueue(vec![message]).await.expect("queued"));
    }
    for id in &ids {
        assert_eq!(
            wait_for(&gateway.results, id, finished).await.state,
            "accepted"
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.accepted, 12);
    let arrivals: Vec<std::time::Instant> =
        stats.accepted_parts.iter().map(|p| p.received_at).collect();
    // Limited as one, any 6 arrivals span a second; as two (a limiter per bind) they would
    // span half of one. The allowance is for scheduling and loopback jitter on a busy host.
    for window in arrivals.windows(6) {
        let span = window[5] - window[0];
        assert!(
            span >= Duration::from_millis(800),
            "6 parts within {span:?}"
        );
    }
    binds.shutdown(Duration::from_secs(5)).await;
}
