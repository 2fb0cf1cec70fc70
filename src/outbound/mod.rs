//! Outbound calls: the `Dialer` places calls through a provider's call API (Africa's Talking
//! or Twilio), with a bounded queue, a concurrency limit and retries of calls that did not
//! connect (busy, no answer, failed: spaced, capped, configurable).
//!
//! ```text
//! enqueue ──store scheduled (node, due)──▶ queue ──slot──▶ store placing ──API──▶ store placed
//!   final status heard here ──────────────────────────┐      (call id noted in the session store)
//!   final status heard on another node ──store by     ├──▶ store final + retry `scheduled`
//!     (provider, call id); found by this node's       │    (one transaction, only if not final
//!     status poll every STATUS_POLL ──────────────────┘     yet) ──▶ slot freed ──▶ retry due
//! start ──▶ recover this node's rows: scheduled → queued at due time, placed → followed again,
//!           placing → closed timed_out, never placed again
//! ```
//!
//! Life of a callback: a voice step hands `(number, flow)` to [`Dialer::enqueue`], which
//! stores the attempt `scheduled` (owned by this node, `smpp.node`) before queueing it; the
//! dialer task takes it when a concurrency slot is free, posts it to the provider, notes call
//! id -> flow in the session store (so the answered call starts that flow on any node), and
//! holds the slot until the call's final status is known (or `call_timeout_seconds` pass).
//! The final status is stored with [`crate::result_store::CallFinal`]: by attempt id when
//! this node heard it ([`Dialer::call_final`] hands it to the waiting attempt), by the
//! provider's call id when another node did; the write changes only an attempt not yet final,
//! and in the same transaction stores the retry a retryable status asks for (`scheduled`, for
//! the node that placed the call, due after `retry.spacing_seconds`, up to
//! `retry.max_attempts` in all). So of two nodes hearing one call's end, one records it and
//! one retry exists; only the placing node queues it. The placing node learns of a final
//! status stored elsewhere within [`STATUS_POLL`]. Every attempt is logged, kept in memory from
//! placing on ([`Dialer::attempts`]) and stored before the change is signalled.
//!
//! Restarts: [`Dialer::shutdown`] stops every task and leaves the rows as they are; the next
//! start of the same node recovers them ([`Dialer::recover`]) and never places an attempt twice
//! (a job of this process holds its attempt id; rows this process wrote are not recovered).
//!
//! Transport: reqwest over rustls with the bundled web PKI roots (HTTPS to the providers;
//! plain `http://` is accepted for local test servers and proxies). Redirects are not
//! followed, each request is cut after 20 s, and errors name the host only.
//!
//! Limits: a final status that reaches another node before the placing node stored the call
//! id is not matched (the call then times out, without a retry). A node that did not follow
//! the call reads "answered" from the call's length (a `Completed` with no length counts as
//! no-answer). Africa's Talking's final callback is read through the channel parser, which
//! prefers `callSessionState` over `hangupCause` (see [`CallOutcome::from_status`]). Rows
//! stored before schema version 4 have no node and are never recovered.
//!
//! It never runs flows or reads call callbacks (the dispatcher does), never stores answers
//! (only its own call attempts), never knows Redis keys, and never logs API keys or auth
//! tokens.

pub mod africastalking;
pub mod twilio;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{OutboundConfig, OutboundProvider, RetryOn};
use crate::dispatcher::Gateway;
use crate::result_store::{
    CallAttemptQuery, CallAttemptRecord, CallAttemptStatus, CallFinal, CallKey, CallRetry,
    ResultStoreError, Write, next_attempt_id,
};
use crate::telemetry;

/// Session-store note kind under which call id -> flow id is kept.
pub const CALL_FLOW_NOTE: &str = "outbound-call-flow";

/// Longest a provider API request may take before the attempt counts as failed.
const API_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a dialer looks in the result store for final statuses of its calls that
/// another node heard.
pub const STATUS_POLL: Duration = Duration::from_secs(2);

/// Largest provider response body read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where the running dialer is published for the voice steps (kept in `VoiceConfig`, empty
/// until [`Dialer::start`]). Clones share the slot.
#[derive(Clone, Default)]
pub struct DialerSlot(Arc<OnceLock<Dialer>>);

impl std::fmt::Debug for DialerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialerSlot")
            .field("started", &self.0.get().is_some())
            .finish()
    }
}

impl DialerSlot {
    /// The running dialer, if one was started.
    pub fn get(&self) -> Option<&Dialer> {
        self.0.get()
    }
}

/// How a placed call ended, as far as retries care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The citizen answered (the flow ran, whatever happened in it).
    Completed,
    /// The line was busy or the call was rejected.
    Busy,
    /// Nobody answered.
    NoAnswer,
    /// The provider could not place or connect the call (API error included).
    Failed,
    /// The call was cancelled before it connected; never retried.
    Canceled,
    /// No final status arrived within `call_timeout_seconds`; never retried (the call may
    /// still have happened).
    TimedOut,
}

impl CallOutcome {
    /// The final status word of a provider (Twilio `CallStatus`; Africa's Talking
    /// `callSessionState`, `status` or `hangupCause`) read as an outcome. A word that names no
    /// failure counts as `Completed` when the call was answered and as `NoAnswer` when it
    /// never was (Africa's Talking reports `Completed` as the session state of unanswered
    /// calls too).
    pub fn from_status(word: &str, answered: bool) -> CallOutcome {
        let word: String = word
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match word.as_str() {
            "busy" | "userbusy" | "callrejected" | "rejected" => CallOutcome::Busy,
            "noanswer" | "notanswered" | "nouserresponse" | "noresponse" => CallOutcome::NoAnswer,
            "failed" | "unallocatednumber" | "invalidnumber" | "networkoutoforder" | "aborted" => {
                CallOutcome::Failed
            }
            "canceled" | "cancelled" | "originatorcancel" => CallOutcome::Canceled,
            _ if answered => CallOutcome::Completed,
            _ => CallOutcome::NoAnswer,
        }
    }

