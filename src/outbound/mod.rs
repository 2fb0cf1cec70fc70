//! Outbound calls: the `Dialer` places calls through a provider's call API (Africa's Talking
//! or Twilio), with a bounded queue, a concurrency limit and retries of calls that did not
//! connect (busy, no answer, failed: spaced, capped, configurable).
//!
//! Life of a callback: a voice step hands `(number, flow)` to [`Dialer::enqueue`]; the dialer
//! task takes it from the queue when a concurrency slot is free, posts it to the provider,
//! notes call id -> flow in the session store (so the answered call starts that flow on any
//! node), and holds the slot until the provider's final status reaches
//! [`Dialer::call_ended`] (or `call_timeout_seconds` pass). A retryable final status schedules
//! the next attempt after `retry.spacing_seconds`, up to `retry.max_attempts` in all. Every
//! attempt and its status is logged, kept in memory ([`Dialer::attempts`]) and written to the
//! result store (`Write::CallAttempt`, one row per attempt under its [`Attempt::attempt_id`]:
//! placing, placed, then the final status with the provider's word, the call's length and the
//! provider's call id), before the change is signalled.
//!
//! Transport: reqwest over rustls with the bundled web PKI roots (HTTPS to the providers;
//! plain `http://` is accepted for local test servers and proxies). Redirects are not
//! followed, each request is cut after 20 s, and errors name the host only.
//!
//! Limits, for now: the queue and the concurrency slots live in this process (the attempts
//! are durable, but a restart forgets the calls still queued or waiting for a retry). The call id -> flow note is in the session store, so an answered call runs the
//! right flow on any node; but a final status delivered to another node does not free this
//! node's slot (the slot is then freed by the call timeout, and no retry follows). Africa's
//! Talking's final callback is read through the channel parser, which prefers
//! `callSessionState` over `hangupCause`; an unanswered call whose state word names no failure
//! counts as no-answer (see [`CallOutcome::from_status`]).
//!
//! It never runs flows or reads call callbacks (the dispatcher does), never stores answers
//! (only its own call attempts), and never logs API keys or auth tokens.

pub mod africastalking;
pub mod twilio;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::config::{OutboundConfig, OutboundProvider, RetryOn};
use crate::dispatcher::Gateway;
use crate::result_store::{CallAttemptRecord, CallAttemptStatus, Write};
use crate::telemetry;

/// Session-store note kind under which call id -> flow id is kept.
pub const CALL_FLOW_NOTE: &str = "outbound-call-flow";

/// Longest a provider API request may take before the attempt counts as failed.
const API_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// The attempt's id in the result store (`call_attempts.attempt_id`): this dialer's
    /// instance id, the callback and the attempt number.
    pub attempt_id: String,
    /// Which callback this attempt belongs to (numbered from 1 per dialer), so two callbacks
    /// of one number keep their attempts apart.
    pub callback: u64,
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

/// A call waiting to be placed.
#[derive(Debug, Clone)]
struct Job {
    /// The callback's number (see [`Attempt::callback`]).
    callback: u64,
    /// The citizen's number.
    to: String,
    /// The flow the call runs.
    flow: String,
    /// Why the call is placed (see [`PURPOSE_MISSED_CALL`]).
    purpose: &'static str,
    /// Which attempt this is (1-based).
    attempt: u32,
}

/// A placed call waiting for its final status.
struct LiveCall {
    /// The flow it runs (answers `flow_of_call` without a store round trip).
    flow: String,
    /// Set when the provider's first callback of the answered call arrived.
    answered: bool,
    /// Wakes the attempt with the final status word and the call's length.
    done: Option<oneshot::Sender<(String, Option<u32>)>>,
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
        let provider = build_provider(config, &gateway.config.voice.public_url)?;
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
        Ok(Some(dialer))
    }

    /// Queues a missed-call callback to `to` that runs `flow` when answered (first attempt).
    pub fn enqueue(&self, to: &str, flow: &str) -> Result<(), EnqueueError> {
        self.enqueue_for(PURPOSE_MISSED_CALL, to, flow)
    }

    /// Queues a call to `to` that runs `flow` when answered, stored with `purpose`.
    pub fn enqueue_for(
        &self,
        purpose: &'static str,
        to: &str,
        flow: &str,
    ) -> Result<(), EnqueueError> {
        let callback = self
            .inner
            .next_callback
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let job = Job {
            callback,
            to: to.to_string(),
            flow: flow.to_string(),
            purpose,
            attempt: 1,
        };
        self.inner.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => EnqueueError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => EnqueueError::Stopped,
        })?;
        self.inner
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
    /// another node, or already over: a repeated status callback is not recorded twice).
    pub fn call_ended(&self, call_id: &str, status: &str, duration_seconds: Option<u32>) -> bool {
        let done = lock(&self.inner.live)
            .get_mut(call_id)
            .and_then(|c| c.done.take());
        match done {
            Some(done) => done.send((status.to_string(), duration_seconds)).is_ok(),
            None => false,
        }
    }
}

