//! The SQLite backend: one writer thread owning the only read-write connection, applying
//! group-committed batches in `BEGIN IMMEDIATE` transactions; reads on short-lived connections
//! of their own.
//!
//! It never runs SQLite calls on async runtime threads (the writer is a plain thread, reads
//! go through `spawn_blocking`) and never writes outside the writer thread, except to publish
//! and retire flow versions (rare; one `BEGIN IMMEDIATE` transaction on a connection of its
//! own, waiting for the writer's lock like another process would).

pub(super) mod contacts;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot, watch};

use super::flow_versions::{
    FLOW_VERSION_COLUMNS, PublishedFlow, StoredFlowVersion, changed_version, stored_version,
};
use super::sms::{INBOUND_COLUMNS, MESSAGE_COLUMNS, PART_COLUMNS, SmsQuery, stored_sms_state};
use super::{
    CallAttemptQuery, CallAttemptRecord, CallKey, Control, Counters, Failure, InboundQuery,
    InboundSms, MIGRATIONS_TABLE_SQL, PendingCommit, Rejection, Request, ResponseRow,
    ResultStoreError, SQLITE_MIGRATIONS, SmsPartRow, SmsRow, Write, gather, pending_migrations,
    settle,
};

/// How long a statement waits for a lock held by another connection (another process, a
/// reader checkpointing) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const BACKEND: &str = "sqlite";

/// WAL frames after which a commit checkpoints the WAL into the database file (SQLite's
/// default is 1,000). Every answer dirties about two pages, so at the default a busy gateway
/// checkpointed every few dozen commits, and each checkpoint re-reads and re-writes the hot
/// pages; a longer WAL copies each hot page once for many more commits. Costs a WAL file of
/// up to about 16 MiB (4 KiB pages) before it is reused.
const WAL_AUTOCHECKPOINT_FRAMES: u32 = 4000;

/// How long the writer waits for more commits when it found several queued at once (steps of
/// concurrent sessions are arriving), before it begins the transaction; a lone commit never
/// waits. Like PostgreSQL's `commit_delay` with `commit_siblings`: a few hundred microseconds
/// added to a step under load lets about twice as many steps share one transaction and one
/// fsync, which cut the writer's CPU per step by a sixth and raised the load test's steps/s by
/// 5-8% (load-tests/RESULTS.md).
const GROUP_COMMIT_LINGER: Duration = Duration::from_micros(300);

const INSERT_START: &str = "INSERT INTO responses (response_id, flow_id, flow_version, channel, \
     provider, subscriber, language, status, started_at_ms, updated_at_ms, ended_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'active', ?8, ?8, NULL) \
     ON CONFLICT (response_id) DO NOTHING";

/// Stores an answer under its response's start time (the answers' key begins with it), read
/// from the response row in the same statement; no row inserted means the response is unknown.
/// The response row itself is not written: its last activity is the latest of its stored
/// `updated_at_ms` and its answers' times, worked out when read ([`SELECT_RESPONSES`]), so an
/// answer costs one B-tree insert and no update of a random `responses` page.
const UPSERT_ANSWER: &str = "INSERT INTO answers (response_started_at_ms, response_id, result, \
     step, value, label, node, answered_at_ms) \
     SELECT started_at_ms, ?1, ?2, ?3, ?4, ?5, ?6, ?7 FROM responses WHERE response_id = ?1 \
     ON CONFLICT (response_started_at_ms, response_id, result, step) DO UPDATE SET \
     value = excluded.value, label = excluded.label, node = excluded.node, \
     answered_at_ms = excluded.answered_at_ms";

/// A withdrawn response's answers (found under its start time, the first part of their key),
/// then the response itself ([`Write::Withdraw`]).
const DELETE_ANSWERS_OF: &str = "DELETE FROM answers WHERE response_started_at_ms = \
     (SELECT started_at_ms FROM responses WHERE response_id = ?1) AND response_id = ?1";
const DELETE_RESPONSE: &str = "DELETE FROM responses WHERE response_id = ?1";

const UPDATE_STATUS: &str = "UPDATE responses SET status = ?2, \
     updated_at_ms = MAX(updated_at_ms, ?3), ended_at_ms = ?4, language = COALESCE(?5, language) \
     WHERE response_id = ?1";

/// One call attempt, inserted or brought up to date; a row with a final status stays as it is,
/// and a row already past `scheduled` is never put back to it.
const UPSERT_CALL_ATTEMPT: &str = "INSERT INTO call_attempts (attempt_id, provider, subscriber, \
     flow_id, purpose, attempt, placed_at_ms, status, outcome, provider_status, \
     duration_seconds, provider_call_id, reason, updated_at_ms, ended_at_ms, node, due_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
     ON CONFLICT (attempt_id) DO UPDATE SET status = excluded.status, \
     outcome = excluded.outcome, provider_status = excluded.provider_status, \
     duration_seconds = COALESCE(excluded.duration_seconds, call_attempts.duration_seconds), \
     provider_call_id = COALESCE(excluded.provider_call_id, call_attempts.provider_call_id), \
     reason = COALESCE(excluded.reason, call_attempts.reason), \
     updated_at_ms = MAX(call_attempts.updated_at_ms, excluded.updated_at_ms), \
     ended_at_ms = excluded.ended_at_ms, \
     placed_at_ms = CASE WHEN call_attempts.status = 'scheduled' \
         THEN excluded.placed_at_ms ELSE call_attempts.placed_at_ms END, \
     node = COALESCE(excluded.node, call_attempts.node), \
     due_at_ms = COALESCE(excluded.due_at_ms, call_attempts.due_at_ms) \
     WHERE call_attempts.ended_at_ms IS NULL \
     AND NOT (excluded.status = 'scheduled' AND call_attempts.status <> 'scheduled')";