    /// Whether the retry configuration asks for another attempt after this outcome.
    fn retried_by(self, on: &[RetryOn]) -> bool {
        let wanted = match self {
            CallOutcome::Busy => RetryOn::Busy,
            CallOutcome::NoAnswer => RetryOn::NoAnswer,
            CallOutcome::Failed => RetryOn::Failed,
            CallOutcome::Completed | CallOutcome::Canceled | CallOutcome::TimedOut => {
                return false;
            }
        };
        on.contains(&wanted)
    }
}

impl CallOutcome {
    /// Every outcome.
    pub const ALL: [CallOutcome; 6] = [
        CallOutcome::Completed,
        CallOutcome::Busy,
        CallOutcome::NoAnswer,
        CallOutcome::Failed,
        CallOutcome::Canceled,
        CallOutcome::TimedOut,
    ];

    /// The outcome stored as `name` (see [`CallOutcome::as_str`]).
    pub fn parse(name: &str) -> Option<CallOutcome> {
        CallOutcome::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// The stored name (`no_answer`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Completed => "completed",
            CallOutcome::Busy => "busy",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Failed => "failed",
            CallOutcome::Canceled => "canceled",
            CallOutcome::TimedOut => "timed_out",
        }
    }
}

/// Why a call is placed; stored with each attempt.
pub const PURPOSE_MISSED_CALL: &str = "missed_call";

/// Where one attempt stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptStatus {
    /// Stored, waiting in the queue or for its retry time (only in the store: the in-memory
    /// list starts at placing).
    Scheduled { due_at_ms: i64 },
    /// The request to the provider is under way.
    Placing,
    /// The provider accepted the call; its final status has not arrived.
    Placed,
    /// The provider refused the request or could not be reached (the reason, no secrets).
    Refused(String),
    /// The final status arrived: the provider's word, what it means, and the call's length
    /// when the provider said.
    Ended {
        status: String,
        outcome: CallOutcome,
        duration_seconds: Option<u32>,
    },
    /// No final status within the call timeout.
    TimedOut,
}

/// One attempt to call a number back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt's id in the result store (`call_attempts.attempt_id`): the instance id of
    /// the dialer that accepted the callback, the callback's number and the attempt number.
    pub attempt_id: String,
    /// Which callback this attempt belongs to (the attempt id without its `-<attempt>`
    /// suffix), so two callbacks of one number keep their attempts apart.
    pub callback: String,
    /// 1 for the first call, then 2, 3... up to `retry.max_attempts`.
    pub attempt: u32,
    /// The flow the call runs when answered.
    pub flow: String,
    /// The provider's call id, once it gave one.
    pub call_id: Option<String>,
    /// When placing began, ms since the Unix epoch.
    pub placed_at_ms: i64,
    /// Where the attempt stands.
    pub status: AttemptStatus,
}

/// Why a callback was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnqueueError {
    /// The queue holds `queue_capacity` calls already.
    #[error("the outbound call queue is full")]
    QueueFull,
    /// The dialer task is gone (shutting down).
    #[error("the dialer has stopped")]
    Stopped,
    /// The call could not be stored, so it was not queued.
    #[error("the call could not be stored: {0}")]
    Store(String),
}

/// Why the dialer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("voice.outbound.provider api_url `{0}`: {1}")]
    BadUrl(String, String),
    #[error("voice.outbound.max_concurrent_calls must be at least 1")]
    NoConcurrency,
    #[error("voice.outbound.queue_capacity must be at least 1")]
    NoQueue,
    #[error("voice.outbound.retry.max_attempts must be at least 1")]
    NoAttempts,
    #[error("voice.outbound: {0}")]
    MissingSecret(&'static str),
}

/// A call waiting to be placed (or, once placed, followed to its end).
#[derive(Debug)]
struct Job {
    /// The callback it belongs to (see [`Attempt::callback`]).
    callback: String,
    /// The citizen's number.
    to: String,
    /// The flow the call runs.
    flow: String,
    /// Why the call is placed (see [`PURPOSE_MISSED_CALL`]).
    purpose: String,
    /// Which attempt this is (1-based).
    attempt: u32,
    /// Keeps the attempt id in [`Inner::held`] while this job exists, so recovery never
    /// starts a second placement of it.
    _held: Held,
}

impl Job {
    /// The store id of this attempt.
    fn attempt_id(&self) -> String {
        format!("{}-{}", self.callback, self.attempt)
    }
}

/// An attempt id held by a job of this process; released when the job is dropped.
#[derive(Debug)]
struct Held {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.id);
    }
}

/// How the end of a placed call became known.
#[derive(Debug)]
enum Final {
    /// This node heard the provider's final status: the word, the call's length, and
    /// whether the callback showed the call was answered.
    Heard {
        status: String,
        duration_seconds: Option<u32>,
        answered: bool,
    },
    /// Another node heard it and stored it (found by the status poll).
    Stored(Box<CallAttemptRecord>),
}

/// A placed call waiting for its final status.
struct LiveCall {
    /// The flow it runs (answers `flow_of_call` without a store round trip).
    flow: String,
    /// Set when the provider's first callback of the answered call arrived.
    answered: bool,
    /// Wakes the attempt with the final status.
    done: Option<oneshot::Sender<Final>>,
}

/// A provider's call API, ready to use.
#[derive(Debug)]
enum Provider {
    AfricasTalking(africastalking::Client),
    Twilio(twilio::Client),
}

impl Provider {
    /// The provider's name as stored with each attempt.
    fn name(&self) -> &'static str {
        match self {
            Provider::AfricasTalking(_) => "africastalking",
            Provider::Twilio(_) => "twilio",
        }
    }

    async fn place(&self, to: &str) -> Result<String, String> {
        match self {
            Provider::AfricasTalking(client) => client.place(to).await,
            Provider::Twilio(client) => client.place(to).await,
        }
    }
}