impl Inner {
    /// The store id of attempt `job.attempt` of `job.callback`.
    fn attempt_id(&self, job: &Job) -> String {
        format!("{}-{}-{}", self.instance, job.callback, job.attempt)
    }

    /// The result-store row of an attempt in `status`.
    fn attempt_write(
        &self,
        job: &Job,
        attempt_id: &str,
        placed_at_ms: i64,
        call_id: &Option<String>,
        status: &AttemptStatus,
        now: i64,
    ) -> Write {
        let (stored, outcome, provider_status, duration_seconds, reason) = match status {
            AttemptStatus::Placing => (CallAttemptStatus::Placing, None, None, None, None),
            AttemptStatus::Placed => (CallAttemptStatus::Placed, None, None, None, None),
            AttemptStatus::Refused(reason) => (
                CallAttemptStatus::Refused,
                Some(CallOutcome::Failed),
                None,
                None,
                Some(reason.clone()),
            ),
            AttemptStatus::Ended {
                status,
                outcome,
                duration_seconds,
            } => (
                CallAttemptStatus::Ended,
                Some(*outcome),
                Some(status.clone()),
                *duration_seconds,
                None,
            ),
            AttemptStatus::TimedOut => (
                CallAttemptStatus::TimedOut,
                Some(CallOutcome::TimedOut),
                None,
                None,
                Some("no final status within the call timeout".to_string()),
            ),
        };
        Write::CallAttempt(CallAttemptRecord {
            attempt_id: attempt_id.to_string(),
            provider: self.provider.name().to_string(),
            subscriber: job.to.clone(),
            flow_id: job.flow.clone(),
            purpose: job.purpose.to_string(),
            attempt: job.attempt,
            placed_at_ms,
            status: stored,
            outcome: outcome.map(|o| o.as_str().to_string()),
            provider_status,
            duration_seconds,
            provider_call_id: call_id.clone(),
            reason,
            updated_at_ms: now,
            ended_at_ms: stored.is_final().then_some(now),
        })
    }

    /// Writes attempt `attempt` of `number` to the result store (a failure is logged and
    /// counted: the call goes on), logs it, updates the in-memory list and then signals the
    /// change.
    async fn record(&self, job: &Job, call_id: Option<&str>, status: AttemptStatus) {
        let (number, flow, attempt) = (job.to.as_str(), job.flow.as_str(), job.attempt);
        let gateway = self.gateway.upgrade();
        let pseudonym = gateway
            .as_ref()
            .map(|g| g.pseudonym(number))
            .unwrap_or_else(|| "unknown".into());
        info!(subscriber = %pseudonym, flow, callback = job.callback, attempt, call = call_id.unwrap_or(""), status = ?status, "outbound call attempt");
        let now = now_ms();
        let attempt_id = self.attempt_id(job);
        let same = |a: &Attempt| a.attempt == attempt && a.callback == job.callback;
        // What an earlier write of this attempt already knew.
        let (placed_at_ms, known_call_id) = lock(&self.attempts)
            .get(number)
            .and_then(|list| list.iter().find(|a| same(a)))
            .map(|a| (a.placed_at_ms, a.call_id.clone()))
            .unwrap_or((now, None));
        let call_id = call_id.map(str::to_string).or(known_call_id);
        // Durable first, then visible: whoever sees the change can read it from the store.
        if let Some(gateway) = gateway {
            let write = self.attempt_write(job, &attempt_id, placed_at_ms, &call_id, &status, now);
            if let Err(e) = gateway.results.commit(vec![write]).await {
                warn!(error = %e, subscriber = %pseudonym, attempt, "call attempt not stored");
                telemetry::error("outbound_call_store");
            }
        }
        {
            let mut attempts = lock(&self.attempts);
            let list = attempts.entry(number.to_string()).or_default();
            match list.iter_mut().find(|a| same(a)) {
                Some(existing) => {
                    existing.call_id = call_id;
                    existing.status = status;
                }
                None => list.push(Attempt {
                    attempt_id,
                    callback: job.callback,
                    attempt,
                    flow: flow.to_string(),
                    call_id,
                    placed_at_ms,
                    status,
                }),
            }
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
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

fn build_provider(config: &OutboundConfig, public_url: &str) -> Result<Provider, StartError> {
    Ok(match &config.provider {
        OutboundProvider::AfricasTalking {
            api_url,
            username,
            api_key,
            from,
        } => {
            let api_key = std::env::var("BARAZA_AT_API_KEY").unwrap_or_else(|_| api_key.clone());
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
            let auth_token =
                std::env::var("BARAZA_TWILIO_AUTH_TOKEN").unwrap_or_else(|_| auth_token.clone());
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
            })
        }
    })
}

/// The dialer task: takes jobs in order, each when a concurrency slot is free.
async fn run(inner: Weak<Inner>, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let permits = Arc::clone(&strong.permits);
        drop(strong);
        let Ok(permit) = permits.acquire_owned().await else {
            return;
        };
        let Some(strong) = inner.upgrade() else {
            return;
        };
        tokio::spawn(attempt(strong, job, permit));
    }
}

