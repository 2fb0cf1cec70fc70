//! The PostgreSQL backend: one writer task owning one connection (re-established when it
//! drops), applying group-committed batches in one transaction whose statements are
//! pipelined (sent back to back, not one round trip each); reads on connections of their own.
//!
//! Every connection follows the URL's `sslmode` with libpq's meaning (tokio-postgres itself
//! knows only `disable`, `prefer` and `require`, so the two `verify-*` modes are read here):
//! `disable` plain; `prefer` (the default) TLS when the server offers it; `require` TLS or
//! nothing; `verify-ca` TLS with a certificate chaining to the configured CA file (else the
//! Mozilla roots); `verify-full` that and the host's name. As in libpq, `prefer` and `require`
//! check the chain only when a CA file is configured. A refused certificate fails the
//! connection with rustls's reason; TLS is rustls over TCP, never OpenSSL.
//!
//! It never builds SQL from data (only from the validated schema name), and never writes
//! outside the writer, except to publish and retire flow versions (rare; one transaction on a
//! connection of its own that locks the flow versions table, so change counters commit in
//! order).

pub(super) mod contacts;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel, Statement, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::{ServerCheck, TlsMaterial, failure_message, tls_failure};

use super::flow_versions::{
    FLOW_VERSION_COLUMNS, PublishedFlow, StoredFlowVersion, changed_version, stored_version,
};
use super::sms::{INBOUND_COLUMNS, MESSAGE_COLUMNS, PART_COLUMNS, SmsQuery, stored_sms_state};
use super::{
    CallAttemptQuery, CallAttemptRecord, CallKey, Control, Counters, Failure, MIGRATIONS_TABLE_SQL,
    POSTGRES_MIGRATIONS, PendingCommit, Rejection, Request, ResponseRow, ResultStoreError,
    SmsPartRow, SmsRow, Write, gather, pending_migrations, settle,
};

const BACKEND: &str = "postgres";

/// Used when the URL sets no `connect_timeout`, so an unreachable server fails a step
/// instead of hanging it.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const INSERT_START: &str = "INSERT INTO responses (response_id, flow_id, flow_version, channel, \
     provider, subscriber, language, status, started_at_ms, updated_at_ms, ended_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $8, NULL) \
     ON CONFLICT (response_id) DO NOTHING";

/// Stores the answer under its response's start time, read from the response row in the same
/// statement, only if the response exists: no row inserted or updated means it is unknown.
/// (One statement, so a batch's statements can be pipelined without a failed foreign key
/// aborting the transaction.) The response row is not updated: every answer would otherwise
/// leave a dead row version behind for vacuum; its last activity is worked out when read
/// ([`SELECT_RESPONSES`]).
const UPSERT_ANSWER: &str = "INSERT INTO answers (response_started_at_ms, response_id, result, \
     step, value, label, node, answered_at_ms) \
     SELECT started_at_ms, response_id, $2::TEXT, $3::BIGINT, $4::TEXT, $5::TEXT, $6::TEXT, \
     $7::BIGINT FROM responses WHERE response_id = $1::TEXT \
     ON CONFLICT (response_started_at_ms, response_id, result, step) DO UPDATE SET \
     value = EXCLUDED.value, \
     label = EXCLUDED.label, node = EXCLUDED.node, answered_at_ms = EXCLUDED.answered_at_ms";

/// A withdrawn response and its answers (found under its start time, the first part of their
/// key), in one statement ([`Write::Withdraw`]); the foreign key is checked at its end, when
/// both are gone.
const DELETE_RESPONSE: &str = "WITH gone AS (DELETE FROM responses WHERE response_id = $1 \
     RETURNING started_at_ms, response_id) DELETE FROM answers a USING gone \
     WHERE a.response_started_at_ms = gone.started_at_ms AND a.response_id = gone.response_id";

const UPDATE_STATUS: &str = "UPDATE responses SET status = $2, \
     updated_at_ms = GREATEST(updated_at_ms, $3), ended_at_ms = $4, \
     language = COALESCE($5, language) WHERE response_id = $1";

/// One call attempt, inserted or brought up to date; a row with a final status stays as it is,
/// and a row already past `scheduled` is never put back to it.
const UPSERT_CALL_ATTEMPT: &str = "INSERT INTO call_attempts (attempt_id, provider, subscriber, \
     flow_id, purpose, attempt, placed_at_ms, status, outcome, provider_status, \
     duration_seconds, provider_call_id, reason, updated_at_ms, ended_at_ms, node, due_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
     ON CONFLICT (attempt_id) DO UPDATE SET status = EXCLUDED.status, \
     outcome = EXCLUDED.outcome, provider_status = EXCLUDED.provider_status, \
     duration_seconds = COALESCE(EXCLUDED.duration_seconds, call_attempts.duration_seconds), \
     provider_call_id = COALESCE(EXCLUDED.provider_call_id, call_attempts.provider_call_id), \
     reason = COALESCE(EXCLUDED.reason, call_attempts.reason), \
     updated_at_ms = GREATEST(call_attempts.updated_at_ms, EXCLUDED.updated_at_ms), \
     ended_at_ms = EXCLUDED.ended_at_ms, \
     placed_at_ms = CASE WHEN call_attempts.status = 'scheduled' \
         THEN EXCLUDED.placed_at_ms ELSE call_attempts.placed_at_ms END, \
     node = COALESCE(EXCLUDED.node, call_attempts.node), \
     due_at_ms = COALESCE(EXCLUDED.due_at_ms, call_attempts.due_at_ms) \
     WHERE call_attempts.ended_at_ms IS NULL \
     AND NOT (EXCLUDED.status = 'scheduled' AND call_attempts.status <> 'scheduled')";