/// Everything the dialer task and its handles share.
struct Inner {
    /// Random per dialer (per process start): with the callback and attempt numbers it makes
    /// attempt ids that do not collide across restarts and nodes.
    instance: String,
    /// This node's name in stored attempts (`smpp.node`, else the host name): a node places
    /// and recovers only its own scheduled attempts.
    node: String,
    /// When this dialer started, ms since the Unix epoch: recovery leaves alone the rows
    /// this process wrote.
    started_at_ms: i64,
    /// Attempt ids a job of this process holds (queued, waiting, placing or followed).
    held: Arc<Mutex<HashSet<String>>>,
    /// Set once the start's recovery ran (whatever it found), so tools and tests can wait.
    recovered: std::sync::atomic::AtomicBool,
    /// Cancelled by [`Dialer::shutdown`]: every task of the dialer stops, leaving its
    /// attempts stored for the next start.
    stop: CancellationToken,
    /// The gateway (for the session store); weak so the gateway's slot does not keep it alive.
    gateway: Weak<Gateway>,
    provider: Provider,
    queue: mpsc::Sender<Job>,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    call_timeout: Duration,
    retry: crate::config::RetryConfig,
    /// Attempts per number, oldest first.
    attempts: Mutex<HashMap<String, Vec<Attempt>>>,
    /// Placed calls by provider call id.
    live: Mutex<HashMap<String, LiveCall>>,
    /// Bumped on every attempt change, so tests and tools can wait for one.
    changes: watch::Sender<u64>,
    /// Callbacks accepted by [`Dialer::enqueue`] since start (first attempts only).
    accepted: std::sync::atomic::AtomicU64,
    /// Numbers callbacks.
    next_callback: std::sync::atomic::AtomicU64,
}

