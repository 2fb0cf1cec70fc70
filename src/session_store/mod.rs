//! The session store: live USSD sessions, "continue where you left off" copies and opt-outs,
//! kept in this process ([`InMemorySessions`]) or in Redis ([`RedisSessions`]) behind one API
//! ([`SessionStore`]).
//!
//! Sessions are opaque bytes with a version number. Every save is a compare-and-set on that
//! version, so two gateway nodes (or two deliveries of the same step) can never both win: the
//! loser gets [`SaveOutcome::Conflict`] and re-reads. Every write carries a time to live, and a
//! save refreshes it.
//!
//! This module is the only place that knows how keys are laid out; callers name a session by
//! [`SessionKey`] and a resumable copy by subscriber and flow id. It never interprets the bytes
//! it stores, never retries on its own and never waits longer than its configured timeout.

mod in_memory;
mod redis_store;

use std::future::Future;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use in_memory::InMemorySessions;
pub use redis_store::RedisSessions;

/// What a save does to the subscriber's "continue where you left off" copy of a flow.
#[derive(Debug, Clone, Copy)]
pub enum ResumeCopy<'a> {
    /// Leave it as it is.
    Keep,
    /// Replace it with `data` for `ttl` (the flow's resume window).
    Put {
        subscriber: &'a str,
        flow_id: &'a str,
        data: &'a [u8],
        ttl: Duration,
    },
    /// Remove it (the flow was completed or abandoned for good).
    Clear {
        subscriber: &'a str,
        flow_id: &'a str,
    },
}

/// Longest escaped key component kept as is; longer ones are replaced by a digest so that an
/// arbitrary caller-supplied id cannot make keys (and Redis memory) grow without bound.
const MAX_COMPONENT_LEN: usize = 128;

/// Marks a component that was replaced by its SHA-256 digest. The escaper always escapes this
/// character, so a digest form can never equal the escaped form of another id.
const DIGEST_MARK: char = '~';

/// Names one live session: the channel (provider) it arrived on and the provider's session id.
///
/// The name is escaped once here, so no id (with `}`, `:`, spaces, or thousands of characters)
/// can collide with another or break out of the Redis hash tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// `<escaped channel>:<escaped id>`: unique per (channel, id) pair, free of `{`, `}` and of
    /// any `:` other than the separator, and at most `2 * MAX_COMPONENT_LEN + 1` bytes long.
    tag: String,
}

impl SessionKey {
    /// The key of session `session_id` on channel `channel` (e.g. `africastalking`).
    pub fn new(channel: &str, session_id: &str) -> SessionKey {
        let mut tag = key_component(channel);
        tag.push(':');
        tag.push_str(&key_component(session_id));
        SessionKey { tag }
    }

    /// The escaped `channel:id` text, used inside the hash tag of the Redis key and as the
    /// in-memory map key.
    fn tag(&self) -> &str {
        &self.tag
    }
}

/// The caller's text of a key component ([`key_component`] undone); `None` for one replaced
/// by its digest (too long to have been a phone number) or not escaped by this module.
fn raw_component(escaped: &str) -> Option<String> {
    if escaped.starts_with(DIGEST_MARK) {
        return None;
    }
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Escapes one caller-supplied key component so that the result is injective (different
/// inputs give different outputs) and contains only `[A-Za-z0-9._+@=-]` and `%`: every other
/// byte becomes `%XX`. A result longer than [`MAX_COMPONENT_LEN`] is replaced by `~` followed
/// by the hex SHA-256 of the raw input.
fn key_component(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for &byte in raw.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'+' | b'@' | b'=' | b'-') {
            escaped.push(char::from(byte));
        } else {
            escaped.push('%');
            escaped.push_str(&format!("{byte:02X}"));
        }
        if escaped.len() > MAX_COMPONENT_LEN {
            let mut digest = String::with_capacity(65);
            digest.push(DIGEST_MARK);
            digest.push_str(&hex::encode(Sha256::digest(raw.as_bytes())));
            return digest;
        }
    }
    escaped
}

/// A session as stored: its bytes and the version the next save must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Incremented by every successful save, starting at 1; the `expected` of the next save.
    pub version: u64,
    /// The caller's bytes, exactly as saved.
    pub data: Vec<u8>,
}

