//! The ESME bind session against the SMSC simulator over loopback TCP: binding, submitting
//! (long messages, throttling, TPS), receipts matched by normalised id, reconnection with
//! unknown outcomes, the peer's enquire_link and unbind, and mobile-originated messages.
//! Every wait is on a channel, a handle or the simulator's counters, bounded by a timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baraza::encoding::gsm7::GsmCoding;
use baraza::smpp::esme::{
    BindConfig, BindType, Delivery, Esme, EsmeHandle, Inbound, LinkState, SubmitError,
    SubmitOutcome, SubmitRequest, TpsLimiter,
};
use baraza::smpp::framing::{Frame, SmppCodec};
use baraza::smpp::profile::{AddressPlan, Concatenation, RetryPolicy, TemporaryErrors, TonNpi};
use baraza::smpp::receipt::{IdConversion, MessageIdNormalisation, ReceiptState};
use baraza::smpp::smsc_sim::{SimConfig, SimHandle, spawn_smsc_sim};
use baraza::smpp::tlv::TlvList;
use baraza::smpp::{Bind, Body, CommandStatus, Pdu, ShortMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

/// Upper bound on any wait; reaching it means the test failed.
const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn start_sim(config: SimConfig) -> (SimHandle, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let port = listener.local_addr().expect("local addr").port();
    (spawn_smsc_sim(config, listener), port)
}

fn bind_config(port: u16) -> BindConfig {
    BindConfig {
        reconnect_floor: Duration::from_millis(10),
        reconnect_ceiling: Duration::from_millis(200),
        throttle_pause: Duration::from_millis(10),
        response_timeout: Duration::from_secs(5),
        ..BindConfig::new("127.0.0.1", port, "baraza", "secret")
    }
}

async fn start_esme(config: BindConfig) -> (EsmeHandle, mpsc::Receiver<Delivery>) {
    let (esme, inbound) = Esme::start(config);
    within(
        "bind",
        esme.wait_for_link(|state| *state == LinkState::Bound),
    )
    .await;
    (esme, inbound)
}

fn request(to: &str, text: &str) -> SubmitRequest {
    SubmitRequest {
        to: to.to_string(),
        from: "2020".to_string(),
        text: text.to_string(),
        registered_delivery: true,
        waited: std::time::Duration::ZERO,
    }
}

fn accepted_ids(outcomes: &[SubmitOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|outcome| match outcome {
            SubmitOutcome::Accepted { message_id } => message_id.clone(),
            other => panic!("part not accepted: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn submit_and_receipt_match_by_normalised_id() {
    let (sim, port) = start_sim(SimConfig {
        receipt_id_decimal: true,
        ..SimConfig::default()
    })
    .await;
    let (esme, mut inbound) = start_esme(bind_config(port)).await;
    let normalisation = MessageIdNormalisation {
        conversion: IdConversion::HexToDecimal,
        lowercase: true,
        strip_leading_zeros: true,
    };
    // Twelve messages, so ids reach hex "0000000a".."0000000c" whose decimal differs.
    let mut submitted = Vec::new();
    for n in 0..12 {
        let outcomes = within(
            "submit",
            esme.submit(request("254700000001", &format!("Hello {n}"))),
        )
        .await
        .expect("submit");
        let ids = accepted_ids(&outcomes);
        assert_eq!(ids.len(), 1);
        submitted.push(normalisation.submit_id(&ids[0]));
    }
    let mut receipted = Vec::new();
    while receipted.len() < 12 {
        match within("receipt", inbound.recv())
            .await
            .expect("inbound open")
            .message
        {
            Inbound::Receipt(receipt) => {
                assert_eq!(receipt.state, ReceiptState::Delivered);
                assert_eq!(receipt.error, None);
                assert!(receipt.done_at.is_some());
                receipted.push(normalisation.receipt_id(&receipt.message_id));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    submitted.sort();
    receipted.sort();
    assert_eq!(submitted, receipted);
    assert!(submitted.contains(&"10".to_string()), "{submitted:?}");
    // Without the conversion the hex ids do not match the decimal receipts.
    let plain = MessageIdNormalisation::none();
    assert_ne!(plain.submit_id("0000000a"), plain.receipt_id("10"));
    let stats = sim.stats();
    assert_eq!(stats.messages.len(), 12);
    assert_eq!(stats.messages[0].text, "Hello 0");
    assert_eq!(stats.messages[0].source, "2020");
    assert_eq!(stats.messages[0].destination, "254700000001");
    let counters = esme.counters();
    assert_eq!(counters.acknowledged, 12);
    assert_eq!(counters.receipts, 12);
    assert_eq!(counters.window_in_use, 0);
    assert!(within("unbind", esme.unbind()).await);
    assert_eq!(sim.stats().unbinds_received, 1);
    assert_eq!(esme.link_state(), LinkState::Stopped);
    assert!(matches!(
        esme.submit(request("254700000001", "too late")).await,
        Err(SubmitError::Stopped)
    ));
}

#[tokio::test]
async fn long_messages_arrive_reassembled_with_euro_and_emoji_at_boundaries() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = start_esme(bind_config(port)).await;
    // GSM: 152 septets then '€' (2 septets) straddling the 153-septet part boundary.
    let gsm = format!("{}€{}€ end", "a".repeat(152), "b".repeat(150));
    // UCS-2 (the 'ŵ' forces it): 66 units then an emoji (2 units) straddling 67.
    let ucs2 = format!("ŵ{}😀{}😀 mwisho", "c".repeat(65), "d".repeat(64));
    let gsm_parts = within("gsm submit", esme.submit(request("254700000002", &gsm)))
        .await
        .expect("submit");
    let ucs2_parts = within("ucs2 submit", esme.submit(request("254700000003", &ucs2)))
        .await
        .expect("submit");
    assert_eq!(accepted_ids(&gsm_parts).len(), 3);
    assert_eq!(accepted_ids(&ucs2_parts).len(), 3);
    let stats = within("messages", sim.wait_until(|s| s.messages.len() == 2)).await;
    let gsm_received = &stats.messages[0];
    assert_eq!(gsm_received.text, gsm);
    assert_eq!(gsm_received.parts, 3);
    assert_eq!(gsm_received.data_coding, 0);
    let ucs2_received = &stats.messages[1];
    assert_eq!(ucs2_received.text, ucs2);
    assert_eq!(ucs2_received.parts, 3);
    assert_eq!(ucs2_received.data_coding, 8);
    assert!(within("unbind", esme.unbind()).await);
}

#[tokio::test]
async fn wrong_credentials_are_refused() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = Esme::start(BindConfig {
        password: "wrong".to_string(),
        ..bind_config(port)
    });
    let state = within(
        "refusal",
        esme.wait_for_link(|state| matches!(state, LinkState::BindRefused { .. })),
    )
    .await;
    assert_eq!(
        state,
        LinkState::BindRefused {
            status: CommandStatus::ESME_RINVPASWD
        }
    );
    assert!(!within("stop", esme.unbind()).await, "no session to unbind");
    assert_eq!(esme.link_state(), LinkState::Stopped);
    assert!(matches!(
        esme.submit(request("254700000004", "x")).await,
        Err(SubmitError::Stopped)
    ));

    let (esme, _inbound) = Esme::start(BindConfig {
        system_id: "nobody".to_string(),
        ..bind_config(port)
    });
    let state = within(
        "refusal",
        esme.wait_for_link(|state| matches!(state, LinkState::BindRefused { .. })),
    )
    .await;
    assert_eq!(
        state,
        LinkState::BindRefused {
            status: CommandStatus::ESME_RINVSYSID
        }
    );
    within("stop", esme.unbind()).await;
    let stats = sim.stats();
    assert_eq!(stats.binds, 0);
    assert!(stats.bind_failures >= 2);
}

#[tokio::test]
async fn throttling_pauses_and_retries_parts_in_order() {
    let (sim, port) = start_sim(SimConfig {
        throttle_every: Some(3),
        ..SimConfig::default()
    })
    .await;
    let (esme, _inbound) = start_esme(bind_config(port)).await;
    let long = (0..5)
        .map(|n| format!("part{n}-").repeat(25))
        .collect::<String>();
    let outcomes = within("long submit", esme.submit(request("254700000005", &long)))
        .await
        .expect("submit");
    let parts = accepted_ids(&outcomes).len();
    assert!(parts >= 5, "{parts} parts");
    for n in 0..4 {
        let outcomes = within(
            "short submit",
            esme.submit(request("254700000006", &format!("short {n}"))),
        )
        .await
        .expect("submit");
        accepted_ids(&outcomes);
    }
    let stats = sim.stats();
    assert!(stats.throttled >= 3, "{stats:?}");
    assert_eq!(esme.counters().throttled, stats.throttled);
    let long_seqs: Vec<u8> = stats
        .accepted_parts
        .iter()
        .filter(|part| part.destination == "254700000005")
        .map(|part| part.seq)
        .collect();
    let expected: Vec<u8> = (1..=u8::try_from(parts).expect("few parts")).collect();
    assert_eq!(long_seqs, expected, "parts accepted in order");
    let texts: Vec<&str> = stats.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        vec![long.as_str(), "short 0", "short 1", "short 2", "short 3"]
    );
    within("unbind", esme.unbind()).await;
}

#[tokio::test]
async fn dropped_connection_reports_unknown_and_reconnects() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = start_esme(bind_config(port)).await;
    sim.set_hold_responses(true);
    let mut waiting = Vec::new();
    for n in 0..4 {
        let esme = esme.clone();
        waiting.push(tokio::spawn(async move {
            esme.submit(request("254700000007", &format!("held {n}")))
                .await
        }));
    }
    within("held submits", sim.wait_until(|s| s.held == 4)).await;
    assert_eq!(esme.counters().window_in_use, 4);
    sim.set_hold_responses(false);
    assert_eq!(sim.drop_connections(), 1);
    for task in waiting {
        let outcomes = within("outcome", task)
            .await
            .expect("task")
            .expect("submit");
        assert!(
            matches!(&outcomes[..], [SubmitOutcome::Unknown { .. }]),
            "{outcomes:?}"
        );
    }
    let outcomes = within(
        "later submit",
        esme.submit(request("254700000008", "after")),
    )
    .await
    .expect("submit");
    accepted_ids(&outcomes);
    let stats = sim.stats();
    assert_eq!(stats.submits, 5, "the unknown ones were never resent");
    assert_eq!(stats.binds, 2);
    let texts: Vec<&str> = stats.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec!["after"]);
    let counters = esme.counters();
    assert_eq!(counters.reconnects, 1);
    assert_eq!(counters.failed, 4);
    assert_eq!(counters.window_in_use, 0);
    within("unbind", esme.unbind()).await;
}

#[tokio::test]
async fn unanswered_submit_times_out_as_unknown_and_the_bind_stays() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = start_esme(BindConfig {
        response_timeout: Duration::from_millis(200),
        ..bind_config(port)
    })
    .await;
    sim.set_hold_responses(true);
    let outcomes = within("timeout", esme.submit(request("254700000012", "silence")))
        .await
        .expect("submit");
    assert!(
        matches!(&outcomes[..], [SubmitOutcome::Unknown { reason }] if reason.contains("no submit_sm_resp")),
        "{outcomes:?}"
    );
    sim.set_hold_responses(false);
    let outcomes = within("submit", esme.submit(request("254700000012", "heard")))
        .await
        .expect("submit");
    accepted_ids(&outcomes);
    let stats = sim.stats();
    assert_eq!(stats.submits, 2, "the unknown one was not resent");
    assert_eq!(stats.binds, 1, "a timeout does not drop the bind");
    assert_eq!(esme.counters().failed, 1);
    within("unbind", esme.unbind()).await;
}

#[tokio::test]
async fn a_failed_part_stops_the_rest_of_the_message() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = start_esme(BindConfig {
        response_timeout: Duration::from_millis(200),
        ..bind_config(port)
    })
    .await;
    sim.set_hold_responses(true);
    let long = "x".repeat(400);
    let outcomes = within("submit", esme.submit(request("254700000013", &long)))
        .await
        .expect("submit");
    assert_eq!(outcomes.len(), 3);
    assert!(matches!(outcomes[0], SubmitOutcome::Unknown { .. }));
    assert!(matches!(outcomes[1], SubmitOutcome::NotSent { .. }));
    assert!(matches!(outcomes[2], SubmitOutcome::NotSent { .. }));
    assert_eq!(sim.stats().submits, 1);
    // Addresses longer than SMPP allows are refused before anything is sent.
    let too_long = esme.submit(request("2547000000130000000000000", "x")).await;
    assert!(
        matches!(too_long, Err(SubmitError::InvalidPdu(_))),
        "{too_long:?}"
    );
    within("unbind", esme.unbind()).await;
}