/// Places outbound calls; cheap to clone (a handle on one task).
#[derive(Clone)]
pub struct Dialer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("provider", &self.inner.provider)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Dialer {
    /// Starts the dialer of `gateway` when `voice.outbound` is configured (`Ok(None)`
    /// otherwise) and publishes it in `Gateway::dialer`, where voice steps find it. Starting twice
    /// returns the running dialer. Must be called within a Tokio runtime.
    pub fn start(gateway: &Arc<Gateway>) -> Result<Option<Dialer>, StartError> {
        let Some(config) = gateway.config.voice.outbound.as_ref() else {
            return Ok(None);
        };
        if let Some(running) = gateway.dialer.get() {
            return Ok(Some(running.clone()));
        }
        let provider = build_provider(
            config,
            &gateway.config.voice.public_url,
            gateway.config.callbacks.twilio.url_query(),
        )?;
        if config.max_concurrent_calls == 0 {
            return Err(StartError::NoConcurrency);
        }
        if config.queue_capacity == 0 {
            return Err(StartError::NoQueue);
        }
        if config.retry.max_attempts == 0 {
            return Err(StartError::NoAttempts);
        }
        let (queue, jobs) = mpsc::channel(config.queue_capacity);
        let dialer = Dialer {
            inner: Arc::new(Inner {
                instance: instance_id(),
                node: gateway.config.smpp.node_name(),
                started_at_ms: now_ms(),
                held: Arc::new(Mutex::new(HashSet::new())),
                stop: CancellationToken::new(),
                recovered: std::sync::atomic::AtomicBool::new(false),
                gateway: Arc::downgrade(gateway),
                provider,
                queue,
                permits: Arc::new(Semaphore::new(config.max_concurrent_calls)),
                max_concurrent: config.max_concurrent_calls,
                call_timeout: Duration::from_secs(config.call_timeout_seconds.max(1)),
                retry: config.retry.clone(),
                attempts: Mutex::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
                changes: watch::channel(0).0,
                accepted: std::sync::atomic::AtomicU64::new(0),
                next_callback: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        if gateway.dialer.0.set(dialer.clone()).is_err() {
            // Another start won the race; its task serves the calls.
            return Ok(gateway.dialer.get().cloned());
        }
        tokio::spawn(run(Arc::downgrade(&dialer.inner), jobs));
        tokio::spawn(watch_stored_finals(Arc::downgrade(&dialer.inner)));
        Ok(Some(dialer))
    }

    /// Stops every task of this dialer (the queue, waiting retries, calls being followed):
    /// what they were doing stays stored, and the next start of this node recovers it.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }

    /// Whether the recovery of this start has run (see [`Dialer::recover`]); a change is
    /// signalled when it has.
    pub fn recovered(&self) -> bool {
        self.inner
            .recovered
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This node's name in stored attempts.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// After a start: this node's attempts a previous run left unfinished. Scheduled ones are
    /// queued at their due time, placed ones are followed until their final status (or the
    /// call timeout), and ones caught while placing are closed as timed out and never placed
    /// again (the provider may have placed them). Returns how many rows were recovered.
    pub async fn recover(&self) -> Result<usize, ResultStoreError> {
        let Some(gateway) = self.inner.gateway.upgrade() else {
            return Ok(0);
        };
        let rows = gateway
            .results
            .call_attempts(CallAttemptQuery::Unfinished(self.inner.node.clone()))
            .await?;
        drop(gateway);
        let mut recovered = 0;
        for row in rows {
            // Rows this process wrote are its own jobs' business.
            if row.updated_at_ms >= self.inner.started_at_ms {
                continue;
            }
            let Some(job) = self.inner.job_from_row(&row) else {
                continue;
            };
            recovered += 1;
            match (row.status, row.provider_call_id.clone()) {
                (CallAttemptStatus::Scheduled, _) => {
                    let delay = delay_until(row.due_at_ms.unwrap_or(0), None);
                    info!(
                        attempt = job.attempt,
                        ?delay,
                        "outbound call recovered: scheduled"
                    );
                    schedule(&self.inner, job, delay);
                }
                (CallAttemptStatus::Placed, Some(call_id)) => {
                    info!(call = %call_id, "outbound call recovered: following its status");
                    let deadline = delay_until(
                        row.placed_at_ms.saturating_add(
                            i64::try_from(self.inner.call_timeout.as_millis()).unwrap_or(i64::MAX),
                        ),
                        None,
                    );
                    // Live at once, so a final status heard from now on is handed over.
                    let (done, ended) = oneshot::channel();
                    lock(&self.inner.live).insert(
                        call_id.clone(),
                        LiveCall {
                            flow: job.flow.clone(),
                            answered: false,
                            done: Some(done),
                        },
                    );
                    self.inner.remember(
                        &job,
                        Some(&call_id),
                        AttemptStatus::Placed,
                        row.placed_at_ms,
                    );
                    let inner = Arc::clone(&self.inner);
                    tokio::spawn(async move {
                        let permits = Arc::clone(&inner.permits);
                        let permit = tokio::select! {
                            permit = permits.acquire_owned() => permit,
                            () = inner.stop.cancelled() => return,
                        };
                        let Ok(permit) = permit else { return };
                        follow(inner, job, call_id, ended, deadline, permit).await;
                    });
                }
                _ => {
                    warn!(
                        attempt = job.attempt,
                        "outbound call was being placed when the node stopped; not placed again"
                    );
                    telemetry::error("outbound_call_interrupted");
                    let write = CallFinal {
                        key: CallKey::Attempt(job.attempt_id()),
                        status: CallAttemptStatus::TimedOut,
                        outcome: CallOutcome::TimedOut.as_str().to_string(),
                        provider_status: None,
                        duration_seconds: None,
                        reason: Some(
                            "the node stopped while placing the call; not placed again".into(),
                        ),
                        at_ms: now_ms(),
                        retry: None,
                    };
                    if let Some(gateway) = self.inner.gateway.upgrade() {
                        gateway
                            .results
                            .commit(vec![Write::CallFinal(write)])
                            .await?;
                    }
                }
            }
        }
        Ok(recovered)
    }

    /// Queues a missed-call callback to `to` that runs `flow` when answered (first attempt),
    /// stored `scheduled` before it is queued.
    pub async fn enqueue(&self, to: &str, flow: &str) -> Result<(), EnqueueError> {
        self.enqueue_for(PURPOSE_MISSED_CALL, to, flow).await
    }

    /// Queues a call to `to` that runs `flow` when answered, stored with `purpose` (and as
    /// `scheduled`, due now, owned by this node) before it is queued: a call the store did not
    /// take is refused.
    pub async fn enqueue_for(
        &self,
        purpose: &str,
        to: &str,
        flow: &str,
    ) -> Result<(), EnqueueError> {
        let room = self
            .inner
            .queue
            .clone()
            .try_reserve_owned()
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EnqueueError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => EnqueueError::Stopped,
            })?;
        let callback = self
            .inner
            .next_callback
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let job = self.inner.job(
            format!("{}-{callback}", self.inner.instance),
            to,
            flow,
            purpose,
            1,
        );
        self.inner
            .store_progress(
                &job,
                None,
                &AttemptStatus::Scheduled {
                    due_at_ms: now_ms(),
                },
            )
            .await
            .map_err(|e| EnqueueError::Store(e.to_string()))?;
        room.send(job);
        self.inner
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// Callbacks accepted by [`Dialer::enqueue`] since the dialer started (retries excluded).
    pub fn accepted(&self) -> u64 {
        self.inner
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A snapshot of the attempts to call `number`, oldest first.
    pub fn attempts(&self, number: &str) -> Vec<Attempt> {
        lock(&self.inner.attempts)
            .get(number)
            .cloned()
            .unwrap_or_default()
    }

    /// Calls holding a concurrency slot now (being placed, ringing or in progress).
    pub fn in_flight(&self) -> usize {
        self.inner
            .max_concurrent
            .saturating_sub(self.inner.permits.available_permits())
    }

    /// A receiver that changes whenever an attempt is added or changes status.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The flow of a call this dialer placed and that is still live, without a store trip.
    pub fn flow_of_call(&self, call_id: &str) -> Option<String> {
        lock(&self.inner.live).get(call_id).map(|c| c.flow.clone())
    }

    /// The provider's first callback of a call we placed: the citizen answered.
    pub fn call_answered(&self, call_id: &str) {
        if let Some(call) = lock(&self.inner.live).get_mut(call_id) {
            call.answered = true;
        }
    }

    /// The provider's final status of a call (`status` as sent, and the call's length when
    /// given). Returns false when the call is not one this dialer is waiting for (placed by
    /// another node, or already over); see [`Dialer::call_final`] for the whole handling.
    pub fn call_ended(&self, call_id: &str, status: &str, duration_seconds: Option<u32>) -> bool {
        self.hand_over(call_id, status, duration_seconds, false)
    }

    /// The provider's final status of an outbound call, heard by this node (`answered`: the
    /// callback itself shows the call was answered). A call this dialer is following gets it
    /// directly; any other (placed by another node, or by this node before a restart) has the
    /// status stored by its provider call id, which ends the attempt only if it was not final
    /// yet and schedules its retry for the node that placed it, which notices within
    /// [`STATUS_POLL`]. A repeated callback changes nothing.
    pub async fn call_final(
        &self,
        call_id: &str,
        status: &str,
        duration_seconds: Option<u32>,
        answered: bool,
    ) {
        if self.hand_over(call_id, status, duration_seconds, answered) {
            return;
        }
        let Some(gateway) = self.inner.gateway.upgrade() else {
            return;
        };
        let answered = answered || duration_seconds.is_some_and(|d| d > 0);
        let outcome = CallOutcome::from_status(status, answered);
        let now = now_ms();
        let write = CallFinal {
            key: CallKey::ProviderCall {
                provider: self.inner.provider.name().to_string(),
                call_id: call_id.to_string(),
            },
            status: CallAttemptStatus::Ended,
            outcome: outcome.as_str().to_string(),
            provider_status: Some(status.to_string()),
            duration_seconds,
            reason: None,
            at_ms: now,
            retry: self.inner.retry_after(outcome, now),
        };
        if let Err(e) = gateway.results.commit(vec![Write::CallFinal(write)]).await {
            warn!(error = %e, call = %call_id, "final call status not stored");
            telemetry::error("outbound_call_store");
        }
    }

    fn hand_over(
        &self,
        call_id: &str,
        status: &str,
        duration_seconds: Option<u32>,
        answered: bool,
    ) -> bool {
        let done = lock(&self.inner.live)
            .get_mut(call_id)
            .and_then(|c| c.done.take());
        match done {
            Some(done) => done
                .send(Final::Heard {
                    status: status.to_string(),
                    duration_seconds,
                    answered,
                })
                .is_ok(),
            None => false,
        }
    }
}

impl Inner {
    /// A job for attempt `attempt` of `callback`, holding its attempt id.
    fn job(&self, callback: String, to: &str, flow: &str, purpose: &str, attempt: u32) -> Job {
        let id = format!("{callback}-{attempt}");
        lock(&self.held).insert(id.clone());
        Job {
            callback,
            to: to.to_string(),
            flow: flow.to_string(),
            purpose: purpose.to_string(),
            attempt,
            _held: Held {
                set: Arc::clone(&self.held),
                id,
            },
        }
    }

    /// The job of a stored attempt, unless a job of this process holds it already.
    fn job_from_row(&self, row: &CallAttemptRecord) -> Option<Job> {
        if lock(&self.held).contains(&row.attempt_id) {
            return None;
        }
        let suffix = format!("-{}", row.attempt);
        let callback = row.attempt_id.strip_suffix(suffix.as_str())?.to_string();
        Some(self.job(
            callback,
            &row.subscriber,
            &row.flow_id,
            &row.purpose,
            row.attempt,
        ))
    }

    /// The retry a final `outcome` asks for (stored with the final status), if any.
    fn retry_after(&self, outcome: CallOutcome, now: i64) -> Option<CallRetry> {
        outcome.retried_by(&self.retry.on).then(|| CallRetry {
            max_attempts: self.retry.max_attempts,
            due_at_ms: now.saturating_add(
                i64::try_from(self.retry.spacing_seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
            ),
        })
    }

    /// Writes a not-yet-final state of an attempt (scheduled, placing, placed) to the result
    /// store, logs it and, from placing on, keeps it in the in-memory list.
    async fn store_progress(
        &self,
        job: &Job,
        call_id: Option<&str>,
        status: &AttemptStatus,
    ) -> Result<(), ResultStoreError> {
        let now = now_ms();
        let attempt_id = job.attempt_id();
        let (stored, due_at_ms) = match status {
            AttemptStatus::Scheduled { due_at_ms } => {
                (CallAttemptStatus::Scheduled, Some(*due_at_ms))
            }
            AttemptStatus::Placing => (CallAttemptStatus::Placing, None),
            _ => (CallAttemptStatus::Placed, None),
        };
        let placed_at_ms = self.known_placed_at(job).unwrap_or(now);
        let write = Write::CallAttempt(CallAttemptRecord {
            attempt_id,
            provider: self.provider.name().to_string(),
            subscriber: job.to.clone(),
            flow_id: job.flow.clone(),
            purpose: job.purpose.clone(),
            attempt: job.attempt,
            placed_at_ms,
            status: stored,
            outcome: None,
            provider_status: None,
            duration_seconds: None,
            provider_call_id: call_id.map(str::to_string),
            reason: None,
            updated_at_ms: now,
            ended_at_ms: None,
            node: Some(self.node.clone()),
            due_at_ms,
        });
        let result = match self.gateway.upgrade() {
            Some(gateway) => gateway.results.commit(vec![write]).await,
            None => Ok(()),
        };
        if let Err(e) = &result {
            warn!(error = %e, attempt = job.attempt, "call attempt not stored");
            telemetry::error("outbound_call_store");
        }
        if !matches!(status, AttemptStatus::Scheduled { .. }) {
            self.remember(job, call_id, status.clone(), placed_at_ms);
        }
        result
    }

    /// When placing of this attempt began, if this process saw it.
    fn known_placed_at(&self, job: &Job) -> Option<i64> {
        let id = job.attempt_id();
        lock(&self.attempts)
            .get(&job.to)
            .and_then(|list| list.iter().find(|a| a.attempt_id == id))
            .map(|a| a.placed_at_ms)
    }

    /// Logs an attempt's status, updates the in-memory list and signals the change.
    fn remember(&self, job: &Job, call_id: Option<&str>, status: AttemptStatus, placed_at_ms: i64) {
        let pseudonym = self
            .gateway
            .upgrade()
            .map(|g| g.pseudonym(&job.to))
            .unwrap_or_else(|| "unknown".into());
        info!(subscriber = %pseudonym, flow = %job.flow, callback = %job.callback, attempt = job.attempt, call = call_id.unwrap_or(""), status = ?status, "outbound call attempt");
        let attempt_id = job.attempt_id();
        {
            let mut attempts = lock(&self.attempts);
            let list = attempts.entry(job.to.clone()).or_default();
            match list.iter_mut().find(|a| a.attempt_id == attempt_id) {
                Some(existing) => {
                    if call_id.is_some() {
                        existing.call_id = call_id.map(str::to_string);
                    }
                    existing.status = status;
                }
                None => list.push(Attempt {
                    attempt_id,
                    callback: job.callback.clone(),
                    attempt: job.attempt,
                    flow: job.flow.clone(),
                    call_id: call_id.map(str::to_string),
                    placed_at_ms,
                    status,
                }),
            }
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Stores the final status of an attempt (a no-op if it is final already), together with
    /// the retry it asks for.
    async fn store_final(&self, write: CallFinal) {
        if let Some(gateway) = self.gateway.upgrade()
            && let Err(e) = gateway.results.commit(vec![Write::CallFinal(write)]).await
        {
            warn!(error = %e, "final call status not stored");
            telemetry::error("outbound_call_store");
        }
    }

    /// The stored rows of these attempts (empty if they cannot be read).
    async fn stored(&self, attempt_ids: Vec<String>) -> Vec<CallAttemptRecord> {
        let Some(gateway) = self.gateway.upgrade() else {
            return Vec::new();
        };
        match gateway
            .results
            .call_attempts(CallAttemptQuery::AttemptIds(attempt_ids))
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "call attempts not readable");
                telemetry::error("outbound_call_store");
                Vec::new()
            }
        }
    }
}

/// What a stored final row says, as an in-memory status.
fn status_of_row(row: &CallAttemptRecord) -> Option<AttemptStatus> {
    let outcome = row.outcome.as_deref().and_then(CallOutcome::parse);
    Some(match row.status {
        CallAttemptStatus::Ended => AttemptStatus::Ended {
            status: row.provider_status.clone().unwrap_or_default(),
            outcome: outcome?,
            duration_seconds: row.duration_seconds,
        },
        CallAttemptStatus::Refused => {
            AttemptStatus::Refused(row.reason.clone().unwrap_or_default())
        }
        CallAttemptStatus::TimedOut => AttemptStatus::TimedOut,
        _ => return None,
    })
}

/// How long from now until `at_ms` (wall clock), at most `cap`.
fn delay_until(at_ms: i64, cap: Option<Duration>) -> Duration {
    let ms = u64::try_from(at_ms.saturating_sub(now_ms())).unwrap_or(0);
    let delay = Duration::from_millis(ms);
    cap.map_or(delay, |cap| delay.min(cap))
}

/// Queues `job` after `delay` (unless the dialer stops first; the job stays stored).
fn schedule(inner: &Arc<Inner>, job: Job, delay: Duration) {
    let queue = inner.queue.clone();
    let stop = inner.stop.clone();
    // Created here, so the delay runs from now, not from the task's first poll.
    let due = tokio::time::sleep(delay);
    tokio::spawn(async move {
        tokio::select! {
            () = due => {
                if queue.send(job).await.is_err() {
                    telemetry::error("outbound_retry_dropped");
                }
            }
            () = stop.cancelled() => {}
        }
    });
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Twelve hex digits from the system's random source (the clock and the process id if that
/// cannot be read), naming this dialer in attempt ids.
fn instance_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 6];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mixed = nanos ^ (u128::from(std::process::id()) << 64);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (mixed >> (i * 8)) as u8 ^ (mixed >> (64 + i * 8)) as u8;
        }
    }
    hex::encode(bytes)
}

fn build_provider(
    config: &OutboundConfig,
    public_url: &str,
    callback_query: Option<String>,
) -> Result<Provider, StartError> {
    Ok(match &config.provider {
        OutboundProvider::AfricasTalking {
            api_url,
            username,
            api_key,
            from,
        } => {
            let api_key =
                std::env::var("BARAZA_AT_API_KEY").unwrap_or_else(|_| api_key.expose().to_string());
            if api_key.is_empty() {
                return Err(StartError::MissingSecret(
                    "africastalking api_key is empty (set it or BARAZA_AT_API_KEY)",
                ));
            }
            let endpoint =
                HttpEndpoint::parse(api_url).map_err(|e| StartError::BadUrl(api_url.clone(), e))?;
            Provider::AfricasTalking(africastalking::Client {
                endpoint,
                username: username.clone(),
                api_key,
                from: from.clone(),
            })
        }
        OutboundProvider::Twilio {
            api_url,
            account_sid,
            auth_token,
            from,
        } => {
            let auth_token = std::env::var("BARAZA_TWILIO_AUTH_TOKEN")
                .unwrap_or_else(|_| auth_token.expose().to_string());
            if auth_token.is_empty() {
                return Err(StartError::MissingSecret(
                    "twilio auth_token is empty (set it or BARAZA_TWILIO_AUTH_TOKEN)",
                ));
            }
            let base = api_url.trim_end_matches('/');
            let calls_url = format!(
                "{base}/2010-04-01/Accounts/{}/Calls.json",
                form_encode(account_sid)
            );
            let endpoint = HttpEndpoint::parse(&calls_url)
                .map_err(|e| StartError::BadUrl(api_url.clone(), e))?;
            Provider::Twilio(twilio::Client {
                endpoint,
                account_sid: account_sid.clone(),
                auth_token,
                from: from.clone(),
                public_url: public_url.trim_end_matches('/').to_string(),
                callback_query,
            })
        }
    })
}

/// The dialer task: takes jobs in order, each when a concurrency slot is free. First recovers
/// what a previous run of this node left unfinished.
async fn run(inner: Weak<Inner>, mut jobs: mpsc::Receiver<Job>) {
    if let Some(strong) = inner.upgrade() {
        let dialer = Dialer { inner: strong };
        match dialer.recover().await {
            Ok(0) => {}
            Ok(n) => info!(attempts = n, "outbound calls recovered"),
            Err(e) => {
                warn!(error = %e, "outbound call recovery failed: retried at the next start");
                telemetry::error("outbound_call_recovery");
            }
        }
        dialer
            .inner
            .recovered
            .store(true, std::sync::atomic::Ordering::SeqCst);
        dialer.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
    loop {
        let Some(stop) = inner.upgrade().map(|i| i.stop.clone()) else {
            return;
        };
        let job = tokio::select! {
            job = jobs.recv() => job,
            () = stop.cancelled() => return,
        };
        let Some(job) = job else { return };
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let permits = Arc::clone(&strong.permits);
        drop(strong);
        let permit = tokio::select! {
            permit = permits.acquire_owned() => permit,
            () = stop.cancelled() => return,
        };
        let Ok(permit) = permit else {
            return;
        };
        let Some(strong) = inner.upgrade() else {
            return;
        };
        tokio::spawn(attempt(strong, job, permit));
    }
}

/// Every [`STATUS_POLL`], looks up in the result store the calls this dialer follows: one
/// whose final status another node stored is handed to its attempt at once (freeing the
/// slot without waiting for the call timeout).
async fn watch_stored_finals(inner: Weak<Inner>) {
    let Some(stop) = inner.upgrade().map(|i| i.stop.clone()) else {
        return;
    };
    let mut every = tokio::time::interval(STATUS_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let waiting: Vec<String> = lock(&strong.live)
            .iter()
            .filter(|(_, call)| call.done.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        if waiting.is_empty() {
            continue;
        }
        let Some(gateway) = strong.gateway.upgrade() else {
            return;
        };
        let query = CallAttemptQuery::ProviderCalls {
            provider: strong.provider.name().to_string(),
            call_ids: waiting,
        };
        let rows = match gateway.results.call_attempts(query).await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "outbound call statuses not readable");
                telemetry::error("outbound_call_store");
                continue;
            }
        };
        for row in rows.into_iter().filter(|r| r.status.is_final()) {
            let Some(call_id) = row.provider_call_id.clone() else {
                continue;
            };
            let done = lock(&strong.live)
                .get_mut(&call_id)
                .and_then(|c| c.done.take());
            if let Some(done) = done {
                let _ = done.send(Final::Stored(Box::new(row)));
            }
        }
    }
}

