//! The in-process session store: hash maps behind one mutex, with expiry by deadline.
//!
//! Expired entries are treated as absent by every call, removed when a call meets them, and
//! swept in bulk by [`InMemorySessions::purge_expired`] (also run by writes at most once per
//! [`SWEEP_INTERVAL`], so abandoned sessions do not accumulate). Deadlines use
//! `tokio::time::Instant`, so tests can drive expiry with `tokio::time::pause`/`advance`.
//!
//! It never shares state across processes, never persists anything and never blocks on I/O:
//! every call holds the lock only for a map operation and a copy of the bytes.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{
    SaveOutcome, SessionBackend, SessionKey, SessionStoreError, Stored, clamp_ttl, next_version,
};

/// How often writes sweep out expired entries.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// One stored value and when it stops existing.
#[derive(Debug)]
struct Entry<T> {
    /// The stored value.
    value: T,
    /// The first instant at which the value counts as expired.
    expires_at: Instant,
}

impl<T> Entry<T> {
    fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// Everything the store holds, guarded together.
#[derive(Debug)]
struct Maps {
    /// Live sessions by [`SessionKey`] tag.
    sessions: HashMap<String, Entry<Stored>>,
    /// Resumable copies by (subscriber, flow id).
    resumable: HashMap<(String, String), Entry<Vec<u8>>>,
    /// Subscribers who opted out (no expiry).
    opted_out: HashSet<String>,
    /// Short-lived marks and counters (claims, daily counters, notes) by `kind\0id`.
    marks: HashMap<String, Entry<Vec<u8>>>,
    /// Timers by kind: id -> due time in ms since the epoch (SMS reminders and timeouts).
    timers: HashMap<String, HashMap<String, i64>>,
    /// When a write should next sweep expired entries.
    next_sweep: Instant,
}

impl Maps {
    /// Removes every expired entry; returns how many were removed.
    fn purge(&mut self, now: Instant) -> usize {
        let before = self.sessions.len() + self.resumable.len();
        self.sessions.retain(|_, e| e.is_live(now));
        self.resumable.retain(|_, e| e.is_live(now));
        self.marks.retain(|_, e| e.is_live(now));
        self.next_sweep = now + SWEEP_INTERVAL;
        before - (self.sessions.len() + self.resumable.len())
    }

    /// Sweeps if the interval has passed (called by writes).
    fn sweep_if_due(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.purge(now);
        }
    }

    /// The live session under `tag`, dropping it first if it has expired.
    fn live_session(&mut self, tag: &str, now: Instant) -> Option<&mut Entry<Stored>> {
        if self.sessions.get(tag).is_some_and(|e| !e.is_live(now)) {
            self.sessions.remove(tag);
        }
        self.sessions.get_mut(tag)
    }

    /// The live resumable copy under `key`, dropping it first if it has expired.
    fn live_resumable(&mut self, key: &(String, String), now: Instant) -> Option<&Entry<Vec<u8>>> {
        if self.resumable.get(key).is_some_and(|e| !e.is_live(now)) {
            self.resumable.remove(key);
        }
        self.resumable.get(key)
    }
}

/// Sessions held in this process (lost on restart; not shared between nodes).
#[derive(Debug)]
pub struct InMemorySessions {
    /// All state behind one lock: critical sections are a map operation and a byte copy, far
    /// below the cost of the step around them.
    maps: Mutex<Maps>,
}

impl Default for InMemorySessions {
    fn default() -> Self {
        InMemorySessions::new()
    }
}

/// A time to live as a deadline from `now`, clamped as in Redis (see [`clamp_ttl`]); should
/// the clock still overflow, the entry expires at once rather than panicking.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(clamp_ttl(ttl)).unwrap_or(now)
}

fn resumable_key(subscriber: &str, flow_id: &str) -> (String, String) {
    (subscriber.to_owned(), flow_id.to_owned())
}

impl InMemorySessions {
    /// An empty store.
    pub fn new() -> InMemorySessions {
        InMemorySessions {
            maps: Mutex::new(Maps {
                sessions: HashMap::new(),
                resumable: HashMap::new(),
                opted_out: HashSet::new(),
                marks: HashMap::new(),
                timers: HashMap::new(),
                next_sweep: Instant::now() + SWEEP_INTERVAL,
            }),
        }
    }

