//! An SMSC simulator for development and tests: accepts SMPP 3.4 binds over TCP, answers
//! submit_sm with incrementing hexadecimal message ids (after a configurable latency, with
//! optional throttling or queued error statuses), sends delivery receipts, and lets a test
//! inject mobile-originated messages, drop connections, send enquire_link or unbind, throttle
//! for a while, and read what reached the "handset" (every accepted submit_sm as received, long
//! messages marked by UDH, SAR TLVs or message_payload reassembled and decoded). A deliver_sm
//! left unanswered when its connection closes is delivered again on another receiver (at once,
//! or when one binds), as an SMSC does.
//!
//! It is a test double, not an SMSC: it never stores or forwards messages anywhere, never
//! enforces a real throughput limit, and keeps everything in memory. Timers use `tokio::time`,
//! so tests may pause time.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;
use tracing::{debug, warn};

use super::SequenceNumbers;
use super::esme::{decode_text, short_message_content};
use super::framing::{Frame, SmppCodec};
use super::pdu::{BindResp, Body, MessageIdResp, Pdu, ShortMessage};
use super::receipt::ReceiptState;
use super::status::CommandStatus;
use super::tlv::Tlv;
use crate::encoding::gsm7::{DataCoding, GsmCoding};
use crate::encoding::reassembly::Reassembler;
use crate::encoding::split::{Concat, SplitError, split};

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The account name a bind must carry (else ESME_RINVSYSID).
    pub system_id: String,
    /// The password a bind must carry (else ESME_RINVPASWD).
    pub password: String,
    /// Delay before each submit_sm_resp, to make requests overlap in the ESME's window.
    pub submit_latency: Duration,
    /// Answer every Nth submit_sm (counted over the whole simulator) with ESME_RTHROTTLED
    /// instead of accepting it; `None` never throttles.
    pub throttle_every: Option<u32>,
    /// Delay between a submit_sm_resp and its delivery receipt, for submits asking for one
    /// (registered_delivery bit 0); `None` sends no receipts.
    pub receipt_delay: Option<Duration>,
    /// The `stat:` word of receipts (`DELIVRD`, `UNDELIV`, `EXPIRED`...).
    pub receipt_status: String,
    /// Put the message id in receipts in decimal while submit_sm_resp carries it in hex, as
    /// some real SMSCs do (exercises id normalisation).
    pub receipt_id_decimal: bool,
    /// Keep every accepted part and message in the stats (`accepted_parts`, `messages`,
    /// `ussd_submits`). Throughput load tests turn it off: the lists grow without bound and
    /// their copying would be measured instead of the client.
    pub record_messages: bool,
    /// Deliveries of one deliver_sm (the first included) before the simulator gives up on it
    /// when the ESME keeps refusing it.
    pub delivery_attempts: u32,
    /// How long after a refusal the deliver_sm goes again, times the attempts so far (zero: at
    /// once). Real SMSCs wait: a gateway whose store is down for seconds refuses every
    /// immediate redelivery.
    pub redelivery_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            system_id: "baraza".to_string(),
            password: "secret".to_string(),
            submit_latency: Duration::ZERO,
            throttle_every: None,
            receipt_delay: Some(Duration::ZERO),
            receipt_status: "DELIVRD".to_string(),
            receipt_id_decimal: false,
            record_messages: true,
            delivery_attempts: MAX_DELIVERY_ATTEMPTS,
            redelivery_delay: Duration::ZERO,
        }
    }
}

/// One message that reached the simulated handset (all its parts accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// source_addr of the submit_sm.
    pub source: String,
    /// destination_addr of the submit_sm.
    pub destination: String,
    /// The decoded text, parts joined in order.
    pub text: String,
    /// How many submit_sm it took.
    pub parts: u8,
    /// The data_coding octet of the (first) part.
    pub data_coding: u8,
    /// The message ids given to its parts, in part order of arrival.
    pub message_ids: Vec<String>,
}