/// One attempt: place the call, follow it to its final status, free the slot, maybe retry.
async fn attempt(inner: Arc<Inner>, job: Job, permit: OwnedSemaphorePermit) {
    let _ = inner
        .store_progress(&job, None, &AttemptStatus::Placing)
        .await;
    let placed = tokio::select! {
        placed = tokio::time::timeout(API_TIMEOUT, inner.provider.place(&job.to)) => placed,
        // Left `placing`: the next start closes it without placing it again.
        () = inner.stop.cancelled() => return,
    };
    let placed = match placed {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer from the provider API within {API_TIMEOUT:?}"
        )),
    };
    match placed {
        Err(reason) => {
            warn!(flow = %job.flow, attempt = job.attempt, %reason, "outbound call not placed");
            telemetry::error("outbound_call_refused");
            let now = now_ms();
            inner
                .store_final(CallFinal {
                    key: CallKey::Attempt(job.attempt_id()),
                    status: CallAttemptStatus::Refused,
                    outcome: CallOutcome::Failed.as_str().to_string(),
                    provider_status: None,
                    duration_seconds: None,
                    reason: Some(reason.clone()),
                    at_ms: now,
                    retry: inner.retry_after(CallOutcome::Failed, now),
                })
                .await;
            settle(inner, job, None, AttemptStatus::Refused(reason), permit).await;
        }
        Ok(call_id) => {
            let (done, ended) = oneshot::channel();
            lock(&inner.live).insert(
                call_id.clone(),
                LiveCall {
                    flow: job.flow.clone(),
                    answered: false,
                    done: Some(done),
                },
            );
            if let Some(gateway) = inner.gateway.upgrade() {
                let ttl = inner.call_timeout + Duration::from_secs(3600);
                if let Err(e) = gateway
                    .sessions
                    .put_note(CALL_FLOW_NOTE, &call_id, job.flow.as_bytes(), ttl)
                    .await
                {
                    warn!(error = %e, call = %call_id, "call flow not noted; only this node knows it");
                    telemetry::error("outbound_call_note");
                }
            }
            let _ = inner
                .store_progress(&job, Some(&call_id), &AttemptStatus::Placed)
                .await;
            let deadline = inner.call_timeout;
            follow(inner, job, call_id, ended, deadline, permit).await;
        }
    }
}