/// What a version-checked save did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// Written; `version` is what the next save must expect.
    Saved {
        /// The version now stored (the expected version plus one, or 1 for a new session).
        version: u64,
    },
    /// Not written, because someone else saved first (or the session expired or was deleted).
    Conflict {
        /// The version stored now, or `None` when no session exists.
        current: Option<u64>,
    },
}

/// Why a session store call failed. Messages name the cause and never contain stored data.
#[derive(Debug, thiserror::Error)]
pub enum SessionStoreError {
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The TLS connection to Redis failed (its certificate refused, or the handshake).
    #[error("redis TLS: {0}")]
    Tls(String),
    /// Redis did not answer in time; the call was abandoned (its effect, for a write, is
    /// unknown).
    #[error("redis did not answer within {} ms", after.as_millis())]
    Timeout {
        /// The time budget that ran out.
        after: Duration,
    },
    /// A value under one of our keys is not in the layout this module writes.
    #[error("stored session value is corrupt: {0}")]
    Corrupt(String),
    /// The configured key prefix cannot be used safely.
    #[error("invalid redis key prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix as configured.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The version counter cannot be incremented any further.
    #[error("session version {0} cannot be incremented")]
    VersionOverflow(u64),
}

/// Shortest time to live (Redis refuses an expiry of zero).
const MIN_TTL: Duration = Duration::from_millis(1);

/// Longest time to live: ten years, far beyond any session, small enough for every clock.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A caller's time to live, clamped to [`MIN_TTL`]..=[`MAX_TTL`].
fn clamp_ttl(ttl: Duration) -> Duration {
    ttl.clamp(MIN_TTL, MAX_TTL)
}

/// The version a successful save stores: one more than expected, or 1 for a new session.
fn next_version(expected: Option<u64>) -> Result<u64, SessionStoreError> {
    match expected {
        None => Ok(1),
        Some(v) => v
            .checked_add(1)
            .ok_or(SessionStoreError::VersionOverflow(v)),
    }
}