/// The final status of an attempt that is placing or placed, found by its id (?1) or by the
/// provider's call id (?2, ?3); returns the attempt changed (none if it was already final).
const END_CALL_ATTEMPT: &str = "UPDATE call_attempts SET status = ?4, outcome = ?5, \
     provider_status = ?6, duration_seconds = COALESCE(?7, duration_seconds), \
     reason = COALESCE(?8, reason), updated_at_ms = MAX(updated_at_ms, ?9), ended_at_ms = ?9 \
     WHERE (attempt_id = ?1 OR (provider = ?2 AND provider_call_id = ?3)) \
     AND ended_at_ms IS NULL AND status IN ('placing', 'placed') \
     RETURNING attempt_id, attempt";

/// The retry of attempt ?4, stored `scheduled` for the same node (id ?1, due ?2).
const SCHEDULE_RETRY: &str = "INSERT INTO call_attempts (attempt_id, provider, subscriber, \
     flow_id, purpose, attempt, placed_at_ms, status, updated_at_ms, node, due_at_ms) \
     SELECT ?1, provider, subscriber, flow_id, purpose, attempt + 1, ?2, 'scheduled', ?3, \
     node, ?2 FROM call_attempts WHERE attempt_id = ?4 \
     ON CONFLICT (attempt_id) DO NOTHING";

const CALL_ATTEMPT_COLUMNS: &str = "attempt_id, provider, subscriber, flow_id, purpose, \
     attempt, placed_at_ms, status, outcome, provider_status, duration_seconds, \
     provider_call_id, reason, updated_at_ms, ended_at_ms, node, due_at_ms";

/// `updated_at_ms` is the last activity: the stored value (start and status changes) or the
/// latest answer, whichever is later (answers do not touch the response row; see
/// [`UPSERT_ANSWER`]).
const SELECT_RESPONSES: &str = "SELECT r.response_id, r.flow_id, r.flow_version, r.channel, \
     r.provider, r.subscriber, r.language, r.status, r.started_at_ms, \
     MAX(r.updated_at_ms, COALESCE((SELECT MAX(a.answered_at_ms) FROM answers a \
       WHERE a.response_started_at_ms = r.started_at_ms AND a.response_id = r.response_id), \
       r.updated_at_ms)), \
     r.ended_at_ms FROM responses r WHERE r.flow_id = ?1 ORDER BY r.started_at_ms, r.response_id";

/// Answers in step order, so the latest step of each result is read last and wins.
const SELECT_ANSWERS: &str = "SELECT a.response_id, a.result, a.value, a.label FROM answers a \
     JOIN responses r ON r.started_at_ms = a.response_started_at_ms \
     AND r.response_id = a.response_id WHERE r.flow_id = ?1 \
     ORDER BY a.response_id, a.result, a.step";

const INSERT_SMS: &str = "INSERT INTO sms_messages (message_id, node, operator, recipient, \
     sender, body, purpose, state, detail, created_at_ms, updated_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', NULL, ?8, ?8) \
     ON CONFLICT (message_id) DO NOTHING";

/// Only an unfinished message changes state, and `sending` is reached only from `queued` (the
/// claim of one sender): no row changed means unknown, already final, or already claimed.
const UPDATE_SMS_STATE: &str = "UPDATE sms_messages SET state = ?2, \
     detail = COALESCE(?3, detail), updated_at_ms = MAX(updated_at_ms, ?4) \
     WHERE message_id = ?1 AND (state = 'queued' OR (state = 'sending' AND ?2 <> 'sending'))";

const INSERT_INBOUND: &str = "INSERT INTO sms_inbound (inbound_id, node, operator, sender, \
     recipient, body, state, redelivery_expected, received_at_ms, updated_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'received', 0, ?7, ?7) ON CONFLICT (inbound_id) DO NOTHING";

/// `?2`: the new state, when it changes; `?3`: the redelivery flag's new value, when it
/// changes.
const UPDATE_INBOUND: &str = "UPDATE sms_inbound SET \
     state = COALESCE(?2, state), \
     redelivery_expected = COALESCE(?3, redelivery_expected), \
     updated_at_ms = MAX(updated_at_ms, ?4) WHERE inbound_id = ?1";

