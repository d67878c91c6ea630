//! The idempotency window: an `event_id` seen in the last window is
//! delivered once. Memory is bounded by `max_entries` ids (oldest evicted
//! first), each about 120 bytes with its map and queue slots.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Remembers recent event ids.
pub(super) struct Dedupe {
    seen: HashSet<Arc<str>, ahash::RandomState>,
    order: VecDeque<(Instant, Arc<str>)>,
    window: Duration,
    max_entries: usize,
}

impl Dedupe {
    /// A window of `window`, holding at most `max_entries` ids.
    pub(super) fn new(window: Duration, max_entries: usize) -> Dedupe {
        Dedupe { seen: HashSet::default(), order: VecDeque::new(), window, max_entries }
    }

    /// Records `id`; false if it was already seen within the window.
    pub(super) fn first_time(&mut self, id: &str, now: Instant) -> bool {
        while let Some((at, old)) = self.order.front() {
            if now.duration_since(*at) < self.window && self.order.len() < self.max_entries {
                break;
            }
            self.seen.remove(old);
            self.order.pop_front();
        }
        if self.seen.contains(id) {
            return false;
        }
        let id: Arc<str> = id.into();
        self.seen.insert(id.clone());
        self.order.push_back((now, id));
        true
    }

    /// Ids remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_passes_once_within_the_window() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(300), 10);
        assert!(d.first_time("a", t0));
        assert!(!d.first_time("a", t0 + Duration::from_secs(299)));
        assert!(d.first_time("a", t0 + Duration::from_secs(301)), "forgotten after the window");
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(300), 3);
        for id in ["a", "b", "c", "d"] {
            assert!(d.first_time(id, t0));
        }
        assert_eq!(d.len(), 3);
        assert!(d.first_time("a", t0), "the oldest was evicted");
    }
}
