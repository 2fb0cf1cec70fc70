//! This node's copies of the sessions it saved last, so that the next step of a session that
//! comes back to this node skips the session store's read (one Redis round trip of two).
//!
//! A copy is only a guess at what Redis holds: another node may have advanced the session
//! since. Two guards make using it safe, and both sit in the dispatcher:
//! - a copy is taken only for a request that directly follows it (the next input after the
//!   copy's progress, or a repeat of its last one: `UssdRequest::directly_follows`). Whatever
//!   other nodes did meanwhile, the step computed from the copy is then the one any node
//!   computes from the stored session for that request, so the answer it commits is the same
//!   row. A request that skips ahead (another node served the steps between) reads the store;
//! - the save names the copy's version, so a copy that is behind loses the compare-and-set, is
//!   dropped, and the step is done again from the store.
//!
//! A copy expires a second before its session would in Redis (the time to live is refreshed
//! at each save, and the copy is replaced then), sessions that ended are not kept, and the
//! cache holds at most a configured number of copies: past it, new copies are not kept and
//! steps read the store as before.
//!
//! It never talks to Redis or the result store, never holds a copy past its session's time to
//! live, and is not used with the in-memory session store (which is this node's memory
//! already). Expiry runs on Tokio's clock, so tests can move time.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::session_store::SessionKey;

/// Independent locks, so steps on the two worker threads rarely wait on each other.
const SHARDS: usize = 16;

/// How much sooner than the store's time to live a copy expires: the store's clock started
/// when it wrote the session, this node's a little later (when the reply came back).
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);

/// One session as this node last saved it.
struct Copy<T> {
    /// The version the save returned: what the next save must name.
    version: u64,
    value: T,
    /// When the stored session may be gone (its time to live, less [`EXPIRY_MARGIN`]).
    expires_at: Instant,
}

/// A bounded map from session key to this node's last saved copy of that session.
pub struct SessionCache<T> {
    /// Empty when the cache is disabled (capacity 0).
    shards: Vec<Mutex<HashMap<SessionKey, Copy<T>>>>,
    /// The most copies one shard keeps.
    per_shard: usize,
    /// Picks a key's shard.
    hasher: RandomState,
}

impl<T> SessionCache<T> {
    /// A cache of at most about `capacity` copies; 0 disables it.
    pub fn new(capacity: usize) -> SessionCache<T> {
        let shards = if capacity == 0 { 0 } else { SHARDS };
        SessionCache {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: RandomState::new(),
        }
    }

    /// Whether copies are kept at all.
    #[cfg(test)]
    pub fn is_enabled(&self) -> bool {
        !self.shards.is_empty()
    }

    fn shard(&self, key: &SessionKey) -> Option<&Mutex<HashMap<SessionKey, Copy<T>>>> {
        if self.shards.is_empty() {
            return None;
        }
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        self.shards.get(index)
    }

    /// Removes the copy of `key` and returns it with its version, if it is still fresh. It is
    /// removed either way: a step either uses it or reads the store, and its save leaves a new
    /// copy.
    pub fn take(&self, key: &SessionKey) -> Option<(u64, T)> {
        let mut map = self.shard(key)?.lock().ok()?;
        let copy = map.remove(key)?;
        (copy.expires_at > Instant::now()).then_some((copy.version, copy.value))
    }