/// Counters and records of the simulator, as a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Successful binds.
    pub binds: u64,
    /// Binds refused for bad credentials.
    pub bind_failures: u64,
    /// Connections currently bound able to receive deliver_sm (receiver or transceiver).
    pub bound_receivers: u64,
    /// Connections currently bound able to submit (transmitter or transceiver).
    pub bound_transmitters: u64,
    /// submit_sm PDUs received on a transmitting bind (whatever their fate).
    pub submits: u64,
    /// submit_sm answered with ESME_ROK.
    pub accepted: u64,
    /// submit_sm answered with ESME_RTHROTTLED.
    pub throttled: u64,
    /// submit_sm answered with an error status queued by [`SimHandle::reject_next`].
    pub rejected: u64,
    /// submit_sm left unanswered because responses were on hold.
    pub held: u64,
    /// Delivery receipts sent.
    pub receipts_sent: u64,
    /// Mobile-originated deliver_sm parts sent.
    pub mo_parts_sent: u64,
    /// deliver_sm_resp received (answers to receipts and MO parts).
    pub deliver_sm_resps: u64,
    /// deliver_sm_resp with an error status (ESME_RX_T_APPN...): delivered again, as an SMSC
    /// does, up to [`MAX_DELIVERY_ATTEMPTS`] times in all.
    pub deliveries_refused: u64,
    /// deliver_sm sent again after a refusal.
    pub redeliveries: u64,
    /// deliver_sm sent again because the connection it was written to closed before answering
    /// it (or before writing it).
    pub redeliveries_after_close: u64,
    /// enquire_link_resp received (answers to [`SimHandle::enquire_link_all`]).
    pub enquire_link_resps: u64,
    /// enquire_link received from ESMEs.
    pub enquire_links_received: u64,
    /// unbind_resp received (answers to [`SimHandle::unbind_all`]).
    pub unbind_resps: u64,
    /// unbind received from ESMEs.
    pub unbinds_received: u64,
    /// generic_nack sent for malformed or unknown PDUs.
    pub generic_nacks_sent: u64,
    /// Every message that reached the handset, in the order its last part was accepted.
    pub messages: Vec<ReceivedMessage>,
    /// Every accepted submit_sm in arrival order, to check the order of parts.
    pub accepted_parts: Vec<AcceptedPart>,
    /// Every accepted submit_sm carrying `ussd_service_op` (USSD screens), whole, in arrival
    /// order, so tests can read their op, session TLVs and service_type.
    pub ussd_submits: Vec<ShortMessage>,
}

/// One accepted submit_sm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedPart {
    /// destination_addr.
    pub destination: String,
    /// The part's number and the message's part count (1 of 1 for a single message).
    pub seq: u8,
    /// How many parts its message has.
    pub total: u8,
    /// The message id given.
    pub message_id: String,
    /// When the simulator read the submit_sm: the arrival time an operator's TPS limit is
    /// enforced on.
    pub received_at: std::time::Instant,
    /// The submit_sm as received (TON/NPI, esm_class, validity_period, TLVs...).
    pub sm: ShortMessage,
}

/// Why a simulator action could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// No connection is bound as receiver or transceiver.
    #[error("no ESME is bound to receive messages")]
    NoReceiver,
    /// The text cannot be split into SMS parts.
    #[error("cannot encode the message: {0}")]
    Split(#[from] SplitError),
}

/// Deliveries of one deliver_sm (the first included) before the simulator gives up on it, by
/// default (`SimConfig::delivery_attempts`).
pub const MAX_DELIVERY_ATTEMPTS: u32 = 5;

/// What a connection task is asked to do by the rest of the simulator.
#[derive(Debug)]
enum Outgoing {
    /// Send this response as is.
    Response(Pdu),
    /// Send this request with the connection's next sequence number.
    Request(Body),
    /// Send this deliver_sm again (its earlier connection closed), as delivery `attempt`.
    Redelivery(Body, u32),
    /// Close the connection at once.
    Close,
}

/// Which operations a bind allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindKind {
    Transmitter,
    Receiver,
    Transceiver,
}

impl BindKind {
    fn can_submit(self) -> bool {
        matches!(self, BindKind::Transmitter | BindKind::Transceiver)
    }

    fn can_receive(self) -> bool {
        matches!(self, BindKind::Receiver | BindKind::Transceiver)
    }
}

/// A connection as the rest of the simulator sees it.
struct ConnectionEntry {
    /// The bind, once bound.
    bound: Option<BindKind>,
    /// Where to send what this connection should write.
    out: mpsc::UnboundedSender<Outgoing>,
}

/// Mutable state under one lock (never held across an await).
struct SimState {
    /// What tests read.
    stats: SimStats,
    /// Open connections by id.
    connections: HashMap<u64, ConnectionEntry>,
    /// Concatenated submits being put back together, keyed by source and destination.
    reassembler: Reassembler,
    /// Message ids of the parts held by the reassembler, per reassembly key.
    pending_ids: HashMap<String, Vec<String>>,
    /// The next UDH reference for mobile-originated long messages.
    mo_reference: u8,
    /// deliver_sm (with their delivery attempt) whose connection closed before answering them,
    /// waiting for a receiver to bind.
    orphaned: Vec<(Body, u32)>,
}