/// Waits for the final status of a placed call (heard here, or stored by another node),
/// at most `timeout`; stores it, frees the slot and schedules the retry it asked for.
async fn follow(
    inner: Arc<Inner>,
    job: Job,
    call_id: String,
    ended: oneshot::Receiver<Final>,
    timeout: Duration,
    permit: OwnedSemaphorePermit,
) {
    let heard = tokio::select! {
        heard = tokio::time::timeout(timeout, ended) => heard,
        // Left `placed`: the next start follows it again.
        () = inner.stop.cancelled() => return,
    };
    let answered_here = lock(&inner.live)
        .remove(&call_id)
        .is_some_and(|c| c.answered);
    let now = now_ms();
    let status = match heard {
        Ok(Ok(Final::Heard {
            status,
            duration_seconds,
            answered,
        })) => {
            let answered = answered || answered_here || duration_seconds.is_some_and(|d| d > 0);
            let outcome = CallOutcome::from_status(&status, answered);
            inner
                .store_final(CallFinal {
                    key: CallKey::Attempt(job.attempt_id()),
                    status: CallAttemptStatus::Ended,
                    outcome: outcome.as_str().to_string(),
                    provider_status: Some(status.clone()),
                    duration_seconds,
                    reason: None,
                    at_ms: now,
                    retry: inner.retry_after(outcome, now),
                })
                .await;
            AttemptStatus::Ended {
                status,
                outcome,
                duration_seconds,
            }
        }
        Ok(Ok(Final::Stored(row))) => status_of_row(&row).unwrap_or(AttemptStatus::TimedOut),
        _ => {
            warn!(call = %call_id, "no final status for an outbound call");
            telemetry::error("outbound_call_timeout");
            inner
                .store_final(CallFinal {
                    key: CallKey::Attempt(job.attempt_id()),
                    status: CallAttemptStatus::TimedOut,
                    outcome: CallOutcome::TimedOut.as_str().to_string(),
                    provider_status: None,
                    duration_seconds: None,
                    reason: Some("no final status within the call timeout".to_string()),
                    at_ms: now,
                    retry: None,
                })
                .await;
            AttemptStatus::TimedOut
        }
    };
    settle(inner, job, Some(&call_id), status, permit).await;
}

