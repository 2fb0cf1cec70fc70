//! The durable result store: response starts, answers and status changes, each committed
//! durably before the screen that follows it is returned to the citizen.
//!
//! Two backends share one logical schema and one behaviour: embedded SQLite (the default, WAL
//! journal) and PostgreSQL (for several gateway nodes). Both are driven the same way:
//!
//! * **Group commit.** One writer (a dedicated thread for SQLite, a task for PostgreSQL) takes
//!   commit requests off a queue, drains everything already queued (up to
//!   [`MAX_WRITES_PER_BATCH`]), applies it in ONE transaction and then answers every waiter. So
//!   concurrent sessions share one flush (one fsync) instead of queueing behind each other's.
//!   The SQLite writer, finding several commits queued at once, waits a moment (300 µs) for
//!   the ones just behind them, like PostgreSQL's `commit_delay`.
//!   `commit` returns only after that transaction is committed.
//! * **Idempotency.** A `Start` for a known response id is ignored. Answers are keyed by
//!   `(response_id, result, step)`: a repeated delivery of a step overwrites its own row (so it
//!   is recorded once, and a changed value on the same step replaces the old one), an answer
//!   given again at a later step (the respondent went back) adds a row, and readers take the
//!   row with the highest step as the current value, keeping the history. The stored key
//!   leads with the response's start time (migration 5) so the answers of live sessions share
//!   the last pages of the index instead of one page per session; a response has one start
//!   time, so the key is unique exactly when `(response_id, result, step)` is.
//! * **Writes for unknown responses.** An `Answer` or `Status` whose response was never started
//!   is rejected on its own: logged (warn), counted (`baraza_result_writes_rejected_total`,
//!   [`ResultStore::rejected_writes`]) and skipped, while the rest of the batch, including the
//!   other writes of the same request, is committed and the request is answered `Ok`. Failing
//!   the request would only show the citizen an error for data that no retry can repair.
//! * **A failing batch** is retried one request at a time when the error may come from one
//!   request's data (constraint, trigger, size), so one poisoned request cannot fail the
//!   requests that happened to share its transaction. When the database itself is unavailable
//!   (lock timeout, disk, lost connection) every waiter gets the error at once instead.
//! * **Call attempts** (`Write::CallAttempt`) are kept apart from responses, in their own
//!   table: one row per outbound call attempt, upserted by its attempt id at each change
//!   (`scheduled`, `placing`, `placed`; never back to `scheduled`) and frozen once it has a
//!   final status, so a repeated status callback is recorded once. `Write::CallFinal` ends an
//!   attempt by its id or by (provider, provider call id), whichever node heard the status,
//!   and only if it was placing or placed; the write that ends it also stores the retry it
//!   asks for (`scheduled`, same node), so one retry exists however many nodes heard the end.
//!   [`ResultStore::call_attempts`] lists them for a number, a call id, or a node's
//!   unfinished ones.
//! * NUL characters in text are replaced by U+FFFD before storing (PostgreSQL cannot store
//!   them in `text`; SQLite does the same so both backends behave alike).
//!
//! It never keeps live session state (that is the session store's job), never formats
//! anything for a channel, and never pseudonymises in storage: the subscriber number is kept
//! as given, and [`export`] pseudonymises it on the way out unless raw numbers are asked for.

pub mod contacts;
pub mod export;
pub mod flow_versions;
mod postgres;
pub mod sms;
mod sqlite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

pub use contacts::{
    ConsentChange, ConsentRecord, ConsentRule, ConsentSource, ConsentStatus, ContactBatch,
    ContactRecord,
};
pub use export::{ExportError, export_csv};
pub use flow_versions::{PublishedFlow, StoredFlowVersion};
pub use sms::{
    InboundChange, InboundSms, InboundUpdate, QueuedSms, ReceiptRecord, SmsPartRecord, SmsPartRow,
    SmsRow, SmsState, SmsStateUpdate,
};

/// Commit requests that may wait in the queue before `commit` itself waits for room
/// (backpressure instead of unbounded memory).
const QUEUE_CAPACITY: usize = 8192;

/// The writer stops draining the queue into the current transaction once it holds this many
/// writes (a single larger request is still taken whole).
pub const MAX_WRITES_PER_BATCH: usize = 4096;

/// One change to the stored results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A response began (first step of a session).
    Start(ResponseStart),
    /// An answer was given.
    Answer(AnswerRecord),
    /// The response changed status and/or language.
    Status(StatusUpdate),
    /// An outbound SMS was accepted for sending (stored before it is submitted).
    SmsQueued(QueuedSms),
    /// An unfinished outbound SMS changed state.
    SmsState(SmsStateUpdate),
    /// What became of one part of an outbound SMS.
    SmsPart(SmsPartRecord),
    /// A delivery receipt arrived.
    Receipt(ReceiptRecord),
    /// An inbound SMS arrived (kept before its deliver_sm_resp).
    SmsInbound(InboundSms),
    /// A kept inbound SMS was handled, or its redelivery is expected (or came).
    SmsInboundUpdate(InboundUpdate),
    /// An outbound call attempt was placed or changed status (no response involved).
    CallAttempt(CallAttemptRecord),
    /// An outbound call attempt reached its final status (heard on any node), with the retry
    /// it schedules, both in the same transaction and only if the attempt was not final yet.
    CallFinal(CallFinal),
    /// A response that no session carries on, removed with its answers: its start was
    /// committed by a step whose session save then lost to a concurrent copy of the same
    /// request (that copy's own response is the one kept). Removing an absent response is not
    /// an error, so a repeated withdrawal changes nothing.
    Withdraw(Withdrawal),
}

/// See [`Write::Withdraw`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// The response to remove; never one a saved session refers to.
    pub response_id: String,
}

impl Write {
    /// The response this write belongs to (for SMS writes: the message, or for a receipt
    /// the SMSC id; `None` for a call attempt).
    pub fn response_id(&self) -> Option<&str> {
        match self {
            Write::Start(s) => Some(&s.response_id),
            Write::Answer(a) => Some(&a.response_id),
            Write::Status(s) => Some(&s.response_id),
            Write::Withdraw(w) => Some(&w.response_id),
            Write::SmsQueued(m) => Some(&m.message_id),
            Write::SmsState(u) => Some(&u.message_id),
            Write::SmsPart(p) => Some(&p.message_id),
            Write::Receipt(r) => Some(&r.smsc_id),
            Write::SmsInbound(m) => Some(&m.inbound_id),
            Write::SmsInboundUpdate(u) => Some(&u.inbound_id),
            Write::CallAttempt(_) | Write::CallFinal(_) => None,
        }
    }