const UPSERT_SMS_PART: &str = "INSERT INTO sms_parts (message_id, part, outcome, smsc_id, \
     detail, at_ms) SELECT ?1, ?2, ?3, ?4, ?5, ?6 \
     WHERE EXISTS (SELECT 1 FROM sms_messages WHERE message_id = ?1) \
     ON CONFLICT (message_id, part) DO UPDATE SET outcome = excluded.outcome, \
     smsc_id = excluded.smsc_id, detail = excluded.detail, at_ms = excluded.at_ms";

/// A final receipt is kept; an intermediate one is replaced by whatever comes next.
const UPSERT_RECEIPT: &str = "INSERT INTO sms_receipts (operator, smsc_id, state, error, \
     is_final, received_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (operator, smsc_id) DO UPDATE SET state = excluded.state, \
     error = excluded.error, is_final = excluded.is_final, \
     received_at_ms = excluded.received_at_ms WHERE sms_receipts.is_final = 0";

fn sqlite_error(e: rusqlite::Error) -> ResultStoreError {
    ResultStoreError::Sqlite(e.to_string())
}

/// A write-path error, classified: errors of the database or its file are not isolated.
fn sqlite_failure(e: rusqlite::Error) -> Failure {
    use rusqlite::ErrorCode;
    let unavailable = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::OutOfMemory
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::PermissionDenied
                | ErrorCode::FileLockingProtocolFailed
        )
    );
    Failure {
        error: sqlite_error(e),
        isolate: !unavailable,
    }
}

/// Starts the writer thread; the receiver says whether opening and migrating succeeded.
pub(super) fn start_writer(
    path: PathBuf,
    queue: mpsc::Receiver<Request>,
    counters: Arc<Counters>,
    stopped: watch::Sender<bool>,
) -> Result<oneshot::Receiver<Result<(), ResultStoreError>>, ResultStoreError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("baraza-results".into())
        .spawn(move || {
            let writer = match Writer::open(&path) {
                Ok(writer) => {
                    let _ = ready_tx.send(Ok(()));
                    writer
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    stopped.send_replace(true);
                    return;
                }
            };
            writer.run(queue, &counters);
            stopped.send_replace(true);
        })
        .map_err(|e| ResultStoreError::Sqlite(format!("cannot start the writer thread: {e}")))?;
    Ok(ready_rx)
}

/// Opens the database file read-write (creating it and its folder), WAL, synchronous=FULL.
fn open_connection(path: &Path) -> Result<Connection, ResultStoreError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| ResultStoreError::CreateDir {
            path: parent.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    let conn = Connection::open(path).map_err(sqlite_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(sqlite_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ResultStoreError::Sqlite(format!(
            "{} cannot use the WAL journal (SQLite kept `{mode}`); use a file on a local disk",
            path.display()
        )));
    }
    // Why FULL and not NORMAL: see `ResultStore::open_sqlite`.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_error)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sqlite_error)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_FRAMES)
        .map_err(sqlite_error)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), ResultStoreError> {
    // IMMEDIATE: two processes opening the same file migrate one after the other.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    tx.execute_batch(MIGRATIONS_TABLE_SQL)
        .map_err(sqlite_error)?;
    let applied: Vec<i64> = {
        let mut stmt = tx
            .prepare("SELECT version FROM schema_migrations")
            .map_err(sqlite_error)?;
        stmt.query_map([], |row| row.get(0))
            .map_err(sqlite_error)?
            .collect::<Result<_, _>>()
            .map_err(sqlite_error)?
    };
    for migration in pending_migrations(SQLITE_MIGRATIONS, &applied)? {
        let failed = |e: rusqlite::Error| ResultStoreError::Migration {
            version: migration.version,
            name: migration.name,
            message: e.to_string(),
        };
        tx.execute_batch(migration.sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, now_ms()],
        )
        .map_err(failed)?;
    }
    tx.commit().map_err(sqlite_error)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The writer thread's state: the one read-write connection.
struct Writer {
    conn: Connection,
}