#[tokio::test]
async fn peer_enquire_link_and_unbind_are_answered() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = start_esme(bind_config(port)).await;
    assert_eq!(sim.enquire_link_all(), 1);
    within(
        "enquire_link_resp",
        sim.wait_until(|s| s.enquire_link_resps == 1),
    )
    .await;
    assert_eq!(sim.unbind_all(), 1);
    within("unbind_resp", sim.wait_until(|s| s.unbind_resps == 1)).await;
    // The ESME binds again after the SMSC's unbind, and works.
    within("rebind", sim.wait_until(|s| s.binds == 2)).await;
    let outcomes = within("submit", esme.submit(request("254700000009", "again")))
        .await
        .expect("submit");
    accepted_ids(&outcomes);
    assert!(within("unbind", esme.unbind()).await);
    assert_eq!(sim.stats().unbinds_received, 1);
    assert_eq!(esme.link_state(), LinkState::Stopped);
}

#[tokio::test]
async fn idle_link_sends_enquire_link() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = start_esme(BindConfig {
        enquire_link_interval: Duration::from_millis(50),
        ..bind_config(port)
    })
    .await;
    within(
        "keep-alive",
        sim.wait_until(|s| s.enquire_links_received >= 2),
    )
    .await;
    assert_eq!(esme.link_state(), LinkState::Bound);
    within("unbind", esme.unbind()).await;
}

