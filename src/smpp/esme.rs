//! An SMPP 3.4 ESME bind session: connects to an SMSC, binds, keeps the link alive, submits
//! messages (split into parts, in order) under a window of outstanding requests and a TPS
//! limit, and hands deliveries and receipts to the caller.
//!
//! One background task per bind owns the TCP connection: it writes requests, matches responses
//! by sequence number (in any order) with a response timer, answers the SMSC's enquire_link,
//! unbind and deliver_sm, sends enquire_link when idle, and reconnects with exponential backoff
//! plus jitter. Throttling (ESME_RTHROTTLED, ESME_RMSGQFUL) pauses the whole bind and the same
//! part is retried, so parts keep their order. A part refused with one of the operator's
//! temporary statuses was not taken, so it is submitted again after a backoff, a bounded
//! number of times, while the message's later parts wait. The TPS limiter may be shared by
//! all of an operator's binds. A request written but never answered (timeout
//! or lost connection) is reported `Unknown`: this module never resends it, since the SMSC may
//! have taken it. It never persists anything, never decides what to send, and never opens a
//! bind per message.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use super::SequenceNumbers;
use super::framing::{Frame, SmppCodec};
use super::pdu::{Bind, Body, EncodeError, MessageIdResp, Pdu, ShortMessage};
use super::profile::{
    AddressPlan, Concatenation, RetryPolicy, StatusClass, TemporaryErrors, relative_time,
};
use super::receipt::{Receipt, parse_receipt};
use super::status::CommandStatus;
use super::tlv::{Tlv, TlvList};
use crate::encoding::gsm7::{DataCoding, GsmCoding};
use crate::encoding::reassembly::{ConcatInfo, Reassembler, parse_udh};
use crate::encoding::split::{SplitError, split};

/// TON, NPI and digits of an address under the default [`AddressPlan`]: `+254711...` is
/// international (TON 1, NPI 1 E.164) without the `+`; a name such as `BARAZA` is
/// alphanumeric (TON 5, NPI 0); a short code (at most 8 digits) is network specific (TON 3,
/// NPI 0); a longer number without `+` goes as written (TON 0 unknown, NPI 1).
pub fn address(written: &str) -> (u8, u8, String) {
    AddressPlan::default().address(written)
}

/// What is left of the operator's `validity` for a message that already `waited` (at least
/// a second: SMPP's relative time counts seconds); `None` when the operator sets none.
fn validity_left(
    validity: Option<std::time::Duration>,
    waited: std::time::Duration,
) -> Result<Option<std::time::Duration>, SubmitError> {
    let Some(validity) = validity else {
        return Ok(None);
    };
    if waited >= validity {
        return Err(SubmitError::Expired {
            waited_seconds: waited.as_secs(),
            validity_seconds: validity.as_secs(),
        });
    }
    Ok(Some(
        (validity - waited).max(std::time::Duration::from_secs(1)),
    ))
}

/// The submit_sm PDUs of one message as the operator wants them: data_coding chosen from
/// the text (GSM 03.38 under the operator's 0 or 1, else UCS-2), split and marked with the
/// operator's concatenation method (`reference` identifies this message's parts), TON/NPI
/// of both addresses from the operator's plans, and the validity period as a relative time.
/// Pure: nothing is sent; every PDU is checked to fit SMPP.
pub fn build_submits(
    config: &BindConfig,
    request: &SubmitRequest,
    reference: u16,
) -> Result<Vec<ShortMessage>, SubmitError> {
    let coding = DataCoding::choose(&request.text, config.gsm_coding);
    let parts = split(
        &request.text,
        coding,
        config.concatenation.with_reference(reference),
    )?;
    let (source_ton, source_npi, source) = config.source_addresses.address(&request.from);
    let (dest_ton, dest_npi, destination) = config.dest_addresses.address(&request.to);
    let validity_period = validity_left(config.validity, request.waited)?
        .map(relative_time)
        .unwrap_or_default();
    let mut messages = Vec::with_capacity(parts.len());
    for part in parts {
        let mut tlvs = Vec::new();
        if let Some((reference, total, seq)) = part.sar {
            tlvs.push(Tlv::sar_msg_ref_num(reference));
            tlvs.push(Tlv::sar_total_segments(total));
            tlvs.push(Tlv::sar_segment_seqnum(seq));
        }
        if let Some(payload) = part.message_payload {
            tlvs.push(Tlv::message_payload(payload));
        }
        let sm = ShortMessage {
            source_addr_ton: source_ton,
            source_addr_npi: source_npi,
            source_addr: source.as_str().into(),
            dest_addr_ton: dest_ton,
            dest_addr_npi: dest_npi,
            destination_addr: destination.as_str().into(),
            esm_class: if part.esm_class_udhi { 0x40 } else { 0 },
            validity_period: validity_period.as_str().into(),
            registered_delivery: u8::from(request.registered_delivery),
            data_coding: coding.to_byte(),
            short_message: Bytes::from(part.short_message),
            tlvs,
            ..ShortMessage::default()
        };
        sm.check_encodable()?;
        messages.push(sm);
    }
    Ok(messages)
}

/// Which kind of bind to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindType {
    /// Send and receive on one connection.
    Transceiver,
    /// Send only.
    Transmitter,
    /// Receive only (deliveries and receipts).
    Receiver,
}

/// How to reach and use one SMSC account (`Debug` leaves the password out).
#[derive(Clone)]
pub struct BindConfig {
    /// SMSC host name or address.
    pub host: String,
    /// SMSC port.
    pub port: u16,
    /// Account name (at most 15 octets).
    pub system_id: String,
    /// Account password (at most 8 octets).
    pub password: String,
    /// Operator-defined ESME type, often empty (at most 12 octets).
    pub system_type: String,
    /// Transceiver, transmitter or receiver.
    pub bind_type: BindType,
    /// Send enquire_link after this long without traffic (operators expect about 30 s).
    pub enquire_link_interval: Duration,
    /// Most requests outstanding at once (operators expect about 10).
    pub window: usize,
    /// How long to wait for any response before the request's outcome is `Unknown` (and, for
    /// enquire_link, before the link is declared dead).
    pub response_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt.
    pub reconnect_floor: Duration,
    /// Largest reconnect delay (some operators demand at least 30 s).
    pub reconnect_ceiling: Duration,
    /// Most submit_sm per second on this bind (each part counts); `None` for no limit. A
    /// limiter given to [`Esme::start_with_limiter`] (shared by the operator's binds) takes
    /// its place.
    pub tps: Option<u32>,
    /// First pause of the whole bind after ESME_RTHROTTLED or ESME_RMSGQFUL; doubles while
    /// throttling continues, capped at `reconnect_ceiling`.
    pub throttle_pause: Duration,
    /// data_coding for GSM 03.38 text (0 or 1, per operator).
    pub gsm_coding: GsmCoding,
    /// How long messages are marked as one (UDH 8/16-bit, SAR TLVs or message_payload).
    pub concatenation: Concatenation,
    /// TON/NPI of source_addr, per kind of sender.
    pub source_addresses: AddressPlan,
    /// TON/NPI of destination_addr, per kind of recipient.
    pub dest_addresses: AddressPlan,
    /// validity_period of every submit_sm as a relative time, so a message the SMSC cannot
    /// deliver in time is dropped instead of arriving late; `None` leaves the SMSC's default.
    pub validity: Option<Duration>,
    /// Statuses after which a refused part is submitted again (after a backoff).
    pub temporary_errors: TemporaryErrors,
    /// How often and how spaced a part refused with a temporary status is submitted again.
    pub submit_retry: RetryPolicy,
    /// How long an incomplete inbound long message is held before it is delivered partially.
    pub reassembly_timeout: Duration,
    /// How long a delivered message may take to be kept before the bind answers
    /// ESME_RX_T_APPN (delivered again later) rather than keep the SMSC waiting.
    pub deliver_ack_timeout: Duration,
}