    /// The maps; a panic elsewhere while holding the lock cannot leave them half-updated
    /// (every update is a single map operation), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Maps> {
        match self.maps.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Removes every expired session and resumable copy now; returns how many were removed.
    pub fn purge_expired(&self) -> usize {
        self.lock().purge(Instant::now())
    }

    /// How many sessions and resumable copies are held, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        let maps = self.lock();
        maps.sessions.len() + maps.resumable.len()
    }

    /// Whether nothing is held (see [`InMemorySessions::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live mark under `kind`/`id`, dropping it first if it has expired.
    fn live_mark<'m>(
        maps: &'m mut Maps,
        tag: &str,
        now: Instant,
    ) -> Option<&'m mut Entry<Vec<u8>>> {
        if maps.marks.get(tag).is_some_and(|e| !e.is_live(now)) {
            maps.marks.remove(tag);
        }
        maps.marks.get_mut(tag)
    }

    /// See [`super::SessionStore::opted_out_numbers`].
    pub fn opted_out_numbers(&self) -> Vec<String> {
        let mut numbers: Vec<String> = self.lock().opted_out.iter().cloned().collect();
        numbers.sort();
        numbers
    }

    /// See [`super::SessionStore::claim`].
    pub fn claim(&self, kind: &str, id: &str, ttl: Duration) -> bool {
        self.mark_new(kind, id, b"1", ttl, false)
    }

    /// See [`super::SessionStore::lease`]: a claim whose value names its holder, or the
    /// holder's already.
    pub fn claim_as(&self, kind: &str, id: &str, holder: &[u8], ttl: Duration) -> bool {
        self.mark_new(kind, id, holder, ttl, true)
    }

    /// Sets the mark `kind`/`id` to `value` unless one lives (true when set); with `same`,
    /// a live mark holding `value` counts as set.
    fn mark_new(&self, kind: &str, id: &str, value: &[u8], ttl: Duration, same: bool) -> bool {
        let holder = value;
        let now = Instant::now();
        let tag = mark_tag(kind, id);
        let mut maps = self.lock();
        maps.sweep_if_due(now);
        if let Some(mark) = Self::live_mark(&mut maps, &tag, now) {
            return same && mark.value == holder;
        }
        maps.marks.insert(
            tag,
            Entry {
                value: holder.to_vec(),
                expires_at: deadline(now, ttl),
            },
        );
        true
    }

    /// See [`super::SessionStore::release`].
    pub fn release(&self, kind: &str, id: &str, holder: &[u8]) {
        let now = Instant::now();
        let tag = mark_tag(kind, id);
        let mut maps = self.lock();
        if Self::live_mark(&mut maps, &tag, now).is_some_and(|e| e.value == holder) {
            maps.marks.remove(&tag);
        }
    }

    /// See [`super::SessionStore::count_for`]: the counter expires `ttl` after its first
    /// increment.
    pub fn count_for(&self, kind: &str, id: &str, ttl: Duration) -> u64 {
        let now = Instant::now();
        let tag = mark_tag(kind, id);
        let mut maps = self.lock();
        maps.sweep_if_due(now);
        let current = Self::live_mark(&mut maps, &tag, now)
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let next = current.saturating_add(1);
        let expires_at = match Self::live_mark(&mut maps, &tag, now) {
            Some(entry) => entry.expires_at,
            None => deadline(now, ttl),
        };
        maps.marks.insert(
            tag,
            Entry {
                value: next.to_string().into_bytes(),
                expires_at,
            },
        );
        next
    }

    /// See [`super::SessionStore::put_note`].
    pub fn put_note(&self, kind: &str, id: &str, value: &[u8], ttl: Duration) {
        let now = Instant::now();
        let mut maps = self.lock();
        maps.sweep_if_due(now);
        maps.marks.insert(
            mark_tag(kind, id),
            Entry {
                value: value.to_vec(),
                expires_at: deadline(now, ttl),
            },
        );
    }

    /// See [`super::SessionStore::schedule_timer`].
    pub fn schedule_timer(&self, kind: &str, id: &str, due_ms: i64) {
        let mut maps = self.lock();
        maps.timers
            .entry(kind.to_string())
            .or_default()
            .insert(id.to_string(), due_ms);
    }

    /// See [`super::SessionStore::cancel_timer`].
    pub fn cancel_timer(&self, kind: &str, id: &str) {
        let mut maps = self.lock();
        if let Some(timers) = maps.timers.get_mut(kind) {
            timers.remove(id);
        }
    }

    /// See [`super::SessionStore::take_due_timers`].
    pub fn take_due_timers(&self, kind: &str, now_ms: i64, limit: usize) -> Vec<String> {
        let mut maps = self.lock();
        let Some(timers) = maps.timers.get_mut(kind) else {
            return Vec::new();
        };
        let mut due: Vec<(i64, String)> = timers
            .iter()
            .filter(|(_, at)| **at <= now_ms)
            .map(|(id, at)| (*at, id.clone()))
            .collect();
        due.sort();
        due.truncate(limit);
        for (_, id) in &due {
            timers.remove(id);
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// See [`super::SessionStore::get_note`].
    pub fn get_note(&self, kind: &str, id: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut maps = self.lock();
        Self::live_mark(&mut maps, &mark_tag(kind, id), now).map(|e| e.value.clone())
    }
}

/// The map key of a mark: kind and id cannot run into each other (a NUL separates them).
fn mark_tag(kind: &str, id: &str) -> String {
    format!("{kind}\0{id}")
}

impl SessionBackend for InMemorySessions {
    async fn load(&self, key: &SessionKey) -> Result<Option<Stored>, SessionStoreError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .live_session(key.tag(), now)
            .map(|e| e.value.clone()))
    }

    async fn save(
        &self,
        key: &SessionKey,
        expected: Option<u64>,
        data: &[u8],
        ttl: Duration,
    ) -> Result<SaveOutcome, SessionStoreError> {
        let now = Instant::now();
        let mut maps = self.lock();
        maps.sweep_if_due(now);
        let current = maps.live_session(key.tag(), now).map(|e| e.value.version);
        if current != expected {
            return Ok(SaveOutcome::Conflict { current });
        }
        let version = next_version(expected)?;
        maps.sessions.insert(
            key.tag().to_owned(),
            Entry {
                value: Stored {
                    version,
                    data: data.to_vec(),
                },
                expires_at: deadline(now, ttl),
            },
        );
        Ok(SaveOutcome::Saved { version })
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, SessionStoreError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .sessions
            .remove(key.tag())
            .is_some_and(|e| e.is_live(now)))
    }

    async fn ttl_millis(&self, key: &SessionKey) -> Result<Option<i64>, SessionStoreError> {
        let now = Instant::now();
        Ok(self.lock().live_session(key.tag(), now).map(|e| {
            let left = e.expires_at.saturating_duration_since(now).as_millis();
            i64::try_from(left).unwrap_or(i64::MAX)
        }))
    }

    async fn put_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
        data: &[u8],
        ttl: Duration,
    ) -> Result<(), SessionStoreError> {
        let now = Instant::now();
        let mut maps = self.lock();
        maps.sweep_if_due(now);
        maps.resumable.insert(
            resumable_key(subscriber, flow_id),
            Entry {
                value: data.to_vec(),
                expires_at: deadline(now, ttl),
            },
        );
        Ok(())
    }

    async fn get_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<Option<Vec<u8>>, SessionStoreError> {
        let now = Instant::now();
        let key = resumable_key(subscriber, flow_id);
        Ok(self
            .lock()
            .live_resumable(&key, now)
            .map(|e| e.value.clone()))
    }

    async fn take_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<Option<Vec<u8>>, SessionStoreError> {
        let now = Instant::now();
        let key = resumable_key(subscriber, flow_id);
        Ok(self
            .lock()
            .resumable
            .remove(&key)
            .filter(|e| e.is_live(now))
            .map(|e| e.value))
    }

    async fn clear_resumable(
        &self,
        subscriber: &str,
        flow_id: &str,
    ) -> Result<(), SessionStoreError> {
        self.lock()
            .resumable
            .remove(&resumable_key(subscriber, flow_id));
        Ok(())
    }

    async fn set_opted_out(
        &self,
        subscriber: &str,
        opted_out: bool,
    ) -> Result<(), SessionStoreError> {
        let mut maps = self.lock();
        if opted_out {
            maps.opted_out.insert(subscriber.to_owned());
        } else {
            maps.opted_out.remove(subscriber);
        }
        Ok(())
    }

    async fn is_opted_out(&self, subscriber: &str) -> Result<bool, SessionStoreError> {
        Ok(self.lock().opted_out.contains(subscriber))
    }

    async fn ping(&self) -> Result<(), SessionStoreError> {
        Ok(())
    }
}
