//! The outbound SMS queue that loses nothing: every message the gateway decides to send is
//! stored (committed) before it is submitted, marked `sending` when it is handed to a bind,
//! and marked with its outcome when the SMSC answers; delivery receipts are stored as they
//! arrive and joined to the parts they are about.
//!
//! ```text
//! enqueue ──commit queued──▶ send task ──commit sending──▶ EsmeHandle::submit ──▶ commit
//!                                                         (parts in order)      outcome + parts
//! receipt (any bind of the operator) ──normalise id──▶ commit receipt
//! (an HTTP route: send task ──commit sending──▶ one POST ──▶ commit outcome + message id)
//! restart ──▶ recover: this node's `queued` are sent, its `sending` become `unknown`
//! every 30 s ──▶ sweep: the same for messages no send task of this process holds
//! ```
//!
//! `queued -> sending` is a claim the store guards (it applies only to a `queued` row), so two
//! senders that picked up the same message (the start-up recovery and the first sweep, say)
//! submit it once: the one whose claim changed nothing stops.
//!
//! A part the SMSC refused with one of the operator's temporary statuses (ESME_RSYSERR...) was
//! not taken, so the ESME submits it again after a backoff, within the same `sending` claim;
//! the part's stored detail records the attempts and the statuses that refused them.
//!
//! A message whose parts may have reached the SMSC (written, never answered: a timeout, a
//! dropped connection, the node stopped) is recorded `unknown` and never resent: a citizen
//! must not get the same question twice. Each message belongs to the node that accepted it
//! (`smpp.node`), so several nodes sharing one PostgreSQL never recover each other's.
//!
//! A route is a closed set of transports ([`Transport`]): an SMPP operator's binds, or an
//! aggregator's HTTP API (Africa's Talking, [`crate::sms::africastalking`]). An HTTP send
//! follows the same rules: claimed `sending` before the request; a timeout or a 5xx after it
//! may have left is `unknown` (never resent); a 4xx or a refused recipient is `rejected`; a
//! 429 pauses the route and the message is tried again within its claim, and after too many
//! goes back to `queued` (it was never taken), as does one whose connection was never made.
//!
//! It never decides what to say (the dispatcher does), never encodes PDUs (the ESME does) or
//! HTTP forms (the provider's file does), and never keeps a message only in memory.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::counter;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::dispatcher::Gateway;
use crate::result_store::{
    QueuedSms, ReceiptRecord, ResultStoreError, SmsPartRecord, SmsRow, SmsState, SmsStateUpdate,
    Write,
};
use crate::smpp::esme::{EsmeHandle, LinkState, SubmitError, SubmitOutcome, SubmitRequest};
use crate::smpp::receipt::{MessageIdNormalisation, Receipt};
use crate::sms::africastalking::{self, SendOutcome};

/// Why the purpose of a message matters: a stop confirmation goes to a number that has just
/// opted out; everything else to an opted-out number is suppressed.
pub const PURPOSE_STOP_CONFIRMATION: &str = "stop_confirmation";

/// A reply an SMS step stored with its answers: sent after a restart only if the number's
/// session still names it (see [`crate::dispatcher::Gateway::sms_reply_is_current`]).
pub const PURPOSE_STEP_REPLY: &str = "reply";

/// A reminder stored with its timer step: checked against the session like a step reply.
pub const PURPOSE_REMINDER: &str = "reminder";

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSms {
    /// The operator to send through; `None` routes by the number's prefix.
    pub operator: Option<String>,
    /// Destination number.
    pub to: String,
    /// Sender; `None` uses the operator's configured sender.
    pub from: Option<String>,
    /// The text.
    pub text: String,
    /// Why it is sent (`reply`, `reminder`, `stop_confirmation`, `api`...).
    pub purpose: String,
}