/// State shared by the acceptor, the connection tasks and the handles.
struct SimShared {
    /// Behaviour.
    config: SimConfig,
    /// The number behind the next message id.
    next_message_id: AtomicU64,
    /// submit_sm seen, for `throttle_every`.
    submit_counter: AtomicU64,
    /// The throttling in force: every Nth submit_sm gets ESME_RTHROTTLED (0: none). Starts as
    /// `config.throttle_every`; see [`SimHandle::set_throttle_every`].
    throttle_every: AtomicU32,
    /// Id of the next connection.
    next_connection: AtomicU64,
    /// See [`SimHandle::set_hold_responses`].
    hold_responses: AtomicBool,
    /// See [`SimHandle::set_withhold_responses`].
    withhold_responses: AtomicBool,
    /// See [`SimHandle::reject_next`].
    reject_queue: Mutex<std::collections::VecDeque<CommandStatus>>,
    /// Counters, records and connections.
    state: Mutex<SimState>,
    /// Bumped on every change of `state`, so waiters re-check their condition.
    changed: watch::Sender<u64>,
    /// Set to true to stop the acceptor and every connection.
    stop: watch::Sender<bool>,
}

impl SimShared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves counters usable; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut SimState)) {
        change(&mut self.lock());
        self.changed.send_modify(|version| *version += 1);
    }

    /// Hands the deliver_sm left by closed connections to a bound receiver, if there is one
    /// (else they wait for the next receiver bind).
    fn redeliver_orphans(&self) {
        let Some(out) = self.receiver(None) else {
            return;
        };
        let orphans = std::mem::take(&mut self.lock().orphaned);
        let mut unsent = Vec::new();
        let mut sent = 0;
        for (body, attempt) in orphans {
            match out.send(Outgoing::Redelivery(body, attempt)) {
                Ok(()) => sent += 1,
                Err(mpsc::error::SendError(Outgoing::Redelivery(body, attempt))) => {
                    unsent.push((body, attempt));
                }
                Err(_) => {}
            }
        }
        self.update(|state| {
            state.stats.redeliveries_after_close += sent;
            state.orphaned.extend(unsent);
        });
    }

    /// A connection bound to receive, preferring `preferred`.
    fn receiver(&self, preferred: Option<u64>) -> Option<mpsc::UnboundedSender<Outgoing>> {
        let state = self.lock();
        if let Some(entry) = preferred.and_then(|id| state.connections.get(&id))
            && entry.bound.is_some_and(BindKind::can_receive)
        {
            return Some(entry.out.clone());
        }
        let mut receivers: Vec<(&u64, &ConnectionEntry)> = state
            .connections
            .iter()
            .filter(|(_, entry)| entry.bound.is_some_and(BindKind::can_receive))
            .collect();
        receivers.sort_by_key(|(id, _)| **id);
        receivers.first().map(|(_, entry)| entry.out.clone())
    }
}

/// The simulator before it runs: create, take handles, then [`SmscSim::run`].
pub struct SmscSim {
    shared: Arc<SimShared>,
}

/// A cloneable handle to a running (or about to run) simulator.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<SimShared>,
}

impl SmscSim {
    /// A simulator with this behaviour.
    pub fn new(config: SimConfig) -> SmscSim {
        let (changed, _) = watch::channel(0);
        let (stop, _) = watch::channel(false);
        let throttle_every = config.throttle_every.unwrap_or(0);
        SmscSim {
            shared: Arc::new(SimShared {
                config,
                next_message_id: AtomicU64::new(1),
                submit_counter: AtomicU64::new(0),
                throttle_every: AtomicU32::new(throttle_every),
                next_connection: AtomicU64::new(1),
                hold_responses: AtomicBool::new(false),
                withhold_responses: AtomicBool::new(false),
                reject_queue: Mutex::new(std::collections::VecDeque::new()),
                state: Mutex::new(SimState {
                    stats: SimStats::default(),
                    connections: HashMap::new(),
                    reassembler: Reassembler::new(Duration::from_secs(600), 1000),
                    pending_ids: HashMap::new(),
                    mo_reference: 0,
                    orphaned: Vec::new(),
                }),
                changed,
                stop,
            }),
        }
    }

    /// A handle for tests and tooling.
    pub fn handle(&self) -> SimHandle {
        SimHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Accepts connections on `listener` until `shutdown` completes or
    /// [`SimHandle::shutdown`] is called; then closes every connection.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut stop = self.shared.stop.subscribe();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        debug!(%peer, "smsc-sim: connection");
                        let shared = Arc::clone(&self.shared);
                        tokio::spawn(serve_connection(shared, stream));
                    }
                    Err(error) => {
                        warn!(%error, "smsc-sim: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = &mut shutdown => break,
                _ = stopped(&mut stop) => break,
            }
        }
        self.shared.stop.send_replace(true);
        Ok(())
    }
}