impl Writer {
    fn open(path: &Path) -> Result<Writer, ResultStoreError> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        Ok(Writer { conn })
    }

    /// Serves the queue until it is closed (by `flush_and_close`) and empty, or every handle
    /// is dropped; then closes the database and answers the close requests.
    fn run(mut self, mut queue: mpsc::Receiver<Request>, counters: &Counters) {
        let mut close_replies = Vec::new();
        while let Some(first) = queue.blocking_recv() {
            let mut batch = gather(first, &mut queue);
            if batch.commits.len() >= 2 && batch.is_open() {
                // Steps are arriving together: let the ones a moment behind share this fsync.
                std::thread::sleep(GROUP_COMMIT_LINGER);
                batch.take_queued(&mut queue);
            }
            if !batch.commits.is_empty() {
                self.commit_batch(batch.commits, counters);
            }
            match batch.control {
                None => {}
                Some(Control::Ping(reply)) => {
                    let _ = reply.send(self.ping());
                }
                Some(Control::Close(reply)) => {
                    // Refuse new requests; those already queued are still committed.
                    queue.close();
                    close_replies.push(reply);
                }
            }
        }
        let closed = self
            .conn
            .close()
            .map_err(|(_, e)| ResultStoreError::Sqlite(format!("closing the database: {e}")));
        for reply in close_replies {
            let _ = reply.send(closed.clone());
        }
    }

    fn ping(&self) -> Result<(), ResultStoreError> {
        self.conn
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(sqlite_error)
    }

    /// One transaction for the whole batch; if it fails, one per request.
    fn commit_batch(&mut self, commits: Vec<PendingCommit>, counters: &Counters) {
        let started = Instant::now();
        match self.apply(&commits) {
            Ok(rejections) => settle(counters, BACKEND, commits, Ok(rejections), started),
            Err(failure) if failure.isolate && commits.len() > 1 => {
                let error = failure.error;
                tracing::warn!(%error, requests = commits.len(), "sqlite batch failed; retrying its requests one by one");
                for commit in commits {
                    let started = Instant::now();
                    let outcome = self
                        .apply(std::slice::from_ref(&commit))
                        .map_err(|failure| failure.error);
                    settle(counters, BACKEND, vec![commit], outcome, started);
                }
            }
            Err(failure) => settle(counters, BACKEND, commits, Err(failure.error), started),
        }
    }

    fn apply(&mut self, commits: &[PendingCommit]) -> Result<Vec<Rejection>, Failure> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_failure)?;
        let mut rejections = Vec::new();
        {
            let mut start = tx.prepare_cached(INSERT_START).map_err(sqlite_failure)?;
            let mut answer = tx.prepare_cached(UPSERT_ANSWER).map_err(sqlite_failure)?;
            let mut status = tx.prepare_cached(UPDATE_STATUS).map_err(sqlite_failure)?;
            let mut withdraw_answers = tx
                .prepare_cached(DELETE_ANSWERS_OF)
                .map_err(sqlite_failure)?;
            let mut withdraw = tx.prepare_cached(DELETE_RESPONSE).map_err(sqlite_failure)?;
            let mut sms = tx.prepare_cached(INSERT_SMS).map_err(sqlite_failure)?;
            let mut sms_state = tx
                .prepare_cached(UPDATE_SMS_STATE)
                .map_err(sqlite_failure)?;
            let mut sms_part = tx.prepare_cached(UPSERT_SMS_PART).map_err(sqlite_failure)?;
            let mut inbound = tx.prepare_cached(INSERT_INBOUND).map_err(sqlite_failure)?;
            let mut inbound_update = tx.prepare_cached(UPDATE_INBOUND).map_err(sqlite_failure)?;
            let mut receipt = tx.prepare_cached(UPSERT_RECEIPT).map_err(sqlite_failure)?;
            let mut call = tx
                .prepare_cached(UPSERT_CALL_ATTEMPT)
                .map_err(sqlite_failure)?;
            let mut end_call = tx
                .prepare_cached(END_CALL_ATTEMPT)
                .map_err(sqlite_failure)?;
            let mut schedule = tx.prepare_cached(SCHEDULE_RETRY).map_err(sqlite_failure)?;
            let positioned = commits.iter().enumerate().flat_map(|(c, commit)| {
                commit
                    .writes
                    .iter()
                    .enumerate()
                    .map(move |(w, write)| ((c, w), write))
            });
            for (position, write) in positioned {
                let known = match write {
                    Write::Start(s) => {
                        start
                            .execute(params![
                                s.response_id,
                                s.flow_id,
                                s.flow_version,
                                s.channel,
                                s.provider,
                                s.subscriber,
                                s.language,
                                s.started_at_ms,
                            ])
                            .map_err(sqlite_failure)?;
                        true
                    }
                    Write::Answer(a) => {
                        let stored = answer
                            .execute(params![
                                a.response_id,
                                a.result,
                                a.step,
                                a.value,
                                a.label,
                                a.node,
                                a.answered_at_ms,
                            ])
                            .map_err(sqlite_failure)?;
                        stored > 0
                    }
                    Write::Status(u) => {
                        let ended_at = u.status.is_ended().then_some(u.at_ms);
                        let changed = status
                            .execute(params![
                                u.response_id,
                                u.status.as_str(),
                                u.at_ms,
                                ended_at,
                                u.language,
                            ])
                            .map_err(sqlite_failure)?;
                        changed > 0
                    }
                    Write::Withdraw(w) => {
                        withdraw_answers
                            .execute(params![w.response_id])
                            .map_err(sqlite_failure)?;
                        withdraw
                            .execute(params![w.response_id])
                            .map_err(sqlite_failure)?;
                        true
                    }
                    Write::SmsQueued(m) => {
                        sms.execute(params![
                            m.message_id,
                            m.node,
                            m.operator,
                            m.recipient,
                            m.sender,
                            m.body,
                            m.purpose,
                            m.created_at_ms,
                        ])
                        .map_err(sqlite_failure)?;
                        true
                    }
                    Write::SmsState(u) => {
                        sms_state
                            .execute(params![u.message_id, u.state.as_str(), u.detail, u.at_ms])
                            .map_err(sqlite_failure)?
                            > 0
                    }
                    Write::SmsInbound(m) => {
                        inbound
                            .execute(params![
                                m.inbound_id,
                                m.node,
                                m.operator,
                                m.sender,
                                m.recipient,
                                m.body,
                                m.received_at_ms,
                            ])
                            .map_err(sqlite_failure)?
                            > 0
                    }
                    Write::SmsInboundUpdate(u) => {
                        let (handled, redelivery) = u.params();
                        inbound_update
                            .execute(params![u.inbound_id, handled, redelivery, u.at_ms])
                            .map_err(sqlite_failure)?
                            > 0
                    }
                    Write::SmsPart(p) => {
                        sms_part
                            .execute(params![
                                p.message_id,
                                p.part,
                                p.outcome,
                                p.smsc_id,
                                p.detail,
                                p.at_ms,
                            ])
                            .map_err(sqlite_failure)?
                            > 0
                    }
                    Write::Receipt(r) => {
                        receipt
                            .execute(params![
                                r.operator,
                                r.smsc_id,
                                r.state,
                                r.error,
                                r.is_final,
                                r.received_at_ms,
                            ])
                            .map_err(sqlite_failure)?;
                        true
                    }
                    Write::CallAttempt(c) => {
                        call.execute(params![
                            c.attempt_id,
                            c.provider,
                            c.subscriber,
                            c.flow_id,
                            c.purpose,
                            c.attempt,
                            c.placed_at_ms,
                            c.status.as_str(),
                            c.outcome,
                            c.provider_status,
                            c.duration_seconds,
                            c.provider_call_id,
                            c.reason,
                            c.updated_at_ms,
                            c.ended_at_ms,
                            c.node,
                            c.due_at_ms,
                        ])
                        .map_err(sqlite_failure)?;
                        true
                    }
                    Write::CallFinal(f) => {
                        let (attempt_id, provider, call_id) = match &f.key {
                            CallKey::Attempt(id) => (Some(id.as_str()), None, None),
                            CallKey::ProviderCall { provider, call_id } => {
                                (None, Some(provider.as_str()), Some(call_id.as_str()))
                            }
                        };
                        let ended: Vec<(String, i64)> = end_call
                            .query_map(
                                params![
                                    attempt_id,
                                    provider,
                                    call_id,
                                    f.status.as_str(),
                                    f.outcome,
                                    f.provider_status,
                                    f.duration_seconds,
                                    f.reason,
                                    f.at_ms,
                                ],
                                |row| Ok((row.get(0)?, row.get(1)?)),
                            )
                            .map_err(sqlite_failure)?
                            .collect::<Result<_, _>>()
                            .map_err(sqlite_failure)?;
                        if let Some(retry) = f.retry {
                            for (id, attempt) in &ended {
                                let Ok(attempt) = u32::try_from(*attempt) else {
                                    continue;
                                };
                                if attempt < retry.max_attempts {
                                    schedule
                                        .execute(params![
                                            super::next_attempt_id(id, attempt),
                                            retry.due_at_ms,
                                            f.at_ms,
                                            id,
                                        ])
                                        .map_err(sqlite_failure)?;
                                }
                            }
                        }
                        true
                    }
                };
                if !known && let Some(rejection) = Rejection::unknown_response(position, write) {
                    rejections.push(rejection);
                }
            }
        }
        tx.commit().map_err(sqlite_failure)?;
        Ok(rejections)
    }
}