/// Why a message was not accepted (nothing was stored).
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// No configured operator can carry messages to this number.
    #[error("no operator bind can send to {0}")]
    NoRoute(String),
    /// The named operator is not configured (or has only receiver binds).
    #[error("unknown operator `{0}`")]
    UnknownOperator(String),
    /// The message could not be stored, so it was not accepted.
    #[error("the message could not be stored: {0}")]
    Store(#[from] ResultStoreError),
}

/// How a route carries messages: a closed set, one variant per kind of transport.
#[derive(Clone)]
enum Transport {
    /// An SMPP operator account.
    Smpp {
        /// The binds that can submit (transceiver or transmitter).
        transmitters: Vec<EsmeHandle>,
        /// How this operator's submit and receipt ids compare.
        ids: MessageIdNormalisation,
    },
    /// An Africa's Talking SMS account (HTTP).
    AfricasTalking(Arc<africastalking::Route>),
}

/// One route (an operator's binds or an aggregator account), as the outbox uses it.
struct Route {
    /// Its name in stored messages (`operator`).
    name: String,
    /// The sender messages leave from when none is given.
    sender: String,
    /// The number prefixes it carries; empty: any.
    prefixes: Vec<String>,
    transport: Transport,
}

impl Route {
    /// Whether it can send now: an SMPP operator needs a bind that can submit.
    fn usable(&self) -> bool {
        match &self.transport {
            Transport::Smpp { transmitters, .. } => !transmitters.is_empty(),
            Transport::AfricasTalking(_) => true,
        }
    }

    /// How receipt ids compare with submit ids (identity for HTTP routes).
    fn ids(&self) -> MessageIdNormalisation {
        match &self.transport {
            Transport::Smpp { ids, .. } => *ids,
            Transport::AfricasTalking(_) => MessageIdNormalisation::default(),
        }
    }
}

/// The queue: shared by the inbound handlers, the reminder timer and the HTTP API.
pub struct Outbox {
    gateway: Arc<Gateway>,
    routes: Vec<Route>,
    /// This node's name in stored messages.
    node: String,
    /// Makes message ids unique within the node (with the creation time).
    sequence: AtomicU64,
    /// Send tasks in flight, waited for (bounded) on shutdown.
    tasks: TaskTracker,
    /// Ids of the messages a send task of this process holds, so a sweep never starts a
    /// second send of one (an id leaves the set only after its outcome is committed).
    in_flight: Arc<Mutex<HashSet<String>>>,
}

/// Removes a message from the in-flight set when its send task is done with it (or dropped).
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.id);
    }
}

fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Outbox {
    /// An outbox over `binds` (operator name, handle), in configuration order, and the
    /// configured HTTP routes after them. An HTTP route whose config is wrong is left out
    /// (logged); `baraza serve` checks them before it starts
    /// ([`africastalking::check_routes`]).
    pub fn new(gateway: Arc<Gateway>, binds: &[(String, EsmeHandle)]) -> Outbox {
        let node = gateway.config.smpp.node_name();
        let operators = gateway.config.smpp.operators.iter().map(|operator| Route {
            name: operator.name.clone(),
            sender: operator.sender.clone(),
            prefixes: operator.prefixes.clone(),
            transport: Transport::Smpp {
                transmitters: binds
                    .iter()
                    .filter(|(name, handle)| name == &operator.name && handle.can_submit())
                    .map(|(_, handle)| handle.clone())
                    .collect(),
                ids: operator.receipt_ids,
            },
        });
        let http = gateway
            .config
            .smpp
            .http_routes
            .iter()
            .filter_map(|route| match route {
                crate::config::SmsRouteConfig::AfricasTalking(at) => {
                    match africastalking::Route::new(at) {
                        Ok(route) => Some(Route {
                            name: route.name().to_string(),
                            sender: route.sender().to_string(),
                            prefixes: route.prefixes().to_vec(),
                            transport: Transport::AfricasTalking(Arc::new(route)),
                        }),
                        Err(e) => {
                            warn!(error = %e, "SMS route left out");
                            None
                        }
                    }
                }
            });
        let routes = operators.chain(http).collect();
        Outbox {
            gateway,
            routes,
            node,
            sequence: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Whether any route can carry messages (an operator bind or an HTTP route).
    pub fn has_routes(&self) -> bool {
        !self.routes.is_empty()
    }

    /// This node's name in stored messages.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The gateway this queue sends for.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// A new id, unique on this node, for an outbound message stored elsewhere (an SMS step
    /// stores its replies in its own commit).
    pub fn next_message_id(&self) -> String {
        let now = crate::dispatcher::now_ms();
        let id = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{}-{now:x}-{id:x}", self.node)
    }

    /// Whether a step's reply left queued may still go (its session names it); `None` when
    /// the session store cannot tell now (the reply stays queued for the next sweep).
    async fn reply_is_current(&self, row: &SmsRow) -> Option<bool> {
        match self
            .gateway
            .sms_reply_is_current(&row.recipient, &row.message_id)
            .await
        {
            Ok(current) => Some(current),
            Err(e) => {
                warn!(message_id = %row.message_id, error = %e, "reply's session not read: kept queued");
                None
            }
        }
    }

    /// Starts sending messages already stored `queued` (by an SMS step's own commit), in
    /// order.
    pub fn send_stored(&self, messages: Vec<QueuedSms>) {
        if messages.is_empty() {
            return;
        }
        counter!("baraza_sms_queued_total").increment(messages.len() as u64);
        self.spawn_send(messages);
    }

    /// The operator that carries a gateway-initiated message to `to` (by number prefix) and
    /// its sender, or `None` when no operator can.
    pub fn route_for(&self, to: &str) -> Option<(String, String)> {
        self.route(None, to)
            .ok()
            .map(|r| (r.name.clone(), r.sender.clone()))
    }

    /// A new id, unique on this node, for an inbound message kept by its binds.
    pub fn next_id(&self) -> String {
        let now = crate::dispatcher::now_ms();
        let id = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{}-in-{now:x}-{id:x}", self.node)
    }

    /// Stores `messages` (one commit) and starts sending them, in order, on their
    /// operators' binds. Returns their ids once they are durably queued. Either every message
    /// is accepted or none is.
    pub async fn enqueue(&self, messages: Vec<NewSms>) -> Result<Vec<String>, OutboxError> {
        let now = crate::dispatcher::now_ms();
        let mut queued = Vec::with_capacity(messages.len());
        for message in messages {
            let route = self.route(message.operator.as_deref(), &message.to)?;
            let id = self.sequence.fetch_add(1, Ordering::Relaxed);
            queued.push(QueuedSms {
                message_id: format!("{}-{now:x}-{id:x}", self.node),
                node: self.node.clone(),
                operator: route.name.clone(),
                recipient: message.to,
                sender: message.from.unwrap_or_else(|| route.sender.clone()),
                body: message.text,
                purpose: message.purpose,
                created_at_ms: now,
            });
        }
        if queued.is_empty() {
            return Ok(Vec::new());
        }
        self.gateway
            .results
            .commit(queued.iter().cloned().map(Write::SmsQueued).collect())
            .await?;
        counter!("baraza_sms_queued_total").increment(queued.len() as u64);
        let ids = queued.iter().map(|m| m.message_id.clone()).collect();
        self.spawn_send(queued);
        Ok(ids)
    }

    /// After a restart: this node's `sending` messages become `unknown` (they may have
    /// reached the SMSC; never resent) and its `queued` ones are sent. Returns (recovered
    /// queued, marked unknown).
    pub async fn recover(&self) -> Result<(usize, usize), ResultStoreError> {
        self.sweep(Duration::ZERO).await
    }

    /// [`Outbox::recover`] for messages older than `min_age` that no send task of this
    /// process holds: a message left `queued` (its state could not be stored, or the opt-out
    /// check failed) is sent again, one left `sending` without an outcome becomes `unknown`.
    /// Run periodically, it makes a passing store failure delay a message, never lose it.
    pub async fn sweep(&self, min_age: Duration) -> Result<(usize, usize), ResultStoreError> {
        // Held before reading: a message whose task ends during the read has its outcome
        // committed before it leaves the set, so it is either in this snapshot or final in
        // the rows read (every task older than `min_age` started before this snapshot).
        let held: HashSet<String> = lock(&self.in_flight).clone();
        let unfinished = self.gateway.results.sms_unfinished(&self.node).await?;
        let now = crate::dispatcher::now_ms();
        let oldest = now.saturating_sub(i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX));
        let mut unknown = Vec::new();
        let mut queued = Vec::new();
        for row in unfinished {
            if row.created_at_ms > oldest
                || held.contains(&row.message_id)
                || lock(&self.in_flight).contains(&row.message_id)
            {
                continue;
            }
            let step_reply = row.state == SmsState::Queued.as_str()
                && (row.purpose == PURPOSE_STEP_REPLY || row.purpose == PURPOSE_REMINDER);
            let current = match step_reply {
                true => self.reply_is_current(&row).await,
                false => Some(true),
            };
            if current.is_none() {
                continue;
            }
            if current == Some(false) {
                // Stored by a step whose session save never happened (or that the citizen
                // has since answered past): it answers nothing the session shows.
                unknown.push(Write::SmsState(SmsStateUpdate {
                    message_id: row.message_id,
                    state: SmsState::NotSent,
                    detail: Some(crate::dispatcher::WITHDRAWN.to_string()),
                    at_ms: now,
                }));
                continue;
            }
            if row.state == SmsState::Sending.as_str() {
                unknown.push(Write::SmsState(SmsStateUpdate {
                    message_id: row.message_id,
                    state: SmsState::Unknown,
                    detail: Some(
                        "the gateway stopped before the SMSC answered: not resent".to_string(),
                    ),
                    at_ms: now,
                }));
            } else {
                queued.push(QueuedSms {
                    message_id: row.message_id,
                    node: row.node,
                    operator: row.operator,
                    recipient: row.recipient,
                    sender: row.sender,
                    body: row.body,
                    purpose: row.purpose,
                    created_at_ms: row.created_at_ms,
                });
            }
        }
        let counts = (queued.len(), unknown.len());
        if !unknown.is_empty() {
            self.gateway.results.commit(unknown).await?;
            counter!("baraza_sms_outcomes_total", "state" => "unknown").increment(counts.1 as u64);
        }
        if counts != (0, 0) {
            info!(
                queued = counts.0,
                unknown = counts.1,
                node = %self.node,
                "outbound SMS recovered after a restart"
            );
        }
        // One task per recipient keeps each number's messages in their order.
        let mut by_recipient: Vec<Vec<QueuedSms>> = Vec::new();
        for message in queued {
            match by_recipient
                .iter_mut()
                .find(|group| group[0].recipient == message.recipient)
            {
                Some(group) => group.push(message),
                None => by_recipient.push(vec![message]),
            }
        }
        for group in by_recipient {
            self.spawn_send(group);
        }
        Ok(counts)
    }

    /// Stores a delivery receipt from any bind of `operator`, its id normalised with the
    /// operator's rules so it joins the part it is about. `false` when it could not be stored
    /// (the bind then asks the SMSC to deliver it again).
    pub async fn record_receipt(&self, operator: &str, receipt: &Receipt) -> bool {
        let ids = self
            .routes
            .iter()
            .find(|r| r.name == operator)
            .map(Route::ids)
            .unwrap_or_default();
        let state = format!("{:?}", receipt.state).to_lowercase();
        self.record_report(ReceiptRecord {
            operator: operator.to_string(),
            smsc_id: ids.receipt_id(&receipt.message_id),
            state,
            error: receipt.error.clone(),
            is_final: receipt.state.is_final(),
            received_at_ms: crate::dispatcher::now_ms(),
        })
        .await
    }

    /// Stores a delivery report already in the stored form (an HTTP route's, whose ids need
    /// no normalising). `false` when it could not be stored.
    pub async fn record_report(&self, record: ReceiptRecord) -> bool {
        let operator = record.operator.clone();
        if let Err(e) = self
            .gateway
            .results
            .commit(vec![Write::Receipt(record)])
            .await
        {
            warn!(operator, error = %e, "delivery receipt not stored: refused, delivered again later");
            crate::telemetry::error("result_store");
            return false;
        }
        true
    }

    /// Stops taking new send tasks and waits up to `limit` for those in flight. What is not
    /// finished stays stored (`queued`, or `sending` and then `unknown` at the next start).
    pub async fn drain(&self, limit: Duration) {
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                in_flight = self.tasks.len(),
                "outbound SMS still in flight at shutdown: recovered at the next start"
            );
        }
    }

    /// The operator for a message: the named one, or the first whose prefixes match the
    /// number, or the first operator without prefixes.
    fn route(&self, operator: Option<&str>, to: &str) -> Result<&Route, OutboxError> {
        let usable = |r: &&Route| r.usable();
        if let Some(name) = operator {
            return self
                .routes
                .iter()
                .filter(usable)
                .find(|r| r.name == name)
                .ok_or_else(|| OutboxError::UnknownOperator(name.to_string()));
        }
        let number = crate::channels::normalise_msisdn(to);
        self.routes
            .iter()
            .filter(usable)
            .find(|r| r.prefixes.iter().any(|p| number.starts_with(p)))
            .or_else(|| {
                self.routes
                    .iter()
                    .filter(usable)
                    .find(|r| r.prefixes.is_empty())
            })
            .ok_or_else(|| OutboxError::NoRoute(self.gateway.pseudonym(to)))
    }

    fn spawn_send(&self, messages: Vec<QueuedSms>) {
        let transports: Vec<Option<Transport>> = messages
            .iter()
            .map(|m| {
                self.routes
                    .iter()
                    .find(|r| r.name == m.operator)
                    .map(|r| r.transport.clone())
            })
            .collect();
        let gateway = Arc::clone(&self.gateway);
        let guards: Vec<InFlight> = {
            let mut set = lock(&self.in_flight);
            messages
                .iter()
                .map(|m| {
                    set.insert(m.message_id.clone());
                    InFlight {
                        set: Arc::clone(&self.in_flight),
                        id: m.message_id.clone(),
                    }
                })
                .collect()
        };
        self.tasks.spawn(async move {
            let work = messages.into_iter().zip(transports).zip(guards);
            for ((message, transport), guard) in work {
                send_one(&gateway, message, transport).await;
                drop(guard);
            }
        });
    }
}

