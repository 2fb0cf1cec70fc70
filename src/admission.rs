//! Per-subscriber admission: a number sending requests faster than the configured rate is
//! refused politely before any session is loaded.
//!
//! A keyed GCRA limiter (governor) keyed by a 64-bit hash of the number (cheaper than strings
//! and no phone number kept in memory). governor's keyed state never forgets keys on its own,
//! so `housekeeping` drops idle ones and the key count is capped. Rate limits live at the
//! edges only; the engine knows nothing of them.

use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::AdmissionConfig;

pub struct Admission {
    limiter: DefaultKeyedRateLimiter<u64>,
    /// Most numbers tracked at once; beyond it, idle ones are dropped early.
    max_tracked: usize,
}

fn key(subscriber: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    subscriber.hash(&mut hasher);
    hasher.finish()
}

impl Admission {
    pub fn new(config: &AdmissionConfig) -> Admission {
        let per_minute =
            NonZeroU32::new(config.per_subscriber_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Admission {
            limiter: RateLimiter::keyed(quota),
            max_tracked: config.max_tracked.max(1),
        }
    }

    /// Whether this request from `subscriber` may go on.
    pub fn admit(&self, subscriber: &str) -> bool {
        if self.limiter.len() >= self.max_tracked {
            self.housekeeping();
        }
        self.limiter.check_key(&key(subscriber)).is_ok()
    }

    /// Forgets numbers that have been idle long enough to be back at a full burst.
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_number_is_refused_and_others_are_not() {
        let admission = Admission::new(&AdmissionConfig {
            per_subscriber_per_minute: 6,
            burst: 3,
            max_tracked: 100,
        });
        let admitted = (0..10).filter(|_| admission.admit("+254700000001")).count();
        assert_eq!(admitted, 3, "a burst of 3 then refused");
        assert!(
            admission.admit("+254700000002"),
            "another number is unaffected"
        );
    }
}