/// A fresh connection for reading: read-write without CREATE (a WAL reader may need to create
/// the -shm file), but query-only, so it never changes anything.
fn open_reader(path: &Path) -> Result<Connection, ResultStoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
    conn.pragma_update(None, "query_only", "ON")
        .map_err(sqlite_error)?;
    Ok(conn)
}

/// Reads every response of `flow_id` in one read transaction on a fresh connection.
pub(super) fn read_responses(
    path: &Path,
    flow_id: &str,
) -> Result<Vec<ResponseRow>, ResultStoreError> {
    let mut conn = open_reader(path)?;
    let tx = conn.transaction().map_err(sqlite_error)?;
    let mut rows = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    {
        let mut stmt = tx.prepare(SELECT_RESPONSES).map_err(sqlite_error)?;
        let mut found = stmt.query([flow_id]).map_err(sqlite_error)?;
        while let Some(row) = found.next().map_err(sqlite_error)? {
            let response = response_row(row)?;
            index.insert(response.response_id.clone(), rows.len());
            rows.push(response);
        }
    }
    {
        let mut stmt = tx.prepare(SELECT_ANSWERS).map_err(sqlite_error)?;
        let mut found = stmt.query([flow_id]).map_err(sqlite_error)?;
        while let Some(row) = found.next().map_err(sqlite_error)? {
            let response_id: String = row.get(0).map_err(sqlite_error)?;
            let result: String = row.get(1).map_err(sqlite_error)?;
            let value: String = row.get(2).map_err(sqlite_error)?;
            let label: Option<String> = row.get(3).map_err(sqlite_error)?;
            if let Some(&i) = index.get(&response_id) {
                rows[i].answers.insert(result, (value, label));
            }
        }
    }
    tx.finish().map_err(sqlite_error)?;
    Ok(rows)
}