/// Sends one stored message and records what became of it.
async fn send_one(gateway: &Gateway, message: QueuedSms, transport: Option<Transport>) {
    let id = message.message_id.clone();
    let finish = |state: SmsState, detail: Option<String>| {
        Write::SmsState(SmsStateUpdate {
            message_id: id.clone(),
            state,
            detail,
            at_ms: crate::dispatcher::now_ms(),
        })
    };
    let commit = |writes: Vec<Write>| async {
        if let Err(e) = gateway.results.commit(writes).await {
            warn!(message_id = %id, error = %e, "outbound SMS state not stored");
            crate::telemetry::error("result_store");
            return false;
        }
        true
    };
    if message.purpose != PURPOSE_STOP_CONFIRMATION {
        match gateway.is_opted_out(&message.recipient).await {
            Ok(true) => {
                counter!("baraza_sms_outcomes_total", "state" => "suppressed").increment(1);
                commit(vec![finish(
                    SmsState::Suppressed,
                    Some("the number opted out".into()),
                )])
                .await;
                return;
            }
            Ok(false) => {}
            // Not knowing is not a reason to drop it: the message stays queued for the next
            // start rather than going to a number that may have said STOP.
            Err(e) => {
                warn!(message_id = %id, error = %e, "opt-out check failed: message left queued for the next sweep");
                return;
            }
        }
    }
    let (binds, ids) = match transport {
        Some(Transport::Smpp { transmitters, ids }) => (transmitters, ids),
        Some(Transport::AfricasTalking(route)) => return send_http(gateway, message, &route).await,
        None => (Vec::new(), MessageIdNormalisation::default()),
    };
    if binds.is_empty() {
        commit(vec![finish(
            SmsState::NotSent,
            Some(format!(
                "operator `{}` has no bind that can send",
                message.operator
            )),
        )])
        .await;
        return;
    }
    let Some(handle) = pick_bind(&binds).await else {
        // The binds are stopping (shutdown): the message stays queued for the next start.
        return;
    };
    // Claimed only now, once a bind is up: a message still waiting for a bind when the node
    // stops stays `queued` and is sent after the restart. The claim is the store's guarded
    // `queued -> sending`: when a recovery and a sweep (or two nodes) both picked this
    // message up, exactly one claim changes the row, and only its sender submits.
    if !claim(gateway, &id).await {
        return;
    }
    let waited_ms = crate::dispatcher::now_ms().saturating_sub(message.created_at_ms);
    let request = SubmitRequest {
        to: message.recipient.clone(),
        from: message.sender.clone(),
        text: message.body.clone(),
        registered_delivery: true,
        waited: Duration::from_millis(u64::try_from(waited_ms).unwrap_or(0)),
    };
    let mut writes = Vec::new();
    let state = match handle.submit_reports(request).await {
        Ok(parts) => {
            let now = crate::dispatcher::now_ms();
            let mut state = SmsState::Accepted;
            let mut detail = None;
            for (index, report) in parts.iter().enumerate() {
                // Attempts and the temporary statuses that refused earlier ones go in the
                // part's detail, so `GET /sms/messages/{id}` shows them.
                let why = report.detail();
                let (word, smsc_id) = match &report.outcome {
                    SubmitOutcome::Accepted { message_id } => {
                        ("accepted", Some(ids.submit_id(message_id)))
                    }
                    SubmitOutcome::Rejected { .. } => {
                        if state == SmsState::Accepted {
                            state = SmsState::Rejected;
                            detail = why.clone();
                        }
                        ("rejected", None)
                    }
                    SubmitOutcome::Unknown { .. } => {
                        if state == SmsState::Accepted {
                            state = SmsState::Unknown;
                            detail = why.clone();
                        }
                        ("unknown", None)
                    }
                    SubmitOutcome::NotSent { .. } => ("not_sent", None),
                };
                writes.push(Write::SmsPart(SmsPartRecord {
                    message_id: id.clone(),
                    part: index as u32 + 1,
                    outcome: word,
                    smsc_id,
                    detail: why,
                    at_ms: now,
                }));
            }
            writes.insert(0, finish(state, detail));
            state
        }
        // Nothing was written: back to `queued`, sent after the next start.
        Err(SubmitError::Stopped) => {
            writes.push(finish(
                SmsState::Queued,
                Some("the bind stopped before it was sent".to_string()),
            ));
            SmsState::Queued
        }
        Err(e) => {
            writes.push(finish(SmsState::NotSent, Some(e.to_string())));
            SmsState::NotSent
        }
    };
    counter!("baraza_sms_outcomes_total", "state" => state.as_str()).increment(1);
    if state != SmsState::Accepted {
        warn!(message_id = %id, operator = %message.operator, %state, "outbound SMS not accepted");
    }
    commit(writes).await;
}