#[tokio::test]
async fn mobile_originated_long_ucs2_is_reassembled() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, mut inbound) = start_esme(bind_config(port)).await;
    within("receiver", sim.wait_until(|s| s.bound_receivers == 1)).await;
    let text = format!(
        "Habari 👋🏾 {} — asante sana 🙏 {}",
        "maoni yangu ni haya: ".repeat(6),
        "mwisho"
    );
    let parts = sim
        .inject_mo("254711000001", "2020", &text)
        .expect("inject");
    assert!(parts >= 2, "{parts} parts");
    let message = within("deliver", inbound.recv())
        .await
        .expect("inbound open")
        .message;
    assert_eq!(
        message,
        Inbound::Deliver {
            from: "254711000001".to_string(),
            to: "2020".to_string(),
            text,
            data_coding: 8,
            complete: true,
        }
    );
    within(
        "deliver_sm_resp",
        sim.wait_until(|s| s.deliver_sm_resps == parts as u64),
    )
    .await;
    assert_eq!(esme.counters().delivered, 1);
    // A short GSM message too.
    sim.inject_mo("254711000002", "2020", "1").expect("inject");
    let message = within("deliver", inbound.recv())
        .await
        .expect("inbound open")
        .message;
    assert!(matches!(message, Inbound::Deliver { ref text, data_coding: 0, .. } if text == "1"));
    within("unbind", esme.unbind()).await;
}