/// Runs a simulator with `config` on `listener` until `shutdown` completes (the CLI entry
/// point).
pub async fn run_smsc_sim(
    config: SimConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    SmscSim::new(config).run(listener, shutdown).await
}

/// Starts a simulator on `listener` in a background task and returns its handle (for tests);
/// [`SimHandle::shutdown`] stops it.
pub fn spawn_smsc_sim(config: SimConfig, listener: TcpListener) -> SimHandle {
    let sim = SmscSim::new(config);
    let handle = sim.handle();
    tokio::spawn(async move {
        if let Err(error) = sim.run(listener, std::future::pending()).await {
            warn!(%error, "smsc-sim stopped");
        }
    });
    handle
}

impl SimHandle {
    /// A snapshot of the counters and received messages.
    pub fn stats(&self) -> SimStats {
        self.shared.lock().stats.clone()
    }

    /// Waits until `condition` holds on the stats, and returns them. Wrap in a timeout.
    pub async fn wait_until(&self, condition: impl Fn(&SimStats) -> bool) -> SimStats {
        let mut changes = self.shared.changed.subscribe();
        loop {
            changes.borrow_and_update();
            let stats = self.stats();
            if condition(&stats) {
                return stats;
            }
            if changes.changed().await.is_err() {
                return stats;
            }
        }
    }

    /// While `hold` is true, accepted submit_sm get no response at all (to leave requests
    /// outstanding in an ESME's window). They are counted in `held`, not recorded as received.
    pub fn set_hold_responses(&self, hold: bool) {
        self.shared.hold_responses.store(hold, Ordering::SeqCst);
    }

    /// While `withhold` is true, submit_sm are accepted and recorded as received (they reach
    /// the handset) but get no response: what an ESME sees when the link fails between the
    /// SMSC taking a message and answering it.
    pub fn set_withhold_responses(&self, withhold: bool) {
        self.shared
            .withhold_responses
            .store(withhold, Ordering::SeqCst);
    }

    /// From now on every Nth submit_sm (counted over the whole simulator) is answered with
    /// ESME_RTHROTTLED; `None` (or 0) stops throttling. Replaces `SimConfig::throttle_every`.
    pub fn set_throttle_every(&self, every: Option<u32>) {
        self.shared
            .throttle_every
            .store(every.unwrap_or(0), Ordering::SeqCst);
    }

    /// The next submit_sm (counted over the whole simulator) get these statuses in order,
    /// one each, instead of being accepted: a refused part is not recorded as received.
    pub fn reject_next(&self, statuses: impl IntoIterator<Item = CommandStatus>) {
        self.shared
            .reject_queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(statuses);
    }

    /// Closes every connection at once, without unbind (a network failure).
    pub fn drop_connections(&self) -> usize {
        self.broadcast(|_| Some(Outgoing::Close))
    }

    /// Sends enquire_link on every connection; returns how many.
    pub fn enquire_link_all(&self) -> usize {
        self.broadcast(|_| Some(Outgoing::Request(Body::EnquireLink)))
    }

    /// Sends unbind on every bound connection; each closes once its unbind_resp arrives.
    pub fn unbind_all(&self) -> usize {
        self.broadcast(|entry| entry.bound.map(|_| Outgoing::Request(Body::Unbind)))
    }

    fn broadcast(&self, message: impl Fn(&ConnectionEntry) -> Option<Outgoing>) -> usize {
        let state = self.shared.lock();
        state
            .connections
            .values()
            .filter_map(|entry| message(entry).map(|out| entry.out.send(out).is_ok()))
            .filter(|sent| *sent)
            .count()
    }