    fn scrub_nul(&mut self) {
        fn scrub(text: &mut String) {
            if text.contains('\0') {
                *text = text.replace('\0', "\u{FFFD}");
            }
        }
        match self {
            Write::Start(s) => {
                for field in [
                    &mut s.response_id,
                    &mut s.flow_id,
                    &mut s.channel,
                    &mut s.provider,
                    &mut s.subscriber,
                    &mut s.language,
                ] {
                    scrub(field);
                }
            }
            Write::Answer(a) => {
                for field in [&mut a.response_id, &mut a.result, &mut a.value, &mut a.node] {
                    scrub(field);
                }
                if let Some(label) = &mut a.label {
                    scrub(label);
                }
            }
            Write::Status(s) => {
                scrub(&mut s.response_id);
                if let Some(language) = &mut s.language {
                    scrub(language);
                }
            }
            Write::Withdraw(w) => scrub(&mut w.response_id),
            Write::SmsQueued(m) => {
                for field in [
                    &mut m.message_id,
                    &mut m.node,
                    &mut m.operator,
                    &mut m.recipient,
                    &mut m.sender,
                    &mut m.body,
                    &mut m.purpose,
                ] {
                    scrub(field);
                }
            }
            Write::SmsInbound(m) => {
                for field in [
                    &mut m.inbound_id,
                    &mut m.node,
                    &mut m.operator,
                    &mut m.sender,
                    &mut m.recipient,
                    &mut m.body,
                ] {
                    scrub(field);
                }
            }
            Write::SmsInboundUpdate(u) => scrub(&mut u.inbound_id),
            Write::SmsState(u) => {
                scrub(&mut u.message_id);
                if let Some(detail) = &mut u.detail {
                    scrub(detail);
                }
            }
            Write::SmsPart(p) => {
                scrub(&mut p.message_id);
                for field in [&mut p.smsc_id, &mut p.detail].into_iter().flatten() {
                    scrub(field);
                }
            }
            Write::Receipt(r) => {
                for field in [&mut r.operator, &mut r.smsc_id, &mut r.state] {
                    scrub(field);
                }
                if let Some(error) = &mut r.error {
                    scrub(error);
                }
            }
            Write::CallAttempt(c) => {
                for field in [
                    &mut c.attempt_id,
                    &mut c.provider,
                    &mut c.subscriber,
                    &mut c.flow_id,
                    &mut c.purpose,
                ] {
                    scrub(field);
                }
                for field in [
                    &mut c.outcome,
                    &mut c.provider_status,
                    &mut c.provider_call_id,
                    &mut c.reason,
                    &mut c.node,
                ]
                .into_iter()
                .flatten()
                {
                    scrub(field);
                }
            }
            Write::CallFinal(f) => {
                match &mut f.key {
                    CallKey::Attempt(id) => scrub(id),
                    CallKey::ProviderCall { provider, call_id } => {
                        scrub(provider);
                        scrub(call_id);
                    }
                }
                scrub(&mut f.outcome);
                for field in [&mut f.provider_status, &mut f.reason]
                    .into_iter()
                    .flatten()
                {
                    scrub(field);
                }
            }
        }
    }
}

/// A new response: who answers which flow version over which channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseStart {
    /// Unique per session (the engine's response id); the key of everything else.
    pub response_id: String,
    /// The flow answered, so results can be exported per flow.
    pub flow_id: String,
    /// The flow version the session runs on (sessions finish on the version they started).
    pub flow_version: u32,
    /// `ussd`, `sms` or `voice`, for per-channel analysis.
    pub channel: String,
    /// The aggregator or operator that carried the session, for per-provider analysis.
    pub provider: String,
    /// The phone number as received; pseudonymised only when exported.
    pub subscriber: String,
    /// The language the session started in.
    pub language: String,
    /// When the session started, ms since the Unix epoch.
    pub started_at_ms: i64,
}

/// One answer, as the engine saved it (mirrors `engine::SavedAnswer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRecord {
    /// The response it belongs to.
    pub response_id: String,
    /// The result name in the flow (the export column).
    pub result: String,
    /// The stored value (a choice key, number, text...).
    pub value: String,
    /// For menus, yes/no and language choices: the chosen label in the flow's default language.
    pub label: Option<String>,
    /// The node that asked, for drop-off analysis.
    pub node: String,
    /// The step that produced it; with `response_id` and `result` it makes storage idempotent.
    pub step: u32,
    /// When it was answered, ms since the Unix epoch.
    pub answered_at_ms: i64,
}

/// A change of status (and possibly language) of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// The response it belongs to.
    pub response_id: String,
    /// The new status; any status but `Active` also sets the end time.
    pub status: ResponseStatus,
    /// The session's language now, if known; `None` keeps the stored one.
    pub language: Option<String>,
    /// When it changed, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Where a response stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResponseStatus {
    /// In progress (also after a dropped session was resumed).
    Active,
    /// Reached the end of the flow.
    Completed,
    /// The session was lost (network, hang-up) before the end; may be resumed.
    Dropped,
    /// The respondent stopped answering.
    TimedOut,
    /// The respondent asked not to be surveyed.
    OptedOut,
    /// The gateway could not continue the session.
    Failed,
}

impl ResponseStatus {
    /// Every status, in declaration order.
    pub const ALL: [ResponseStatus; 6] = [
        ResponseStatus::Active,
        ResponseStatus::Completed,
        ResponseStatus::Dropped,
        ResponseStatus::TimedOut,
        ResponseStatus::OptedOut,
        ResponseStatus::Failed,
    ];

    /// The stored and exported name (`timed_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseStatus::Active => "active",
            ResponseStatus::Completed => "completed",
            ResponseStatus::Dropped => "dropped",
            ResponseStatus::TimedOut => "timed_out",
            ResponseStatus::OptedOut => "opted_out",
            ResponseStatus::Failed => "failed",
        }
    }

    /// The status named `name` (as produced by [`ResponseStatus::as_str`]).
    pub fn parse(name: &str) -> Option<ResponseStatus> {
        ResponseStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the response has (for now) ended; only `Active` has not.
    pub fn is_ended(self) -> bool {
        self != ResponseStatus::Active
    }
}

