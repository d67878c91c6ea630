//! Token buckets: client invocations per user (per connection without
//! authentication) and new connections per source address. Memory: one
//! small entry per active key; full (idle) buckets are swept.

use crate::sync::Unpoisoned;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// One key's budget. A connection without authentication keeps its own
/// (see [`RateLimiter::allow_own`]) instead of an entry in the shared map.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills for the time since it was last used, then takes a token.
    fn take(&mut self, now: Instant, per_second: f64, burst: f64) -> bool {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_second).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A token bucket per key: `burst` at once, refilled at `per_second`.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter refilling `per_second` tokens, holding at most `burst`.
    pub(crate) fn new(per_second: f64, burst: u32) -> RateLimiter<K> {
        RateLimiter { per_second, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `key`; false when the key is over its rate.
    pub(crate) fn allow(&self, key: &K) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self.lock();
        let b = buckets.entry(key.clone()).or_insert(Bucket { tokens: self.burst, at: now });
        b.take(now, self.per_second, self.burst)
    }

    /// Takes a token from a bucket its owner keeps (a connection without
    /// authentication is its own key: keeping its bucket saves a map entry
    /// and a key per connection), at this limiter's rates.
    pub(crate) fn allow_own(&self, bucket: &mut Option<Bucket>) -> bool {
        let now = Instant::now();
        bucket.get_or_insert(Bucket { tokens: self.burst, at: now }).take(now, self.per_second, self.burst)
    }

    /// Forgets keys whose bucket has refilled (nothing to remember).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let (rate, burst) = (self.per_second, self.burst);
        self.lock().retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Bucket>> {
        self.buckets.locked()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let l = RateLimiter::new(1.0, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.allow_at(&"u", t0)));
        assert!(!l.allow_at(&"u", t0), "burst used up");
        assert!(l.allow_at(&"other", t0), "keys are independent");
        assert!(l.allow_at(&"u", t0 + Duration::from_millis(1100)), "refilled one");
        assert!(!l.allow_at(&"u", t0 + Duration::from_millis(1200)));
    }

    #[test]
    fn an_owned_bucket_has_the_same_burst_and_is_not_in_the_map() {
        let l: RateLimiter<&str> = RateLimiter::new(0.001, 3);
        let mut own = None;
        assert!((0..3).all(|_| l.allow_own(&mut own)));
        assert!(!l.allow_own(&mut own), "burst used up");
        assert!(l.lock().is_empty());
    }
}