    /// Sends a mobile-originated SMS `from` a handset `to` a short code: GSM 03.38 when the
    /// text allows, else UCS-2, split with an 8-bit-reference UDH when long. Returns the
    /// number of deliver_sm parts sent.
    pub fn inject_mo(&self, from: &str, to: &str, text: &str) -> Result<usize, SimError> {
        let coding = DataCoding::choose(text, GsmCoding::Zero);
        let reference = {
            let mut state = self.shared.lock();
            state.mo_reference = state.mo_reference.wrapping_add(1);
            state.mo_reference
        };
        let parts = split(text, coding, Concat::Udh8 { reference })?;
        let out = self.shared.receiver(None).ok_or(SimError::NoReceiver)?;
        let count = parts.len();
        for part in parts {
            let body = Body::DeliverSm(ShortMessage {
                source_addr: from.into(),
                destination_addr: to.into(),
                esm_class: if part.esm_class_udhi { 0x40 } else { 0 },
                data_coding: coding.to_byte(),
                short_message: Bytes::from(part.short_message),
                ..ShortMessage::default()
            });
            out.send(Outgoing::Request(body))
                .map_err(|_| SimError::NoReceiver)?;
        }
        self.shared.update(|state| {
            state.stats.mo_parts_sent += u64::try_from(count).unwrap_or(u64::MAX);
        });
        Ok(count)
    }

    /// Sends a USSD dialogue message `from` a handset `to` a short code, as one deliver_sm with
    /// `service_type` USSD, the text in GSM 03.38 (else UCS-2) and the given TLVs (typically
    /// `ussd_service_op` and `its_session_info` or `user_message_reference`).
    pub fn inject_ussd(
        &self,
        from: &str,
        to: &str,
        text: &str,
        tlvs: Vec<Tlv>,
    ) -> Result<(), SimError> {
        let coding = DataCoding::choose(text, GsmCoding::Zero);
        let octets = coding.encode(text).unwrap_or_default();
        let out = self.shared.receiver(None).ok_or(SimError::NoReceiver)?;
        let body = Body::DeliverSm(ShortMessage {
            service_type: "USSD".into(),
            source_addr: from.into(),
            destination_addr: to.into(),
            data_coding: coding.to_byte(),
            short_message: Bytes::from(octets),
            tlvs,
            ..ShortMessage::default()
        });
        out.send(Outgoing::Request(body))
            .map_err(|_| SimError::NoReceiver)?;
        self.shared.update(|state| state.stats.mo_parts_sent += 1);
        Ok(())
    }

    /// The USSD screens (submit_sm with `ussd_service_op`) accepted so far, in order.
    pub fn ussd_submits(&self) -> Vec<ShortMessage> {
        self.stats().ussd_submits
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.shared.stop.send_replace(true);
    }
}

/// Records an accepted part; completes a message when it was the last part.
fn record_accepted(state: &mut SimState, sm: &ShortMessage, message_id: &str) {
    if sm
        .tlvs
        .iter()
        .any(|tlv| tlv.tag == super::tlv::tags::USSD_SERVICE_OP)
    {
        state.stats.ussd_submits.push(sm.clone());
    }
    let (mark, payload, coding) = short_message_content(sm);
    let source = sm.source_addr.to_string_lossy();
    let destination = sm.destination_addr.to_string_lossy();
    let key = format!("{source}|{destination}");
    let (seq, total) = mark.map_or((1, 1), |info| (info.seq, info.total));
    state.stats.accepted_parts.push(AcceptedPart {
        destination: destination.clone(),
        seq,
        total,
        message_id: message_id.to_string(),
        received_at: std::time::Instant::now(),
        sm: sm.clone(),
    });
    let complete = match mark {
        Some(info) if info.total > 1 => {
            let now = std::time::Instant::now();
            match state.reassembler.push(&key, info, &payload, now) {
                Ok(Some(whole)) => {
                    let mut ids = state.pending_ids.remove(&key).unwrap_or_default();
                    ids.push(message_id.to_string());
                    Some((whole, info.total, ids))
                }
                Ok(None) => {
                    state
                        .pending_ids
                        .entry(key)
                        .or_default()
                        .push(message_id.to_string());
                    None
                }
                Err(rejected) => {
                    warn!(%rejected, "smsc-sim: part kept on its own");
                    Some((payload, 1, vec![message_id.to_string()]))
                }
            }
        }
        _ => Some((payload, 1, vec![message_id.to_string()])),
    };
    if let Some((octets, parts, message_ids)) = complete {
        state.stats.messages.push(ReceivedMessage {
            source,
            destination,
            text: decode_text(coding, &octets),
            parts,
            data_coding: sm.data_coding,
            message_ids,
        });
    }
}

