//! The idempotency window: an `event_id` seen in the last window is
//! delivered once. Memory is bounded by `max_entries` ids (oldest evicted
//! first), each about 80 bytes with its map and queue slots.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// An event id as remembered: a UUID (what the envelope's checks let
/// through from publishers) as its 128 bits, so remembering one allocates
/// nothing and a UUID written in capitals is the same id; anything else
/// (an id of the sidecar's own making) as its text.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Id {
    Uuid(u128),
    Text(Box<str>),
}

impl Id {
    fn of(id: &str) -> Id {
        match uuid::Uuid::try_parse(id) {
            Ok(uuid) => Id::Uuid(uuid.as_u128()),
            Err(_) => Id::Text(id.into()),
        }
    }
}

/// Remembers recent event ids.
pub(super) struct Dedupe {
    seen: HashSet<Id, ahash::RandomState>,
    order: VecDeque<(Instant, Id)>,
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
        let id = Id::of(id);
        // One lookup: the set says whether the id was new as it takes it.
        if !self.seen.insert(id.clone()) {
            return false;
        }
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

    #[test]
    fn a_uuid_is_the_same_id_in_either_case() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(300), 10);
        assert!(d.first_time("0f8fad5b-d9cb-469f-a165-70867728950e", t0));
        assert!(!d.first_time("0F8FAD5B-D9CB-469F-A165-70867728950E", t0));
        assert!(d.first_time("0f8fad5b-d9cb-469f-a165-70867728950f", t0), "another uuid");
    }
}
