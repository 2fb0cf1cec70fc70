//! The Redis session store: one shared multiplexed connection ([`ConnectionManager`]) and one
//! network round trip per session load and per session save.
//!
//! A `rediss://` URL makes that connection (and every reconnection, which reuses the same
//! client) TLS: the server's certificate must chain to the configured CA file, or to the
//! Mozilla roots when none is configured, and name the URL's host; a client certificate is
//! presented when one is configured. Certificates configured for a plain `redis://` URL are
//! refused rather than ignored.
//!
//! Key layout (the only place that defines it; every component escaped by
//! [`super::key_component`], so no id can reach outside its braces or collide with another):
//! - session: `<prefix>:s:{<channel>:<id>}`, value = 8-byte big-endian version, then the data;
//! - resumable copy: `<prefix>:r:{<subscriber>}:<flow id>`, value = the data;
//! - opt-out: `<prefix>:o:{<subscriber>}`, value = `1`, no expiry;
//! - mark, counter or note (missed-call claims, daily caps, call id -> flow):
//!   `<prefix>:m:{<kind>:<id>}`, with an expiry.
//!
//! The braces are a Redis Cluster hash tag: all keys of a session (and all keys of a
//! subscriber) hash to one slot, so a script touching several of them stays valid in Cluster.
//!
//! Round trips, per call:
//! - `load`: one `GET`. Version and data live in one string value, so no second read and no
//!   script are needed.
//! - `save` of a new session (no expected version): one `SET ... NX PX` (no script needed).
//! - `save`: one `EVALSHA` of [`SAVE_SCRIPT`], which compares the stored version prefix with the
//!   expected one and `SET`s the new value with `PX` inside Redis, atomically. The script is
//!   loaded at connect time so the `EVALSHA` hits; only after Redis lost its script cache
//!   (restart, failover, `SCRIPT FLUSH`) does one call pay for `EVALSHA` -> `NOSCRIPT` ->
//!   `SCRIPT LOAD` -> `EVALSHA` (done by `redis::Script`), and later calls are one trip again.
//! - `load_with_resumable` (a dial: the session and the subscriber's resumable copy) and
//!   `save_and_remember` (a save and the resumable copy's update): two commands pipelined, one
//!   round trip.
//! - `take_resumable`: one `GETDEL` (Redis 6.2 or newer); every other call is one command.
//!
//! Every call is bounded: the connection manager abandons a command after the configured
//! response timeout and a connection attempt after the connection timeout, and each call is
//! additionally cut at [`RedisSessions::call_budget`] (room for the script reload above, and a
//! guard against waiting on a reconnect). A cut call reports [`SessionStoreError::Timeout`].
//! It never uses `WATCH`/`MULTI` (unsafe on a multiplexed connection), never retries a write
//! on its own, and never logs stored data.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, RedisError, Script, TlsCertificates, Value,
};

use crate::tls::{TlsMaterial, failure_message, install_default_provider, tls_failure};

use super::{
    ResumeCopy, SaveOutcome, SessionBackend, SessionKey, SessionStoreError, Stored, clamp_ttl,
    key_component, next_version,
};

/// Bytes of the big-endian version that precedes the data in a session value.
const VERSION_LEN: usize = 8;

/// Compare-and-set of a session value, atomically inside Redis.
///
/// KEYS[1]: the session key. ARGV[1]: the expected 8-byte version, or empty for "must not
/// exist". ARGV[2]: the new value (new 8-byte version, then the data). ARGV[3]: time to live
/// in milliseconds. Returns 1 when written; otherwise the stored 8-byte version, or nil when
/// nothing is stored. Versions are compared as byte strings, so Lua never does arithmetic on
/// them (its numbers are doubles). Only the version is read (`GETRANGE`, which answers an
/// empty string for a missing key; a stored value is never empty): the data is not copied into
/// Lua.
const SAVE_SCRIPT: &str = r"
local version = redis.call('GETRANGE', KEYS[1], 0, 7)
if version ~= '' then
  if version ~= ARGV[1] then
    return version
  end