#[tokio::test]
async fn receiver_bind_cannot_submit_but_receives() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, mut inbound) = start_esme(BindConfig {
        bind_type: BindType::Receiver,
        ..bind_config(port)
    })
    .await;
    assert!(matches!(
        esme.submit(request("254700000010", "x")).await,
        Err(SubmitError::NotTransmitter)
    ));
    within("receiver", sim.wait_until(|s| s.bound_receivers == 1)).await;
    sim.inject_mo("254711000003", "2020", "ndiyo")
        .expect("inject");
    let message = within("deliver", inbound.recv())
        .await
        .expect("inbound open")
        .message;
    assert!(matches!(message, Inbound::Deliver { ref text, .. } if text == "ndiyo"));
    within("unbind", esme.unbind()).await;
}

/// TPS on the paused tokio clock: every part waits for its slot, so five submit_sm at 2 per
/// second take at least two seconds of (virtual) time.
#[tokio::test(start_paused = true)]
async fn tps_limit_is_respected() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = start_esme(BindConfig {
        tps: Some(2),
        ..bind_config(port)
    })
    .await;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for n in 0..5 {
        let esme = esme.clone();
        tasks.push(tokio::spawn(async move {
            esme.submit(request("254700000011", &format!("tps {n}")))
                .await
        }));
    }
    for task in tasks {
        let outcomes = within("submit", task).await.expect("task").expect("submit");
        accepted_ids(&outcomes);
    }
    assert!(tokio::time::Instant::now() - start >= Duration::from_secs(2));
    assert!(esme.counters().tps_waits >= 4, "{:?}", esme.counters());
    assert_eq!(sim.stats().accepted, 5);
    within("unbind", esme.unbind()).await;
}