/// The final status of an attempt that is placing or placed, found by its id ($1) or by the
/// provider's call id ($2, $3), and in the same statement its retry (attempt below $10),
/// stored `scheduled` for the same node, due at $11. Row locking makes one of two nodes
/// ending the same call change the row; the other changes nothing and schedules nothing.
const END_CALL_ATTEMPT: &str = "WITH ended AS (\
       UPDATE call_attempts SET status = $4::TEXT, outcome = $5::TEXT, \
       provider_status = $6::TEXT, duration_seconds = COALESCE($7::BIGINT, duration_seconds), \
       reason = COALESCE($8::TEXT, reason), \
       updated_at_ms = GREATEST(updated_at_ms, $9::BIGINT), ended_at_ms = $9::BIGINT \
       WHERE (attempt_id = $1::TEXT OR (provider = $2::TEXT AND provider_call_id = $3::TEXT)) \
       AND ended_at_ms IS NULL AND status IN ('placing', 'placed') \
       RETURNING attempt_id, provider, subscriber, flow_id, purpose, attempt, node) \
     INSERT INTO call_attempts (attempt_id, provider, subscriber, flow_id, purpose, attempt, \
       placed_at_ms, status, updated_at_ms, node, due_at_ms) \
     SELECT CASE WHEN right(attempt_id, length(attempt::TEXT)) = attempt::TEXT \
         THEN left(attempt_id, length(attempt_id) - length(attempt::TEXT)) \
         ELSE attempt_id END || (attempt + 1)::TEXT, \
       provider, subscriber, flow_id, purpose, attempt + 1, $11::BIGINT, 'scheduled', \
       $9::BIGINT, node, $11::BIGINT \
     FROM ended WHERE attempt < $10::BIGINT \
     ON CONFLICT (attempt_id) DO NOTHING";

const CALL_ATTEMPT_COLUMNS: &str = "attempt_id, provider, subscriber, flow_id, purpose, \
     attempt, placed_at_ms, status, outcome, provider_status, duration_seconds, \
     provider_call_id, reason, updated_at_ms, ended_at_ms, node, due_at_ms";

/// `updated_at_ms` is the last activity: the stored value (start and status changes) or the
/// latest answer, whichever is later (answers do not update the response row; see
/// [`UPSERT_ANSWER`]).
const SELECT_RESPONSES: &str = "SELECT r.response_id, r.flow_id, r.flow_version, r.channel, \
     r.provider, r.subscriber, r.language, r.status, r.started_at_ms, \
     GREATEST(r.updated_at_ms, (SELECT MAX(a.answered_at_ms) FROM answers a \
       WHERE a.response_started_at_ms = r.started_at_ms AND a.response_id = r.response_id)), \
     r.ended_at_ms FROM responses r WHERE r.flow_id = $1 \
     ORDER BY r.started_at_ms, r.response_id";

/// Answers in step order, so the latest step of each result is read last and wins.
const SELECT_ANSWERS: &str = "SELECT a.response_id, a.result, a.value, a.label FROM answers a \
     JOIN responses r ON r.started_at_ms = a.response_started_at_ms \
     AND r.response_id = a.response_id WHERE r.flow_id = $1 \
     ORDER BY a.response_id, a.result, a.step";

const INSERT_SMS: &str = "INSERT INTO sms_messages (message_id, node, operator, recipient, \
     sender, body, purpose, state, detail, created_at_ms, updated_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', NULL, $8, $8) \
     ON CONFLICT (message_id) DO NOTHING";

/// Only an unfinished message changes state, and `sending` is reached only from `queued` (the
/// claim of one sender): no row changed means unknown, already final, or already claimed.
/// Concurrent claims serialise on the row lock; the second re-reads the row and finds it
/// `sending` (READ COMMITTED re-checks the WHERE clause), so it changes nothing.
const UPDATE_SMS_STATE: &str = "UPDATE sms_messages SET state = $2, \
     detail = COALESCE($3, detail), updated_at_ms = GREATEST(updated_at_ms, $4) \
     WHERE message_id = $1 AND (state = 'queued' OR (state = 'sending' AND $2 <> 'sending'))";

/// One statement (no failing foreign key inside a pipelined transaction): nothing is
/// inserted for an unknown message.
const UPSERT_SMS_PART: &str = "INSERT INTO sms_parts (message_id, part, outcome, smsc_id, \
     detail, at_ms) SELECT $1::TEXT, $2::BIGINT, $3::TEXT, $4::TEXT, $5::TEXT, $6::BIGINT \
     WHERE EXISTS (SELECT 1 FROM sms_messages WHERE message_id = $1::TEXT) \
     ON CONFLICT (message_id, part) DO UPDATE SET outcome = EXCLUDED.outcome, \
     smsc_id = EXCLUDED.smsc_id, detail = EXCLUDED.detail, at_ms = EXCLUDED.at_ms";

const INSERT_INBOUND: &str = "INSERT INTO sms_inbound (inbound_id, node, operator, sender, \
     recipient, body, state, redelivery_expected, received_at_ms, updated_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, 'received', FALSE, $7, $7) \
     ON CONFLICT (inbound_id) DO NOTHING";

/// `$2`: the new state, when it changes; `$3`: the redelivery flag's new value, when it
/// changes.
const UPDATE_INBOUND: &str = "UPDATE sms_inbound SET \
     state = COALESCE($2::TEXT, state), \
     redelivery_expected = COALESCE($3::BOOLEAN, redelivery_expected), \
     updated_at_ms = GREATEST(updated_at_ms, $4) WHERE inbound_id = $1";

/// A final receipt is kept; an intermediate one is replaced by whatever comes next.
const UPSERT_RECEIPT: &str = "INSERT INTO sms_receipts (operator, smsc_id, state, error, \
     is_final, received_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (operator, smsc_id) DO UPDATE SET state = EXCLUDED.state, \
     error = EXCLUDED.error, is_final = EXCLUDED.is_final, \
     received_at_ms = EXCLUDED.received_at_ms WHERE NOT sms_receipts.is_final";

/// A PostgreSQL error with the server's message, detail and SQLSTATE when it sent them
/// (the driver's own text is often just "db error").
fn pg_error(e: tokio_postgres::Error) -> ResultStoreError {
    ResultStoreError::Postgres(describe(&e))
}

/// A write-path error, classified: only errors the server reports for a statement, on a
/// connection that is still open, are worth isolating; connection problems and server-wide
/// conditions (SQLSTATE classes 08, 53, 57, 58) are not.
fn pg_failure(e: tokio_postgres::Error) -> Failure {
    let isolate = !e.is_closed()
        && e.as_db_error().is_some_and(|db| {
            let class = db.code().code().get(..2).unwrap_or("");
            !matches!(class, "08" | "53" | "57" | "58")
        });
    Failure {
        error: pg_error(e),
        isolate,
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Where to connect: the URL, how TLS is used, and the schema that holds the tables.
#[derive(Clone)]
pub(super) struct Target {
    config: tokio_postgres::Config,
    /// The URL's `sslmode`, for [`Target::describe`].
    ssl_mode: SslMode,
    /// What the server's certificate is checked against, for TLS error messages.
    trust: String,
    /// Used for every connection (unless `sslmode=disable`, when the driver never asks it).
    tls: MakeRustlsConnect,
    /// Validated identifier, or `None` for the server's default search path.
    schema: Option<String>,
    /// Connections left by reads on the hot path (consent checked at every send), reused
    /// instead of a connection (and a TLS handshake) per read; shared by clones.
    idle: std::sync::Arc<std::sync::Mutex<Vec<Client>>>,
}

/// How many idle read connections a [`Target`] keeps.
const IDLE_READS: usize = 4;

/// A read connection from [`Target::pooled`]; back to the idle list when dropped (unless it
/// closed).
pub(super) struct Pooled<'t> {
    target: &'t Target,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a pooled connection is held until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut idle = self.target.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !client.is_closed() && idle.len() < IDLE_READS {
            idle.push(client);
        }
    }
}