/// After an attempt's final status is stored: the in-memory status follows the stored row
/// (another node may have ended it first), the slot is freed, and the retry stored with the
/// final status, if any, is queued at its due time on this node.
async fn settle(
    inner: Arc<Inner>,
    job: Job,
    call_id: Option<&str>,
    status: AttemptStatus,
    permit: OwnedSemaphorePermit,
) {
    let attempt_id = job.attempt_id();
    let next_id = next_attempt_id(&attempt_id, job.attempt);
    let rows = inner
        .stored(vec![attempt_id.clone(), next_id.clone()])
        .await;
    let status = rows
        .iter()
        .find(|r| r.attempt_id == attempt_id)
        .and_then(status_of_row)
        .unwrap_or(status);
    let placed_at_ms = inner.known_placed_at(&job).unwrap_or_else(now_ms);
    drop(permit);
    // The retry's timer starts before the change is signalled, so whoever saw the attempt end
    // can count on it.
    if let Some(next) = rows.iter().find(|r| r.attempt_id == next_id)
        && next.status == CallAttemptStatus::Scheduled
        && next.node.as_deref() == Some(&inner.node)
        && let Some(retry) = inner.job_from_row(next)
    {
        let spacing = Duration::from_secs(inner.retry.spacing_seconds);
        let delay = delay_until(next.due_at_ms.unwrap_or(0), Some(spacing));
        schedule(&inner, retry, delay);
    }
    inner.remember(&job, call_id, status, placed_at_ms);
}