impl std::fmt::Display for ResponseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt to place an outbound call, as written and as read back. Written at each change
/// (placing, placed, final status) under the same `attempt_id`; once `ended_at_ms` is set the
/// stored row no longer changes, so a repeated final status is recorded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallAttemptRecord {
    /// Unique per attempt and stable across its writes (the dialer's id for it).
    pub attempt_id: String,
    /// The call API used (`africastalking`, `twilio`), for per-provider analysis and costs.
    pub provider: String,
    /// The number called, as given; pseudonymise before showing it anywhere.
    pub subscriber: String,
    /// The flow the call runs when answered.
    pub flow_id: String,
    /// Why the call was placed (`missed_call`; campaigns later).
    pub purpose: String,
    /// 1 for the first call of a callback, then 2, 3... for its retries.
    pub attempt: u32,
    /// When placing began, ms since the Unix epoch.
    pub placed_at_ms: i64,
    /// Where the attempt stands.
    pub status: CallAttemptStatus,
    /// How it ended, as far as retries care (`busy`, `no_answer`, ...); `None` until it ends.
    pub outcome: Option<String>,
    /// The provider's final status word as it sent it.
    pub provider_status: Option<String>,
    /// Length of the call in seconds, when the provider said.
    pub duration_seconds: Option<u32>,
    /// The provider's id of the call, once it gave one (matches the voice callbacks).
    pub provider_call_id: Option<String>,
    /// Why the provider refused the request (no secrets), or why no status came.
    pub reason: Option<String>,
    /// When this write happened, ms since the Unix epoch.
    pub updated_at_ms: i64,
    /// When the attempt reached a final status; `None` while it may still change.
    pub ended_at_ms: Option<i64>,
    /// The gateway node that places (placed) the attempt: after a restart a node recovers
    /// only its own unfinished attempts. `None` for rows written before version 4.
    pub node: Option<String>,
    /// When a `scheduled` attempt is to be placed, ms since the Unix epoch.
    pub due_at_ms: Option<i64>,
}

/// Which attempt a final status is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallKey {
    /// The attempt's own id (the placing node knows it).
    Attempt(String),
    /// The provider and its call id (any node that hears the status callback knows them).
    ProviderCall { provider: String, call_id: String },
}

/// The final status of a call attempt. Applied only to an attempt that is placing or placed
/// (never to a scheduled or already final one), so of two nodes recording the end of one
/// call exactly one changes the row, and only that one schedules the retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFinal {
    /// The attempt.
    pub key: CallKey,
    /// `Ended`, `Refused` or `TimedOut` (a final status).
    pub status: CallAttemptStatus,
    /// How it ended, as far as retries care (`busy`, `no_answer`, ...).
    pub outcome: String,
    /// The provider's final status word as it sent it.
    pub provider_status: Option<String>,
    /// Length of the call in seconds, when the provider said.
    pub duration_seconds: Option<u32>,
    /// Why the provider refused the request, or why no status came.
    pub reason: Option<String>,
    /// When the status was heard, ms since the Unix epoch.
    pub at_ms: i64,
    /// The next attempt to store `scheduled` (same node, id [`next_attempt_id`]) when this
    /// write is the one that ends the attempt and the attempt number is below the cap.
    pub retry: Option<CallRetry>,
}

/// The retry a final status asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRetry {
    /// No retry once the ended attempt's number reaches this.
    pub max_attempts: u32,
    /// When the retry is due, ms since the Unix epoch.
    pub due_at_ms: i64,
}

/// The id of the attempt after `attempt` of the callback whose attempt `attempt_id` is:
/// attempt ids end with `-<attempt number>`, which is replaced (the SQL of both dialects
/// computes the same from the row).
pub fn next_attempt_id(attempt_id: &str, attempt: u32) -> String {
    let number = attempt.to_string();
    let stem = attempt_id
        .strip_suffix(number.as_str())
        .unwrap_or(attempt_id);
    format!("{stem}{}", u64::from(attempt) + 1)
}

/// Where a call attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallAttemptStatus {
    /// Stored before it is placed: waiting in the queue or for its retry time.
    Scheduled,
    /// The request to the provider is under way.
    Placing,
    /// The provider accepted the call; no final status yet.
    Placed,
    /// The provider refused the request or could not be reached.
    Refused,
    /// The provider's final status arrived.
    Ended,
    /// No final status came within the call timeout.
    TimedOut,
}

impl CallAttemptStatus {
    /// Every status, in declaration order.
    pub const ALL: [CallAttemptStatus; 6] = [
        CallAttemptStatus::Scheduled,
        CallAttemptStatus::Placing,
        CallAttemptStatus::Placed,
        CallAttemptStatus::Refused,
        CallAttemptStatus::Ended,
        CallAttemptStatus::TimedOut,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallAttemptStatus::Scheduled => "scheduled",
            CallAttemptStatus::Placing => "placing",
            CallAttemptStatus::Placed => "placed",
            CallAttemptStatus::Refused => "refused",
            CallAttemptStatus::Ended => "ended",
            CallAttemptStatus::TimedOut => "timed_out",
        }
    }

    /// The status named `name` (as produced by [`CallAttemptStatus::as_str`]).
    pub fn parse(name: &str) -> Option<CallAttemptStatus> {
        CallAttemptStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    /// Whether the attempt is over (nothing more will change it).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            CallAttemptStatus::Scheduled | CallAttemptStatus::Placing | CallAttemptStatus::Placed
        )
    }
}

/// Which call attempts to read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAttemptQuery {
    /// Every attempt to call this number, oldest first.
    Subscriber(String),
    /// The attempt with this provider call id (or this attempt id).
    CallId(String),
    /// The attempts this node has not finished (scheduled, placing or placed), oldest first:
    /// what it recovers after a restart.
    Unfinished(String),
    /// The attempts with these attempt ids (one read for several).
    AttemptIds(Vec<String>),
    /// The attempts of this provider with these provider call ids (one read for every call
    /// a node follows).
    ProviderCalls {
        provider: String,
        call_ids: Vec<String>,
    },
}