/// libpq's `sslmode` values this store honours (`allow`, plain first and TLS after, has no
/// tokio-postgres counterpart and is refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, ResultStoreError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(ResultStoreError::Postgres(format!(
                    "invalid url: sslmode={other} is not supported (use disable, prefer, \
                     require, verify-ca or verify-full)"
                )));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What the driver is told, and how much of the server's certificate is checked.
    fn plan(self, has_ca_file: bool) -> (tokio_postgres::config::SslMode, ServerCheck) {
        use tokio_postgres::config::SslMode as Driver;
        let chain_if_ca = if has_ca_file {
            ServerCheck::Chain
        } else {
            ServerCheck::EncryptOnly
        };
        match self {
            SslMode::Disable => (Driver::Disable, ServerCheck::ChainAndName),
            SslMode::Prefer => (Driver::Prefer, chain_if_ca),
            SslMode::Require => (Driver::Require, chain_if_ca),
            SslMode::VerifyCa => (Driver::Require, ServerCheck::Chain),
            SslMode::VerifyFull => (Driver::Require, ServerCheck::ChainAndName),
        }
    }
}

/// The URL without its `sslmode` parameter, and that parameter's value. Only the URL form
/// (`postgres://...?sslmode=...`) is read here; a `key=value` string is left to the driver,
/// which knows `disable`, `prefer` and `require`.
fn split_sslmode(url: &str) -> Result<(String, Option<SslMode>), ResultStoreError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_string(), None));
    };
    let mut mode = None;
    let mut kept = Vec::new();
    for parameter in query.split('&') {
        match parameter.strip_prefix("sslmode=") {
            Some(value) => mode = Some(SslMode::parse(value)?),
            None => kept.push(parameter),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, mode))
}

/// Where a URL the driver refused asks for TLS settings this store takes elsewhere.
fn tls_hint(url: &str) -> &'static str {
    if url.contains("sslrootcert") || url.contains("sslcert") || url.contains("sslkey") {
        " (certificate files go in store_tls.postgres: ca_file, client_cert_file, client_key_file)"
    } else if url.contains("verify-") {
        " (sslmode=verify-ca and verify-full are read from the postgres:// URL form)"
    } else {
        ""
    }
}

impl Target {
    pub(super) fn new(
        url: &str,
        schema: Option<&str>,
        tls: &TlsMaterial,
    ) -> Result<Target, ResultStoreError> {
        let (url, url_mode) = split_sslmode(url)?;
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                ResultStoreError::Postgres(format!(
                    "invalid url: {}{}",
                    describe(&e),
                    tls_hint(&url)
                ))
            })?;
        let ssl_mode = url_mode.unwrap_or(match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        });
        if ssl_mode == SslMode::Disable && tls.is_set() {
            return Err(ResultStoreError::Postgres(
                "TLS certificates are configured (store_tls.postgres) but the url says \
                 sslmode=disable"
                    .into(),
            ));
        }
        let (driver_mode, check) = ssl_mode.plan(tls.ca_file().is_some());
        config.ssl_mode(driver_mode);
        let trust = match check {
            ServerCheck::EncryptOnly => "its certificate is not checked".to_string(),
            ServerCheck::Chain => format!("its chain is checked against {}", tls.trusted()),
            ServerCheck::ChainAndName => {
                format!("its name and chain are checked against {}", tls.trusted())
            }
        };
        let tls_config = tls
            .client_config(check)
            .map_err(|e| ResultStoreError::Postgres(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("baraza");
        }
        let schema = match schema {
            Some(name) if valid_schema_name(name) => Some(name.to_string()),
            Some(name) => return Err(ResultStoreError::InvalidSchema(name.to_string())),
            None => None,
        };
        Ok(Target {
            config,
            ssl_mode,
            trust,
            tls: MakeRustlsConnect::new(tls_config),
            schema,
            idle: Default::default(),
        })
    }

    /// Host, database, schema and TLS mode, without credentials.
    pub(super) fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        format!(
            "{}/{} schema {} sslmode {}",
            hosts.join(","),
            self.config.get_dbname().unwrap_or(""),
            self.schema.as_deref().unwrap_or("(default)"),
            self.ssl_mode.name()
        )
    }

    /// A new connection with `search_path` set to the schema; the connection runs on a task
    /// of its own that ends when the client is dropped.
    /// A connection for a read that uses no transaction: an idle one when there is one.
    pub(super) async fn pooled(&self) -> Result<Pooled<'_>, ResultStoreError> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.is_closed())
        };
        let client = match reused {
            Some(client) => client,
            None => self.connect().await?,
        };
        Ok(Pooled {
            target: self,
            client: Some(client),
        })
    }

    async fn connect(&self) -> Result<Client, ResultStoreError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| self.connect_error(e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %describe(&e), "postgres result store connection ended");
            }
        });
        if let Some(schema) = &self.schema {
            client
                .batch_execute(&format!("SET search_path TO \"{schema}\""))
                .await
                .map_err(pg_error)?;
        }
        Ok(client)
    }
}

impl Target {
    /// A TLS failure says which `sslmode` and what the certificate was checked against.
    fn connect_error(&self, error: tokio_postgres::Error) -> ResultStoreError {
        match tls_failure(&error) {
            Some(reason) => ResultStoreError::Postgres(format!(
                "TLS: {}",
                failure_message(
                    reason,
                    &format!("sslmode={}: {}", self.ssl_mode.name(), self.trust)
                )
            )),
            None => pg_error(error),
        }
    }
}