impl std::fmt::Debug for BindConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("system_id", &self.system_id)
            .field("password", &"<redacted>")
            .field("system_type", &self.system_type)
            .field("bind_type", &self.bind_type)
            .field("window", &self.window)
            .field("tps", &self.tps)
            .field("concatenation", &self.concatenation)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl BindConfig {
    /// A transceiver bind to `host:port` with the usual operator defaults.
    pub fn new(host: &str, port: u16, system_id: &str, password: &str) -> BindConfig {
        BindConfig {
            host: host.to_string(),
            port,
            system_id: system_id.to_string(),
            password: password.to_string(),
            system_type: String::new(),
            bind_type: BindType::Transceiver,
            enquire_link_interval: Duration::from_secs(30),
            window: 10,
            response_timeout: Duration::from_secs(10),
            reconnect_floor: Duration::from_secs(1),
            reconnect_ceiling: Duration::from_secs(60),
            tps: None,
            throttle_pause: Duration::from_secs(1),
            gsm_coding: GsmCoding::Zero,
            concatenation: Concatenation::Udh8,
            source_addresses: AddressPlan::default(),
            dest_addresses: AddressPlan::default(),
            validity: None,
            temporary_errors: TemporaryErrors::default(),
            submit_retry: RetryPolicy::default(),
            reassembly_timeout: Duration::from_secs(300),
            deliver_ack_timeout: Duration::from_secs(5),
        }
    }
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitRequest {
    /// Destination number.
    pub to: String,
    /// Sender (number, short code or alphanumeric name).
    pub from: String,
    /// The text; split into parts when long.
    pub text: String,
    /// Ask the SMSC for a delivery receipt (registered_delivery bit 0).
    pub registered_delivery: bool,
    /// How long the message already waited (since it was queued): the validity period sent
    /// is what is left of the operator's, so a question never reaches a handset later than
    /// the operator's validity after it was asked; one that waited longer is not submitted
    /// ([`SubmitError::Expired`]).
    pub waited: std::time::Duration,
}

/// What became of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// The SMSC took the part and gave it this id (as sent: normalise before matching
    /// receipts).
    Accepted {
        /// The submit_sm_resp message_id.
        message_id: String,
    },
    /// The SMSC refused the part: a permanent status, or a temporary one on the part's last
    /// allowed attempt (see [`BindConfig::submit_retry`]).
    Rejected {
        /// The status of submit_sm_resp or generic_nack.
        status: CommandStatus,
    },
    /// The part was written but no answer came (timeout or lost connection): it may or may
    /// not reach the handset. Never resent automatically.
    Unknown {
        /// What happened.
        reason: String,
    },
    /// The part was not sent because an earlier part of the message failed.
    NotSent {
        /// Why.
        reason: String,
    },
}

/// What became of one part, with how it got there: the submissions made and the temporary
/// statuses that refused the earlier ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReport {
    /// The final outcome.
    pub outcome: SubmitOutcome,
    /// submit_sm answered with a status or unanswered for this part, throttled ones not
    /// counted (0 for a part never sent).
    pub attempts: u32,
    /// The temporary statuses that refused earlier attempts, oldest first.
    pub temporary: Vec<CommandStatus>,
}

impl PartReport {
    /// A human-readable account for the stored part (`None` when it was simply accepted the
    /// first time).
    pub fn detail(&self) -> Option<String> {
        let earlier = || {
            self.temporary
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.outcome {
            SubmitOutcome::Accepted { .. } if self.temporary.is_empty() => None,
            SubmitOutcome::Accepted { .. } => Some(format!(
                "accepted on attempt {} after {}",
                self.attempts,
                earlier()
            )),
            SubmitOutcome::Rejected { status } if self.temporary.contains(status) => Some(format!(
                "{status}: temporary, still refused after {} attempts (earlier: {})",
                self.attempts,
                earlier()
            )),
            SubmitOutcome::Rejected { status } if self.temporary.is_empty() => {
                Some(status.to_string())
            }
            SubmitOutcome::Rejected { status } => Some(format!(
                "{status} on attempt {} (earlier: {})",
                self.attempts,
                earlier()
            )),
            SubmitOutcome::Unknown { reason } if self.temporary.is_empty() => Some(reason.clone()),
            SubmitOutcome::Unknown { reason } => Some(format!(
                "{reason} (attempt {}; earlier: {})",
                self.attempts,
                earlier()
            )),
            SubmitOutcome::NotSent { reason } => Some(reason.clone()),
        }
    }
}

impl SubmitOutcome {
    /// The message id when accepted.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            SubmitOutcome::Accepted { message_id } => Some(message_id),
            _ => None,
        }
    }
}

/// Why a message could not be submitted at all (nothing was sent).
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The text cannot be encoded or split.
    #[error("cannot split the message: {0}")]
    Split(#[from] SplitError),
    /// A field does not fit SMPP (e.g. an address over 20 octets).
    #[error("invalid submit_sm: {0}")]
    InvalidPdu(#[from] EncodeError),
    /// This is a receiver bind.
    #[error("a receiver bind cannot submit messages")]
    NotTransmitter,
    /// The ESME was stopped (unbind) before the message could be sent: no part was written.
    #[error("the SMPP bind is stopped")]
    Stopped,
    /// The message waited longer than the operator's validity period before it could be
    /// submitted: too late to be worth sending.
    #[error(
        "waited {waited_seconds} s, longer than the operator's validity of {validity_seconds} s: not sent"
    )]
    Expired {
        waited_seconds: u64,
        validity_seconds: u64,
    },
}

/// One thing the SMSC delivered, and the answer the SMSC waits for: the bind writes the
/// deliver_sm_resp only when the receiver has kept the message (see [`Ack`]).
#[derive(Debug)]
pub struct Delivery {
    pub message: Inbound,
    pub ack: Ack,
}

/// The deliver_sm_resp of one delivered message, owed by whoever took it. [`Ack::stored`] once
/// the message is durable answers ESME_ROK; [`Ack::failed`] answers ESME_RX_T_APPN, so the
/// SMSC delivers it again later. Dropped unanswered (a receiver that keeps nothing, such as
/// `baraza send` waiting for receipts) counts as stored. Unanswered within
/// [`BindConfig::deliver_ack_timeout`], the bind answers ESME_RX_T_APPN itself, and
/// [`Ack::stored`] then returns `false`: the SMSC will deliver it again.
#[derive(Debug)]
pub struct Ack(Option<oneshot::Sender<CommandStatus>>);

impl Ack {
    /// An ack nobody waits for (tests, and messages that need none).
    pub fn none() -> Ack {
        Ack(None)
    }

    /// The message is kept: ESME_ROK. `false` when the bind had already answered
    /// ESME_RX_T_APPN (too late) or its session ended: the SMSC will deliver it again.
    pub fn stored(mut self) -> bool {
        self.answer(CommandStatus::ESME_ROK)
    }

    /// The message could not be kept: ESME_RX_T_APPN, delivered again later.
    pub fn failed(mut self) -> bool {
        self.answer(CommandStatus::ESME_RX_T_APPN)
    }

    fn answer(&mut self, status: CommandStatus) -> bool {
        self.0
            .take()
            .is_some_and(|reply| reply.send(status).is_ok())
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        self.answer(CommandStatus::ESME_ROK);
    }
}

/// What the SMSC delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A mobile-originated message.
    Deliver {
        /// The handset's number (source_addr).
        from: String,
        /// The number or short code it was sent to (destination_addr).
        to: String,
        /// The text, parts reassembled in order.
        text: String,
        /// The data_coding octet of the message.
        data_coding: u8,
        /// False when parts were missing (reassembly timed out or a part was rejected).
        complete: bool,
    },
    /// A delivery receipt.
    Receipt(Receipt),
    /// A USSD dialogue message (the deliver_sm carries `ussd_service_op`), handed over whole
    /// so the operator's USSD profile can read its op code and session TLVs.
    Ussd(Box<ShortMessage>),
}