/// A provider API URL and the HTTPS-capable client that posts to it.
#[derive(Debug, Clone)]
pub(crate) struct HttpEndpoint {
    /// The full URL posted to (`https://` in production, `http://` for local fakes).
    url: String,
    /// reqwest with rustls and the bundled web PKI roots; no redirects are followed.
    client: reqwest::Client,
}

impl HttpEndpoint {
    fn parse(url: &str) -> Result<HttpEndpoint, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err("must start with https:// (or http:// for a local test server)".into());
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("has no host".into());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(API_TIMEOUT)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(HttpEndpoint {
            url: url.to_string(),
            client,
        })
    }

    /// Posts a form; returns the status code and the body (cut at 64 KiB).
    async fn post_form(
        &self,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>), String> {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let host = reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        // Errors name the host only: a URL may carry an account id, never a secret.
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("request to {host}: {}", e.without_url()))?;
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("response from {host}: {}", e.without_url()))?
        {
            let room = MAX_RESPONSE_BYTES.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if bytes.len() >= MAX_RESPONSE_BYTES {
                break;
            }
        }
        Ok((status, bytes))
    }
}

/// `application/x-www-form-urlencoded` encoding of one component.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Standard base64 with padding (for HTTP basic auth).
fn base64(input: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn final_statuses_map_to_outcomes() {
        assert_eq!(CallOutcome::from_status("busy", false), CallOutcome::Busy);
        assert_eq!(
            CallOutcome::from_status("no-answer", false),
            CallOutcome::NoAnswer
        );
        assert_eq!(
            CallOutcome::from_status("USER_BUSY", false),
            CallOutcome::Busy
        );
        assert_eq!(
            CallOutcome::from_status("NO_ANSWER", false),
            CallOutcome::NoAnswer
        );
        assert_eq!(
            CallOutcome::from_status("failed", false),
            CallOutcome::Failed
        );
        assert_eq!(
            CallOutcome::from_status("completed", true),
            CallOutcome::Completed
        );
        assert_eq!(
            CallOutcome::from_status("Completed", false),
            CallOutcome::NoAnswer
        );
        assert_eq!(
            CallOutcome::from_status("canceled", false),
            CallOutcome::Canceled
        );
    }

    #[test]
    fn the_voice_config_section_parses_with_defaults() {
        let yaml = r#"
missed_call:
  numbers:
    - { number: "+254205550000", flow: grievance }
  dedup_window_seconds: 900
outbound:
  provider:
    africastalking:
      username: county
      from: "+254205551111"
  max_concurrent_calls: 2
  retry: { max_attempts: 4, on: [busy, no_answer] }
"#;
        let voice: crate::config::VoiceConfig = serde_saphyr::from_str(yaml).expect("parses");
        assert_eq!(voice.missed_call.numbers[0].flow, "grievance");
        assert_eq!(voice.missed_call.dedup_window_seconds, 900);
        assert_eq!(voice.missed_call.daily_cap_per_number, 3);
        assert_eq!(voice.missed_call.daily_cap_per_flow, 1000);
        let outbound = voice.outbound.expect("outbound");
        assert_eq!(outbound.max_concurrent_calls, 2);
        assert_eq!(outbound.retry.max_attempts, 4);
        assert_eq!(outbound.retry.spacing_seconds, 300);
        assert_eq!(outbound.retry.on, vec![RetryOn::Busy, RetryOn::NoAnswer]);
        match outbound.provider {
            OutboundProvider::AfricasTalking {
                api_url, api_key, ..
            } => {
                assert_eq!(api_url, "https://voice.africastalking.com/call");
                assert!(api_key.is_empty());
            }
            other => panic!("wrong provider {other:?}"),
        }
        let twilio = r#"
outbound:
  provider:
    twilio: { account_sid: AC1, from: "+15005550006" }
"#;
        let voice: crate::config::VoiceConfig = serde_saphyr::from_str(twilio).expect("parses");
        assert!(matches!(
            voice.outbound.map(|o| o.provider),
            Some(OutboundProvider::Twilio { api_url, .. }) if api_url == "https://api.twilio.com"
        ));
    }

    #[test]
    fn endpoints_take_https_and_http_and_refuse_the_rest() {
        assert!(HttpEndpoint::parse("https://voice.africastalking.com/call").is_ok());
        assert!(HttpEndpoint::parse("http://127.0.0.1:4000/call").is_ok());
        let err = HttpEndpoint::parse("ftp://x/call").unwrap_err();
        assert!(err.contains("https://"), "{err}");
        assert!(HttpEndpoint::parse("not a url").is_err());
    }
}