/// `YYMMDDhhmm` in UTC.
fn smpp_date(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{:02}{:02}{:02}{:02}{:02}",
        year.rem_euclid(100),
        month,
        day,
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The receipt deliver_sm for an accepted submit.
fn receipt_body(config: &SimConfig, sm: &ShortMessage, id_number: u64, hex_id: &str) -> Body {
    let receipt_id = if config.receipt_id_decimal {
        id_number.to_string()
    } else {
        hex_id.to_string()
    };
    let state = ReceiptState::from_stat(&config.receipt_status);
    let (_, payload, coding) = short_message_content(sm);
    let snippet: String = decode_text(coding, &payload)
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .take(20)
        .collect();
    let date = smpp_date(SystemTime::now());
    let delivered = if state == ReceiptState::Delivered {
        "001"
    } else {
        "000"
    };
    let text = format!(
        "id:{receipt_id} sub:001 dlvrd:{delivered} submit date:{date} done date:{date} stat:{} err:000 text:{snippet}",
        config.receipt_status
    );
    Body::DeliverSm(ShortMessage {
        source_addr: sm.destination_addr.clone(),
        destination_addr: sm.source_addr.clone(),
        esm_class: 0x04,
        data_coding: 0,
        short_message: Bytes::from(text.into_bytes()),
        tlvs: vec![
            Tlv::receipted_message_id(&receipt_id),
            Tlv::message_state(state.to_message_state()),
        ],
        ..ShortMessage::default()
    })
}

/// Completes once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// What to do with the connection after a PDU.
enum Next {
    Continue,
    Close,
}

/// Serves one TCP connection until it closes, the peer unbinds, or the simulator stops.
async fn serve_connection(shared: Arc<SimShared>, stream: TcpStream) {
    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    shared.update(|state| {
        state.stats.connections += 1;
        state.connections.insert(
            id,
            ConnectionEntry {
                bound: None,
                out: out_tx.clone(),
            },
        );
    });
    let mut stop = shared.stop.subscribe();
    let mut framed = Framed::new(stream, SmppCodec::default());
    let sequences = SequenceNumbers::new();
    let mut bound: Option<BindKind> = None;
    // deliver_sm written and not answered yet, by sequence, with the delivery attempt: one
    // answered with an error status is written again.
    let mut deliveries: HashMap<u32, (Body, u32)> = HashMap::new();
    // Our unbind was answered: close after that.
    let mut awaiting_unbind_resp = false;
    loop {
        let outcome = tokio::select! {
            frame = framed.next() => match frame {
                None => break,
                Some(Err(error)) => {
                    debug!(%error, "smsc-sim: dropping connection");
                    break;
                }
                Some(Ok(Frame::Invalid(error))) => {
                    if error.is_response() {
                        Next::Continue
                    } else {
                        shared.update(|state| state.stats.generic_nacks_sent += 1);
                        send(&mut framed, error.generic_nack()).await
                    }
                }
                Some(Ok(Frame::Pdu(pdu))) => {
                    if matches!(pdu.body, Body::DeliverSmResp(_))
                        && let Some((body, attempt)) = deliveries.remove(&pdu.sequence)
                        && pdu.status != CommandStatus::ESME_ROK
                    {
                        shared.update(|state| state.stats.deliveries_refused += 1);
                        if attempt < shared.config.delivery_attempts {
                            shared.update(|state| state.stats.redeliveries += 1);
                            let delay = shared.config.redelivery_delay * attempt;
                            if delay.is_zero() {
                                let sequence = sequences.next_sequence();
                                deliveries.insert(sequence, (body.clone(), attempt + 1));
                                if matches!(send(&mut framed, Pdu::new(sequence, body)).await, Next::Close) {
                                    break;
                                }
                            } else {
                                redeliver_later(Arc::clone(&shared), id, body, attempt + 1, delay);
                            }
                        }
                    }
                    let was_unbinding = awaiting_unbind_resp;
                    if matches!(pdu.body, Body::UnbindResp) {
                        awaiting_unbind_resp = false;
                    }
                    let next = handle_pdu(&shared, id, &out_tx, &mut bound, &mut framed, pdu).await;
                    if was_unbinding && !awaiting_unbind_resp { Next::Close } else { next }
                }
            },
            out = out_rx.recv() => match out {
                Some(Outgoing::Response(pdu)) => send(&mut framed, pdu).await,
                Some(Outgoing::Request(body)) => {
                    if matches!(body, Body::Unbind) {
                        awaiting_unbind_resp = true;
                    }
                    let sequence = sequences.next_sequence();
                    if matches!(body, Body::DeliverSm(_)) {
                        deliveries.insert(sequence, (body.clone(), 1));
                    }
                    send(&mut framed, Pdu::new(sequence, body)).await
                }
                Some(Outgoing::Redelivery(body, attempt)) => {
                    let sequence = sequences.next_sequence();
                    deliveries.insert(sequence, (body.clone(), attempt));
                    send(&mut framed, Pdu::new(sequence, body)).await
                }
                Some(Outgoing::Close) | None => Next::Close,
            },
            _ = stopped(&mut stop) => Next::Close,
        };
        if matches!(outcome, Next::Close) {
            break;
        }
    }
    // What this connection was given to deliver and never got answered goes to another
    // receiver: the deliver_sm written and unanswered, and those still queued for writing.
    out_rx.close();
    let mut unanswered: Vec<(u32, (Body, u32))> = deliveries.into_iter().collect();
    unanswered.sort_by_key(|(sequence, _)| *sequence);
    let mut orphans: Vec<(Body, u32)> = unanswered.into_iter().map(|(_, d)| d).collect();
    while let Ok(out) = out_rx.try_recv() {
        match out {
            Outgoing::Request(body @ Body::DeliverSm(_)) => orphans.push((body, 1)),
            Outgoing::Redelivery(body, attempt) => orphans.push((body, attempt)),
            _ => {}
        }
    }
    shared.update(|state| {
        if let Some(entry) = state.connections.remove(&id)
            && let Some(kind) = entry.bound
        {
            if kind.can_receive() {
                state.stats.bound_receivers -= 1;
            }
            if kind.can_submit() {
                state.stats.bound_transmitters -= 1;
            }
        }
        state.orphaned.extend(orphans);
    });
    shared.redeliver_orphans();
}

/// Delivers `body` again as delivery `attempt` after `delay`, on `connection` if it is still
/// bound to receive, else on another receiver (or the next one to bind).
fn redeliver_later(
    shared: Arc<SimShared>,
    connection: u64,
    body: Body,
    attempt: u32,
    delay: Duration,
) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let unsent = match shared.receiver(Some(connection)) {
            Some(out) => out
                .send(Outgoing::Redelivery(body, attempt))
                .err()
                .map(|returned| returned.0),
            None => Some(Outgoing::Redelivery(body, attempt)),
        };
        if let Some(Outgoing::Redelivery(body, attempt)) = unsent {
            shared.update(|state| state.orphaned.push((body, attempt)));
            shared.redeliver_orphans();
        }
    });
}