#[tokio::test]
async fn simulator_nacks_malformed_pdus_and_drops_garbage() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut link = Framed::new(stream, SmppCodec::default());
    let bind = Body::BindTransceiver(Bind {
        system_id: "baraza".into(),
        password: "secret".into(),
        interface_version: 0x34,
        ..Bind::default()
    });
    link.send(Pdu::new(1, bind)).await.expect("send bind");
    let reply = within("bind_resp", link.next()).await;
    assert!(matches!(reply, Some(Ok(Frame::Pdu(Pdu { status, .. }))) if status.is_ok()));
    // An enquire_link with a stray body octet: well framed, malformed.
    let malformed = [0, 0, 0, 17, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 9, 0xAA];
    link.get_mut().write_all(&malformed).await.expect("write");
    let reply = within("generic_nack", link.next()).await;
    match reply {
        Some(Ok(Frame::Pdu(pdu))) => {
            assert_eq!(pdu.body, Body::GenericNack);
            assert_eq!(pdu.sequence, 9);
            assert_eq!(pdu.status, CommandStatus::ESME_RINVCMDLEN);
        }
        other => panic!("expected generic_nack, got {other:?}"),
    }
    // A command_length of 3 is not SMPP: the simulator hangs up.
    link.get_mut()
        .write_all(&[0, 0, 0, 3, 1, 2, 3, 4])
        .await
        .expect("write");
    let end = within("close", link.next()).await;
    assert!(matches!(end, None | Some(Err(_))), "{end:?}");
    assert_eq!(sim.stats().generic_nacks_sent, 1);
}

/// A part refused with a temporary status was not taken: it is submitted again after a
/// backoff (at least the policy's waits: 40 ms, then 80 ms capped at 60 ms), the later parts
/// wait for it, and the report says how many attempts it took and what refused them.
#[tokio::test]
async fn temporary_errors_are_retried_with_backoff_and_parts_keep_their_order() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = start_esme(BindConfig {
        submit_retry: RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(40),
            ceiling: Duration::from_millis(60),
        },
        ..bind_config(port)
    })
    .await;
    // Part 1 of a two-part message: refused by ESME_RSYSERR, then ESME_RX_T_APPN, then taken.
    sim.reject_next([CommandStatus::ESME_RSYSERR, CommandStatus::ESME_RX_T_APPN]);
    let start = tokio::time::Instant::now();
    let long = "y".repeat(200);
    let reports = within(
        "retried submit",
        esme.submit_reports(request("254700000020", &long)),
    )
    .await
    .expect("submit");
    assert!(tokio::time::Instant::now() - start >= Duration::from_millis(100));
    assert_eq!(reports.len(), 2);
    assert!(matches!(reports[0].outcome, SubmitOutcome::Accepted { .. }));
    assert_eq!(reports[0].attempts, 3);
    assert_eq!(
        reports[0].temporary,
        vec![CommandStatus::ESME_RSYSERR, CommandStatus::ESME_RX_T_APPN]
    );
    let detail = reports[0].detail().expect("detail");
    assert!(
        detail.contains("attempt 3") && detail.contains("ESME_RSYSERR"),
        "{detail}"
    );
    assert!(
        matches!(reports[1].outcome, SubmitOutcome::Accepted { .. }),
        "{reports:?}"
    );
    assert_eq!(reports[1].attempts, 1);
    let stats = sim.stats();
    assert_eq!(stats.rejected, 2);
    let seqs: Vec<u8> = stats.accepted_parts.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(stats.messages[0].text, long);
    assert_eq!(esme.counters().retries, 2);

    // A permanent status is never retried.
    sim.reject_next([CommandStatus::ESME_RINVDSTADR]);
    let outcomes = within("rejected", esme.submit(request("254700000021", "no")))
        .await
        .expect("submit");
    assert_eq!(
        outcomes,
        vec![SubmitOutcome::Rejected {
            status: CommandStatus::ESME_RINVDSTADR
        }]
    );
    // Temporary, but on every attempt: rejected after `attempts` submissions, no more.
    let before = sim.stats().submits;
    sim.reject_next([CommandStatus::ESME_RSUBMITFAIL; 4]);
    let reports = within(
        "exhausted",
        esme.submit_reports(request("254700000022", "still no")),
    )
    .await
    .expect("submit");
    assert_eq!(
        reports[0].outcome,
        SubmitOutcome::Rejected {
            status: CommandStatus::ESME_RSUBMITFAIL
        }
    );
    assert_eq!(reports[0].attempts, 4);
    assert_eq!(sim.stats().submits - before, 4);
    assert!(
        reports[0]
            .detail()
            .is_some_and(|d| d.contains("still refused after 4 attempts"))
    );
    // Statuses outside the operator's list are permanent for it.
    let (strict, _inbound) = start_esme(BindConfig {
        temporary_errors: TemporaryErrors::new([CommandStatus::ESME_RX_T_APPN]),
        ..bind_config(port)
    })
    .await;
    let before = sim.stats().submits;
    sim.reject_next([CommandStatus::ESME_RSYSERR]);
    let outcomes = within("strict", strict.submit(request("254700000023", "x")))
        .await
        .expect("submit");
    assert!(matches!(outcomes[..], [SubmitOutcome::Rejected { .. }]));
    assert_eq!(sim.stats().submits - before, 1);
    within("unbind", strict.unbind()).await;
    within("unbind", esme.unbind()).await;
}