    /// Keeps `value` as the copy of `key` at `version`, saved just now with time to live
    /// `ttl`. Not kept when the time to live is too short to be worth it, or when the key's
    /// shard is full of copies that are still fresh.
    pub fn put(&self, key: SessionKey, version: u64, value: T, ttl: Duration) {
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let Ok(mut map) = shard.lock() else {
            return;
        };
        let Some(lifetime) = ttl.checked_sub(EXPIRY_MARGIN).filter(|l| !l.is_zero()) else {
            map.remove(&key);
            return;
        };
        let now = Instant::now();
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            map.retain(|_, copy| copy.expires_at > now);
            if map.len() >= self.per_shard {
                return;
            }
        }
        map.insert(
            key,
            Copy {
                version,
                value,
                expires_at: now + lifetime,
            },
        );
    }

    /// Drops the copy of `key` (the session ended or was changed by another path).
    pub fn forget(&self, key: &SessionKey) {
        if let Some(Ok(mut map)) = self.shard(key).map(Mutex::lock) {
            map.remove(key);
        }
    }

    /// Drops every copy that has expired (a periodic sweep: copies of sessions abandoned
    /// mid-flow are otherwise dropped only when their shard fills up).
    pub fn purge_expired(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                map.retain(|_, copy| copy.expires_at > now);
            }
        }
    }

    /// How many copies are held, fresh or not yet swept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> SessionKey {
        SessionKey::new("africastalking", &format!("ATUid_{n}"))
    }

    const TTL: Duration = Duration::from_secs(180);

    #[tokio::test]
    async fn a_copy_is_taken_once_with_its_version() {
        let cache = SessionCache::new(100);
        cache.put(key(1), 7, "state", TTL);
        assert_eq!(cache.take(&key(1)), Some((7, "state")));
        assert_eq!(cache.take(&key(1)), None, "taken, not copied");
        assert_eq!(cache.take(&key(2)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_expires_a_second_before_its_session() {
        let cache = SessionCache::new(100);
        cache.put(key(1), 1, "a", TTL);
        cache.put(key(2), 1, "b", TTL);
        tokio::time::advance(TTL - EXPIRY_MARGIN - Duration::from_millis(1)).await;
        assert_eq!(cache.take(&key(1)), Some((1, "a")));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(cache.take(&key(2)), None);
    }

    #[tokio::test]
    async fn too_short_a_time_to_live_is_not_kept_and_drops_the_old_copy() {
        let cache = SessionCache::new(100);
        cache.put(key(1), 1, "old", TTL);
        cache.put(key(1), 2, "new", EXPIRY_MARGIN);
        assert_eq!(cache.take(&key(1)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_keeps_fresh_copies_and_makes_room_from_stale_ones() {
        let cache = SessionCache::new(SHARDS); // one copy per shard
        let mut kept = 0;
        for n in 0..200 {
            cache.put(key(n), 1, n, TTL);
        }
        for n in 0..200 {
            if cache.take(&key(n)).is_some() {
                kept += 1;
            }
        }
        assert!(kept <= SHARDS, "{kept} copies kept");
        // Every shard full of copies that later expire: new ones find room then.
        for n in 0..2000 {
            cache.put(key(n), 1, n, TTL);
        }
        let full = cache.len();
        assert!(full <= SHARDS);
        cache.put(key(1000), 1, 1000, TTL);
        assert_eq!(cache.len(), full, "no room while the copies are fresh");
        tokio::time::advance(TTL).await;
        cache.put(key(1000), 2, 1000, TTL);
        assert_eq!(cache.take(&key(1000)), Some((2, 1000)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_drops_expired_copies_only() {
        let cache = SessionCache::new(100);
        cache.put(key(1), 1, "short", Duration::from_secs(10));
        cache.put(key(2), 1, "long", TTL);
        tokio::time::advance(Duration::from_secs(10)).await;
        cache.purge_expired();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.take(&key(2)), Some((1, "long")));
    }

    #[tokio::test]
    async fn a_forgotten_copy_is_gone_and_a_disabled_cache_keeps_nothing() {
        let cache = SessionCache::new(100);
        cache.put(key(1), 1, "a", TTL);
        cache.forget(&key(1));
        assert_eq!(cache.take(&key(1)), None);
        let disabled = SessionCache::new(0);
        assert!(!disabled.is_enabled());
        disabled.put(key(1), 1, "a", TTL);
        assert_eq!(disabled.take(&key(1)), None);
        assert_eq!(disabled.len(), 0);
    }
}