elseif ARGV[1] ~= '' then
  return false
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Longest key prefix accepted.
const MAX_PREFIX_LEN: usize = 64;

/// Upper bound on establishing the first connection in [`RedisSessions::connect`].
const CONNECT_BUDGET: Duration = Duration::from_secs(5);

/// Reconnection attempts per outage before calls start failing fast (a later call starts a new
/// round of attempts).
const RECONNECT_RETRIES: usize = 4;

/// Longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Sessions in Redis, shared by every gateway node.
#[derive(Clone)]
pub struct RedisSessions {
    /// The shared multiplexed connection; cloning it is cheap and every call uses a clone.
    connection: ConnectionManager,
    /// Prepended to every key (with `:`), so several deployments can share one Redis.
    prefix: String,
    /// The compare-and-set script; its SHA-1 is computed once.
    save_script: Script,
    /// The per-command response timeout given to the connection manager.
    response_timeout: Duration,
    /// The hard limit on one call, script reload and reconnect wait included.
    call_budget: Duration,
}

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions")
            .field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("call_budget", &self.call_budget)
            .finish_non_exhaustive()
    }
}

/// Refuses prefixes that could break the key layout: a brace would change the Cluster hash
/// tag; whitespace and control characters invite mistakes in `redis-cli`.
fn validate_prefix(prefix: &str) -> Result<(), SessionStoreError> {
    let reason = if prefix.is_empty() {
        Some("it is empty")
    } else if prefix.len() > MAX_PREFIX_LEN {
        Some("it is longer than 64 bytes")
    } else if prefix.contains(['{', '}']) {
        Some("it contains a brace, which would change the Redis Cluster hash tag")
    } else if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SessionStoreError::InvalidPrefix {
            prefix: prefix.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Splits a stored session value into version and data.
fn decode_session(value: Vec<u8>) -> Result<Stored, SessionStoreError> {
    let version = decode_version(&value)?;
    let mut data = value;
    data.drain(..VERSION_LEN);
    Ok(Stored { version, data })
}

/// Reads the 8-byte big-endian version at the start of a session value.
fn decode_version(bytes: &[u8]) -> Result<u64, SessionStoreError> {
    bytes
        .get(..VERSION_LEN)
        .and_then(|prefix| <[u8; VERSION_LEN]>::try_from(prefix).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| {
            SessionStoreError::Corrupt(format!(
                "a session value has {} bytes, fewer than its {VERSION_LEN}-byte version",
                bytes.len()
            ))
        })
}

/// A time to live as whole milliseconds for `PX`.
/// The new version, the expected version as the script compares it (8 bytes, or empty for
/// "must not exist"), and the value to store (the new version, then the data).
fn versioned_value(
    expected: Option<u64>,
    data: &[u8],
) -> Result<(u64, Vec<u8>, Vec<u8>), SessionStoreError> {
    let version = next_version(expected)?;
    let expected_bytes = expected
        .map(|v| v.to_be_bytes().to_vec())
        .unwrap_or_default();
    let mut value = Vec::with_capacity(VERSION_LEN + data.len());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(data);
    Ok((version, expected_bytes, value))
}

/// What the save script's answer means: 1 written, nil nothing stored, else the stored version.
fn save_outcome(reply: Value, version: u64) -> Result<SaveOutcome, SessionStoreError> {
    match reply {
        Value::Int(1) => Ok(SaveOutcome::Saved { version }),
        Value::Nil => Ok(SaveOutcome::Conflict { current: None }),
        Value::BulkString(current) => Ok(SaveOutcome::Conflict {
            current: Some(decode_version(&current)?),
        }),
        other => Err(SessionStoreError::Corrupt(format!(
            "the save script answered {other:?}, expected 1, nil or a version"
        ))),
    }
}

/// The client for `url`: over TLS with `tls`'s certificates for `rediss://`; plain for
/// `redis://` (and Unix sockets) only when `tls` is empty.
fn redis_client(url: &str, tls: &TlsMaterial) -> Result<redis::Client, SessionStoreError> {
    let info = url.into_connection_info()?;
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        if tls.is_set() {
            return Err(SessionStoreError::Tls(
                "certificates are configured (store_tls.redis) but the URL is not rediss://".into(),
            ));
        }
        return Ok(redis::Client::open(info)?);
    }
    install_default_provider();
    let certificates = TlsCertificates {
        client_tls: tls.client_pem().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.to_vec(),
            client_key: key.to_vec(),
        }),
        root_cert: tls.ca_pem().map(<[u8]>::to_vec),
    };
    Ok(redis::Client::build_with_tls(info, certificates)?)
}