/// A part with no answer is never submitted again, whatever the retry policy.
#[tokio::test]
async fn an_unanswered_part_is_not_retried() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = start_esme(BindConfig {
        response_timeout: Duration::from_millis(200),
        submit_retry: RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(1),
            ceiling: Duration::from_millis(1),
        },
        ..bind_config(port)
    })
    .await;
    sim.reject_next([CommandStatus::ESME_RSYSERR]);
    sim.set_hold_responses(true);
    let reports = within(
        "unknown",
        esme.submit_reports(request("254700000024", "silence")),
    )
    .await
    .expect("submit");
    assert!(matches!(reports[0].outcome, SubmitOutcome::Unknown { .. }));
    assert_eq!(reports[0].attempts, 2);
    let stats = sim.stats();
    assert_eq!((stats.rejected, stats.held, stats.submits), (1, 1, 2));
    sim.set_hold_responses(false);
    within("unbind", esme.unbind()).await;
}

/// Each concatenation method's PDUs, as the simulator received them, and the message they
/// reassemble to.
#[tokio::test]
async fn each_concatenation_method_reassembles_at_the_smsc() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let text = format!("{}€ mwisho", "q".repeat(300));
    for (n, method) in [
        Concatenation::Udh8,
        Concatenation::Udh16,
        Concatenation::Sar,
        Concatenation::Payload,
    ]
    .into_iter()
    .enumerate()
    {
        let (esme, _inbound) = start_esme(BindConfig {
            concatenation: method,
            ..bind_config(port)
        })
        .await;
        let to = format!("25470000003{n}");
        let outcomes = within("submit", esme.submit(request(&to, &text)))
            .await
            .expect("submit");
        let expected_parts = match method {
            Concatenation::Payload => 1,
            _ => 3,
        };
        assert_eq!(accepted_ids(&outcomes).len(), expected_parts, "{method:?}");
        let stats = sim.stats();
        let message = stats
            .messages
            .iter()
            .find(|m| m.destination == to)
            .expect("reassembled");
        assert_eq!(message.text, text, "{method:?}");
        let parts: Vec<&ShortMessage> = stats
            .accepted_parts
            .iter()
            .filter(|p| p.destination == to)
            .map(|p| &p.sm)
            .collect();
        assert_eq!(parts.len(), expected_parts);
        for (index, sm) in parts.iter().enumerate() {
            let seq = index as u8 + 1;
            match method {
                Concatenation::Udh8 => {
                    assert_eq!(sm.esm_class, 0x40);
                    assert_eq!(sm.short_message[..3], [0x05, 0x00, 0x03]);
                    assert_eq!(sm.short_message[4..6], [3, seq]);
                    assert!(sm.tlvs.is_empty());
                }
                Concatenation::Udh16 => {
                    assert_eq!(sm.esm_class, 0x40);
                    assert_eq!(sm.short_message[..3], [0x06, 0x08, 0x04]);
                    assert_eq!(sm.short_message[5..7], [3, seq]);
                    assert!(sm.tlvs.is_empty());
                }
                Concatenation::Sar => {
                    assert_eq!(sm.esm_class, 0);
                    assert_eq!(sm.tlvs.sar_total_segments(), Ok(Some(3)));
                    assert_eq!(sm.tlvs.sar_segment_seqnum(), Ok(Some(seq)));
                    assert_eq!(
                        sm.tlvs.sar_msg_ref_num().ok().flatten(),
                        parts[0].tlvs.sar_msg_ref_num().ok().flatten()
                    );
                    assert!(sm.short_message.len() <= 153);
                }
                Concatenation::Payload => {
                    assert_eq!(sm.esm_class, 0);
                    assert!(sm.short_message.is_empty());
                    assert_eq!(sm.tlvs.message_payload().map(|p| p.len()), Some(309));
                }
            }
        }
        within("unbind", esme.unbind()).await;
    }
}