/// One attempt: place the call, wait for its final status, free the slot, maybe retry.
async fn attempt(inner: Arc<Inner>, job: Job, permit: OwnedSemaphorePermit) {
    let Job {
        to, flow, attempt, ..
    } = &job;
    inner.record(&job, None, AttemptStatus::Placing).await;
    let placed = match tokio::time::timeout(API_TIMEOUT, inner.provider.place(to)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer from the provider API within {API_TIMEOUT:?}"
        )),
    };
    let outcome = match placed {
        Err(reason) => {
            warn!(flow, attempt, %reason, "outbound call not placed");
            telemetry::error("outbound_call_refused");
            inner
                .record(&job, None, AttemptStatus::Refused(reason))
                .await;
            CallOutcome::Failed
        }
        Ok(call_id) => {
            let (done, ended) = oneshot::channel();
            lock(&inner.live).insert(
                call_id.clone(),
                LiveCall {
                    flow: flow.clone(),
                    answered: false,
                    done: Some(done),
                },
            );
            if let Some(gateway) = inner.gateway.upgrade() {
                let ttl = inner.call_timeout + Duration::from_secs(3600);
                if let Err(e) = gateway
                    .sessions
                    .put_note(CALL_FLOW_NOTE, &call_id, flow.as_bytes(), ttl)
                    .await
                {
                    warn!(error = %e, call = %call_id, "call flow not noted; only this node knows it");
                    telemetry::error("outbound_call_note");
                }
            }
            inner
                .record(&job, Some(&call_id), AttemptStatus::Placed)
                .await;
            let status = tokio::time::timeout(inner.call_timeout, ended).await;
            let answered = lock(&inner.live)
                .remove(&call_id)
                .is_some_and(|c| c.answered);
            match status {
                Ok(Ok((status, duration_seconds))) => {
                    let outcome = CallOutcome::from_status(&status, answered);
                    inner
                        .record(
                            &job,
                            Some(&call_id),
                            AttemptStatus::Ended {
                                status,
                                outcome,
                                duration_seconds,
                            },
                        )
                        .await;
                    outcome
                }
                _ => {
                    warn!(call = %call_id, "no final status for an outbound call");
                    telemetry::error("outbound_call_timeout");
                    inner
                        .record(&job, Some(&call_id), AttemptStatus::TimedOut)
                        .await;
                    CallOutcome::TimedOut
                }
            }
        }
    };
    drop(permit);
    if outcome.retried_by(&inner.retry.on) && *attempt < inner.retry.max_attempts {
        let spacing = Duration::from_secs(inner.retry.spacing_seconds);
        let next = Job {
            attempt: attempt + 1,
            ..job.clone()
        };
        let queue = inner.queue.clone();
        drop(inner);
        tokio::spawn(async move {
            tokio::time::sleep(spacing).await;
            if queue.send(next).await.is_err() {
                telemetry::error("outbound_retry_dropped");
            }
        });
    }
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
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