/// A TLS failure says what the certificate was checked against; other errors stay as they are.
fn with_tls_context(error: RedisError, tls: &TlsMaterial) -> SessionStoreError {
    match tls_failure(&error) {
        Some(reason) => SessionStoreError::Tls(failure_message(
            reason,
            &format!("its name and chain are checked against {}", tls.trusted()),
        )),
        None => error.into(),
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(clamp_ttl(ttl).as_millis()).unwrap_or(u64::MAX)
}

impl RedisSessions {
    /// Connects to `url` (`redis://`, or `rediss://` trusting the Mozilla roots), loads the
    /// save script, and bounds every later command by `response_timeout`. Keys start with
    /// `key_prefix` and `:`.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        response_timeout: Duration,
    ) -> Result<RedisSessions, SessionStoreError> {
        Self::connect_with_tls(url, key_prefix, response_timeout, &TlsMaterial::default()).await
    }

    /// [`RedisSessions::connect`], a `rediss://` URL's server checked against `tls` (its CA
    /// file, else the Mozilla roots) and presented `tls`'s client certificate, if any.
    pub async fn connect_with_tls(
        url: &str,
        key_prefix: &str,
        response_timeout: Duration,
        tls: &TlsMaterial,
    ) -> Result<RedisSessions, SessionStoreError> {
        validate_prefix(key_prefix)?;
        let client = redis_client(url, tls)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(response_timeout.max(Duration::from_secs(1))))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(MAX_RECONNECT_DELAY);
        let connection = match tokio::time::timeout(
            CONNECT_BUDGET,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(connected) => connected.map_err(|e| with_tls_context(e, tls))?,
            Err(_) => {
                return Err(SessionStoreError::Timeout {
                    after: CONNECT_BUDGET,
                });
            }
        };
        let store = RedisSessions {
            connection,
            prefix: key_prefix.to_owned(),
            save_script: Script::new(SAVE_SCRIPT),
            response_timeout,
            call_budget: response_timeout.saturating_mul(3),
        };
        // Loaded now so that every save is a single EVALSHA (see the module notes).
        let mut connection = store.connection.clone();
        store
            .bounded(store.save_script.load_async(&mut connection))
            .await?;
        Ok(store)
    }

    /// The hard limit on one call: three response timeouts, enough for the one-off script
    /// reload (`EVALSHA`, `SCRIPT LOAD`, `EVALSHA`) and short enough to keep a USSD step
    /// within its deadline when Redis is reconnecting.
    pub fn call_budget(&self) -> Duration {
        self.call_budget
    }

    /// Runs one Redis call within [`RedisSessions::call_budget`], mapping timeouts.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, SessionStoreError> {
        match tokio::time::timeout(self.call_budget, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.is_timeout() => Err(SessionStoreError::Timeout {
                after: self.response_timeout,
            }),
            Ok(Err(e)) => Err(SessionStoreError::Redis(e)),
            Err(_) => Err(SessionStoreError::Timeout {
                after: self.call_budget,
            }),
        }
    }

    fn session_key(&self, key: &SessionKey) -> String {
        format!("{}:s:{{{}}}", self.prefix, key.tag())
    }

    fn resumable_key(&self, subscriber: &str, flow_id: &str) -> String {
        format!(
            "{}:r:{{{}}}:{}",
            self.prefix,
            key_component(subscriber),
            key_component(flow_id)
        )
    }

    fn opt_out_key(&self, subscriber: &str) -> String {
        format!("{}:o:{{{}}}", self.prefix, key_component(subscriber))
    }

    /// A mark, counter or note: `<prefix>:m:{<kind>:<id>}` (see [`super::SessionStore::claim`]).
    fn mark_key(&self, kind: &str, id: &str) -> String {
        format!(
            "{}:m:{{{}:{}}}",
            self.prefix,
            key_component(kind),
            key_component(id)
        )
    }

    /// See [`super::SessionStore::claim`]: one `SET key 1 NX PX ttl`.
    pub async fn claim(
        &self,
        kind: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<bool, SessionStoreError> {
        self.set_new(kind, id, "1", ttl).await
    }

    /// See [`super::SessionStore::lease`]: `SET NX PX` with the holder as the value, or the
    /// holder's already.
    pub async fn claim_as(
        &self,
        kind: &str,
        id: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, SessionStoreError> {
        if self.set_new(kind, id, holder, ttl).await? {
            return Ok(true);
        }
        // Taken already, perhaps by this very holder: a SET that timed out (a paused or slow
        // Redis) may have been applied after all.
        let mut connection = self.connection.clone();
        let current: Option<String> = self
            .bounded(
                redis::cmd("GET")
                    .arg(self.mark_key(kind, id))
                    .query_async(&mut connection),
            )
            .await?;
        Ok(current.as_deref() == Some(holder))
    }

    /// `SET NX PX` of a mark: whether it was set (false: one lives already).
    async fn set_new(
        &self,
        kind: &str,
        id: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("SET")
            .arg(self.mark_key(kind, id))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .clone();
        let set: Option<String> = self.bounded(command.query_async(&mut connection)).await?;
        Ok(set.is_some())
    }

    /// See [`super::SessionStore::opted_out_numbers`]: `SCAN` over `<prefix>:o:{*}`.
    pub async fn opted_out_numbers(&self) -> Result<Vec<String>, SessionStoreError> {
        let pattern = format!("{}:o:{{*}}", self.prefix);
        let head = format!("{}:o:{{", self.prefix);
        let mut connection = self.connection.clone();
        let mut cursor: u64 = 0;
        let mut numbers = Vec::new();
        loop {
            let command = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone();
            let (next, keys): (u64, Vec<String>) =
                self.bounded(command.query_async(&mut connection)).await?;
            numbers.extend(keys.iter().filter_map(|key| {
                let inner = key.strip_prefix(&head)?.strip_suffix('}')?;
                super::raw_component(inner)
            }));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        numbers.sort();
        numbers.dedup();
        Ok(numbers)
    }

    /// See [`super::SessionStore::release`]: deletes the mark only while it still names
    /// `holder` (compare and delete, one script call).
    pub async fn release(
        &self,
        kind: &str,
        id: &str,
        holder: &str,
    ) -> Result<(), SessionStoreError> {
        const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";
        // `EVAL` with the script's text (a few dozen bytes, once per SMS step) rather than a
        // cached script: one round trip whether or not Redis kept its script cache.
        let command = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(self.mark_key(kind, id))
            .arg(holder)
            .clone();
        let mut connection = self.connection.clone();
        self.bounded(command.query_async::<i64>(&mut connection))
            .await
            .map(|_| ())
    }

    /// See [`super::SessionStore::count_for`]: `INCR`, then `PEXPIRE ... NX` (the expiry is
    /// set by the first increment only), pipelined in one round trip.
    pub async fn count_for(
        &self,
        kind: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<u64, SessionStoreError> {
        let mut connection = self.connection.clone();
        let key = self.mark_key(kind, id);
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(&key);
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms(ttl))
            .arg("NX")
            .ignore();
        let (count,): (u64,) = self.bounded(pipe.query_async(&mut connection)).await?;
        Ok(count)
    }

    /// See [`super::SessionStore::put_note`]: one `SET key value PX ttl`.
    pub async fn put_note(
        &self,
        kind: &str,
        id: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("SET")
            .arg(self.mark_key(kind, id))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .clone();
        self.bounded(command.query_async::<()>(&mut connection))
            .await
    }

    /// The sorted set of one kind of timer (one key per kind: its own Cluster slot).
    fn timers_key(&self, kind: &str) -> String {
        format!("{}:t:{{{}}}", self.prefix, key_component(kind))
    }

    /// See [`super::SessionStore::schedule_timer`]: one `ZADD` (a later schedule replaces an
    /// earlier one for the same id).
    pub async fn schedule_timer(
        &self,
        kind: &str,
        id: &str,
        due_ms: i64,
    ) -> Result<(), SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("ZADD")
            .arg(self.timers_key(kind))
            .arg(due_ms)
            .arg(id)
            .clone();
        self.bounded(command.query_async::<()>(&mut connection))
            .await
    }

    /// See [`super::SessionStore::cancel_timer`]: one `ZREM`.
    pub async fn cancel_timer(&self, kind: &str, id: &str) -> Result<(), SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("ZREM")
            .arg(self.timers_key(kind))
            .arg(id)
            .clone();
        self.bounded(command.query_async::<()>(&mut connection))
            .await
    }

    /// See [`super::SessionStore::take_due_timers`]: a script reads and removes the due ids in
    /// one step, so with several gateway nodes each timer fires on exactly one of them.
    pub async fn take_due_timers(
        &self,
        kind: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, SessionStoreError> {
        const TAKE_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return due
";
        let script = Script::new(TAKE_DUE);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.timers_key(kind))
            .arg(now_ms)
            .arg(limit.max(1));
        let mut connection = self.connection.clone();
        self.bounded(invocation.invoke_async(&mut connection)).await
    }

    /// See [`super::SessionStore::get_note`]: one `GET`.
    pub async fn get_note(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("GET").arg(self.mark_key(kind, id)).clone();
        self.bounded(command.query_async(&mut connection)).await
    }
}