/// The operator's GSM data_coding, TON/NPI plans and validity period reach the SMSC.
#[tokio::test]
async fn coding_addresses_and_validity_are_per_operator() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let (esme, _inbound) = start_esme(BindConfig {
        gsm_coding: GsmCoding::One,
        validity: Some(Duration::from_secs(6 * 3600)),
        source_addresses: AddressPlan {
            short_code: TonNpi { ton: 6, npi: 9 },
            ..AddressPlan::default()
        },
        ..bind_config(port)
    })
    .await;
    let outcomes = within("submit", esme.submit(request("+254700000040", "Habari")))
        .await
        .expect("submit");
    accepted_ids(&outcomes);
    let stats = sim.stats();
    let sm = &stats.accepted_parts[0].sm;
    assert_eq!(sm.data_coding, 1);
    assert_eq!((sm.source_addr_ton, sm.source_addr_npi), (6, 9));
    assert_eq!((sm.dest_addr_ton, sm.dest_addr_npi), (1, 1));
    assert_eq!(sm.destination_addr.to_string_lossy(), "254700000040");
    assert_eq!(sm.validity_period.to_string_lossy(), "000000060000000R");
    // The defaults: a short code sender is TON 3 NPI 0, no validity unless configured.
    let (plain, _inbound) = start_esme(bind_config(port)).await;
    let outcomes = within("submit", plain.submit(request("+254700000041", "Habari")))
        .await
        .expect("submit");
    accepted_ids(&outcomes);
    let stats = sim.stats();
    let sm = &stats.accepted_parts[1].sm;
    assert_eq!(sm.data_coding, 0);
    assert_eq!((sm.source_addr_ton, sm.source_addr_npi), (3, 0));
    assert!(sm.validity_period.to_string_lossy().is_empty());
    within("unbind", esme.unbind()).await;
    within("unbind", plain.unbind()).await;
}

/// Any `tps + 1` consecutive arrivals at the simulator span about a second: no 1-second
/// window held more than `tps` parts. The limiter keeps its own sends a second plus 10 ms
/// apart; arrivals may bunch by the scheduling and loopback jitter of a busy host, so 200 ms
/// are allowed (a rate twice the limit would put them within half a second).
pub fn assert_at_most_tps(arrivals: &[std::time::Instant], tps: usize) {
    for window in arrivals.windows(tps + 1) {
        let span = window[tps] - window[0];
        assert!(
            span >= Duration::from_millis(800),
            "{} parts within {span:?}",
            tps + 1
        );
    }
}

/// Two binds sharing one limiter (as an operator's binds do) send at most `tps` parts a
/// second between them, counted over the simulator's arrival times (two limiters of their
/// own would let twice as many through).
#[tokio::test]
async fn binds_sharing_a_limiter_share_the_tps() {
    let (sim, port) = start_sim(SimConfig::default()).await;
    let limiter = Some(Arc::new(TpsLimiter::new(4)));
    let mut binds = Vec::new();
    for _ in 0..2 {
        let (esme, inbound) = Esme::start_with_limiter(bind_config(port), limiter.clone());
        within("bind", esme.wait_for_link(|s| *s == LinkState::Bound)).await;
        binds.push((esme, inbound));
    }
    let mut tasks = Vec::new();
    for n in 0..10 {
        let esme = binds[n % 2].0.clone();
        tasks.push(tokio::spawn(async move {
            esme.submit(request("254700000050", &format!("shared {n}")))
                .await
        }));
    }
    for task in tasks {
        let outcomes = within("submit", task).await.expect("task").expect("submit");
        accepted_ids(&outcomes);
    }
    let stats = sim.stats();
    assert_eq!(stats.accepted, 10);
    let arrivals: Vec<std::time::Instant> =
        stats.accepted_parts.iter().map(|p| p.received_at).collect();
    assert_at_most_tps(&arrivals, 4);
    for (esme, _) in &binds {
        assert!(esme.counters().submitted >= 1, "both binds sent");
        within("unbind", esme.unbind()).await;
    }
}