/// Reads outbound messages with their parts and receipts in one read transaction.
pub(super) fn read_sms(path: &Path, query: &SmsQuery) -> Result<Vec<SmsRow>, ResultStoreError> {
    let mut conn = open_reader(path)?;
    let tx = conn.transaction().map_err(sqlite_error)?;
    let mut rows = Vec::new();
    {
        let by_id = format!("SELECT {MESSAGE_COLUMNS} FROM sms_messages WHERE message_id = ?1");
        let unfinished = format!(
            "SELECT {MESSAGE_COLUMNS} FROM sms_messages WHERE node = ?1 \
             AND state IN ('queued', 'sending') ORDER BY created_at_ms, message_id"
        );
        let mut read = |sql: &str, key: &str| -> Result<(), ResultStoreError> {
            let mut stmt = tx.prepare(sql).map_err(sqlite_error)?;
            let mut found = stmt.query([key]).map_err(sqlite_error)?;
            while let Some(row) = found.next().map_err(sqlite_error)? {
                rows.push(sms_row(row)?);
            }
            Ok(())
        };
        match query {
            SmsQuery::Ids(ids) => {
                for id in ids {
                    read(&by_id, id)?;
                }
            }
            SmsQuery::Unfinished(node) => read(&unfinished, node)?,
        }
    }
    {
        let parts = format!(
            "SELECT {PART_COLUMNS} FROM sms_parts p \
             JOIN sms_messages m ON m.message_id = p.message_id \
             LEFT JOIN sms_receipts r ON r.operator = m.operator AND r.smsc_id = p.smsc_id \
             WHERE p.message_id = ?1 ORDER BY p.part"
        );
        let mut stmt = tx.prepare(&parts).map_err(sqlite_error)?;
        for message in &mut rows {
            let mut found = stmt.query([&message.message_id]).map_err(sqlite_error)?;
            while let Some(row) = found.next().map_err(sqlite_error)? {
                let part: i64 = row.get(1).map_err(sqlite_error)?;
                message.parts.push(SmsPartRow {
                    part: u32::try_from(part).unwrap_or(0),
                    outcome: row.get(2).map_err(sqlite_error)?,
                    smsc_id: row.get(3).map_err(sqlite_error)?,
                    detail: row.get(4).map_err(sqlite_error)?,
                    receipt: row.get(5).map_err(sqlite_error)?,
                    receipt_error: row.get(6).map_err(sqlite_error)?,
                    receipt_at_ms: row.get(7).map_err(sqlite_error)?,
                });
            }
        }
    }
    tx.finish().map_err(sqlite_error)?;
    Ok(rows)
}

/// Kept inbound SMS, on a reader connection.
pub(super) fn read_inbound(
    path: &Path,
    query: &InboundQuery,
) -> Result<Vec<InboundSms>, ResultStoreError> {
    let conn = open_reader(path)?;
    let row = |row: &rusqlite::Row<'_>| {
        Ok(InboundSms {
            inbound_id: row.get(0)?,
            node: row.get(1)?,
            operator: row.get(2)?,
            sender: row.get(3)?,
            recipient: row.get(4)?,
            body: row.get(5)?,
            received_at_ms: row.get(6)?,
        })
    };
    let rows = match query {
        InboundQuery::Unhandled(node) => {
            let sql = format!(
                "SELECT {INBOUND_COLUMNS} FROM sms_inbound WHERE node = ?1 \
                 AND state = 'received' ORDER BY received_at_ms, inbound_id"
            );
            let mut stmt = conn.prepare(&sql).map_err(sqlite_error)?;
            stmt.query_map([node], row)
                .map_err(sqlite_error)?
                .collect::<Result<Vec<_>, _>>()
        }
        InboundQuery::Redelivery(m) => {
            let sql = format!(
                "SELECT {INBOUND_COLUMNS} FROM sms_inbound WHERE operator = ?1 \
                 AND sender = ?2 AND redelivery_expected = 1 AND recipient = ?3 AND body = ?4 \
                 AND received_at_ms >= ?5 ORDER BY received_at_ms, inbound_id LIMIT 1"
            );
            let mut stmt = conn.prepare(&sql).map_err(sqlite_error)?;
            let since = m.received_at_ms - super::REDELIVERY_WINDOW_MS;
            stmt.query_map(
                params![m.operator, m.sender, m.recipient, m.body, since],
                row,
            )
            .map_err(sqlite_error)?
            .collect::<Result<Vec<_>, _>>()
        }
    };
    rows.map_err(sqlite_error)
}