impl RedisSessions {
    /// See [`super::SessionStore::load_with_resumable`]: the session's `GET` and the resumable
    /// copy's `GET` pipelined, one round trip (two keys in two hash slots, like
    /// [`RedisSessions::save_and_remember`]).
    pub async fn load_with_resumable(
        &self,
        key: &SessionKey,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<(Option<Stored>, Option<Vec<u8>>), SessionStoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.session_key(key));
        pipe.cmd("GET").arg(self.resumable_key(subscriber, flow_id));
        let mut connection = self.connection.clone();
        let (session, copy): (Option<Vec<u8>>, Option<Vec<u8>>) =
            self.bounded(pipe.query_async(&mut connection)).await?;
        Ok((session.map(decode_session).transpose()?, copy))
    }

    /// The compare-and-set of `save` and the resume-copy write pipelined: one round trip for
    /// both (Redis runs them back to back). The copy lives under the subscriber's hash tag, the
    /// session under its own, so they cannot share one script in Redis Cluster; pipelining keeps
    /// the round trip without needing one slot. If Redis lost the script (`NOSCRIPT`), this
    /// falls back to `save` (which reloads it) and then the copy write: rare, and still correct.
    pub async fn save_and_remember(
        &self,
        key: &SessionKey,
        expected: Option<u64>,
        data: &[u8],
        ttl: Duration,
        resume: ResumeCopy<'_>,
    ) -> Result<SaveOutcome, SessionStoreError> {
        if matches!(resume, ResumeCopy::Keep) {
            return self.save(key, expected, data, ttl).await;
        }
        let (version, expected_bytes, value) = versioned_value(expected, data)?;
        let mut pipe = redis::pipe();
        if expected.is_none() {
            pipe.add_command(self.create_command(key, &value, ttl));
        } else {
            pipe.cmd("EVALSHA")
                .arg(self.save_script.get_hash())
                .arg(1)
                .arg(self.session_key(key))
                .arg(&expected_bytes)
                .arg(&value)
                .arg(ttl_ms(ttl));
        }
        match resume {
            ResumeCopy::Keep => {}
            ResumeCopy::Put {
                subscriber,
                flow_id,
                data,
                ttl,
            } => {
                pipe.cmd("SET")
                    .arg(self.resumable_key(subscriber, flow_id))
                    .arg(data)
                    .arg("PX")
                    .arg(ttl_ms(ttl))
                    .ignore();
            }
            ResumeCopy::Clear {
                subscriber,
                flow_id,
            } => {
                pipe.cmd("DEL")
                    .arg(self.resumable_key(subscriber, flow_id))
                    .ignore();
            }
        }
        let mut connection = self.connection.clone();
        let replies: Result<(Value,), SessionStoreError> =
            self.bounded(pipe.query_async(&mut connection)).await;
        let reply = match replies {
            Ok((reply,)) => reply,
            Err(SessionStoreError::Redis(e)) if e.code() == Some("NOSCRIPT") => {
                let outcome = self.save(key, expected, data, ttl).await?;
                if matches!(outcome, SaveOutcome::Saved { .. }) {
                    match resume {
                        ResumeCopy::Keep => {}
                        ResumeCopy::Put {
                            subscriber,
                            flow_id,
                            data,
                            ttl,
                        } => self.put_resumable(subscriber, flow_id, data, ttl).await?,
                        ResumeCopy::Clear {
                            subscriber,
                            flow_id,
                        } => self.clear_resumable(subscriber, flow_id).await?,
                    }
                }
                return Ok(outcome);
            }
            Err(e) => return Err(e),
        };
        if expected.is_none() {
            return self.create_outcome(key, reply, version).await;
        }
        save_outcome(reply, version)
    }

    /// The save of a new session (expected version: none): `SET ... NX PX`, a plain command,
    /// as atomic as the script and cheaper for Redis to run.
    fn create_command(&self, key: &SessionKey, value: &[u8], ttl: Duration) -> redis::Cmd {
        redis::cmd("SET")
            .arg(self.session_key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .clone()
    }

    /// What `SET NX` answered: `OK` written; nil when a session exists, whose version is then
    /// read (one more round trip, only on this conflict) so the answer matches the script's.
    async fn create_outcome(
        &self,
        key: &SessionKey,
        reply: Value,
        version: u64,
    ) -> Result<SaveOutcome, SessionStoreError> {
        match reply {
            Value::Okay => Ok(SaveOutcome::Saved { version }),
            Value::SimpleString(ok) if ok == "OK" => Ok(SaveOutcome::Saved { version }),
            Value::Nil => {
                let mut connection = self.connection.clone();
                let command = redis::cmd("GETRANGE")
                    .arg(self.session_key(key))
                    .arg(0)
                    .arg(VERSION_LEN - 1)
                    .clone();
                let current: Vec<u8> = self.bounded(command.query_async(&mut connection)).await?;
                let current = if current.is_empty() {
                    None
                } else {
                    Some(decode_version(&current)?)
                };
                Ok(SaveOutcome::Conflict { current })
            }
            other => Err(SessionStoreError::Corrupt(format!(
                "SET NX answered {other:?}, expected OK or nil"
            ))),
        }
    }
}