async fn send(framed: &mut Framed<TcpStream, SmppCodec>, pdu: Pdu) -> Next {
    match framed.send(pdu).await {
        Ok(()) => Next::Continue,
        Err(error) => {
            debug!(%error, "smsc-sim: write failed");
            Next::Close
        }
    }
}

async fn handle_pdu(
    shared: &Arc<SimShared>,
    connection: u64,
    out: &mpsc::UnboundedSender<Outgoing>,
    bound: &mut Option<BindKind>,
    framed: &mut Framed<TcpStream, SmppCodec>,
    pdu: Pdu,
) -> Next {
    let sequence = pdu.sequence;
    let command_id = pdu.command_id();
    let reply = |status: CommandStatus, body: Body| Pdu {
        sequence,
        status,
        body,
    };
    match pdu.body {
        Body::BindTransmitter(bind) | Body::BindReceiver(bind) | Body::BindTransceiver(bind) => {
            let (kind, resp_body): (BindKind, fn(BindResp) -> Body) = match command_id {
                0x0000_0002 => (BindKind::Transmitter, Body::BindTransmitterResp),
                0x0000_0001 => (BindKind::Receiver, Body::BindReceiverResp),
                _ => (BindKind::Transceiver, Body::BindTransceiverResp),
            };
            let status = if bound.is_some() {
                CommandStatus::ESME_RALYBND
            } else if bind.system_id != shared.config.system_id.as_str() {
                CommandStatus::ESME_RINVSYSID
            } else if bind.password != shared.config.password.as_str() {
                CommandStatus::ESME_RINVPASWD
            } else {
                CommandStatus::ESME_ROK
            };
            if !status.is_ok() {
                if bound.is_none() {
                    shared.update(|state| state.stats.bind_failures += 1);
                }
                let next = send(framed, reply(status, resp_body(BindResp::default()))).await;
                return if bound.is_none() { Next::Close } else { next };
            }
            *bound = Some(kind);
            shared.update(|state| {
                state.stats.binds += 1;
                if kind.can_receive() {
                    state.stats.bound_receivers += 1;
                }
                if kind.can_submit() {
                    state.stats.bound_transmitters += 1;
                }
                if let Some(entry) = state.connections.get_mut(&connection) {
                    entry.bound = Some(kind);
                }
            });
            if kind.can_receive() {
                shared.redeliver_orphans();
            }
            let resp = BindResp {
                system_id: "baraza-sim".into(),
                tlvs: vec![Tlv::sc_interface_version(0x34)],
            };
            send(framed, reply(CommandStatus::ESME_ROK, resp_body(resp))).await
        }
        Body::EnquireLink => {
            shared.update(|state| state.stats.enquire_links_received += 1);
            send(
                framed,
                reply(CommandStatus::ESME_ROK, Body::EnquireLinkResp),
            )
            .await
        }
        Body::Unbind => {
            shared.update(|state| state.stats.unbinds_received += 1);
            send(framed, reply(CommandStatus::ESME_ROK, Body::UnbindResp)).await;
            Next::Close
        }
        Body::SubmitSm(sm) => {
            if !bound.is_some_and(BindKind::can_submit) {
                let body = Body::SubmitSmResp(MessageIdResp::default());
                return send(framed, reply(CommandStatus::ESME_RINVBNDSTS, body)).await;
            }
            handle_submit(shared, connection, out, framed, sequence, sm).await
        }
        Body::DeliverSmResp(_) => {
            shared.update(|state| state.stats.deliver_sm_resps += 1);
            Next::Continue
        }
        Body::EnquireLinkResp => {
            shared.update(|state| state.stats.enquire_link_resps += 1);
            Next::Continue
        }
        Body::UnbindResp => {
            shared.update(|state| state.stats.unbind_resps += 1);
            Next::Continue
        }
        body if body.is_response() => Next::Continue,
        _ => {
            shared.update(|state| state.stats.generic_nacks_sent += 1);
            send(
                framed,
                reply(CommandStatus::ESME_RINVCMDID, Body::GenericNack),
            )
            .await
        }
    }
}