/// A stored call attempt status word, checked.
pub(crate) fn stored_call_status(
    attempt_id: &str,
    stored: &str,
) -> Result<CallAttemptStatus, ResultStoreError> {
    CallAttemptStatus::parse(stored).ok_or_else(|| {
        ResultStoreError::Corrupt(format!(
            "call attempt {attempt_id} has unknown status `{stored}`"
        ))
    })
}

/// A stored whole number that must fit a `u32` (attempt number, duration), checked.
pub(crate) fn stored_u32(
    attempt_id: &str,
    what: &str,
    stored: i64,
) -> Result<u32, ResultStoreError> {
    u32::try_from(stored).map_err(|_| {
        ResultStoreError::Corrupt(format!("call attempt {attempt_id} has {what} {stored}"))
    })
}

/// One stored response with its current answers, as read back for export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRow {
    /// See [`ResponseStart::response_id`].
    pub response_id: String,
    /// See [`ResponseStart::flow_id`].
    pub flow_id: String,
    /// See [`ResponseStart::flow_version`].
    pub flow_version: u32,
    /// See [`ResponseStart::channel`].
    pub channel: String,
    /// See [`ResponseStart::provider`].
    pub provider: String,
    /// The raw phone number (pseudonymise before showing it anywhere).
    pub subscriber: String,
    /// The latest known language of the session.
    pub language: String,
    /// The latest status.
    pub status: ResponseStatus,
    /// When the response started, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// The latest activity (start, answer or status change), ms since the Unix epoch.
    pub updated_at_ms: i64,
    /// When it ended (any status but active); `None` while active.
    pub ended_at_ms: Option<i64>,
    /// Result name -> (value, label) of the latest answer (highest step) to that result.
    pub answers: BTreeMap<String, (String, Option<String>)>,
}

/// Why the result store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultStoreError {
    /// The folder of the SQLite file could not be created.
    #[error("cannot create the folder {path}: {message}")]
    CreateDir { path: PathBuf, message: String },
    /// An SQLite error (message of the driver).
    #[error("sqlite: {0}")]
    Sqlite(String),
    /// A PostgreSQL error (server message and SQLSTATE when the server sent one).
    #[error("postgres: {0}")]
    Postgres(String),
    /// The configured schema name is not a plain identifier.
    #[error(
        "invalid postgres schema name `{0}`: use 1 to 63 ASCII letters, digits or underscores, not starting with a digit"
    )]
    InvalidSchema(String),
    /// A migration could not be applied (nothing of it was kept).
    #[error("migration {version} ({name}) failed: {message}")]
    Migration {
        version: i64,
        name: &'static str,
        message: String,
    },
    /// The database was migrated by a newer build; this build refuses to write to it.
    #[error(
        "the database is at schema version {found}, newer than this build knows ({known}); run a newer baraza"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// Stored data that this build cannot read back (e.g. an unknown status name).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A flow version was published before with other content: a changed flow must get a
    /// new version number so that sessions pinned to the old one keep it.
    #[error(
        "flow `{flow_id}` version {version} is already published with other content: raise `version` so sessions under way keep the old one"
    )]
    FlowVersionChanged { flow_id: String, version: u32 },
    /// `flush_and_close` was called; nothing more is accepted.
    #[error("the result store is closed")]
    Closed,
    /// The writer ended without answering (it panicked or its runtime shut down).
    #[error("the result store writer stopped unexpectedly")]
    WriterStopped,
}

/// A schema migration: applied once, in version order, recorded in `schema_migrations`.
pub(crate) struct Migration {
    /// Increasing version number; the same numbers exist for both dialects.
    pub version: i64,
    /// Short description, for error messages and the migrations table.
    pub name: &'static str,
    /// The statements, run in one transaction with the version record.
    pub sql: &'static str,
}

/// The migrations table, identical in both dialects.
pub(crate) const MIGRATIONS_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version BIGINT NOT NULL PRIMARY KEY, \
     name TEXT NOT NULL, \
     applied_at_ms BIGINT NOT NULL)";

/// The migrations of one dialect, from `migrations/<dialect>/`: one list of versions and
/// names for both dialects, so they cannot drift apart.
macro_rules! migrations {
    ($dialect:literal) => {
        &[
            Migration {
                version: 1,
                name: "init",
                sql: include_str!(concat!("migrations/", $dialect, "/0001_init.sql")),
            },
            Migration {
                version: 2,
                name: "sms_outbox",
                sql: include_str!(concat!("migrations/", $dialect, "/0002_sms_outbox.sql")),
            },
            Migration {
                version: 3,
                name: "call_attempts",
                sql: include_str!(concat!("migrations/", $dialect, "/0003_call_attempts.sql")),
            },
            Migration {
                version: 4,
                name: "call_schedule",
                sql: include_str!(concat!("migrations/", $dialect, "/0004_call_schedule.sql")),
            },
            Migration {
                version: 5,
                name: "answers_by_start",
                sql: include_str!(concat!(
                    "migrations/",
                    $dialect,
                    "/0005_answers_by_start.sql"
                )),
            },
            Migration {
                version: 6,
                name: "flow_versions",
                sql: include_str!(concat!("migrations/", $dialect, "/0006_flow_versions.sql")),
            },
            Migration {
                version: 7,
                name: "sms_inbound",
                sql: include_str!(concat!("migrations/", $dialect, "/0007_sms_inbound.sql")),
            },
            Migration {
                version: 8,
                name: "contacts",
                sql: include_str!(concat!("migrations/", $dialect, "/0008_contacts.sql")),
            },
        ]
    };
}

pub(crate) const SQLITE_MIGRATIONS: &[Migration] = migrations!("sqlite");

pub(crate) const POSTGRES_MIGRATIONS: &[Migration] = migrations!("postgres");

/// The migrations of `all` not yet in `applied`, or an error if the database is newer.
pub(crate) fn pending_migrations<'a>(
    all: &'a [Migration],
    applied: &[i64],
) -> Result<Vec<&'a Migration>, ResultStoreError> {
    let known = all.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(&found) = applied.iter().max()
        && found > known
    {
        return Err(ResultStoreError::SchemaTooNew { found, known });
    }
    Ok(all
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect())
}

/// How a waiter learns the outcome of its commit.
type Reply = oneshot::Sender<Result<(), ResultStoreError>>;