/// The contract every backend fulfils; [`SessionStore`] dispatches to one of them.
///
/// All times to live are clamped to between one millisecond and ten years.
pub trait SessionBackend {
    /// The session, or `None` when it never existed, expired or was deleted.
    fn load(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<Option<Stored>, SessionStoreError>> + Send;

    /// Stores `data` if the stored version equals `expected` (`None`: only if no session
    /// exists), and sets its time to live to `ttl`.
    fn save(
        &self,
        key: &SessionKey,
        expected: Option<u64>,
        data: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<SaveOutcome, SessionStoreError>> + Send;

    /// Removes the session; `true` when one existed.
    fn delete(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<bool, SessionStoreError>> + Send;

    /// Remaining time to live of the session in milliseconds, `None` when it does not exist
    /// (`Some(-1)` would mean "no expiry", which this module never writes). For tests and
    /// diagnostics.
    fn ttl_millis(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<Option<i64>, SessionStoreError>> + Send;

    /// Keeps the copy of `subscriber`'s session on `flow_id` that a redial may resume.
    fn put_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
        data: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<(), SessionStoreError>> + Send;

    /// The resumable copy, if one is kept.
    fn get_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, SessionStoreError>> + Send;

    /// The resumable copy, removed in the same atomic operation (so only one caller gets it).
    fn take_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, SessionStoreError>> + Send;

    /// Drops the resumable copy, if any.
    fn clear_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> impl Future<Output = Result<(), SessionStoreError>> + Send;

    /// Records (`true`) or withdraws (`false`) a subscriber's opt-out. Opt-outs never expire.
    fn set_opted_out(
        &self,
        subscriber: &str,
        opted_out: bool,
    ) -> impl Future<Output = Result<(), SessionStoreError>> + Send;

    /// Whether the subscriber has opted out.
    fn is_opted_out(
        &self,
        subscriber: &str,
    ) -> impl Future<Output = Result<bool, SessionStoreError>> + Send;

    /// Checks that the store answers (for `/healthz`).
    fn ping(&self) -> impl Future<Output = Result<(), SessionStoreError>> + Send;
}

/// The session store the gateway uses: one of a closed set of backends.
#[derive(Debug)]
pub enum SessionStore {
    /// In this process only: for development, tests and a single node.
    InMemory(InMemorySessions),
    /// Redis, shared by every gateway node.
    Redis(RedisSessions),
}

/// Calls the same method on whichever backend the store holds.
macro_rules! dispatch {
    ($store:expr, $backend:ident => $call:expr) => {
        match $store {
            SessionStore::InMemory($backend) => $call.await,
            SessionStore::Redis($backend) => $call.await,
        }
    };
}

impl SessionStore {
    /// See [`SessionBackend::load`].
    pub async fn load(&self, key: &SessionKey) -> Result<Option<Stored>, SessionStoreError> {
        dispatch!(self, b => b.load(key))
    }

    /// The session and the subscriber's resumable copy of `flow_id`, in one round trip on Redis
    /// (two pipelined `GET`s): what a dial needs before it knows whether it starts afresh or
    /// offers to resume. The same as [`SessionStore::load`] followed by
    /// [`SessionStore::get_resumable`].
    pub async fn load_with_resumable(
        &self,
        key: &SessionKey,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<(Option<Stored>, Option<Vec<u8>>), SessionStoreError> {
        match self {
            SessionStore::Redis(redis) => redis.load_with_resumable(key, subscriber, flow_id).await,
            SessionStore::InMemory(memory) => Ok((
                memory.load(key).await?,
                memory.get_resumable(subscriber, flow_id).await?,
            )),
        }
    }

    /// See [`SessionBackend::save`].
    pub async fn save(
        &self,
        key: &SessionKey,
        expected: Option<u64>,
        data: &[u8],
        ttl: Duration,
    ) -> Result<SaveOutcome, SessionStoreError> {
        dispatch!(self, b => b.save(key, expected, data, ttl))
    }

    /// A save plus the matching change to the subscriber's "continue where you left off" copy,
    /// in one round trip on Redis (the two commands are pipelined; see
    /// [`RedisSessions::save_and_remember`]). The copy is written only when the save wins,
    /// except on Redis where a lost compare-and-set may still have rewritten the copy with the
    /// loser's bytes; the loser retries and writes it again, so the copy converges.
    pub async fn save_and_remember(
        &self,
        key: &SessionKey,
        expected: Option<u64>,
        data: &[u8],
        ttl: Duration,
        resume: ResumeCopy<'_>,
    ) -> Result<SaveOutcome, SessionStoreError> {
        match self {
            SessionStore::Redis(redis) => {
                redis
                    .save_and_remember(key, expected, data, ttl, resume)
                    .await
            }
            SessionStore::InMemory(memory) => {
                let outcome = memory.save(key, expected, data, ttl).await?;
                if matches!(outcome, SaveOutcome::Saved { .. }) {
                    match resume {
                        ResumeCopy::Keep => {}
                        ResumeCopy::Put {
                            subscriber,
                            flow_id,
                            data,
                            ttl,
                        } => memory.put_resumable(subscriber, flow_id, data, ttl).await?,
                        ResumeCopy::Clear {
                            subscriber,
                            flow_id,
                        } => memory.clear_resumable(subscriber, flow_id).await?,
                    }
                }
                Ok(outcome)
            }
        }
    }

    /// See [`SessionBackend::delete`].
    pub async fn delete(&self, key: &SessionKey) -> Result<bool, SessionStoreError> {
        dispatch!(self, b => b.delete(key))
    }

    /// See [`SessionBackend::ttl_millis`].
    pub async fn ttl_millis(&self, key: &SessionKey) -> Result<Option<i64>, SessionStoreError> {
        dispatch!(self, b => b.ttl_millis(key))
    }

    /// See [`SessionBackend::put_resumable`].
    pub async fn put_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
        data: &[u8],
        ttl: Duration,
    ) -> Result<(), SessionStoreError> {
        dispatch!(self, b => b.put_resumable(subscriber, flow_id, data, ttl))
    }

    /// See [`SessionBackend::get_resumable`].
    pub async fn get_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<Option<Vec<u8>>, SessionStoreError> {
        dispatch!(self, b => b.get_resumable(subscriber, flow_id))
    }

    /// See [`SessionBackend::take_resumable`].
    pub async fn take_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<Option<Vec<u8>>, SessionStoreError> {
        dispatch!(self, b => b.take_resumable(subscriber, flow_id))
    }

    /// See [`SessionBackend::clear_resumable`].
    pub async fn clear_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<(), SessionStoreError> {
        dispatch!(self, b => b.clear_resumable(subscriber, flow_id))
    }

    /// See [`SessionBackend::set_opted_out`].
    pub async fn set_opted_out(
        &self,
        subscriber: &str,
        opted_out: bool,
    ) -> Result<(), SessionStoreError> {
        dispatch!(self, b => b.set_opted_out(subscriber, opted_out))
    }

    /// Every number this store holds an opt-out for (older gateways kept opt-outs here; the
    /// result store's consent is the one truth now, and these are carried over to it at
    /// start). Redis: a `SCAN` of the opt-out keys, so it does not block the server.
    pub async fn opted_out_numbers(&self) -> Result<Vec<String>, SessionStoreError> {
        match self {
            SessionStore::InMemory(memory) => Ok(memory.opted_out_numbers()),
            SessionStore::Redis(redis) => redis.opted_out_numbers().await,
        }
    }

    /// See [`SessionBackend::is_opted_out`].
    pub async fn is_opted_out(&self, subscriber: &str) -> Result<bool, SessionStoreError> {
        dispatch!(self, b => b.is_opted_out(subscriber))
    }

    /// Claims `kind`/`id` for `ttl`: true for the first caller, false while the claim lives
    /// (Redis `SET NX PX`, so it holds across gateway nodes). Used to de-duplicate missed calls.
    pub async fn claim(
        &self,
        kind: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<bool, SessionStoreError> {
        match self {
            SessionStore::InMemory(memory) => Ok(memory.claim(kind, id, ttl)),
            SessionStore::Redis(redis) => redis.claim(kind, id, ttl).await,
        }
    }

    /// Takes the lease `kind`/`id` for `holder` for `ttl` when nobody else holds it: true when
    /// `holder` has it (taken now, or by an earlier call of the same holder whose answer was
    /// lost). Held across gateway nodes (Redis `SET NX PX`); a holder that stops without
    /// giving it back loses it at `ttl`. Used to run one SMS step per number at a time.
    pub async fn lease(
        &self,
        kind: &str,
        id: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, SessionStoreError> {
        match self {
            SessionStore::InMemory(memory) => Ok(memory.claim_as(kind, id, holder.as_bytes(), ttl)),
            SessionStore::Redis(redis) => redis.claim_as(kind, id, holder, ttl).await,
        }
    }

    /// Gives the lease `kind`/`id` back if `holder` still holds it (one that expired and was
    /// taken by another holder is left alone).
    pub async fn release(
        &self,
        kind: &str,
        id: &str,
        holder: &str,
    ) -> Result<(), SessionStoreError> {
        match self {
            SessionStore::InMemory(memory) => {
                memory.release(kind, id, holder.as_bytes());
                Ok(())
            }
            SessionStore::Redis(redis) => redis.release(kind, id, holder).await,
        }
    }

    /// Adds one to the counter `kind`/`id` and returns the new count; a new counter expires
    /// `ttl` after its first increment (later increments keep that expiry). Used for daily caps.
    pub async fn count_for(
        &self,
        kind: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<u64, SessionStoreError> {
        match self {
            SessionStore::InMemory(memory) => Ok(memory.count_for(kind, id, ttl)),
            SessionStore::Redis(redis) => redis.count_for(kind, id, ttl).await,
        }
    }

    /// Stores a small note (e.g. the flow an outbound call runs) under `kind`/`id` for `ttl`.
    pub async fn put_note(
        &self,
        kind: &str,
        id: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), SessionStoreError> {
        match self {
            SessionStore::InMemory(memory) => {
                memory.put_note(kind, id, value, ttl);
                Ok(())
            }
            SessionStore::Redis(redis) => redis.put_note(kind, id, value, ttl).await,
        }
    }

    /// Schedules (or moves) the timer `kind`/`id` to fire at `due_ms` (ms since the epoch).
    /// Used for SMS reminders and timeouts: an SMS session waits hours, across restarts and
    /// nodes, so its timers live with the sessions.
    pub async fn schedule_timer(
        &self,
        kind: &str,
        id: &str,
        due_ms: i64,
    ) -> Result<(), SessionStoreError> {
        match self {
            SessionStore::InMemory(memory) => {
                memory.schedule_timer(kind, id, due_ms);
                Ok(())
            }
            SessionStore::Redis(redis) => redis.schedule_timer(kind, id, due_ms).await,
        }
    }

    /// Removes the timer `kind`/`id`, if any.
    pub async fn cancel_timer(&self, kind: &str, id: &str) -> Result<(), SessionStoreError> {
        match self {
            SessionStore::InMemory(memory) => {
                memory.cancel_timer(kind, id);
                Ok(())
            }
            SessionStore::Redis(redis) => redis.cancel_timer(kind, id).await,
        }
    }

    /// Takes (removes and returns) up to `limit` timers of `kind` due at `now_ms`, earliest
    /// first; each timer is taken once, whichever node asks.
    pub async fn take_due_timers(
        &self,
        kind: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, SessionStoreError> {
        match self {
            SessionStore::InMemory(memory) => Ok(memory.take_due_timers(kind, now_ms, limit)),
            SessionStore::Redis(redis) => redis.take_due_timers(kind, now_ms, limit).await,
        }
    }

    /// The note under `kind`/`id`, if it was stored and has not expired.
    pub async fn get_note(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, SessionStoreError> {
        match self {
            SessionStore::InMemory(memory) => Ok(memory.get_note(kind, id)),
            SessionStore::Redis(redis) => redis.get_note(kind, id).await,
        }
    }

    /// See [`SessionBackend::ping`].
    pub async fn ping(&self) -> Result<(), SessionStoreError> {
        dispatch!(self, b => b.ping())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_stay_readable() {
        assert_eq!(
            SessionKey::new("africastalking", "ATUid_1.x-2").tag(),
            "africastalking:ATUid_1.x-2"
        );
        assert_eq!(key_component("+254700000001"), "+254700000001");
    }

    #[test]
    fn separators_and_braces_are_escaped() {
        assert_eq!(key_component("a}b:c d{%~"), "a%7Db%3Ac%20d%7B%25%7E");
        assert_eq!(key_component("ñ"), "%C3%B1");
        assert_eq!(key_component(""), "");
    }

    #[test]
    fn channel_and_id_boundary_is_unambiguous() {
        assert_ne!(SessionKey::new("a:b", "c"), SessionKey::new("a", "b:c"));
        assert_ne!(SessionKey::new("a", "b%3Ac"), SessionKey::new("a", "b:c"));
    }

    #[test]
    fn long_ids_are_digested_and_bounded() {
        let long = "x".repeat(1000);
        let component = key_component(&long);
        assert!(component.starts_with(DIGEST_MARK));
        assert_eq!(component.len(), 65);
        let mut other = "x".repeat(999);
        other.push('y');
        assert_ne!(key_component(&other), component);
        // Exactly at the limit stays escaped; one byte over is digested.
        assert_eq!(
            key_component(&"a".repeat(MAX_COMPONENT_LEN)).len(),
            MAX_COMPONENT_LEN
        );
        assert!(key_component(&"a".repeat(MAX_COMPONENT_LEN + 1)).starts_with(DIGEST_MARK));
        // Escaping that would cross the limit is digested too.
        assert!(key_component(&"}".repeat(50)).starts_with(DIGEST_MARK));
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn the_store_and_its_futures_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SessionStore>();
        let store = SessionStore::InMemory(InMemorySessions::new());
        let key = SessionKey::new("c", "id");
        // Built, never polled: only their types matter (axum handlers need Send futures).
        assert_send(&store.load(&key));
        assert_send(&store.save(&key, None, b"", Duration::ZERO));
        assert_send(&store.delete(&key));
        assert_send(&store.ttl_millis(&key));
        assert_send(&store.put_resumable("s", "f", b"", Duration::ZERO));
        assert_send(&store.get_resumable("s", "f"));
        assert_send(&store.take_resumable("s", "f"));
        assert_send(&store.clear_resumable("s", "f"));
        assert_send(&store.set_opted_out("s", true));
        assert_send(&store.is_opted_out("s"));
        assert_send(&store.ping());
    }

    #[test]
    fn versions_count_from_one_and_never_wrap() {
        assert_eq!(next_version(None).ok(), Some(1));
        assert_eq!(next_version(Some(41)).ok(), Some(42));
        assert!(matches!(
            next_version(Some(u64::MAX)),
            Err(SessionStoreError::VersionOverflow(_))
        ));
    }
}