async fn handle_submit(
    shared: &Arc<SimShared>,
    connection: u64,
    out: &mpsc::UnboundedSender<Outgoing>,
    framed: &mut Framed<TcpStream, SmppCodec>,
    sequence: u32,
    sm: ShortMessage,
) -> Next {
    let count = shared.submit_counter.fetch_add(1, Ordering::SeqCst) + 1;
    let every = shared.throttle_every.load(Ordering::SeqCst);
    let throttle = every > 0 && count.is_multiple_of(u64::from(every));
    if throttle {
        shared.update(|state| {
            state.stats.submits += 1;
            state.stats.throttled += 1;
        });
        let resp = Pdu {
            sequence,
            status: CommandStatus::ESME_RTHROTTLED,
            body: Body::SubmitSmResp(MessageIdResp::default()),
        };
        return send(framed, resp).await;
    }
    let rejection = shared
        .reject_queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .pop_front();
    if let Some(status) = rejection {
        shared.update(|state| {
            state.stats.submits += 1;
            state.stats.rejected += 1;
        });
        let resp = Pdu {
            sequence,
            status,
            body: Body::SubmitSmResp(MessageIdResp::default()),
        };
        return send(framed, resp).await;
    }
    if shared.hold_responses.load(Ordering::SeqCst) {
        shared.update(|state| {
            state.stats.submits += 1;
            state.stats.held += 1;
        });
        return Next::Continue;
    }
    // Read before the submit is counted: a test that waits for the count may switch it off.
    let withhold = shared.withhold_responses.load(Ordering::SeqCst);
    let id_number = shared.next_message_id.fetch_add(1, Ordering::SeqCst);
    let message_id = format!("{id_number:08x}");
    shared.update(|state| {
        state.stats.submits += 1;
        state.stats.accepted += 1;
        if shared.config.record_messages {
            record_accepted(state, &sm, &message_id);
        }
    });
    let resp = Pdu::new(
        sequence,
        Body::SubmitSmResp(MessageIdResp {
            message_id: message_id.as_str().into(),
            tlvs: Vec::new(),
        }),
    );
    let receipt_delay = shared
        .config
        .receipt_delay
        .filter(|_| sm.registered_delivery & 0x01 != 0);
    let latency = shared.config.submit_latency;
    let next = if withhold {
        Next::Continue
    } else if latency.is_zero() {
        send(framed, resp).await
    } else {
        let out = out.clone();
        tokio::spawn(async move {
            tokio::time::sleep(latency).await;
            let _ = out.send(Outgoing::Response(resp));
        });
        Next::Continue
    };
    if let Some(delay) = receipt_delay {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            tokio::time::sleep(latency + delay).await;
            let body = receipt_body(&shared.config, &sm, id_number, &message_id);
            match shared.receiver(Some(connection)) {
                Some(receiver) if receiver.send(Outgoing::Request(body)).is_ok() => {
                    shared.update(|state| state.stats.receipts_sent += 1);
                }
                _ => debug!(message_id, "smsc-sim: no receiver bound for the receipt"),
            }
        });
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(
            smpp_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2311142213"
        );
    }
}
