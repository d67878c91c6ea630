//! Freshness: events older than the maximum age are dropped; a timestamp
//! from the future (a publisher's clock ahead of ours) is treated as now.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Freshness rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freshness {
    /// Older than this is stale.
    pub max_age: Duration,
    /// Further ahead than this is clamped to now.
    pub max_skew: Duration,
}

impl Freshness {
    /// The event's effective time, or `None` when it is stale.
    pub(crate) fn check(&self, timestamp: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let age = now.signed_duration_since(timestamp);
        if age.num_milliseconds() > self.max_age.as_millis() as i64 {
            return None;
        }
        if -age.num_milliseconds() > self.max_skew.as_millis() as i64 {
            return Some(now);
        }
        Some(timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_future_and_fresh() {
        let f = Freshness { max_age: Duration::from_secs(300), max_skew: Duration::from_secs(5) };
        let now = Utc::now();
        assert_eq!(f.check(now - chrono::Duration::seconds(600), now), None);
        assert_eq!(f.check(now + chrono::Duration::seconds(60), now), Some(now));
        let fresh = now - chrono::Duration::seconds(1);
        assert_eq!(f.check(fresh, now), Some(fresh));
    }
}