/// The state of the bind, for health checks and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting or binding.
    Connecting,
    /// Bound: requests flow.
    Bound,
    /// The SMSC refused the bind (wrong credentials...); retried after backoff.
    BindRefused {
        /// The bind response status.
        status: CommandStatus,
    },
    /// Not connected; retried after backoff.
    Disconnected {
        /// Why the last attempt or session ended.
        reason: String,
    },
    /// Stopped for good (after [`EsmeHandle::unbind`]).
    Stopped,
}

/// Counter values for metrics, as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EsmeCounters {
    /// submit_sm written to the SMSC (retries included).
    pub submitted: u64,
    /// submit_sm answered with ESME_ROK.
    pub acknowledged: u64,
    /// submit_sm answered with ESME_RTHROTTLED or ESME_RMSGQFUL.
    pub throttled: u64,
    /// Parts that ended Rejected or Unknown.
    pub failed: u64,
    /// Requests outstanding now.
    pub window_in_use: u64,
    /// Delivery receipts received.
    pub receipts: u64,
    /// Successful binds after the first.
    pub reconnects: u64,
    /// Mobile-originated messages handed over.
    pub delivered: u64,
    /// deliver_sm answered ESME_RX_T_APPN (not kept: the SMSC delivers them again).
    pub deliveries_refused: u64,
    /// Times a submit had to wait for the TPS limit.
    pub tps_waits: u64,
    /// Parts submitted again after a temporary error status.
    pub retries: u64,
}

/// The live counters behind [`EsmeCounters`] (same meanings).
#[derive(Default)]
struct AtomicCounters {
    submitted: AtomicU64,
    acknowledged: AtomicU64,
    throttled: AtomicU64,
    failed: AtomicU64,
    receipts: AtomicU64,
    reconnects: AtomicU64,
    delivered: AtomicU64,
    deliveries_refused: AtomicU64,
    tps_waits: AtomicU64,
    retries: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How much more than a second the last `tps` calls must span (see [`TpsLimiter`]).
const JITTER_MARGIN: Duration = Duration::from_millis(10);

/// Spaces calls at most `tps` per second on the tokio clock (so a paused test clock drives it).
///
/// Slots are kept on an absolute schedule one period apart. A caller woken late (the tokio
/// timer has 1 ms resolution, and a busy runtime adds more) still takes its slot, and the next
/// slot stays one period after the scheduled one, not after the late wake-up: otherwise every
/// late wake-up is lost and the mean rate falls well below the limit (measured: 89 TPS at a
/// limit of 100, 319 at 500). Lateness of more than one period is not made up (the bind was
/// idle), so there is never a burst after idling, and any 1-second window holds at most
/// `tps + 1` calls.
///
/// Late wake-ups can still bunch calls together (a caller woken late, then the next one on
/// time), so a second stage keeps the times of the last `tps` calls let through and holds a
/// call until the oldest of them is a second plus [`JITTER_MARGIN`] old: whatever the
/// scheduler does, no 1-second window ever holds more than `tps` calls as they leave here,
/// and a few milliseconds of delay between here and the SMSC (the session task, the network)
/// cannot push a window over `tps + 1` at the operator. The margin costs 1% of the rate.
pub struct TpsLimiter {
    /// Time between two slots.
    period: Duration,
    /// The earliest instant of the next slot; `None` before the first call.
    next_slot: Mutex<Option<Instant>>,
    /// Calls allowed in any one second.
    per_second: usize,
    /// When the last `per_second` calls were let through, oldest first.
    released: Mutex<VecDeque<Instant>>,
}

impl TpsLimiter {
    /// A limiter of `tps` calls per second (at least 1).
    pub fn new(tps: u32) -> TpsLimiter {
        let per_second = tps.max(1) as usize;
        TpsLimiter {
            period: Duration::from_secs(1) / tps.max(1),
            next_slot: Mutex::new(None),
            per_second,
            released: Mutex::new(VecDeque::with_capacity(per_second + 1)),
        }
    }

    /// Waits until one more call is allowed and takes it. Returns true if it had to wait.
    ///
    /// A caller that must wait reserves the next slot before sleeping and sleeps once, until
    /// it: with many callers queued, each wakes for its own slot instead of all of them waking
    /// at every slot to race for it (a herd that, on a busy machine, made wake-ups late enough
    /// to lose slots at 500 TPS).
    pub async fn until_ready(&self) -> bool {
        let reserved = {
            let mut next_slot = self
                .next_slot
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            let slot = next_slot.unwrap_or(now);
            if now >= slot {
                // Late by at most a period: keep the schedule; else start afresh from now.
                let base = if now - slot <= self.period { slot } else { now };
                *next_slot = Some(base + self.period);
                None
            } else {
                *next_slot = Some(slot + self.period);
                Some(slot)
            }
        };
        let mut waited = match reserved {
            None => false,
            Some(slot) => {
                tokio::time::sleep_until(slot).await;
                true
            }
        };
        loop {
            let hold_until = {
                let mut released = self
                    .released
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let now = Instant::now();
                match released.front() {
                    Some(&oldest)
                        if released.len() >= self.per_second
                            && now < oldest + Duration::from_secs(1) + JITTER_MARGIN =>
                    {
                        Some(oldest + Duration::from_secs(1) + JITTER_MARGIN)
                    }
                    _ => {
                        released.push_back(now);
                        while released.len() > self.per_second {
                            released.pop_front();
                        }
                        None
                    }
                }
            };
            match hold_until {
                None => return waited,
                Some(until) => {
                    waited = true;
                    tokio::time::sleep_until(until).await;
                }
            }
        }
    }
}

/// Why a request got no usable response.
#[derive(Debug)]
enum RequestFailure {
    /// Never written: safe to try again.
    NotWritten,
    /// Written, no answer: the outcome is unknown.
    NoResponse(String),
}

type Reply = oneshot::Sender<Result<Pdu, RequestFailure>>;

/// Work for the session task.
enum Command {
    /// Write this submit_sm and send its response (or failure) to `reply`.
    Submit {
        /// The part.
        sm: ShortMessage,
        /// Where the outcome goes.
        reply: Reply,
    },
    /// Write unbind; `reply` learns whether unbind_resp came.
    Unbind {
        /// Where the outcome goes.
        reply: oneshot::Sender<bool>,
    },
}

/// State shared by the handles and the bind task.
struct Shared {
    /// The bind's settings.
    config: BindConfig,
    /// One permit per request that may be outstanding.
    window: Semaphore,
    /// Paces submit_sm to the operator's TPS (shared by all of the operator's binds when
    /// started with [`Esme::start_with_limiter`]).
    limiter: Option<Arc<TpsLimiter>>,
    /// The whole bind waits until then after throttling.
    paused_until: Mutex<Option<Instant>>,
    /// Throttled answers in a row; lengthens the pause.
    throttle_streak: AtomicU32,
    /// For metrics.
    counters: AtomicCounters,
    /// Published link state.
    link: watch::Sender<LinkState>,
    /// The current session's queue, `None` while not bound.
    session: watch::Sender<Option<mpsc::Sender<Command>>>,
    /// Set once by `unbind`: no more reconnects.
    stop: watch::Sender<bool>,
    /// Sequence numbers for every request of the bind, across reconnects.
    sequences: SequenceNumbers,
    /// UDH reference of the next long message (low 8 bits used).
    concat_reference: AtomicU32,
}

/// Starts ESME sessions.
pub struct Esme;

impl Esme {
    /// Spawns the bind task (call inside a tokio runtime) and returns its handle and the
    /// stream of deliveries and receipts. The task runs until [`EsmeHandle::unbind`]. The
    /// bind has a TPS limiter of its own when `config.tps` is set.
    pub fn start(config: BindConfig) -> (EsmeHandle, mpsc::Receiver<Delivery>) {
        let limiter = config.tps.map(|tps| Arc::new(TpsLimiter::new(tps)));
        Esme::start_with_limiter(config, limiter)
    }