fn sms_row(row: &rusqlite::Row<'_>) -> Result<SmsRow, ResultStoreError> {
    let message_id: String = row.get(0).map_err(sqlite_error)?;
    let state: String = row.get(7).map_err(sqlite_error)?;
    stored_sms_state(&message_id, &state)?;
    Ok(SmsRow {
        node: row.get(1).map_err(sqlite_error)?,
        operator: row.get(2).map_err(sqlite_error)?,
        recipient: row.get(3).map_err(sqlite_error)?,
        sender: row.get(4).map_err(sqlite_error)?,
        body: row.get(5).map_err(sqlite_error)?,
        purpose: row.get(6).map_err(sqlite_error)?,
        state,
        detail: row.get(8).map_err(sqlite_error)?,
        created_at_ms: row.get(9).map_err(sqlite_error)?,
        updated_at_ms: row.get(10).map_err(sqlite_error)?,
        parts: Vec::new(),
        message_id,
    })
}

fn response_row(row: &rusqlite::Row<'_>) -> Result<ResponseRow, ResultStoreError> {
    let response_id: String = row.get(0).map_err(sqlite_error)?;
    let flow_version: i64 = row.get(2).map_err(sqlite_error)?;
    let status: String = row.get(7).map_err(sqlite_error)?;
    Ok(ResponseRow {
        flow_version: super::stored_flow_version(&response_id, flow_version)?,
        status: super::stored_status(&response_id, &status)?,
        flow_id: row.get(1).map_err(sqlite_error)?,
        channel: row.get(3).map_err(sqlite_error)?,
        provider: row.get(4).map_err(sqlite_error)?,
        subscriber: row.get(5).map_err(sqlite_error)?,
        language: row.get(6).map_err(sqlite_error)?,
        started_at_ms: row.get(8).map_err(sqlite_error)?,
        updated_at_ms: row.get(9).map_err(sqlite_error)?,
        ended_at_ms: row.get(10).map_err(sqlite_error)?,
        answers: Default::default(),
        response_id,
    })
}

/// Reads the call attempts `query` names, oldest first, on a fresh query-only connection.
pub(super) fn read_call_attempts(
    path: &Path,
    query: &CallAttemptQuery,
) -> Result<Vec<CallAttemptRecord>, ResultStoreError> {
    let conn = open_reader(path)?;
    conn.pragma_update(None, "query_only", "ON")
        .map_err(sqlite_error)?;
    let list = |items: &[String]| serde_json::Value::from(items.to_vec()).to_string();
    let (filter, keys) = match query {
        CallAttemptQuery::Subscriber(number) => ("subscriber = ?1", vec![number.clone()]),
        CallAttemptQuery::CallId(id) => {
            ("provider_call_id = ?1 OR attempt_id = ?1", vec![id.clone()])
        }
        CallAttemptQuery::Unfinished(node) => {
            ("node = ?1 AND ended_at_ms IS NULL", vec![node.clone()])
        }
        CallAttemptQuery::AttemptIds(ids) => (
            "attempt_id IN (SELECT value FROM json_each(?1))",
            vec![list(ids)],
        ),
        CallAttemptQuery::ProviderCalls { provider, call_ids } => (
            "provider = ?1 AND provider_call_id IN (SELECT value FROM json_each(?2))",
            vec![provider.clone(), list(call_ids)],
        ),
    };
    let sql = format!(
        "SELECT {CALL_ATTEMPT_COLUMNS} FROM call_attempts WHERE {filter} \
         ORDER BY placed_at_ms, attempt, attempt_id"
    );
    let mut stmt = conn.prepare(&sql).map_err(sqlite_error)?;
    let mut found = stmt
        .query(rusqlite::params_from_iter(keys.iter()))
        .map_err(sqlite_error)?;
    let mut out = Vec::new();
    while let Some(row) = found.next().map_err(sqlite_error)? {
        out.push(call_attempt_row(row)?);
    }
    Ok(out)
}

fn call_attempt_row(row: &rusqlite::Row<'_>) -> Result<CallAttemptRecord, ResultStoreError> {
    let attempt_id: String = row.get(0).map_err(sqlite_error)?;
    let attempt: i64 = row.get(5).map_err(sqlite_error)?;
    let status: String = row.get(7).map_err(sqlite_error)?;
    let duration: Option<i64> = row.get(10).map_err(sqlite_error)?;
    Ok(CallAttemptRecord {
        attempt: super::stored_u32(&attempt_id, "attempt number", attempt)?,
        status: super::stored_call_status(&attempt_id, &status)?,
        duration_seconds: duration
            .map(|d| super::stored_u32(&attempt_id, "duration", d))
            .transpose()?,
        provider: row.get(1).map_err(sqlite_error)?,
        subscriber: row.get(2).map_err(sqlite_error)?,
        flow_id: row.get(3).map_err(sqlite_error)?,
        purpose: row.get(4).map_err(sqlite_error)?,
        placed_at_ms: row.get(6).map_err(sqlite_error)?,
        outcome: row.get(8).map_err(sqlite_error)?,
        provider_status: row.get(9).map_err(sqlite_error)?,
        provider_call_id: row.get(11).map_err(sqlite_error)?,
        reason: row.get(12).map_err(sqlite_error)?,
        updated_at_ms: row.get(13).map_err(sqlite_error)?,
        ended_at_ms: row.get(14).map_err(sqlite_error)?,
        node: row.get(15).map_err(sqlite_error)?,
        due_at_ms: row.get(16).map_err(sqlite_error)?,
        attempt_id,
    })
}