/// What the writer is asked to do.
pub(crate) enum Request {
    /// Commit these writes durably, then answer.
    Commit(PendingCommit),
    /// Check the database answers (after everything queued before it is committed).
    Ping(Reply),
    /// Commit everything queued, accept nothing more, close the database.
    Close(Reply),
}

/// One caller's writes and where to send the outcome.
pub(crate) struct PendingCommit {
    /// The writes, applied in order.
    pub writes: Vec<Write>,
    /// The waiting caller (it may have given up: a failed send is ignored): once committed,
    /// the positions of its writes that changed nothing (see [`ResultStore::commit_checked`]).
    pub reply: oneshot::Sender<Result<Vec<usize>, ResultStoreError>>,
}

/// A request that is not a commit, handled once the commits before it are done.
pub(crate) enum Control {
    Ping(Reply),
    Close(Reply),
}

/// What the writer took off the queue in one go.
pub(crate) struct Batch {
    /// Commits to apply in one transaction, in queue order.
    pub commits: Vec<PendingCommit>,
    /// A ping or close found behind them; the drain stops there to keep queue order.
    pub control: Option<Control>,
    /// Writes in `commits`, for the cap.
    writes: usize,
}

/// Takes `first` and whatever is already queued behind it (up to the write cap or the first
/// non-commit request) without waiting for more.
pub(crate) fn gather(first: Request, queue: &mut mpsc::Receiver<Request>) -> Batch {
    let mut batch = Batch {
        commits: Vec::new(),
        control: None,
        writes: 0,
    };
    batch.take(first);
    batch.take_queued(queue);
    batch
}

impl Batch {
    /// Whether the transaction can take more: no ping or close reached, room under the cap.
    pub(crate) fn is_open(&self) -> bool {
        self.control.is_none() && self.writes < MAX_WRITES_PER_BATCH
    }

    fn take(&mut self, request: Request) {
        match request {
            Request::Commit(commit) => {
                self.writes += commit.writes.len();
                self.commits.push(commit);
            }
            Request::Ping(reply) => self.control = Some(Control::Ping(reply)),
            Request::Close(reply) => self.control = Some(Control::Close(reply)),
        }
    }

    /// Adds what is queued now, while the batch is open; never waits.
    pub(crate) fn take_queued(&mut self, queue: &mut mpsc::Receiver<Request>) {
        while self.is_open() {
            match queue.try_recv() {
                Ok(request) => self.take(request),
                Err(_) => break,
            }
        }
    }
}

/// Why applying a batch failed, and whether its requests are worth retrying one by one.
pub(crate) struct Failure {
    /// What every waiter of the batch is told if it is not retried.
    pub error: ResultStoreError,
    /// True when the error may come from one request's data (a constraint, a trigger, a
    /// value too big); false when the database itself is unavailable (lock timeout, disk,
    /// lost connection), where retrying each request alone would only multiply the wait.
    pub isolate: bool,
}

/// A write that changed nothing: its response was never started, or (SMS) its message is
/// unknown, already final, or already claimed by another sender.
#[derive(Debug)]
pub(crate) struct Rejection {
    /// Which commit of the batch, and which of its writes.
    pub position: (usize, usize),
    /// The unknown response id (for SMS writes: the message id).
    pub response_id: String,
    /// `answer`, `status`, `sms_state` or `sms_part`.
    pub kind: &'static str,
}

impl Rejection {
    /// The rejection of the write at `position` (commit, write) that changed no row, if such
    /// a write can be rejected at all.
    pub(crate) fn unknown_response(position: (usize, usize), write: &Write) -> Option<Rejection> {
        let (kind, response_id) = match write {
            Write::Start(_)
            | Write::Withdraw(_)
            | Write::SmsQueued(_)
            | Write::Receipt(_)
            | Write::CallAttempt(_)
            | Write::CallFinal(_) => {
                return None;
            }
            Write::Answer(a) => ("answer", &a.response_id),
            Write::Status(s) => ("status", &s.response_id),
            // A state change of a message that is unknown or already final, or a part of an
            // unknown message: skipped like an answer to an unknown response.
            Write::SmsState(u) => ("sms_state", &u.message_id),
            Write::SmsPart(p) => ("sms_part", &p.message_id),
            Write::SmsInboundUpdate(u) => ("sms_inbound", &u.inbound_id),
            // A message kept already (a provider posting its callback again).
            Write::SmsInbound(m) => ("sms_inbound_repeat", &m.inbound_id),
        };
        Some(Rejection {
            position,
            response_id: response_id.clone(),
            kind,
        })
    }
}

/// A stored flow version, checked (both dialects keep it as a 64-bit integer).
pub(crate) fn stored_flow_version(response_id: &str, stored: i64) -> Result<u32, ResultStoreError> {
    u32::try_from(stored).map_err(|_| {
        ResultStoreError::Corrupt(format!("response {response_id} has flow version {stored}"))
    })
}

/// A stored status word, checked.
pub(crate) fn stored_status(
    response_id: &str,
    stored: &str,
) -> Result<ResponseStatus, ResultStoreError> {
    ResponseStatus::parse(stored).ok_or_else(|| {
        ResultStoreError::Corrupt(format!(
            "response {response_id} has unknown status `{stored}`"
        ))
    })
}

/// Counters shared between the store handle and its writer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Transactions committed by the writer.
    batches: AtomicU64,
    /// Writes skipped because their response was unknown.
    rejected: AtomicU64,
}