/// The store's guarded `queued -> sending` for one message: `true` when this sender won it
/// (and only then may it send).
async fn claim(gateway: &Gateway, id: &str) -> bool {
    let sending = Write::SmsState(SmsStateUpdate {
        message_id: id.to_string(),
        state: SmsState::Sending,
        detail: None,
        at_ms: crate::dispatcher::now_ms(),
    });
    match gateway.results.commit_checked(vec![sending]).await {
        Ok(skipped) if skipped.is_empty() => true,
        Ok(_) => {
            counter!("baraza_sms_claims_lost_total").increment(1);
            info!(message_id = %id, "outbound SMS already claimed by another sender: not sent again");
            false
        }
        Err(e) => {
            warn!(message_id = %id, error = %e, "outbound SMS not claimed: left queued for the next sweep");
            crate::telemetry::error("result_store");
            false
        }
    }
}

/// Sends one stored message (its opt-out already checked) through an Africa's Talking
/// route: claimed, one request (429s waited out within the claim), the outcome and the
/// message id stored as part 1.
async fn send_http(gateway: &Gateway, message: QueuedSms, route: &africastalking::Route) {
    let id = message.message_id.clone();
    if !claim(gateway, &id).await {
        return;
    }
    let (outcome, throttled) = route
        .send(&message.recipient, &message.sender, &message.body)
        .await;
    let throttled_note = (throttled > 0).then(|| format!("{throttled} x HTTP 429 first"));
    let (state, part, smsc_id, detail) = match outcome {
        SendOutcome::Accepted {
            message_id,
            status,
            cost,
        } => {
            let mut detail = format!("{status}, cost {cost}");
            if let Some(note) = &throttled_note {
                detail = format!("{detail}; {note}");
            }
            (
                SmsState::Accepted,
                Some("accepted"),
                Some(message_id),
                detail,
            )
        }
        SendOutcome::Rejected { detail } => (SmsState::Rejected, Some("rejected"), None, detail),
        SendOutcome::Unknown { detail } => (SmsState::Unknown, Some("unknown"), None, detail),
        // Never taken: back to the queue, sent again by the next sweep.
        SendOutcome::Throttled { detail, .. } => (
            SmsState::Queued,
            None,
            None,
            format!("still throttled after {throttled} tries ({detail}): queued again"),
        ),
        SendOutcome::NotReached { detail } => (
            SmsState::Queued,
            None,
            None,
            format!("{detail}: queued again"),
        ),
    };
    let now = crate::dispatcher::now_ms();
    let mut writes = vec![Write::SmsState(SmsStateUpdate {
        message_id: id.clone(),
        state,
        detail: (state != SmsState::Accepted).then(|| detail.clone()),
        at_ms: now,
    })];
    if let Some(outcome) = part {
        writes.push(Write::SmsPart(SmsPartRecord {
            message_id: id.clone(),
            part: 1,
            outcome,
            smsc_id,
            detail: Some(detail),
            at_ms: now,
        }));
    }
    counter!("baraza_sms_outcomes_total", "state" => state.as_str()).increment(1);
    if state != SmsState::Accepted {
        warn!(message_id = %id, route = %message.operator, %state, "outbound SMS not accepted");
    }
    if let Err(e) = gateway.results.commit(writes).await {
        warn!(message_id = %id, error = %e, "outbound SMS state not stored");
        crate::telemetry::error("result_store");
    }
}

/// The bind to use: among those bound now, the one with the fewest requests outstanding;
/// when none is bound, waits for the first to bind. `None` when the binds are stopping.
async fn pick_bind(binds: &[EsmeHandle]) -> Option<EsmeHandle> {
    let bound = binds
        .iter()
        .filter(|h| h.link_state() == LinkState::Bound)
        .min_by_key(|h| h.counters().window_in_use);
    if let Some(handle) = bound {
        return Some(handle.clone());
    }
    let waits = binds.iter().map(|h| {
        Box::pin(async move {
            let state = h
                .wait_for_link(|s| matches!(s, LinkState::Bound | LinkState::Stopped))
                .await;
            (state, h)
        })
    });
    if binds.is_empty() {
        return None;
    }
    let ((state, handle), _, _) = futures_util::future::select_all(waits).await;
    (state == LinkState::Bound).then(|| handle.clone())
}