/// The next value of the flow versions' change counter (the caller holds the write lock).
fn next_flow_seq(tx: &rusqlite::Transaction<'_>) -> Result<i64, ResultStoreError> {
    tx.query_row(
        "SELECT COALESCE(MAX(changed_seq), 0) + 1 FROM flow_versions",
        [],
        |row| row.get(0),
    )
    .map_err(sqlite_error)
}

/// See [`super::ResultStore::publish_flow_versions`].
pub(super) fn publish_flow_versions(
    path: &Path,
    versions: &[PublishedFlow],
) -> Result<(), ResultStoreError> {
    let mut conn = open_connection(path)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let seq = next_flow_seq(&tx)?;
    for flow in versions {
        let stored: Option<String> = tx
            .query_row(
                "SELECT content_hash FROM flow_versions WHERE flow_id = ?1 AND version = ?2",
                params![flow.flow_id, flow.version],
                |row| row.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(sqlite_error)?;
        match stored {
            Some(hash) if hash == flow.content_hash => {}
            Some(_) => return Err(changed_version(&flow.flow_id, flow.version)),
            None => {
                tx.execute(
                    "INSERT INTO flow_versions (flow_id, version, content_hash, source, \
                     published_at_ms, retired_at_ms, changed_seq) \
                     VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)",
                    params![
                        flow.flow_id,
                        flow.version,
                        flow.content_hash,
                        flow.source,
                        flow.published_at_ms,
                        seq
                    ],
                )
                .map_err(sqlite_error)?;
            }
        }
        tx.execute(
            "UPDATE flow_versions SET retired_at_ms = NULL, changed_seq = ?2 \
             WHERE flow_id = ?1 AND retired_at_ms IS NOT NULL",
            params![flow.flow_id, seq],
        )
        .map_err(sqlite_error)?;
    }
    tx.commit().map_err(sqlite_error)
}

/// See [`super::ResultStore::retire_flows`].
pub(super) fn retire_flows(
    path: &Path,
    flow_ids: &[String],
    at_ms: i64,
) -> Result<(), ResultStoreError> {
    let mut conn = open_connection(path)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let seq = next_flow_seq(&tx)?;
    for flow_id in flow_ids {
        tx.execute(
            "UPDATE flow_versions SET retired_at_ms = ?2, changed_seq = ?3 \
             WHERE flow_id = ?1 AND retired_at_ms IS NULL",
            params![flow_id, at_ms, seq],
        )
        .map_err(sqlite_error)?;
    }
    tx.commit().map_err(sqlite_error)
}

/// See [`super::ResultStore::flow_version`].
pub(super) fn read_flow_version(
    path: &Path,
    flow_id: &str,
    version: u32,
) -> Result<Option<StoredFlowVersion>, ResultStoreError> {
    let conn = open_reader(path)?;
    let sql = format!(
        "SELECT {FLOW_VERSION_COLUMNS} FROM flow_versions WHERE flow_id = ?1 AND version = ?2"
    );
    let mut stmt = conn.prepare(&sql).map_err(sqlite_error)?;
    let mut found = stmt
        .query(params![flow_id, version])
        .map_err(sqlite_error)?;
    match found.next().map_err(sqlite_error)? {
        Some(row) => Ok(Some(flow_version_row(row)?)),
        None => Ok(None),
    }
}

/// See [`super::ResultStore::flow_versions_since`].
pub(super) fn read_flow_versions_since(
    path: &Path,
    after_seq: i64,
) -> Result<Vec<StoredFlowVersion>, ResultStoreError> {
    let conn = open_reader(path)?;
    let sql = format!(
        "SELECT {FLOW_VERSION_COLUMNS} FROM flow_versions WHERE changed_seq > ?1 \
         ORDER BY changed_seq, flow_id, version"
    );
    let mut stmt = conn.prepare(&sql).map_err(sqlite_error)?;
    let mut found = stmt.query(params![after_seq]).map_err(sqlite_error)?;
    let mut out = Vec::new();
    while let Some(row) = found.next().map_err(sqlite_error)? {
        out.push(flow_version_row(row)?);
    }
    Ok(out)
}

fn flow_version_row(row: &rusqlite::Row<'_>) -> Result<StoredFlowVersion, ResultStoreError> {
    let flow_id: String = row.get(0).map_err(sqlite_error)?;
    let version: i64 = row.get(1).map_err(sqlite_error)?;
    Ok(StoredFlowVersion {
        version: stored_version(&flow_id, version)?,
        content_hash: row.get(2).map_err(sqlite_error)?,
        source: row.get(3).map_err(sqlite_error)?,
        published_at_ms: row.get(4).map_err(sqlite_error)?,
        retired_at_ms: row.get(5).map_err(sqlite_error)?,
        changed_seq: row.get(6).map_err(sqlite_error)?,
        flow_id,
    })
}