/// Answers the waiters of one transaction attempt and records what it did.
pub(crate) fn settle(
    counters: &Counters,
    backend: &'static str,
    commits: Vec<PendingCommit>,
    outcome: Result<Vec<Rejection>, ResultStoreError>,
    started: Instant,
) {
    match outcome {
        Ok(rejections) => {
            counters.batches.fetch_add(1, Ordering::SeqCst);
            metrics::counter!("baraza_result_batches_total", "backend" => backend).increment(1);
            metrics::histogram!("baraza_result_batch_requests", "backend" => backend)
                .record(commits.len() as f64);
            metrics::histogram!("baraza_result_commit_seconds", "backend" => backend)
                .record(started.elapsed().as_secs_f64());
            let mut skipped: Vec<Vec<usize>> = vec![Vec::new(); commits.len()];
            for rejection in &rejections {
                counters.rejected.fetch_add(1, Ordering::SeqCst);
                metrics::counter!("baraza_result_writes_rejected_total", "kind" => rejection.kind)
                    .increment(1);
                if let Some(list) = skipped.get_mut(rejection.position.0) {
                    list.push(rejection.position.1);
                }
                if rejection.kind == "sms_inbound_repeat" {
                    tracing::info!(
                        inbound_id = %rejection.response_id,
                        "inbound SMS kept already: the copy is not kept again"
                    );
                } else if rejection.kind == "sms_state" {
                    // Expected when two senders race for one message: the loser stops here.
                    tracing::info!(
                        message_id = %rejection.response_id,
                        "SMS state change skipped: the message is unknown, final, or already being sent"
                    );
                } else {
                    warn!(
                        response_id = %rejection.response_id,
                        kind = rejection.kind,
                        "result write rejected: no response with this id was started; the rest of the batch is kept"
                    );
                }
            }
            for (commit, skipped) in commits.into_iter().zip(skipped) {
                let _ = commit.reply.send(Ok(skipped));
            }
        }
        Err(error) => {
            metrics::counter!("baraza_result_batch_failures_total", "backend" => backend)
                .increment(1);
            warn!(%error, requests = commits.len(), backend, "result commit failed");
            for commit in commits {
                let _ = commit.reply.send(Err(error.clone()));
            }
        }
    }
}

/// How long after a refused-but-kept inbound SMS an identical one counts as its redelivery.
pub const REDELIVERY_WINDOW_MS: i64 = 10 * 60 * 1000;

/// Which kept inbound SMS to read.
pub(crate) enum InboundQuery {
    /// A node's messages not handled yet, oldest first.
    Unhandled(String),
    /// A message with this operator, sender, recipient and body whose redelivery is expected.
    Redelivery(InboundSms),
}

/// Where `responses()` reads from: its own connection, so a large export never holds up
/// the writer.
enum ReadSource {
    Sqlite(PathBuf),
    Postgres(Box<postgres::Target>),
}

/// Everything the clones of one store share.
struct Shared {
    /// Requests to the single writer.
    queue: mpsc::Sender<Request>,
    counters: Arc<Counters>,
    /// Commit requests handed to the writer and not yet answered.
    pending: AtomicUsize,
    /// Becomes `true` when the writer has finished (after `flush_and_close` or a crash).
    stopped: watch::Receiver<bool>,
    reads: ReadSource,
}

/// Handle to the result store; clones share the same writer.
#[derive(Clone)]
pub struct ResultStore {
    shared: Arc<Shared>,
}

/// Decrements the pending count however the waiting ends (answer, error or cancellation).
struct PendingGuard<'a>(&'a AtomicUsize);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ResultStore {
    /// Opens (creating if needed, with parent folders) the SQLite file at `path`, switches it
    /// to WAL with `synchronous=FULL`, applies migrations and starts the writer thread.
    ///
    /// `FULL` rather than `NORMAL`: in WAL mode `NORMAL` skips the fsync at each commit, so a
    /// power loss can undo commits that were already acknowledged, which breaks the promise
    /// that an answer is durable before the next screen. Group commit pays one fsync per
    /// batch, not per answer, which keeps `FULL` affordable.
    pub async fn open_sqlite(path: &Path) -> Result<ResultStore, ResultStoreError> {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (stopped_tx, stopped) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let ready = sqlite::start_writer(
            path.to_path_buf(),
            receiver,
            Arc::clone(&counters),
            stopped_tx,
        )?;
        ready.await.map_err(|_| ResultStoreError::WriterStopped)??;
        Ok(ResultStore::from_parts(
            queue,
            counters,
            stopped,
            ReadSource::Sqlite(path.to_path_buf()),
        ))
    }

    /// Connects to PostgreSQL at `url` (TLS as its `sslmode` says, trusting the Mozilla
    /// roots), creates `schema` if given and missing, applies migrations there and starts the
    /// writer task (which reconnects if the connection drops). Without a schema the server's
    /// default `search_path` (normally `public`) is used.
    pub async fn open_postgres(
        url: &str,
        schema: Option<&str>,
    ) -> Result<ResultStore, ResultStoreError> {
        Self::open_postgres_with_tls(url, schema, &crate::tls::TlsMaterial::default()).await
    }

    /// [`ResultStore::open_postgres`], TLS checked against `tls` (its CA file, else the
    /// Mozilla roots) and presenting `tls`'s client certificate, if any.
    pub async fn open_postgres_with_tls(
        url: &str,
        schema: Option<&str>,
        tls: &crate::tls::TlsMaterial,
    ) -> Result<ResultStore, ResultStoreError> {
        let target = postgres::Target::new(url, schema, tls)?;
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (stopped_tx, stopped) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        postgres::start_writer(target.clone(), receiver, Arc::clone(&counters), stopped_tx).await?;
        Ok(ResultStore::from_parts(
            queue,
            counters,
            stopped,
            ReadSource::Postgres(Box::new(target)),
        ))
    }

    fn from_parts(
        queue: mpsc::Sender<Request>,
        counters: Arc<Counters>,
        stopped: watch::Receiver<bool>,
        reads: ReadSource,
    ) -> ResultStore {
        ResultStore {
            shared: Arc::new(Shared {
                queue,
                counters,
                pending: AtomicUsize::new(0),
                stopped,
                reads,
            }),
        }
    }