impl SessionBackend for RedisSessions {
    async fn load(&self, key: &SessionKey) -> Result<Option<Stored>, SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("GET").arg(self.session_key(key)).clone();
        let value: Option<Vec<u8>> = self.bounded(command.query_async(&mut connection)).await?;
        value.map(decode_session).transpose()
    }

    async fn save(
        &self,
        key: &SessionKey,
        expected: Option<u64>,
        data: &[u8],
        ttl: Duration,
    ) -> Result<SaveOutcome, SessionStoreError> {
        let (version, expected_bytes, value) = versioned_value(expected, data)?;
        if expected.is_none() {
            let mut connection = self.connection.clone();
            let command = self.create_command(key, &value, ttl);
            let reply: Value = self.bounded(command.query_async(&mut connection)).await?;
            return self.create_outcome(key, reply, version).await;
        }
        let mut invocation = self.save_script.prepare_invoke();
        invocation
            .key(self.session_key(key))
            .arg(expected_bytes)
            .arg(value)
            .arg(ttl_ms(ttl));
        let mut connection = self.connection.clone();
        let reply: Value = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        save_outcome(reply, version)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("DEL").arg(self.session_key(key)).clone();
        let removed: u64 = self.bounded(command.query_async(&mut connection)).await?;
        Ok(removed > 0)
    }

    async fn ttl_millis(&self, key: &SessionKey) -> Result<Option<i64>, SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PTTL").arg(self.session_key(key)).clone();
        let millis: i64 = self.bounded(command.query_async(&mut connection)).await?;
        // -2: no such key; -1: no expiry (never written by this module).
        Ok((millis != -2).then_some(millis))
    }

    async fn put_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
        data: &[u8],
        ttl: Duration,
    ) -> Result<(), SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("SET")
            .arg(self.resumable_key(subscriber, flow_id))
            .arg(data)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .clone();
        self.bounded(command.query_async::<()>(&mut connection))
            .await
    }

    async fn get_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<Option<Vec<u8>>, SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("GET")
            .arg(self.resumable_key(subscriber, flow_id))
            .clone();
        self.bounded(command.query_async(&mut connection)).await
    }

    async fn take_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<Option<Vec<u8>>, SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("GETDEL")
            .arg(self.resumable_key(subscriber, flow_id))
            .clone();
        self.bounded(command.query_async(&mut connection)).await
    }

    async fn clear_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<(), SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("DEL")
            .arg(self.resumable_key(subscriber, flow_id))
            .clone();
        self.bounded(command.query_async::<()>(&mut connection))
            .await
    }

    async fn set_opted_out(
        &self,
        subscriber: &str,
        opted_out: bool,
    ) -> Result<(), SessionStoreError> {
        let mut connection = self.connection.clone();
        let key = self.opt_out_key(subscriber);
        let command = if opted_out {
            redis::cmd("SET").arg(key).arg(1).clone()
        } else {
            redis::cmd("DEL").arg(key).clone()
        };
        self.bounded(command.query_async::<()>(&mut connection))
            .await
    }

    async fn is_opted_out(&self, subscriber: &str) -> Result<bool, SessionStoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("EXISTS")
            .arg(self.opt_out_key(subscriber))
            .clone();
        let count: u64 = self.bounded(command.query_async(&mut connection)).await?;
        Ok(count > 0)
    }

    async fn ping(&self) -> Result<(), SessionStoreError> {
        let mut connection = self.connection.clone();
        let reply: String = self
            .bounded(redis::cmd("PING").query_async(&mut connection))
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(SessionStoreError::Corrupt(format!(
                "PING answered {reply:?}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_that_break_the_layout_are_refused() {
        assert!(validate_prefix("baraza").is_ok());
        assert!(validate_prefix("baraza-prod:v2").is_ok());
        for bad in ["", "a{b", "a}b", "a b", "a\nb", &"p".repeat(65)] {
            assert!(validate_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn session_values_decode_or_report_corruption() {
        let mut value = 7u64.to_be_bytes().to_vec();
        value.extend_from_slice(b"data");
        let stored = decode_session(value).ok();
        assert_eq!(
            stored,
            Some(Stored {
                version: 7,
                data: b"data".to_vec()
            })
        );
        assert!(matches!(
            decode_session(vec![1, 2, 3]),
            Err(SessionStoreError::Corrupt(_))
        ));
        assert!(matches!(decode_version(&[0; 8]), Ok(0)));
    }

    #[test]
    fn ttl_is_whole_milliseconds_at_least_one() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_secs(180)), 180_000);
    }
}