    /// [`Esme::start`] with the given TPS limiter instead of one from `config.tps`: the
    /// binds of one operator share one, so the operator's TPS holds across all of them.
    pub fn start_with_limiter(
        config: BindConfig,
        limiter: Option<Arc<TpsLimiter>>,
    ) -> (EsmeHandle, mpsc::Receiver<Delivery>) {
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            window: Semaphore::new(config.window.max(1)),
            limiter,
            paused_until: Mutex::new(None),
            throttle_streak: AtomicU32::new(0),
            counters: AtomicCounters::default(),
            link: watch::channel(LinkState::Connecting).0,
            session: watch::channel(None).0,
            stop: watch::channel(false).0,
            sequences: SequenceNumbers::new(),
            concat_reference: AtomicU32::new(seed() as u32),
            config,
        });
        tokio::spawn(supervise(Arc::clone(&shared), inbound_tx));
        (EsmeHandle { shared }, inbound_rx)
    }
}

/// Submits through, and controls, one bind. Cheap to clone.
#[derive(Clone)]
pub struct EsmeHandle {
    shared: Arc<Shared>,
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

impl EsmeHandle {
    /// Sends a message: splits it as the operator wants (see [`build_submits`]), submits the
    /// parts in order, waiting for a bind if there is none, and returns one outcome per part.
    /// After a part fails the rest are `NotSent`. Wrap in a timeout if the caller cannot wait
    /// for a reconnect.
    pub async fn submit(&self, request: SubmitRequest) -> Result<Vec<SubmitOutcome>, SubmitError> {
        Ok(self
            .submit_reports(request)
            .await?
            .into_iter()
            .map(|report| report.outcome)
            .collect())
    }

    /// [`EsmeHandle::submit`], with each part's attempts. A part refused with one of the
    /// operator's temporary statuses was not taken by the SMSC, so it is submitted again after
    /// a backoff (doubling from `submit_retry.first_delay` up to its ceiling), at most
    /// `submit_retry.attempts` times in all; the later parts wait, so they keep their order.
    /// A part with no answer (`Unknown`) is never submitted again; nor is one refused with a
    /// permanent status.
    pub async fn submit_reports(
        &self,
        request: SubmitRequest,
    ) -> Result<Vec<PartReport>, SubmitError> {
        let config = &self.shared.config;
        if config.bind_type == BindType::Receiver {
            return Err(SubmitError::NotTransmitter);
        }
        let reference = self.shared.concat_reference.fetch_add(1, Ordering::Relaxed) as u16;
        let messages = build_submits(config, &request, reference)?;
        let policy = config.submit_retry;
        let mut reports: Vec<PartReport> = Vec::with_capacity(messages.len());
        let mut failed = false;
        for sm in messages {
            if failed {
                reports.push(PartReport {
                    outcome: SubmitOutcome::NotSent {
                        reason: "an earlier part of the message failed".to_string(),
                    },
                    attempts: 0,
                    temporary: Vec::new(),
                });
                continue;
            }
            let mut temporary = Vec::new();
            let mut attempts = 0u32;
            let outcome = loop {
                attempts += 1;
                let outcome = match self.submit_part(sm.clone()).await {
                    Ok(outcome) => outcome,
                    // Stopped before any part was taken (the first part not written, or only
                    // refused): the caller may keep the whole message for later. After a part
                    // was taken, the parts already sent are reported.
                    Err(SubmitError::Stopped) if !reports.is_empty() => SubmitOutcome::NotSent {
                        reason: "the bind stopped before this part was sent".to_string(),
                    },
                    Err(e) => return Err(e),
                };
                match outcome {
                    SubmitOutcome::Rejected { status }
                        if config.temporary_errors.classify(status) == StatusClass::Temporary
                            && attempts < policy.attempts =>
                    {
                        temporary.push(status);
                        bump(&self.shared.counters.retries);
                        let delay = policy.delay(attempts);
                        debug!(%status, attempts, ?delay, "smpp: temporary error, part submitted again after a backoff");
                        let mut stop = self.shared.stop.subscribe();
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = stopped(&mut stop) => {}
                        }
                    }
                    SubmitOutcome::Rejected { status }
                        if config.temporary_errors.classify(status) == StatusClass::Temporary =>
                    {
                        temporary.push(status);
                        break outcome;
                    }
                    other => break other,
                }
            };
            failed = !matches!(outcome, SubmitOutcome::Accepted { .. });
            let attempts = match outcome {
                SubmitOutcome::NotSent { .. } => attempts - 1,
                _ => attempts,
            };
            reports.push(PartReport {
                outcome,
                attempts,
                temporary,
            });
        }
        Ok(reports)
    }

    /// Sends one prepared submit_sm as it is (a USSD screen with its `ussd_service_op` and
    /// session TLVs, say): no splitting, retried while throttled or not yet written, like
    /// every part of [`EsmeHandle::submit`].
    pub async fn submit_short_message(
        &self,
        sm: ShortMessage,
    ) -> Result<SubmitOutcome, SubmitError> {
        if self.shared.config.bind_type == BindType::Receiver {
            return Err(SubmitError::NotTransmitter);
        }
        sm.check_encodable()?;
        self.submit_part(sm).await
    }

    /// One part, retried while throttled or not yet written.
    async fn submit_part(&self, sm: ShortMessage) -> Result<SubmitOutcome, SubmitError> {
        let shared = &self.shared;
        loop {
            let session = self.wait_bound().await?;
            let permit = shared
                .window
                .acquire()
                .await
                .map_err(|_| SubmitError::Stopped)?;
            self.wait_throttle_pause().await;
            if let Some(limiter) = &shared.limiter
                && limiter.until_ready().await
            {
                bump(&shared.counters.tps_waits);
            }
            let (reply, answer) = oneshot::channel();
            let command = Command::Submit {
                sm: sm.clone(),
                reply,
            };
            if session.send(command).await.is_err() {
                continue; // the session ended before taking it: not written
            }
            let answer = answer.await;
            drop(permit);
            let pdu = match answer {
                Err(_) | Ok(Err(RequestFailure::NotWritten)) => continue,
                Ok(Err(RequestFailure::NoResponse(reason))) => {
                    bump(&shared.counters.failed);
                    return Ok(SubmitOutcome::Unknown { reason });
                }
                Ok(Ok(pdu)) => pdu,
            };
            if pdu.status.is_throttling() {
                bump(&shared.counters.throttled);
                self.pause_for_throttle();
                continue;
            }
            if !pdu.status.is_ok() {
                bump(&shared.counters.failed);
                return Ok(SubmitOutcome::Rejected { status: pdu.status });
            }
            return match pdu.body {
                Body::SubmitSmResp(resp) => {
                    bump(&shared.counters.acknowledged);
                    shared.throttle_streak.store(0, Ordering::Relaxed);
                    Ok(SubmitOutcome::Accepted {
                        message_id: resp.message_id.to_string_lossy(),
                    })
                }
                other => {
                    bump(&shared.counters.failed);
                    Ok(SubmitOutcome::Unknown {
                        reason: format!("answered with {} instead of submit_sm_resp", other.name()),
                    })
                }
            };
        }
    }

    /// The current session's queue, once bound.
    async fn wait_bound(&self) -> Result<mpsc::Sender<Command>, SubmitError> {
        // The common case, bound and running, without registering as a watcher.
        if !*self.shared.stop.borrow()
            && let Some(queue) = self.shared.session.borrow().clone()
        {
            return Ok(queue);
        }
        let mut session = self.shared.session.subscribe();
        let mut stop = self.shared.stop.subscribe();
        loop {
            if *stop.borrow() {
                return Err(SubmitError::Stopped);
            }
            if let Some(queue) = session.borrow_and_update().clone() {
                return Ok(queue);
            }
            tokio::select! {
                changed = session.changed() => if changed.is_err() {
                    return Err(SubmitError::Stopped);
                },
                _ = stopped(&mut stop) => return Err(SubmitError::Stopped),
            }
        }
    }

