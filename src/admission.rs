//! Per-subscriber admission: a number sending requests faster than the configured rate is
//! refused politely before any session is loaded.
//!
//! A generic cell rate algorithm per number: each number keeps one instant, its theoretical
//! arrival time (TAT); a request is admitted when moving the TAT on by one emission interval
//! keeps it within `burst` intervals of now. A number whose TAT has passed is back at a full
//! burst, so forgetting it changes nothing: [`Admission::housekeeping`] (on a timer) drops
//! those, and memory is bounded by `max_tracked` whatever arrives. When the table is full of
//! numbers still inside their window (a flood of distinct numbers), a new number is admitted
//! without being tracked and counted: refusing every newcomer would turn a flood into an
//! outage for real citizens, and numbers already tracked stay limited.
//!
//! Numbers are keyed by a 64-bit hash with a per-process random key (no phone number kept in
//! memory, no collisions to aim at). Rate limits live at the edges only; the engine knows
//! nothing of them. The clock is an argument of the `_at` methods, so tests need no sleeping.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AdmissionConfig;

/// Independent locks: steps of different numbers rarely wait on each other.
const SHARDS: usize = 64;

/// One lock's numbers.
#[derive(Default)]
struct Shard {
    /// Each tracked number's theoretical arrival time.
    numbers: HashMap<u64, Instant>,
    /// While full, when a new number may next trigger a scan for idle ones: during a flood
    /// each newcomer would otherwise scan the whole shard under its lock.
    next_purge: Option<Instant>,
}

pub struct Admission {
    shards: Box<[Mutex<Shard>]>,
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of now a TAT may run: `burst` intervals.
    tolerance: Duration,
    /// Most numbers tracked per shard (`max_tracked / SHARDS`, at least 1).
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl Admission {
    pub fn new(config: &AdmissionConfig) -> Admission {
        let per_minute = config.per_subscriber_per_minute.max(1);
        let interval = Duration::from_secs(60) / per_minute;
        Admission {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            interval,
            tolerance: interval * config.burst.max(1),
            per_shard: (config.max_tracked / SHARDS).max(1),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Whether this request from `subscriber` may go on.
    pub fn admit(&self, subscriber: &str) -> bool {
        self.admit_at(subscriber, Instant::now())
    }

    /// [`Admission::admit`] at `now`.
    pub fn admit_at(&self, subscriber: &str, now: Instant) -> bool {
        let key = self.hasher.hash_one(subscriber);
        let shard = &self.shards[(key % SHARDS as u64) as usize];
        let mut shard = match shard.lock() {
            Ok(shard) => shard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let tat = shard.numbers.get(&key).map_or(now, |&tat| tat.max(now));
        let next = tat + self.interval;
        if next.duration_since(now) > self.tolerance {
            return false;
        }
        if !shard.numbers.contains_key(&key) && shard.numbers.len() >= self.per_shard {
            if shard.next_purge.is_none_or(|at| now >= at) {
                shard.numbers.retain(|_, tat| *tat > now);
                shard.next_purge = Some(now + self.interval / 8);
            }
            if shard.numbers.len() >= self.per_shard {
                crate::telemetry::admission_untracked();
                return true;
            }
        }
        shard.numbers.insert(key, next);
        true
    }

    /// Forgets numbers that are back at a full burst (run on a timer).
    pub fn housekeeping(&self) {
        self.housekeeping_at(Instant::now());
    }

    /// [`Admission::housekeeping`] at `now`.
    pub fn housekeeping_at(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut shard = match shard.lock() {
                Ok(shard) => shard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let numbers = &mut shard.numbers;
            numbers.retain(|_, tat| *tat > now);
            // Give back what a flood grew the table to, once it is mostly empty again.
            if numbers.capacity() > 64 && numbers.len() < numbers.capacity() / 4 {
                numbers.shrink_to_fit();
            }
        }
    }

    /// Numbers tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .map_or_else(|p| p.into_inner().numbers.len(), |s| s.numbers.len())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(per_minute: u32, burst: u32, max_tracked: usize) -> Admission {
        Admission::new(&AdmissionConfig {
            per_subscriber_per_minute: per_minute,
            burst,
            max_tracked,
        })
    }

    #[test]
    fn a_fast_number_is_refused_and_others_are_not() {
        let admission = admission(6, 3, 100);
        let admitted = (0..10).filter(|_| admission.admit("+254700000001")).count();
        assert_eq!(admitted, 3, "a burst of 3 then refused");
        assert!(
            admission.admit("+254700000002"),
            "another number is unaffected"
        );
    }

    #[test]
    fn the_sustained_rate_comes_back_with_time() {
        // 6 a minute: one every 10 s, bursts of 2.
        let admission = admission(6, 2, 100);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(admission.admit_at("n", at(0)));
        assert!(admission.admit_at("n", at(0)));
        assert!(!admission.admit_at("n", at(0)));
        assert!(!admission.admit_at("n", at(9)));
        assert!(admission.admit_at("n", at(10)));
        assert!(!admission.admit_at("n", at(10)));
        // Idle long enough, a full burst again.
        assert!(admission.admit_at("n", at(60)));
        assert!(admission.admit_at("n", at(60)));
        assert!(!admission.admit_at("n", at(60)));
    }

    #[test]
    fn idle_numbers_are_forgotten_on_the_timer() {
        let admission = admission(60, 5, 100_000);
        let t0 = Instant::now();
        for n in 0..500 {
            assert!(admission.admit_at(&format!("+2547{n:08}"), t0));
        }
        assert_eq!(admission.tracked(), 500);
        admission.housekeeping_at(t0 + Duration::from_millis(500));
        assert_eq!(admission.tracked(), 500, "still inside their window");
        admission.housekeeping_at(t0 + Duration::from_secs(1));
        assert_eq!(admission.tracked(), 0, "back at a full burst: forgotten");
    }

    /// A flood of a million distinct numbers inside one window: the table never holds more
    /// than `max_tracked`, newcomers are still served, a tracked number stays limited.
    #[test]
    fn memory_stays_bounded_over_a_million_distinct_numbers() {
        let max_tracked = 6_400;
        let admission = admission(60, 3, max_tracked);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(admission.admit_at("+254700000001", t0));
        }
        let mut peak = 0;
        for n in 0..1_000_000u32 {
            let now = t0 + Duration::from_micros(u64::from(n) / 4);
            assert!(admission.admit_at(&format!("+2557{n:08}"), now));
            if n % 10_000 == 0 {
                peak = peak.max(admission.tracked());
            }
        }
        peak = peak.max(admission.tracked());
        assert!(peak <= max_tracked, "peak {peak} > {max_tracked}");
        assert!(
            !admission.admit_at("+254700000001", t0 + Duration::from_millis(250)),
            "the flooder tracked before the flood is still limited"
        );
    }
}