    /// Commits `writes` (in order) and returns once they are durably committed, sharing the
    /// transaction with whatever other sessions committed at the same moment. See the module
    /// documentation for idempotency and for writes whose response is unknown.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), ResultStoreError> {
        self.commit_checked(writes).await.map(|_| ())
    }

    /// [`ResultStore::commit`], answering with the positions (in `writes`) of the writes
    /// that changed nothing: an answer or status of an unknown response, or an SMS state
    /// change the store's guard refused. The guard is how two senders of one message learn
    /// which of them may submit it: `queued -> sending` applies only to a `queued` message,
    /// so of two claims in any order exactly one changes the row.
    pub async fn commit_checked(
        &self,
        mut writes: Vec<Write>,
    ) -> Result<Vec<usize>, ResultStoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        for write in &mut writes {
            write.scrub_nul();
        }
        let (reply, outcome) = oneshot::channel();
        self.shared
            .queue
            .send(Request::Commit(PendingCommit { writes, reply }))
            .await
            .map_err(|_| ResultStoreError::Closed)?;
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        let _guard = PendingGuard(&self.shared.pending);
        outcome
            .await
            .unwrap_or(Err(ResultStoreError::WriterStopped))
    }

    /// Checks that the writer is running and the database answers.
    pub async fn ping(&self) -> Result<(), ResultStoreError> {
        let (reply, outcome) = oneshot::channel();
        self.shared
            .queue
            .send(Request::Ping(reply))
            .await
            .map_err(|_| ResultStoreError::Closed)?;
        outcome
            .await
            .unwrap_or(Err(ResultStoreError::WriterStopped))
    }

    /// Commits everything queued, stops accepting commits and closes the database; returns
    /// when the writer has finished. Calling it again (from any clone) just waits for that.
    pub async fn flush_and_close(&self) -> Result<(), ResultStoreError> {
        let (reply, outcome) = oneshot::channel();
        let result = match self.shared.queue.send(Request::Close(reply)).await {
            Ok(()) => outcome
                .await
                .unwrap_or(Err(ResultStoreError::WriterStopped)),
            // Already closing or closed: just wait for the writer to finish.
            Err(_) => Ok(()),
        };
        let mut stopped = self.shared.stopped.clone();
        // The writer sets the flag when it finishes cleanly; dropping it unset means it died.
        match stopped.wait_for(|done| *done).await {
            Ok(_) => result,
            Err(_) => Err(ResultStoreError::WriterStopped),
        }
    }

    /// Every response of `flow_id` with its current answers, oldest first. Reads on a
    /// connection of its own (a consistent snapshot), never through the writer.
    pub async fn responses(&self, flow_id: &str) -> Result<Vec<ResponseRow>, ResultStoreError> {
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                let flow_id = flow_id.to_string();
                tokio::task::spawn_blocking(move || sqlite::read_responses(&path, &flow_id))
                    .await
                    .map_err(|e| ResultStoreError::Sqlite(format!("read task failed: {e}")))?
            }
            ReadSource::Postgres(target) => postgres::read_responses(target, flow_id).await,
        }
    }

    /// The inbound SMS kept on `node` whose step has not run yet, oldest first (a node that
    /// stopped after acknowledging them handles them at its next start).
    pub async fn sms_inbound_unhandled(
        &self,
        node: &str,
    ) -> Result<Vec<InboundSms>, ResultStoreError> {
        self.read_inbound(InboundQuery::Unhandled(node.to_string()))
            .await
    }

    /// A kept inbound SMS whose redelivery is expected (the SMSC was told ESME_RX_T_APPN
    /// after it was kept) carrying exactly this, received within [`REDELIVERY_WINDOW_MS`]
    /// before it: the copy that now came is that redelivery. (An SMSC that gave up never
    /// redelivers; the window keeps the flag from swallowing the citizen's own repeat later.)
    pub async fn sms_inbound_redelivered(
        &self,
        message: &InboundSms,
    ) -> Result<Option<String>, ResultStoreError> {
        self.read_inbound(InboundQuery::Redelivery(message.clone()))
            .await
            .map(|rows| rows.into_iter().next().map(|m| m.inbound_id))
    }

    async fn read_inbound(&self, query: InboundQuery) -> Result<Vec<InboundSms>, ResultStoreError> {
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || sqlite::read_inbound(&path, &query))
                    .await
                    .map_err(|e| ResultStoreError::Sqlite(format!("read task failed: {e}")))?
            }
            ReadSource::Postgres(target) => postgres::read_inbound(target, &query).await,
        }
    }

    /// One outbound SMS with its parts and receipts, or `None` if no such message was stored.
    pub async fn sms_message(&self, message_id: &str) -> Result<Option<SmsRow>, ResultStoreError> {
        let ids = vec![message_id.to_string()];
        Ok(self
            .sms_rows(sms::SmsQuery::Ids(ids))
            .await?
            .into_iter()
            .next())
    }

    /// The messages `node` accepted and has not finished (`queued` or `sending`), oldest
    /// first: what the node must recover after a restart.
    pub async fn sms_unfinished(&self, node: &str) -> Result<Vec<SmsRow>, ResultStoreError> {
        self.sms_rows(sms::SmsQuery::Unfinished(node.to_string()))
            .await
    }

    async fn sms_rows(&self, query: sms::SmsQuery) -> Result<Vec<SmsRow>, ResultStoreError> {
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || sqlite::read_sms(&path, &query))
                    .await
                    .map_err(|e| ResultStoreError::Sqlite(format!("read task failed: {e}")))?
            }
            ReadSource::Postgres(target) => postgres::read_sms(target, &query).await,
        }
    }

    /// The call attempts `query` names, oldest first. Reads on a connection of its own.
    pub async fn call_attempts(
        &self,
        query: CallAttemptQuery,
    ) -> Result<Vec<CallAttemptRecord>, ResultStoreError> {
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || sqlite::read_call_attempts(&path, &query))
                    .await
                    .map_err(|e| ResultStoreError::Sqlite(format!("read task failed: {e}")))?
            }
            ReadSource::Postgres(target) => postgres::read_call_attempts(target, &query).await,
        }
    }

    /// Publishes flow versions in one transaction on a connection of its own: a new
    /// (id, version) is stored, one stored with the same hash changes nothing, one stored
    /// with another hash refuses the whole publication ([`ResultStoreError::FlowVersionChanged`]).
    /// Every flow published is no longer retired (a reload that has it again brings it back).
    pub async fn publish_flow_versions(
        &self,
        versions: &[PublishedFlow],
    ) -> Result<(), ResultStoreError> {
        if versions.is_empty() {
            return Ok(());
        }
        // Like every text stored (see the module documentation): no NUL characters.
        let versions: Vec<PublishedFlow> = versions
            .iter()
            .cloned()
            .map(|mut v| {
                if v.source.contains('\0') {
                    v.source = v.source.replace('\0', "\u{FFFD}");
                }
                v
            })
            .collect();
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || sqlite::publish_flow_versions(&path, &versions))
                    .await
                    .map_err(|e| ResultStoreError::Sqlite(format!("publish task failed: {e}")))?
            }
            ReadSource::Postgres(target) => {
                postgres::publish_flow_versions(target, &versions).await
            }
        }
    }

    /// Marks every version of the flows `flow_ids` retired at `at_ms` (sessions pinned to
    /// them finish; no node starts a new one). Retiring a retired flow changes nothing.
    pub async fn retire_flows(
        &self,
        flow_ids: &[String],
        at_ms: i64,
    ) -> Result<(), ResultStoreError> {
        if flow_ids.is_empty() {
            return Ok(());
        }
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                let flow_ids = flow_ids.to_vec();
                tokio::task::spawn_blocking(move || sqlite::retire_flows(&path, &flow_ids, at_ms))
                    .await
                    .map_err(|e| ResultStoreError::Sqlite(format!("retire task failed: {e}")))?
            }
            ReadSource::Postgres(target) => postgres::retire_flows(target, flow_ids, at_ms).await,
        }
    }

    /// One published flow version, or `None` if no node published it.
    pub async fn flow_version(
        &self,
        flow_id: &str,
        version: u32,
    ) -> Result<Option<StoredFlowVersion>, ResultStoreError> {
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                let flow_id = flow_id.to_string();
                tokio::task::spawn_blocking(move || {
                    sqlite::read_flow_version(&path, &flow_id, version)
                })
                .await
                .map_err(|e| ResultStoreError::Sqlite(format!("read task failed: {e}")))?
            }
            ReadSource::Postgres(target) => {
                postgres::read_flow_version(target, flow_id, version).await
            }
        }
    }

    /// The flow versions that changed (published, retired, brought back) after the cursor
    /// `after_seq` (0 for all), in change order; the last one's `changed_seq` is the next
    /// cursor.
    pub async fn flow_versions_since(
        &self,
        after_seq: i64,
    ) -> Result<Vec<StoredFlowVersion>, ResultStoreError> {
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    sqlite::read_flow_versions_since(&path, after_seq)
                })
                .await
                .map_err(|e| ResultStoreError::Sqlite(format!("read task failed: {e}")))?
            }
            ReadSource::Postgres(target) => {
                postgres::read_flow_versions_since(target, after_seq).await
            }
        }
    }

    /// Transactions committed so far by this store's writer (group commit makes this smaller
    /// than the number of `commit` calls under concurrency).
    pub fn batches_committed(&self) -> u64 {
        self.shared.counters.batches.load(Ordering::SeqCst)
    }

    /// Writes skipped so far because their response was never started.
    pub fn rejected_writes(&self) -> u64 {
        self.shared.counters.rejected.load(Ordering::SeqCst)
    }

    /// Commit requests handed to the writer and not yet answered (queue depth, for metrics
    /// and for tests that need every request queued before releasing the writer).
    pub fn pending_commits(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for ResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.shared.reads {
            ReadSource::Sqlite(path) => format!("sqlite {}", path.display()),
            ReadSource::Postgres(target) => format!("postgres {}", target.describe()),
        };
        f.debug_struct("ResultStore")
            .field("backend", &backend)
            .field("batches_committed", &self.batches_committed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_have_the_same_migration_versions() {
        let sqlite: Vec<i64> = SQLITE_MIGRATIONS.iter().map(|m| m.version).collect();
        let postgres: Vec<i64> = POSTGRES_MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(sqlite, postgres);
        assert!(
            sqlite.windows(2).all(|w| w[0] < w[1]),
            "versions must increase"
        );
    }

    #[test]
    fn pending_migrations_skips_applied_and_refuses_newer_databases() {
        let versions = |applied: &[i64]| {
            pending_migrations(SQLITE_MIGRATIONS, applied)
                .map(|m| m.iter().map(|m| m.version).collect::<Vec<_>>())
        };
        assert_eq!(versions(&[]), Ok(vec![1, 2, 3, 4, 5, 6, 7, 8]));
        // A database of the first release gets the SMS and call attempt tables.
        assert_eq!(versions(&[1]), Ok(vec![2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(versions(&[1, 2]), Ok(vec![3, 4, 5, 6, 7, 8]));
        assert_eq!(versions(&[1, 2, 3, 4]), Ok(vec![5, 6, 7, 8]));
        assert_eq!(versions(&[1, 2, 3, 4, 5, 6, 7, 8]), Ok(vec![]));
        assert_eq!(
            versions(&[1, 9]),
            Err(ResultStoreError::SchemaTooNew { found: 9, known: 8 })
        );
    }

    /// Compiles only if handles and the futures of every method can move between threads
    /// (the server shares the store across its request tasks).
    #[test]
    fn handles_and_futures_are_thread_safe() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        fn check(store: &ResultStore) {
            send_sync(store);
            send(store.commit(Vec::new()));
            send(store.ping());
            send(store.flush_and_close());
            send(store.responses("flow"));
            send(store.call_attempts(CallAttemptQuery::CallId("CA1".into())));
        }
        let _ = check as fn(&ResultStore);
    }

    #[test]
    fn status_names_round_trip() {
        for status in ResponseStatus::ALL {
            assert_eq!(ResponseStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ResponseStatus::parse("Completed"), None);
        assert!(!ResponseStatus::Active.is_ended());
        assert!(ResponseStatus::Dropped.is_ended());
        for status in CallAttemptStatus::ALL {
            assert_eq!(CallAttemptStatus::parse(status.as_str()), Some(status));
        }
        assert!(!CallAttemptStatus::Placed.is_final());
        assert!(!CallAttemptStatus::Scheduled.is_final());
        assert!(CallAttemptStatus::Refused.is_final());
    }

    #[test]
    fn the_next_attempt_id_replaces_the_attempt_number() {
        assert_eq!(next_attempt_id("a1b2-7-1", 1), "a1b2-7-2");
        assert_eq!(next_attempt_id("a1b2-7-9", 9), "a1b2-7-10");
        assert_eq!(next_attempt_id("odd", 2), "odd3");
    }

    #[test]
    fn nul_characters_are_replaced() {
        let mut write = Write::Answer(AnswerRecord {
            response_id: "r".into(),
            result: "q".into(),
            value: "a\0b".into(),
            label: Some("\0".into()),
            node: "n".into(),
            step: 1,
            answered_at_ms: 0,
        });
        write.scrub_nul();
        let Write::Answer(answer) = write else {
            panic!("still an answer")
        };
        assert_eq!(answer.value, "a\u{FFFD}b");
        assert_eq!(answer.label.as_deref(), Some("\u{FFFD}"));
    }
}