    fn lock_pause(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.shared
            .paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pause_for_throttle(&self) {
        let streak = self.shared.throttle_streak.fetch_add(1, Ordering::Relaxed);
        let config = &self.shared.config;
        let pause = config
            .throttle_pause
            .saturating_mul(1 << streak.min(16))
            .min(config.reconnect_ceiling.max(config.throttle_pause));
        let until = Instant::now() + pause;
        let mut paused = self.lock_pause();
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
        debug!(?pause, "smpp: throttled, pausing the bind");
    }

    async fn wait_throttle_pause(&self) {
        loop {
            let until = *self.lock_pause();
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    /// Sends unbind, waits (bounded by the response timeout) for unbind_resp, then stops the
    /// bind for good. Returns true when the SMSC answered the unbind.
    pub async fn unbind(&self) -> bool {
        let timeout = self.shared.config.response_timeout;
        let session = self.shared.session.borrow().clone();
        let mut answered = false;
        if let Some(queue) = session {
            let (reply, answer) = oneshot::channel();
            if queue.send(Command::Unbind { reply }).await.is_ok() {
                answered = tokio::time::timeout(timeout + Duration::from_secs(1), answer)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(false);
            }
        }
        self.shared.stop.send_replace(true);
        let mut link = self.shared.link.subscribe();
        let _ = tokio::time::timeout(timeout, async {
            let _ = link.wait_for(|state| *state == LinkState::Stopped).await;
        })
        .await;
        answered
    }

    /// Whether this bind may submit (not a receiver bind).
    pub fn can_submit(&self) -> bool {
        self.shared.config.bind_type != BindType::Receiver
    }

    /// The state of the bind now.
    pub fn link_state(&self) -> LinkState {
        self.shared.link.borrow().clone()
    }

    /// Waits until the link state satisfies `condition` and returns it. Wrap in a timeout.
    pub async fn wait_for_link(&self, condition: impl Fn(&LinkState) -> bool) -> LinkState {
        let mut link = self.shared.link.subscribe();
        match link.wait_for(|state| condition(state)).await {
            Ok(state) => state.clone(),
            Err(_) => self.link_state(),
        }
    }

    /// Counter values for metrics.
    pub fn counters(&self) -> EsmeCounters {
        let c = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let window = self.shared.config.window.max(1);
        EsmeCounters {
            submitted: get(&c.submitted),
            acknowledged: get(&c.acknowledged),
            throttled: get(&c.throttled),
            failed: get(&c.failed),
            window_in_use: (window - self.shared.window.available_permits().min(window)) as u64,
            receipts: get(&c.receipts),
            reconnects: get(&c.reconnects),
            delivered: get(&c.delivered),
            deliveries_refused: get(&c.deliveries_refused),
            tps_waits: get(&c.tps_waits),
            retries: get(&c.retries),
        }
    }
}

/// A seed from the clock for jitter and references (not cryptographic).
fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9_7F4A_7C15)
        | 1
}

/// xorshift64: enough randomness to spread reconnects of many binds.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Delay before reconnect attempt `attempt` (0-based): floor doubled per attempt, plus up to a
/// quarter more as jitter, never over the ceiling nor under the floor.
fn backoff(attempt: u32, floor: Duration, ceiling: Duration, rng: &mut XorShift) -> Duration {
    let base = floor.saturating_mul(1 << attempt.min(20)).min(ceiling);
    let quarter = u64::try_from(base.as_millis() / 4).unwrap_or(u64::MAX);
    let jitter = if quarter == 0 {
        0
    } else {
        rng.next() % (quarter + 1)
    };
    (base + Duration::from_millis(jitter))
        .min(ceiling)
        .max(floor)
}

/// How a bound session ended.
enum SessionEnd {
    /// Unbound on our request or stopped: do not reconnect.
    Stopped,
    /// The link was lost or the SMSC unbound: reconnect.
    Lost(String),
}

enum BindFailure {
    Refused(CommandStatus),
    Other(String),
}

type Link = Framed<TcpStream, SmppCodec>;

async fn supervise(shared: Arc<Shared>, inbound: mpsc::Sender<Delivery>) {
    let config = shared.config.clone();
    let mut reassembler = Reassembler::new(config.reassembly_timeout, 1000);
    let mut rng = XorShift(seed());
    let mut stop = shared.stop.subscribe();
    let mut attempt = 0u32;
    let mut bound_before = false;
    loop {
        if *stop.borrow() {
            break;
        }
        shared.link.send_replace(LinkState::Connecting);
        let result = tokio::select! {
            result = connect_and_bind(&shared) => result,
            _ = stopped(&mut stop) => break,
        };
        match result {
            Ok(link) => {
                if bound_before {
                    bump(&shared.counters.reconnects);
                }
                bound_before = true;
                attempt = 0;
                info!(host = %config.host, port = config.port, "smpp: bound");
                match run_session(&shared, link, &inbound, &mut reassembler).await {
                    SessionEnd::Stopped => break,
                    SessionEnd::Lost(reason) => {
                        warn!(%reason, "smpp: link lost");
                        shared.link.send_replace(LinkState::Disconnected { reason });
                    }
                }
            }
            Err(BindFailure::Refused(status)) => {
                warn!(%status, "smpp: bind refused");
                shared.link.send_replace(LinkState::BindRefused { status });
            }
            Err(BindFailure::Other(reason)) => {
                // Loud once per outage, quiet while it retries.
                if attempt == 0 {
                    warn!(host = %config.host, port = config.port, %reason, "smpp: cannot bind; retrying with backoff");
                } else {
                    debug!(%reason, "smpp: cannot bind");
                }
                shared.link.send_replace(LinkState::Disconnected { reason });
            }
        }
        let delay = backoff(
            attempt,
            config.reconnect_floor,
            config.reconnect_ceiling,
            &mut rng,
        );
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    shared.session.send_replace(None);
    shared.link.send_replace(LinkState::Stopped);
}

async fn connect_and_bind(shared: &Shared) -> Result<Link, BindFailure> {
    let config = &shared.config;
    let timeout = config.response_timeout;
    let connect = TcpStream::connect((config.host.as_str(), config.port));
    let stream = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(BindFailure::Other(format!("connect: {error}"))),
        Err(_) => return Err(BindFailure::Other("connect timed out".to_string())),
    };
    let _ = stream.set_nodelay(true);
    let mut link = Framed::new(stream, SmppCodec::default());
    let bind = Bind {
        system_id: config.system_id.as_str().into(),
        password: config.password.as_str().into(),
        system_type: config.system_type.as_str().into(),
        interface_version: 0x34,
        ..Bind::default()
    };
    let body = match config.bind_type {
        BindType::Transceiver => Body::BindTransceiver(bind),
        BindType::Transmitter => Body::BindTransmitter(bind),
        BindType::Receiver => Body::BindReceiver(bind),
    };
    let sequence = shared.sequences.next_sequence();
    if let Err(error) = link.send(Pdu::new(sequence, body)).await {
        return Err(BindFailure::Other(format!("sending bind: {error}")));
    }
    let deadline = Instant::now() + timeout;
    loop {
        let frame = match tokio::time::timeout_at(deadline, link.next()).await {
            Err(_) => return Err(BindFailure::Other("no bind response".to_string())),
            Ok(None) => return Err(BindFailure::Other("closed during bind".to_string())),
            Ok(Some(Err(error))) => return Err(BindFailure::Other(error.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let pdu = match frame {
            Frame::Pdu(pdu) => pdu,
            Frame::Invalid(error) => {
                debug!(%error, "smpp: bad PDU during bind");
                continue;
            }
        };
        match pdu.body {
            Body::BindTransceiverResp(_)
            | Body::BindTransmitterResp(_)
            | Body::BindReceiverResp(_)
            | Body::GenericNack
                if pdu.sequence == sequence =>
            {
                return if pdu.status.is_ok() && !matches!(pdu.body, Body::GenericNack) {
                    Ok(link)
                } else {
                    Err(BindFailure::Refused(pdu.status))
                };
            }
            Body::EnquireLink => {
                let _ = link
                    .send(Pdu::new(pdu.sequence, Body::EnquireLinkResp))
                    .await;
            }
            _ => debug!(command = pdu.body.name(), "smpp: ignored during bind"),
        }
    }
}

/// What an outstanding request is.
enum PendingKind {
    Submit(Reply),
    EnquireLink,
    Unbind(oneshot::Sender<bool>),
}

/// A request written and not yet answered.
struct Pending {
    /// What it is and whom to tell (its deadline is in the session's `deadlines` queue).
    kind: PendingKind,
}

/// Most requests written before one flush (bounds the delay of the first of a burst).
const MAX_WRITES_PER_FLUSH: usize = 64;

async fn run_session(
    shared: &Arc<Shared>,
    mut link: Link,
    inbound: &mpsc::Sender<Delivery>,
    reassembler: &mut Reassembler,
) -> SessionEnd {
    let config = &shared.config;
    let (queue, mut commands) = mpsc::channel::<Command>(config.window.max(1) * 2 + 8);
    shared.session.send_replace(Some(queue));
    shared.link.send_replace(LinkState::Bound);
    let mut stop = shared.stop.subscribe();
    // Made once: a fresh wait per loop turn would register (and wake) a watcher per event.
    let stop_signal = stopped(&mut stop);
    tokio::pin!(stop_signal);
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    // Sequences in the order written. Every request has the same response timeout, so their
    // deadlines are in this order too: the earliest live one is found from the front without
    // scanning the whole window on every event (answered ones are skipped lazily).
    let mut deadlines: VecDeque<(Instant, u32)> = VecDeque::new();
    // The enquire_link awaiting its answer, if any (at most one at a time).
    let mut enquire_sequence: Option<u32> = None;
    let mut last_activity = Instant::now();
    // After our unbind, no new request may be written on this session.
    let mut unbinding = false;
    // One timer for both response deadlines and idle keepalive, moved only when the next
    // wake-up changes (re-arming a timer per event costs more than the event at high rates).
    let timer = tokio::time::sleep_until(last_activity + config.enquire_link_interval);
    tokio::pin!(timer);
    // deliver_sm_resp owed: each resolves once its messages are kept (or not) by the receiver.
    let mut acks: futures_util::stream::FuturesUnordered<AckDue> = Default::default();
    let end = loop {
        while let Some(&(_, sequence)) = deadlines.front() {
            if pending.contains_key(&sequence) {
                break;
            }
            deadlines.pop_front();
        }
        let next_deadline = deadlines.front().map(|&(deadline, _)| deadline);
        let enquire_outstanding = enquire_sequence.is_some_and(|s| pending.contains_key(&s));
        let idle_at = last_activity + config.enquire_link_interval;
        let wake = match (next_deadline, enquire_outstanding) {
            (Some(deadline), true) => deadline,
            (Some(deadline), false) => deadline.min(idle_at),
            (None, _) => idle_at,
        };
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            frame = link.next() => {
                last_activity = Instant::now();
                let frame = match frame {
                    None => break SessionEnd::Lost("the SMSC closed the connection".to_string()),
                    Some(Err(error)) => break SessionEnd::Lost(error.to_string()),
                    Some(Ok(frame)) => frame,
                };
                match frame {
                    Frame::Invalid(error) => {
                        warn!(%error, "smpp: malformed PDU");
                        if !error.is_response() {
                            if let Err(error) = link.send(error.generic_nack()).await {
                                break SessionEnd::Lost(error.to_string());
                            }
                        } else if let Some(p) = error.sequence().and_then(|s| pending.remove(&s))
                            && let PendingKind::Submit(reply) = p.kind
                        {
                            let _ = reply.send(Err(RequestFailure::NoResponse(
                                "malformed response".to_string(),
                            )));
                        }
                    }
                    Frame::Pdu(pdu) => {
                        if let Some(end) =
                            handle_pdu(shared, &mut link, &mut pending, inbound, reassembler, &mut acks, pdu)
                                .await
                        {
                            break end;
                        }
                    }
                }
            }
            Some((sequence, status)) = acks.next(), if !acks.is_empty() => {
                if status != CommandStatus::ESME_ROK {
                    bump(&shared.counters.deliveries_refused);
                }
                let resp = Pdu {
                    sequence,
                    status,
                    body: Body::DeliverSmResp(MessageIdResp::default()),
                };
                if let Err(error) = link.send(resp).await {
                    break SessionEnd::Lost(error.to_string());
                }
                last_activity = Instant::now();
            }
            command = commands.recv() => {
                let Some(command) = command else {
                    break SessionEnd::Lost("session queue closed".to_string());
                };
                // Write this request and every other one already queued, then flush once:
                // under load one write carries many PDUs instead of one system call each.
                let mut next = Some(command);
                let mut written = 0usize;
                let mut failed = None;
                while let Some(command) = next.take() {
                    let (body, kind) = match command {
                        Command::Submit { reply, .. } if unbinding => {
                            let _ = reply.send(Err(RequestFailure::NotWritten));
                            next = commands.try_recv().ok();
                            continue;
                        }
                        Command::Unbind { reply } if unbinding => {
                            let _ = reply.send(false);
                            next = commands.try_recv().ok();
                            continue;
                        }
                        Command::Submit { sm, reply } => (Body::SubmitSm(sm), PendingKind::Submit(reply)),
                        Command::Unbind { reply } => {
                            // New submits wait (and end Stopped) instead of joining this session.
                            unbinding = true;
                            shared.session.send_replace(None);
                            (Body::Unbind, PendingKind::Unbind(reply))
                        }
                    };
                    let sequence = shared.sequences.next_sequence();
                    let is_submit = matches!(kind, PendingKind::Submit(_));
                    if let Err(error) = link.feed(Pdu::new(sequence, body)).await {
                        let reason = format!("write failed: {error}");
                        if let PendingKind::Submit(reply) = kind {
                            let _ = reply.send(Err(RequestFailure::NoResponse(reason.clone())));
                        }
                        failed = Some(reason);
                        break;
                    }
                    if is_submit {
                        bump(&shared.counters.submitted);
                    }
                    let deadline = Instant::now() + config.response_timeout;
                    pending.insert(sequence, Pending { kind });
                    deadlines.push_back((deadline, sequence));
                    written += 1;
                    if written < MAX_WRITES_PER_FLUSH {
                        next = commands.try_recv().ok();
                    }
                }
                if failed.is_none()
                    && let Err(error) = SinkExt::<Pdu>::flush(&mut link).await
                {
                    failed = Some(format!("write failed: {error}"));
                }
                if let Some(reason) = failed {
                    // Requests fed before the failure may or may not have left: the pending
                    // drain below reports them as having no response (unknown).
                    break SessionEnd::Lost(reason);
                }
                last_activity = Instant::now();
            }
            () = &mut timer => {
                let now = Instant::now();
                let mut end = None;
                while let Some(&(deadline, sequence)) = deadlines.front() {
                    if deadline > now {
                        break;
                    }
                    deadlines.pop_front();
                    let Some(p) = pending.remove(&sequence) else { continue };
                    match p.kind {
                        PendingKind::Submit(reply) => {
                            let _ = reply.send(Err(RequestFailure::NoResponse(format!(
                                "no submit_sm_resp within {:?}",
                                config.response_timeout
                            ))));
                        }
                        PendingKind::EnquireLink => {
                            end = Some(SessionEnd::Lost("enquire_link not answered".to_string()));
                        }
                        PendingKind::Unbind(reply) => {
                            let _ = reply.send(false);
                            end = Some(SessionEnd::Stopped);
                        }
                    }
                }
                if let Some(end) = end {
                    break end;
                }
                let enquire_outstanding =
                    enquire_sequence.is_some_and(|s| pending.contains_key(&s));
                if !enquire_outstanding && last_activity + config.enquire_link_interval <= now {
                    let sequence = shared.sequences.next_sequence();
                    if let Err(error) = link.send(Pdu::new(sequence, Body::EnquireLink)).await {
                        break SessionEnd::Lost(error.to_string());
                    }
                    last_activity = Instant::now();
                    let deadline = Instant::now() + config.response_timeout;
                    pending.insert(sequence, Pending {
                        kind: PendingKind::EnquireLink,
                    });
                    deadlines.push_back((deadline, sequence));
                    enquire_sequence = Some(sequence);
                }
            }
            () = &mut stop_signal => break SessionEnd::Stopped,
        }
    };
    let end = match end {
        SessionEnd::Lost(reason) if unbinding => {
            match read_unbind_resp(&mut link, &mut pending, config.response_timeout).await {
                true => SessionEnd::Stopped,
                false => SessionEnd::Lost(reason),
            }
        }
        other => other,
    };
    // No new work for this session; queued commands were never written.
    shared.session.send_replace(None);
    commands.close();
    while let Ok(command) = commands.try_recv() {
        match command {
            Command::Submit { reply, .. } => {
                let _ = reply.send(Err(RequestFailure::NotWritten));
            }
            Command::Unbind { reply } => {
                let _ = reply.send(false);
            }
        }
    }
    let reason = match &end {
        SessionEnd::Lost(reason) => format!("connection lost before a response: {reason}"),
        SessionEnd::Stopped => "the bind was stopped before a response".to_string(),
    };
    for (_, p) in pending.drain() {
        match p.kind {
            PendingKind::Submit(reply) => {
                let _ = reply.send(Err(RequestFailure::NoResponse(reason.clone())));
            }
            PendingKind::Unbind(reply) => {
                let _ = reply.send(false);
            }
            PendingKind::EnquireLink => {}
        }
    }
    end
}

/// After the link failed while our unbind was outstanding: reads what the SMSC had already
/// sent, looking for the unbind_resp, and answers the unbind with it (true when found).
///
/// An SMSC that answers an unbind and closes at once makes the next write of ours fail (a
/// deliver_sm_resp for a receipt that crossed the unbind) while its unbind_resp is still
/// unread in the socket; the unbind did succeed, so the bind ends `Stopped`, not lost. Other
/// frames read here are dropped: the session is over and receipts are sent again by the SMSC
/// when they were not acknowledged.
async fn read_unbind_resp(
    link: &mut Link,
    pending: &mut HashMap<u32, Pending>,
    within: Duration,
) -> bool {
    let Some(sequence) = pending
        .iter()
        .find_map(|(s, p)| matches!(p.kind, PendingKind::Unbind(_)).then_some(*s))
    else {
        return false;
    };
    let found = tokio::time::timeout(within, async {
        while let Some(Ok(frame)) = link.next().await {
            if let Frame::Pdu(pdu) = frame
                && pdu.sequence == sequence
                && matches!(pdu.body, Body::UnbindResp)
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if found
        && let Some(Pending {
            kind: PendingKind::Unbind(reply),
        }) = pending.remove(&sequence)
    {
        let _ = reply.send(true);
    }
    found
}

/// A deliver_sm_resp owed: resolves to its sequence and status.
type AckDue = std::pin::Pin<Box<dyn std::future::Future<Output = (u32, CommandStatus)> + Send>>;

/// The answer to one deliver_sm once every message it gave was kept: ESME_ROK, or
/// ESME_RX_T_APPN when one could not be kept or the receiver took longer than `within`.
fn ack_due(
    sequence: u32,
    answers: Vec<oneshot::Receiver<CommandStatus>>,
    within: Duration,
) -> AckDue {
    Box::pin(async move {
        let all = futures_util::future::join_all(answers);
        let status = match tokio::time::timeout(within, all).await {
            Ok(statuses) => statuses
                .into_iter()
                .map(|s| s.unwrap_or(CommandStatus::ESME_ROK))
                .find(|s| *s != CommandStatus::ESME_ROK)
                .unwrap_or(CommandStatus::ESME_ROK),
            Err(_) => {
                warn!(
                    sequence,
                    "smpp: a delivered message was not kept in time: ESME_RX_T_APPN, delivered again later"
                );
                CommandStatus::ESME_RX_T_APPN
            }
        };
        (sequence, status)
    })
}

/// Handles one PDU from the SMSC; `Some` ends the session.
async fn handle_pdu(
    shared: &Arc<Shared>,
    link: &mut Link,
    pending: &mut HashMap<u32, Pending>,
    inbound: &mpsc::Sender<Delivery>,
    reassembler: &mut Reassembler,
    acks: &mut futures_util::stream::FuturesUnordered<AckDue>,
    pdu: Pdu,
) -> Option<SessionEnd> {
    let sequence = pdu.sequence;
    if pdu.body.is_response() {
        let Some(p) = pending.remove(&sequence) else {
            debug!(
                sequence,
                command = pdu.body.name(),
                "smpp: response to no outstanding request"
            );
            return None;
        };
        match p.kind {
            PendingKind::Submit(reply) => {
                let _ = reply.send(Ok(pdu));
            }
            PendingKind::EnquireLink => {}
            PendingKind::Unbind(reply) => {
                let _ = reply.send(matches!(pdu.body, Body::UnbindResp));
                return Some(SessionEnd::Stopped);
            }
        }
        return None;
    }
    let answer = |status: CommandStatus, body: Body| Pdu {
        sequence,
        status,
        body,
    };
    let result = match pdu.body {
        Body::EnquireLink => {
            link.send(answer(CommandStatus::ESME_ROK, Body::EnquireLinkResp))
                .await
        }
        Body::Unbind => {
            let _ = link
                .send(answer(CommandStatus::ESME_ROK, Body::UnbindResp))
                .await;
            return Some(SessionEnd::Lost("the SMSC unbound".to_string()));
        }
        // Answered once the receiver kept what it carries (a receipt, a message, a USSD
        // step), not before: a message acknowledged and then lost is lost for good, while one
        // refused with ESME_RX_T_APPN comes again. A part held for reassembly is answered at
        // once (it is kept here until its message is whole).
        Body::DeliverSm(sm) => {
            let mut answers = Vec::new();
            for message in inbound_messages(&sm, reassembler) {
                match &message {
                    Inbound::Receipt(_) => bump(&shared.counters.receipts),
                    Inbound::Deliver { .. } | Inbound::Ussd(_) => bump(&shared.counters.delivered),
                }
                let (reply, answer) = oneshot::channel();
                answers.push(answer);
                let delivery = Delivery {
                    message,
                    ack: Ack(Some(reply)),
                };
                if inbound.send(delivery).await.is_err() {
                    debug!("smpp: nobody takes inbound messages");
                }
            }
            if answers.is_empty() {
                let resp = Body::DeliverSmResp(MessageIdResp::default());
                link.send(answer(CommandStatus::ESME_ROK, resp)).await
            } else {
                acks.push(ack_due(
                    sequence,
                    answers,
                    shared.config.deliver_ack_timeout,
                ));
                Ok(())
            }
        }
        other => {
            debug!(command = other.name(), "smpp: unsupported request");
            link.send(answer(CommandStatus::ESME_RINVCMDID, Body::GenericNack))
                .await
        }
    };
    match result {
        Ok(()) => None,
        Err(error) => Some(SessionEnd::Lost(error.to_string())),
    }
}

/// The concatenation mark (UDH or SAR), the payload octets and the coding of a short message
/// (`message_payload` used when short_message is empty). Unknown codings read as Latin-1.
pub(crate) fn short_message_content(
    sm: &ShortMessage,
) -> (Option<ConcatInfo>, Vec<u8>, DataCoding) {
    let coding = DataCoding::from_inbound(sm.data_coding).unwrap_or(DataCoding::Latin1);
    if sm.short_message.is_empty()
        && let Some(payload) = sm.tlvs.message_payload()
    {
        return (None, payload.to_vec(), coding);
    }
    if sm.esm_class & 0x40 != 0
        && let Some((info, payload)) = parse_udh(&sm.short_message)
    {
        return (Some(info), payload.to_vec(), coding);
    }
    let sar = (
        sm.tlvs.sar_msg_ref_num().ok().flatten(),
        sm.tlvs.sar_total_segments().ok().flatten(),
        sm.tlvs.sar_segment_seqnum().ok().flatten(),
    );
    if let (Some(reference), Some(total), Some(seq)) = sar {
        return (
            Some(ConcatInfo::from_sar(reference, total, seq)),
            sm.short_message.to_vec(),
            coding,
        );
    }
    (None, sm.short_message.to_vec(), coding)
}

/// Octets to text; binary data read as lossy UTF-8.
pub(crate) fn decode_text(coding: DataCoding, octets: &[u8]) -> String {
    coding
        .decode(octets)
        .unwrap_or_else(|| String::from_utf8_lossy(octets).into_owned())
}

/// What a deliver_sm gives the caller: a receipt, a whole message, nothing yet (a part held
/// for reassembly), plus any incomplete messages that timed out.
fn inbound_messages(sm: &ShortMessage, reassembler: &mut Reassembler) -> Vec<Inbound> {
    let from = sm.source_addr.to_string_lossy();
    let to = sm.destination_addr.to_string_lossy();
    let now = std::time::Instant::now();
    let mut out: Vec<Inbound> = reassembler
        .expire(now)
        .into_iter()
        .map(|expired| {
            // The key is "from|to|data_coding" (see below).
            let mut fields = expired.source.rsplitn(3, '|');
            let data_coding = fields
                .next()
                .and_then(|coding| coding.parse::<u8>().ok())
                .unwrap_or(0);
            let to = fields.next().unwrap_or_default().to_string();
            let from = fields.next().unwrap_or_default().to_string();
            let coding = DataCoding::from_inbound(data_coding).unwrap_or(DataCoding::Latin1);
            let octets: Vec<u8> = expired.received.into_iter().flat_map(|(_, o)| o).collect();
            Inbound::Deliver {
                from,
                to,
                text: decode_text(coding, &octets),
                data_coding,
                complete: false,
            }
        })
        .collect();
    // esm_class bits 5-2: 0001 SMSC delivery receipt, 0010 SME delivery ack,
    // 1000 intermediate delivery notification.
    let message_type = sm.esm_class & 0x3C;
    if matches!(message_type, 0x04 | 0x08 | 0x20) {
        let body = match sm.tlvs.message_payload() {
            Some(payload) if sm.short_message.is_empty() => payload.clone(),
            _ => sm.short_message.clone(),
        };
        let text = String::from_utf8_lossy(&body);
        match parse_receipt(&sm.tlvs, &text) {
            Some(receipt) => out.push(Inbound::Receipt(receipt)),
            None => warn!(%text, "smpp: receipt without a message id"),
        }
        return out;
    }
    // A USSD dialogue step is never concatenated: it goes to the USSD profile as received.
    if sm.tlvs.ussd_service_op().ok().flatten().is_some() {
        out.push(Inbound::Ussd(Box::new(sm.clone())));
        return out;
    }
    let (mark, payload, coding) = short_message_content(sm);
    let deliver = |octets: &[u8], complete: bool| Inbound::Deliver {
        from: from.clone(),
        to: to.clone(),
        text: decode_text(coding, octets),
        data_coding: sm.data_coding,
        complete,
    };
    match mark {
        Some(info) if info.total > 1 => {
            let key = format!("{from}|{to}|{}", sm.data_coding);
            match reassembler.push(&key, info, &payload, now) {
                Ok(Some(whole)) => out.push(deliver(&whole, true)),
                Ok(None) => {}
                Err(rejected) => {
                    warn!(%rejected, "smpp: inbound part delivered on its own");
                    out.push(deliver(&payload, false));
                }
            }
        }
        _ => out.push(deliver(&payload, true)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_bounds() {
        let mut rng = XorShift(42);
        let floor = Duration::from_secs(1);
        let ceiling = Duration::from_secs(60);
        let mut previous_base = Duration::ZERO;
        for attempt in 0..10 {
            let delay = backoff(attempt, floor, ceiling, &mut rng);
            assert!(delay >= floor && delay <= ceiling, "{delay:?}");
            let base = floor.saturating_mul(1 << attempt).min(ceiling);
            assert!(delay >= base && delay <= base + base / 4 + Duration::from_millis(1));
            assert!(base >= previous_base);
            previous_base = base;
        }
        assert_eq!(backoff(30, floor, ceiling, &mut rng), ceiling);
    }

    #[tokio::test(start_paused = true)]
    async fn tps_limiter_spaces_calls_on_the_tokio_clock() {
        let limiter = TpsLimiter::new(5);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..11 {
            limiter.until_ready().await;
            times.push(Instant::now());
        }
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(200));
        }
        assert!(times[10] - start >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn tps_limiter_gives_concurrent_callers_one_slot_each() {
        let limiter = Arc::new(TpsLimiter::new(10));
        let start = Instant::now();
        let mut callers = Vec::new();
        for _ in 0..5 {
            let limiter = Arc::clone(&limiter);
            callers.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..4 {
                    limiter.until_ready().await;
                    times.push(Instant::now());
                }
                times
            }));
        }
        let mut times = Vec::new();
        for caller in callers {
            times.extend(caller.await.expect("caller"));
        }
        times.sort();
        assert_eq!(times.len(), 20);
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{times:?}");
        }
        // Any 11 calls span more than a second plus the margin: at most 10 in any second.
        for eleven in times.windows(11) {
            assert!(
                eleven[10] - eleven[0] >= Duration::from_millis(1010),
                "{times:?}"
            );
        }
        // The margin is paid once per second of sending, not once per call.
        assert_eq!(times[19] - start, Duration::from_millis(1910));
    }

    #[tokio::test(start_paused = true)]
    async fn tps_limiter_makes_up_a_late_wake_up_but_not_idle_time() {
        let limiter = TpsLimiter::new(10);
        let period = Duration::from_millis(100);
        let start = Instant::now();
        assert!(!limiter.until_ready().await);
        // The caller of the second slot wakes 30 ms late: the third slot keeps the schedule.
        tokio::time::advance(period + Duration::from_millis(30)).await;
        assert!(!limiter.until_ready().await);
        assert!(limiter.until_ready().await);
        assert_eq!(Instant::now() - start, period * 2);
        // Idle for far more than a period: no burst, the next call after it waits a period.
        tokio::time::advance(period * 5).await;
        let resumed = Instant::now();
        assert!(!limiter.until_ready().await);
        assert!(limiter.until_ready().await);
        assert_eq!(Instant::now() - resumed, period);
    }

    #[test]
    fn receipt_and_long_inbound() {
        let mut reassembler = Reassembler::new(Duration::from_secs(60), 10);
        let receipt = ShortMessage {
            esm_class: 0x04,
            short_message: Bytes::from_static(b"id:77 stat:DELIVRD err:000"),
            ..ShortMessage::default()
        };
        let got = inbound_messages(&receipt, &mut reassembler);
        assert!(matches!(&got[..], [Inbound::Receipt(r)] if r.message_id == "77"));
        let part = |seq: u8, text: &[u8]| {
            let mut octets = vec![0x05, 0x00, 0x03, 9, 2, seq];
            octets.extend_from_slice(text);
            ShortMessage {
                source_addr: "254700".into(),
                destination_addr: "2020".into(),
                esm_class: 0x40,
                short_message: Bytes::from(octets),
                ..ShortMessage::default()
            }
        };
        assert!(inbound_messages(&part(2, b"world"), &mut reassembler).is_empty());
        let got = inbound_messages(&part(1, b"hello "), &mut reassembler);
        assert_eq!(
            got,
            vec![Inbound::Deliver {
                from: "254700".into(),
                to: "2020".into(),
                text: "hello world".into(),
                data_coding: 0,
                complete: true
            }]
        );
    }
}