/// An unquoted-style identifier: `[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes (the server's
/// limit). Being this strict means it can be quoted without escaping.
fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && name.len() <= 63 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Connects, creates the schema, migrates, and spawns the writer task.
pub(super) async fn start_writer(
    target: Target,
    queue: mpsc::Receiver<Request>,
    counters: Arc<Counters>,
    stopped: watch::Sender<bool>,
) -> Result<(), ResultStoreError> {
    let mut client = target.connect().await?;
    if let Some(schema) = &target.schema {
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await
            .map_err(pg_error)?;
    }
    migrate(&mut client).await?;
    let connection = WriterConnection::prepare(client).await?;
    let writer = Writer {
        target,
        connection: Some(connection),
    };
    tokio::spawn(async move {
        writer.run(queue, &counters).await;
        stopped.send_replace(true);
    });
    Ok(())
}

async fn migrate(client: &mut Client) -> Result<(), ResultStoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    // Nodes starting together migrate one after the other (lock per schema, held until commit).
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('baraza_migrations:' || COALESCE(current_schema(), '')))",
        &[],
    )
    .await
    .map_err(pg_error)?;
    tx.batch_execute(MIGRATIONS_TABLE_SQL)
        .await
        .map_err(pg_error)?;
    let applied: Vec<i64> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(pg_error)?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(pg_error)?;
    for migration in pending_migrations(POSTGRES_MIGRATIONS, &applied)? {
        let failed = |e: tokio_postgres::Error| ResultStoreError::Migration {
            version: migration.version,
            name: migration.name,
            message: describe(&e),
        };
        tx.batch_execute(migration.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) \
             VALUES ($1, $2, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(pg_error)
}

/// The writer's connection with its prepared statements.
struct WriterConnection {
    client: Client,
    start: Statement,
    answer: Statement,
    status: Statement,
    withdraw: Statement,
    sms: Statement,
    sms_state: Statement,
    sms_part: Statement,
    receipt: Statement,
    inbound: Statement,
    inbound_update: Statement,
    call: Statement,
    call_final: Statement,
}

impl WriterConnection {
    async fn prepare(client: Client) -> Result<WriterConnection, ResultStoreError> {
        let start = client.prepare(INSERT_START).await.map_err(pg_error)?;
        let answer = client.prepare(UPSERT_ANSWER).await.map_err(pg_error)?;
        let status = client.prepare(UPDATE_STATUS).await.map_err(pg_error)?;
        let withdraw = client.prepare(DELETE_RESPONSE).await.map_err(pg_error)?;
        let sms = client.prepare(INSERT_SMS).await.map_err(pg_error)?;
        let sms_state = client.prepare(UPDATE_SMS_STATE).await.map_err(pg_error)?;
        let sms_part = client.prepare(UPSERT_SMS_PART).await.map_err(pg_error)?;
        let receipt = client.prepare(UPSERT_RECEIPT).await.map_err(pg_error)?;
        let inbound = client.prepare(INSERT_INBOUND).await.map_err(pg_error)?;
        let inbound_update = client.prepare(UPDATE_INBOUND).await.map_err(pg_error)?;
        let call = client
            .prepare(UPSERT_CALL_ATTEMPT)
            .await
            .map_err(pg_error)?;
        let call_final = client.prepare(END_CALL_ATTEMPT).await.map_err(pg_error)?;
        Ok(WriterConnection {
            client,
            start,
            answer,
            status,
            withdraw,
            sms,
            sms_state,
            sms_part,
            receipt,
            inbound,
            inbound_update,
            call,
            call_final,
        })
    }
}

/// The writer task's state.
struct Writer {
    target: Target,
    /// `None` after the connection was lost and could not yet be re-established.
    connection: Option<WriterConnection>,
}

/// One write with the owned values its parameters borrow.
enum Bound<'a> {
    Start(&'a super::ResponseStart, i64),
    Answer(&'a super::AnswerRecord, i64),
    Status(&'a super::StatusUpdate, &'static str, Option<i64>),
    Withdraw(&'a super::Withdrawal),
    SmsQueued(&'a super::QueuedSms),
    SmsState(&'a super::SmsStateUpdate, &'static str),
    SmsPart(&'a super::SmsPartRecord, i64),
    Receipt(&'a super::ReceiptRecord),
    SmsInbound(&'a super::InboundSms),
    /// The update with (its new state, redelivery flag).
    SmsInboundUpdate(&'a super::InboundUpdate, Option<&'static str>, Option<bool>),
    /// The attempt, its number and duration as BIGINT, its status name.
    CallAttempt(&'a CallAttemptRecord, i64, Option<i64>, &'static str),
    /// The final status with its key parts, status name, duration, retry cap (0: none) and
    /// retry due time.
    CallFinal(FinalParams<'a>),
}

/// The parameters of [`END_CALL_ATTEMPT`], owned or borrowed from the write.
struct FinalParams<'a> {
    write: &'a super::CallFinal,
    attempt_id: Option<&'a str>,
    provider: Option<&'a str>,
    call_id: Option<&'a str>,
    status: &'static str,
    duration: Option<i64>,
    max_attempts: i64,
    due_at_ms: i64,
}

impl<'a> Bound<'a> {
    fn new(write: &'a Write) -> Bound<'a> {
        match write {
            Write::Start(s) => Bound::Start(s, i64::from(s.flow_version)),
            Write::Answer(a) => Bound::Answer(a, i64::from(a.step)),
            Write::Status(u) => {
                Bound::Status(u, u.status.as_str(), u.status.is_ended().then_some(u.at_ms))
            }
            Write::Withdraw(w) => Bound::Withdraw(w),
            Write::SmsQueued(m) => Bound::SmsQueued(m),
            Write::SmsState(u) => Bound::SmsState(u, u.state.as_str()),
            Write::SmsPart(p) => Bound::SmsPart(p, i64::from(p.part)),
            Write::Receipt(r) => Bound::Receipt(r),
            Write::SmsInbound(m) => Bound::SmsInbound(m),
            Write::SmsInboundUpdate(u) => {
                let (handled, redelivery) = u.params();
                Bound::SmsInboundUpdate(u, handled, redelivery)
            }
            Write::CallAttempt(c) => Bound::CallAttempt(
                c,
                i64::from(c.attempt),
                c.duration_seconds.map(i64::from),
                c.status.as_str(),
            ),
            Write::CallFinal(f) => {
                let (attempt_id, provider, call_id) = match &f.key {
                    CallKey::Attempt(id) => (Some(id.as_str()), None, None),
                    CallKey::ProviderCall { provider, call_id } => {
                        (None, Some(provider.as_str()), Some(call_id.as_str()))
                    }
                };
                Bound::CallFinal(FinalParams {
                    write: f,
                    attempt_id,
                    provider,
                    call_id,
                    status: f.status.as_str(),
                    duration: f.duration_seconds.map(i64::from),
                    max_attempts: f.retry.map_or(0, |r| i64::from(r.max_attempts)),
                    due_at_ms: f.retry.map_or(f.at_ms, |r| r.due_at_ms),
                })
            }
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        match self {
            Bound::Start(s, flow_version) => vec![
                &s.response_id,
                &s.flow_id,
                flow_version,
                &s.channel,
                &s.provider,
                &s.subscriber,
                &s.language,
                &s.started_at_ms,
            ],
            Bound::Answer(a, step) => vec![
                &a.response_id,
                &a.result,
                step,
                &a.value,
                &a.label,
                &a.node,
                &a.answered_at_ms,
            ],
            Bound::Status(u, status, ended_at) => {
                vec![&u.response_id, status, &u.at_ms, ended_at, &u.language]
            }
            Bound::Withdraw(w) => vec![&w.response_id],
            Bound::SmsQueued(m) => vec![
                &m.message_id,
                &m.node,
                &m.operator,
                &m.recipient,
                &m.sender,
                &m.body,
                &m.purpose,
                &m.created_at_ms,
            ],
            Bound::SmsState(u, state) => vec![&u.message_id, state, &u.detail, &u.at_ms],
            Bound::SmsPart(p, part) => vec![
                &p.message_id,
                part,
                &p.outcome,
                &p.smsc_id,
                &p.detail,
                &p.at_ms,
            ],
            Bound::SmsInbound(m) => vec![
                &m.inbound_id,
                &m.node,
                &m.operator,
                &m.sender,
                &m.recipient,
                &m.body,
                &m.received_at_ms,
            ],
            Bound::SmsInboundUpdate(u, handled, redelivery) => {
                vec![&u.inbound_id, handled, redelivery, &u.at_ms]
            }
            Bound::Receipt(r) => vec![
                &r.operator,
                &r.smsc_id,
                &r.state,
                &r.error,
                &r.is_final,
                &r.received_at_ms,
            ],
            Bound::CallAttempt(c, attempt, duration, status) => vec![
                &c.attempt_id,
                &c.provider,
                &c.subscriber,
                &c.flow_id,
                &c.purpose,
                attempt,
                &c.placed_at_ms,
                status,
                &c.outcome,
                &c.provider_status,
                duration,
                &c.provider_call_id,
                &c.reason,
                &c.updated_at_ms,
                &c.ended_at_ms,
                &c.node,
                &c.due_at_ms,
            ],
            Bound::CallFinal(p) => vec![
                &p.attempt_id,
                &p.provider,
                &p.call_id,
                &p.status,
                &p.write.outcome,
                &p.write.provider_status,
                &p.duration,
                &p.write.reason,
                &p.write.at_ms,
                &p.max_attempts,
                &p.due_at_ms,
            ],
        }
    }
}

type Execution<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// Drives `executions` together, polling them in order so that each is sent to the server
/// before the next (tokio-postgres sends a statement on its first poll): the statements are
/// pipelined on the connection and still applied in order.
async fn pipelined(mut executions: Vec<Execution<'_>>) -> Vec<Result<u64, tokio_postgres::Error>> {
    let mut results: Vec<Option<Result<u64, tokio_postgres::Error>>> =
        executions.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (execution, result) in executions.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match execution.as_mut().poll(cx) {
                    Poll::Ready(outcome) => *result = Some(outcome),
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

impl Writer {
    /// Serves the queue until it is closed (by `flush_and_close`) and empty, or every handle
    /// is dropped; then answers the close requests.
    async fn run(mut self, mut queue: mpsc::Receiver<Request>, counters: &Counters) {
        let mut close_replies = Vec::new();
        while let Some(first) = queue.recv().await {
            let batch = gather(first, &mut queue);
            if !batch.commits.is_empty() {
                self.commit_batch(batch.commits, counters).await;
            }
            match batch.control {
                None => {}
                Some(Control::Ping(reply)) => {
                    let _ = reply.send(self.ping().await);
                }
                Some(Control::Close(reply)) => {
                    queue.close();
                    close_replies.push(reply);
                }
            }
        }
        // Dropping the client ends its connection task (the server sees a clean terminate).
        self.connection = None;
        for reply in close_replies {
            let _ = reply.send(Ok(()));
        }
    }

    /// The connection, re-established if it was lost.
    async fn connection(&mut self) -> Result<&mut WriterConnection, ResultStoreError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.client.is_closed())
        {
            tracing::warn!("postgres result store connection lost; reconnecting");
            self.connection = None;
        }
        if self.connection.is_none() {
            let client = self.target.connect().await?;
            self.connection = Some(WriterConnection::prepare(client).await?);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| ResultStoreError::Postgres("no connection".into()))
    }

    async fn ping(&mut self) -> Result<(), ResultStoreError> {
        let connection = self.connection().await?;
        connection
            .client
            .batch_execute("SELECT 1")
            .await
            .map_err(pg_error)
    }

    /// One transaction for the whole batch; if it fails, one per request.
    async fn commit_batch(&mut self, commits: Vec<PendingCommit>, counters: &Counters) {
        let started = Instant::now();
        match self.apply(&commits).await {
            Ok(rejections) => settle(counters, BACKEND, commits, Ok(rejections), started),
            Err(failure) if failure.isolate && commits.len() > 1 => {
                let error = failure.error;
                tracing::warn!(%error, requests = commits.len(), "postgres batch failed; retrying its requests one by one");
                for commit in commits {
                    let started = Instant::now();
                    let outcome = self
                        .apply(std::slice::from_ref(&commit))
                        .await
                        .map_err(|failure| failure.error);
                    settle(counters, BACKEND, vec![commit], outcome, started);
                }
            }
            Err(failure) => settle(counters, BACKEND, commits, Err(failure.error), started),
        }
    }

    async fn apply(&mut self, commits: &[PendingCommit]) -> Result<Vec<Rejection>, Failure> {
        let connection = self.connection().await.map_err(|error| Failure {
            error,
            isolate: false,
        })?;
        let WriterConnection {
            client,
            start,
            answer,
            status,
            withdraw,
            sms,
            sms_state,
            sms_part,
            receipt,
            inbound,
            inbound_update,
            call,
            call_final,
        } = connection;
        let tx = client.transaction().await.map_err(pg_failure)?;
        let positions: Vec<(usize, usize)> = commits
            .iter()
            .enumerate()
            .flat_map(|(c, commit)| (0..commit.writes.len()).map(move |w| (c, w)))
            .collect();
        let writes: Vec<&Write> = commits.iter().flat_map(|c| c.writes.iter()).collect();
        let bound: Vec<Bound<'_>> = writes.iter().map(|w| Bound::new(w)).collect();
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = bound.iter().map(Bound::params).collect();
        let executions: Vec<Execution<'_>> = bound
            .iter()
            .zip(&params)
            .map(|(b, p)| {
                let statement: &Statement = match b {
                    Bound::Start(..) => start,
                    Bound::Answer(..) => answer,
                    Bound::Status(..) => status,
                    Bound::Withdraw(..) => withdraw,
                    Bound::SmsQueued(..) => sms,
                    Bound::SmsState(..) => sms_state,
                    Bound::SmsPart(..) => sms_part,
                    Bound::Receipt(..) => receipt,
                    Bound::SmsInbound(..) => inbound,
                    Bound::SmsInboundUpdate(..) => inbound_update,
                    Bound::CallAttempt(..) => call,
                    Bound::CallFinal(..) => call_final,
                };
                Box::pin(tx.execute(statement, p.as_slice())) as Execution<'_>
            })
            .collect();
        let outcomes = pipelined(executions).await;
        let mut rejections = Vec::new();
        for ((write, outcome), position) in writes.iter().zip(outcomes).zip(positions) {
            let changed = outcome.map_err(pg_failure)?;
            if changed == 0
                && let Some(rejection) = Rejection::unknown_response(position, write)
            {
                rejections.push(rejection);
            }
        }
        tx.commit().await.map_err(pg_failure)?;
        Ok(rejections)
    }
}

/// A read-only, repeatable-read transaction: one consistent snapshot for a whole read.
async fn begin_read(client: &mut Client) -> Result<Transaction<'_>, ResultStoreError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_error)
}

/// Reads every response of `flow_id` in one read-only, repeatable-read transaction on a
/// fresh connection.
pub(super) async fn read_responses(
    target: &Target,
    flow_id: &str,
) -> Result<Vec<ResponseRow>, ResultStoreError> {
    let mut client = target.connect().await?;
    let tx = begin_read(&mut client).await?;
    let mut rows = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in tx
        .query(SELECT_RESPONSES, &[&flow_id])
        .await
        .map_err(pg_error)?
    {
        let response = response_row(&row)?;
        index.insert(response.response_id.clone(), rows.len());
        rows.push(response);
    }
    for row in tx
        .query(SELECT_ANSWERS, &[&flow_id])
        .await
        .map_err(pg_error)?
    {
        let response_id: String = row.try_get(0).map_err(pg_error)?;
        let result: String = row.try_get(1).map_err(pg_error)?;
        let value: String = row.try_get(2).map_err(pg_error)?;
        let label: Option<String> = row.try_get(3).map_err(pg_error)?;
        if let Some(&i) = index.get(&response_id) {
            rows[i].answers.insert(result, (value, label));
        }
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(rows)
}

/// Reads outbound messages with their parts and receipts in one read-only,
/// repeatable-read transaction on a fresh connection.
/// Kept inbound SMS, on a connection of its own.
pub(super) async fn read_inbound(
    target: &Target,
    query: &super::InboundQuery,
) -> Result<Vec<super::InboundSms>, ResultStoreError> {
    let client = target.connect().await?;
    let rows = match query {
        super::InboundQuery::Unhandled(node) => {
            let sql = format!(
                "SELECT {INBOUND_COLUMNS} FROM sms_inbound WHERE node = $1 \
                 AND state = 'received' ORDER BY received_at_ms, inbound_id"
            );
            client.query(&sql, &[node]).await.map_err(pg_error)?
        }
        super::InboundQuery::Redelivery(m) => {
            let sql = format!(
                "SELECT {INBOUND_COLUMNS} FROM sms_inbound WHERE operator = $1 \
                 AND sender = $2 AND redelivery_expected AND recipient = $3 AND body = $4 \
                 AND received_at_ms >= $5 ORDER BY received_at_ms, inbound_id LIMIT 1"
            );
            let since = m.received_at_ms - super::REDELIVERY_WINDOW_MS;
            client
                .query(
                    &sql,
                    &[&m.operator, &m.sender, &m.recipient, &m.body, &since],
                )
                .await
                .map_err(pg_error)?
        }
    };
    rows.iter()
        .map(|row| {
            Ok(super::InboundSms {
                inbound_id: row.try_get(0).map_err(pg_error)?,
                node: row.try_get(1).map_err(pg_error)?,
                operator: row.try_get(2).map_err(pg_error)?,
                sender: row.try_get(3).map_err(pg_error)?,
                recipient: row.try_get(4).map_err(pg_error)?,
                body: row.try_get(5).map_err(pg_error)?,
                received_at_ms: row.try_get(6).map_err(pg_error)?,
            })
        })
        .collect()
}

pub(super) async fn read_sms(
    target: &Target,
    query: &SmsQuery,
) -> Result<Vec<SmsRow>, ResultStoreError> {
    let mut client = target.connect().await?;
    let tx = begin_read(&mut client).await?;
    let found = match query {
        SmsQuery::Ids(ids) => {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM sms_messages WHERE message_id = ANY($1) \
                 ORDER BY created_at_ms, message_id"
            );
            tx.query(&sql, &[ids]).await.map_err(pg_error)?
        }
        SmsQuery::Unfinished(node) => {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM sms_messages WHERE node = $1 \
                 AND state IN ('queued', 'sending') ORDER BY created_at_ms, message_id"
            );
            tx.query(&sql, &[node]).await.map_err(pg_error)?
        }
    };
    let mut rows = found.iter().map(sms_row).collect::<Result<Vec<_>, _>>()?;
    let parts_sql = format!(
        "SELECT {PART_COLUMNS} FROM sms_parts p \
         JOIN sms_messages m ON m.message_id = p.message_id \
         LEFT JOIN sms_receipts r ON r.operator = m.operator AND r.smsc_id = p.smsc_id \
         WHERE p.message_id = $1 ORDER BY p.part"
    );
    let parts = tx.prepare(&parts_sql).await.map_err(pg_error)?;
    for message in &mut rows {
        for row in tx
            .query(&parts, &[&message.message_id])
            .await
            .map_err(pg_error)?
        {
            let part: i64 = row.try_get(1).map_err(pg_error)?;
            message.parts.push(SmsPartRow {
                part: u32::try_from(part).unwrap_or(0),
                outcome: row.try_get(2).map_err(pg_error)?,
                smsc_id: row.try_get(3).map_err(pg_error)?,
                detail: row.try_get(4).map_err(pg_error)?,
                receipt: row.try_get(5).map_err(pg_error)?,
                receipt_error: row.try_get(6).map_err(pg_error)?,
                receipt_at_ms: row.try_get(7).map_err(pg_error)?,
            });
        }
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(rows)
}

fn sms_row(row: &tokio_postgres::Row) -> Result<SmsRow, ResultStoreError> {
    let message_id: String = row.try_get(0).map_err(pg_error)?;
    let state: String = row.try_get(7).map_err(pg_error)?;
    stored_sms_state(&message_id, &state)?;
    Ok(SmsRow {
        node: row.try_get(1).map_err(pg_error)?,
        operator: row.try_get(2).map_err(pg_error)?,
        recipient: row.try_get(3).map_err(pg_error)?,
        sender: row.try_get(4).map_err(pg_error)?,
        body: row.try_get(5).map_err(pg_error)?,
        purpose: row.try_get(6).map_err(pg_error)?,
        state,
        detail: row.try_get(8).map_err(pg_error)?,
        created_at_ms: row.try_get(9).map_err(pg_error)?,
        updated_at_ms: row.try_get(10).map_err(pg_error)?,
        parts: Vec::new(),
        message_id,
    })
}

fn response_row(row: &tokio_postgres::Row) -> Result<ResponseRow, ResultStoreError> {
    let response_id: String = row.try_get(0).map_err(pg_error)?;
    let flow_version: i64 = row.try_get(2).map_err(pg_error)?;
    let status: String = row.try_get(7).map_err(pg_error)?;
    Ok(ResponseRow {
        flow_version: super::stored_flow_version(&response_id, flow_version)?,
        status: super::stored_status(&response_id, &status)?,
        flow_id: row.try_get(1).map_err(pg_error)?,
        channel: row.try_get(3).map_err(pg_error)?,
        provider: row.try_get(4).map_err(pg_error)?,
        subscriber: row.try_get(5).map_err(pg_error)?,
        language: row.try_get(6).map_err(pg_error)?,
        started_at_ms: row.try_get(8).map_err(pg_error)?,
        updated_at_ms: row.try_get(9).map_err(pg_error)?,
        ended_at_ms: row.try_get(10).map_err(pg_error)?,
        answers: Default::default(),
        response_id,
    })
}

/// Reads the call attempts `query` names, oldest first, on a fresh connection.
pub(super) async fn read_call_attempts(
    target: &Target,
    query: &CallAttemptQuery,
) -> Result<Vec<CallAttemptRecord>, ResultStoreError> {
    let client = target.connect().await?;
    type Param = Box<dyn ToSql + Sync + Send>;
    let (filter, params): (&str, Vec<Param>) = match query {
        CallAttemptQuery::Subscriber(number) => ("subscriber = $1", vec![Box::new(number.clone())]),
        CallAttemptQuery::CallId(id) => (
            "provider_call_id = $1 OR attempt_id = $1",
            vec![Box::new(id.clone())],
        ),
        CallAttemptQuery::Unfinished(node) => (
            "node = $1 AND ended_at_ms IS NULL",
            vec![Box::new(node.clone())],
        ),
        CallAttemptQuery::AttemptIds(ids) => {
            ("attempt_id = ANY($1::TEXT[])", vec![Box::new(ids.clone())])
        }
        CallAttemptQuery::ProviderCalls { provider, call_ids } => (
            "provider = $1::TEXT AND provider_call_id = ANY($2::TEXT[])",
            vec![Box::new(provider.clone()), Box::new(call_ids.clone())],
        ),
    };
    let params: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
    let sql = format!(
        "SELECT {CALL_ATTEMPT_COLUMNS} FROM call_attempts WHERE {filter} \
         ORDER BY placed_at_ms, attempt, attempt_id"
    );
    client
        .query(&sql, &params)
        .await
        .map_err(pg_error)?
        .iter()
        .map(call_attempt_row)
        .collect()
}

fn call_attempt_row(row: &tokio_postgres::Row) -> Result<CallAttemptRecord, ResultStoreError> {
    let attempt_id: String = row.try_get(0).map_err(pg_error)?;
    let attempt: i64 = row.try_get(5).map_err(pg_error)?;
    let status: String = row.try_get(7).map_err(pg_error)?;
    let duration: Option<i64> = row.try_get(10).map_err(pg_error)?;
    Ok(CallAttemptRecord {
        attempt: super::stored_u32(&attempt_id, "attempt number", attempt)?,
        status: super::stored_call_status(&attempt_id, &status)?,
        duration_seconds: duration
            .map(|d| super::stored_u32(&attempt_id, "duration", d))
            .transpose()?,
        provider: row.try_get(1).map_err(pg_error)?,
        subscriber: row.try_get(2).map_err(pg_error)?,
        flow_id: row.try_get(3).map_err(pg_error)?,
        purpose: row.try_get(4).map_err(pg_error)?,
        placed_at_ms: row.try_get(6).map_err(pg_error)?,
        outcome: row.try_get(8).map_err(pg_error)?,
        provider_status: row.try_get(9).map_err(pg_error)?,
        provider_call_id: row.try_get(11).map_err(pg_error)?,
        reason: row.try_get(12).map_err(pg_error)?,
        updated_at_ms: row.try_get(13).map_err(pg_error)?,
        ended_at_ms: row.try_get(14).map_err(pg_error)?,
        node: row.try_get(15).map_err(pg_error)?,
        due_at_ms: row.try_get(16).map_err(pg_error)?,
        attempt_id,
    })
}

/// Locks the flow versions against other writers (readers go on) and takes the next value of
/// their change counter: with the lock held to commit, counters become visible in order, so a
/// poll that saw counter N never later finds a change below N.
async fn lock_flow_versions(tx: &Transaction<'_>) -> Result<i64, ResultStoreError> {
    tx.batch_execute("LOCK TABLE flow_versions IN SHARE ROW EXCLUSIVE MODE")
        .await
        .map_err(pg_error)?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(changed_seq), 0) + 1 FROM flow_versions",
            &[],
        )
        .await
        .map_err(pg_error)?;
    row.try_get(0).map_err(pg_error)
}

/// See [`super::ResultStore::publish_flow_versions`].
pub(super) async fn publish_flow_versions(
    target: &Target,
    versions: &[PublishedFlow],
) -> Result<(), ResultStoreError> {
    let mut client = target.connect().await?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let seq = lock_flow_versions(&tx).await?;
    for flow in versions {
        let version = i64::from(flow.version);
        let stored = tx
            .query_opt(
                "SELECT content_hash FROM flow_versions WHERE flow_id = $1 AND version = $2",
                &[&flow.flow_id, &version],
            )
            .await
            .map_err(pg_error)?;
        match stored {
            Some(row) => {
                let hash: String = row.try_get(0).map_err(pg_error)?;
                if hash != flow.content_hash {
                    return Err(changed_version(&flow.flow_id, flow.version));
                }
            }
            None => {
                tx.execute(
                    "INSERT INTO flow_versions (flow_id, version, content_hash, source, \
                     published_at_ms, retired_at_ms, changed_seq) \
                     VALUES ($1, $2, $3, $4, $5, NULL, $6)",
                    &[
                        &flow.flow_id,
                        &version,
                        &flow.content_hash,
                        &flow.source,
                        &flow.published_at_ms,
                        &seq,
                    ],
                )
                .await
                .map_err(pg_error)?;
            }
        }
        tx.execute(
            "UPDATE flow_versions SET retired_at_ms = NULL, changed_seq = $2 \
             WHERE flow_id = $1 AND retired_at_ms IS NOT NULL",
            &[&flow.flow_id, &seq],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}

/// See [`super::ResultStore::retire_flows`].
pub(super) async fn retire_flows(
    target: &Target,
    flow_ids: &[String],
    at_ms: i64,
) -> Result<(), ResultStoreError> {
    let mut client = target.connect().await?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let seq = lock_flow_versions(&tx).await?;
    for flow_id in flow_ids {
        tx.execute(
            "UPDATE flow_versions SET retired_at_ms = $2, changed_seq = $3 \
             WHERE flow_id = $1 AND retired_at_ms IS NULL",
            &[flow_id, &at_ms, &seq],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}

/// See [`super::ResultStore::flow_version`].
pub(super) async fn read_flow_version(
    target: &Target,
    flow_id: &str,
    version: u32,
) -> Result<Option<StoredFlowVersion>, ResultStoreError> {
    let client = target.connect().await?;
    let sql = format!(
        "SELECT {FLOW_VERSION_COLUMNS} FROM flow_versions WHERE flow_id = $1 AND version = $2"
    );
    let row = client
        .query_opt(&sql, &[&flow_id, &i64::from(version)])
        .await
        .map_err(pg_error)?;
    row.as_ref().map(flow_version_row).transpose()
}

/// See [`super::ResultStore::flow_versions_since`].
pub(super) async fn read_flow_versions_since(
    target: &Target,
    after_seq: i64,
) -> Result<Vec<StoredFlowVersion>, ResultStoreError> {
    let client = target.connect().await?;
    let sql = format!(
        "SELECT {FLOW_VERSION_COLUMNS} FROM flow_versions WHERE changed_seq > $1 \
         ORDER BY changed_seq, flow_id, version"
    );
    client
        .query(&sql, &[&after_seq])
        .await
        .map_err(pg_error)?
        .iter()
        .map(flow_version_row)
        .collect()
}

fn flow_version_row(row: &tokio_postgres::Row) -> Result<StoredFlowVersion, ResultStoreError> {
    let flow_id: String = row.try_get(0).map_err(pg_error)?;
    let version: i64 = row.try_get(1).map_err(pg_error)?;
    Ok(StoredFlowVersion {
        version: stored_version(&flow_id, version)?,
        content_hash: row.try_get(2).map_err(pg_error)?,
        source: row.try_get(3).map_err(pg_error)?,
        published_at_ms: row.try_get(4).map_err(pg_error)?,
        retired_at_ms: row.try_get(5).map_err(pg_error)?,
        changed_seq: row.try_get(6).map_err(pg_error)?,
        flow_id,
    })
}

#[cfg(test)]
mod tests {
    use super::{SslMode, Target, split_sslmode, valid_schema_name};
    use crate::tls::TlsMaterial;

    fn mode_of(url: &str) -> Result<SslMode, String> {
        Target::new(url, None, &TlsMaterial::default())
            .map(|target| target.ssl_mode)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sslmode_is_read_from_the_url_with_libpq_names() {
        assert_eq!(
            split_sslmode("postgres://u@h/db?sslmode=verify-full&application_name=x").ok(),
            Some((
                "postgres://u@h/db?application_name=x".to_string(),
                Some(SslMode::VerifyFull)
            ))
        );
        assert_eq!(
            split_sslmode("postgresql://u@h/db?sslmode=verify-ca").ok(),
            Some(("postgresql://u@h/db".to_string(), Some(SslMode::VerifyCa)))
        );
        assert_eq!(mode_of("postgres://u@h/db"), Ok(SslMode::Prefer));
        assert_eq!(
            mode_of("postgres://u@h/db?sslmode=require"),
            Ok(SslMode::Require)
        );
        assert_eq!(
            mode_of("host=h user=u sslmode=disable"),
            Ok(SslMode::Disable)
        );
        assert_eq!(
            mode_of("host=h user=u sslmode=require"),
            Ok(SslMode::Require)
        );
    }

    #[test]
    fn tls_settings_the_driver_cannot_read_get_a_hint() {
        let refused = |url: &str| mode_of(url).expect_err(url);
        assert!(refused("postgres://u@h/db?sslmode=allow").contains("sslmode=allow"));
        assert!(refused("host=h sslmode=verify-full").contains("postgres:// URL form"));
        assert!(
            refused("postgres://u:pw@h/db?sslrootcert=/etc/ca.pem").contains("store_tls.postgres")
        );
        assert!(!refused("postgres://u:pw@h/db?sslrootcert=/etc/ca.pem").contains("pw"));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["baraza", "_x", "results_2026", &"a".repeat(63)] {
            assert!(valid_schema_name(good), "{good}");
        }
        for bad in ["", "1abc", "a-b", "a\"b", "a b", "école", &"a".repeat(64)] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
    }
}
