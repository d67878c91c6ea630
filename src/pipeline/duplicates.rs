//! The stream entries the live path dropped as duplicates (an `event_id`
//! already seen within the idempotency window, `dedupe.rs`), kept so that a
//! replay of a stretch of a stream delivers what the live path delivered
//! and nothing more (CONTRACT section 5: duplicates within the window are
//! delivered once).
//!
//! A stateful session taken over from another instance gets the entries
//! between its old instance's cut and this instance's position replayed
//! from the stream (`continuity::catch_up`). This instance's live path has
//! already judged every one of them, so the replay asks for its verdicts
//! instead of judging again: asking the idempotency table itself would
//! find every id of the stretch (the first copies included, which must be
//! replayed), and recording the replayed ids there would make the table
//! drop a later live event it has not delivered. Duplicates are rare (a
//! publisher's retry), so remembering them costs nothing on the path of
//! the others: a lock and an insert per duplicate, bounded in time by the
//! window and in memory by [`MAX_KEPT`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::Unpoisoned;

/// The most entries remembered at once (about 100 bytes each); past it the
/// oldest is forgotten first, and a replay reaching that far back could
/// deliver its event a second time. A takeover replays at most the last
/// 30 seconds or so of a stream (`SESSION_HANDOFF_TTL` in `app.rs`), far
/// less than this many duplicates at any sane retry rate.
const MAX_KEPT: usize = 65_536;

/// Stream entries dropped as duplicates in the last window, shared between
/// the pipeline (which records them) and whoever replays a stream.
#[derive(Debug)]
pub(crate) struct DuplicateEntries {
    window: Duration,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    /// Stream -> entry ids.
    by_stream: HashMap<Arc<str>, HashSet<Box<str>>>,
    /// When each was recorded, oldest first, to forget them in order.
    order: VecDeque<(Instant, Arc<str>, Box<str>)>,
}

impl DuplicateEntries {
    /// Remembers entries for `window` (the idempotency window).
    pub(crate) fn new(window: Duration) -> DuplicateEntries {
        DuplicateEntries { window, kept: Mutex::new(Kept::default()) }
    }

    /// The live path dropped entry `id` of `stream` as a duplicate at `now`.
    pub(crate) fn record(&self, stream: &Arc<str>, id: &str, now: Instant) {
        let mut kept = self.kept.locked();
        if kept.by_stream.get(&**stream).is_some_and(|ids| ids.contains(id)) {
            return;
        }
        kept.forget_before(now.checked_sub(self.window), MAX_KEPT - 1);
        let id: Box<str> = id.into();
        kept.by_stream.entry(stream.clone()).or_default().insert(id.clone());
        kept.order.push_back((now, stream.clone(), id));
    }

    /// Whether the live path dropped entry `id` of `stream` as a duplicate
    /// (within the window, and the last [`MAX_KEPT`]).
    pub(crate) fn dropped(&self, stream: &str, id: &str) -> bool {
        let kept = self.kept.locked();
        kept.by_stream.get(stream).is_some_and(|ids| ids.contains(id))
    }
}

impl Kept {
    /// Forgets entries recorded before `before`, and the oldest beyond `max`.
    fn forget_before(&mut self, before: Option<Instant>, max: usize) {
        while let Some((at, _, _)) = self.order.front() {
            if self.order.len() <= max && before.is_none_or(|b| *at >= b) {
                break;
            }
            let Some((_, stream, id)) = self.order.pop_front() else { break };
            if let Some(ids) = self.by_stream.get_mut(&stream) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_stream.remove(&stream);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_entry_is_known_until_the_window_ends() {
        let d = DuplicateEntries::new(Duration::from_secs(300));
        let (chat, ticket): (Arc<str>, Arc<str>) = ("events:chat".into(), "events:ticket".into());
        let t0 = Instant::now();
        d.record(&chat, "5-0", t0);
        assert!(d.dropped("events:chat", "5-0"));
        assert!(!d.dropped("events:chat", "4-0"), "another entry");
        assert!(!d.dropped("events:ticket", "5-0"), "another stream");
        d.record(&ticket, "9-1", t0 + Duration::from_secs(200));
        d.record(&chat, "6-0", t0 + Duration::from_secs(301));
        assert!(!d.dropped("events:chat", "5-0"), "forgotten after the window");
        assert!(d.dropped("events:ticket", "9-1") && d.dropped("events:chat", "6-0"));
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_goes_first() {
        let d = DuplicateEntries::new(Duration::from_secs(300));
        let chat: Arc<str> = "events:chat".into();
        let t0 = Instant::now();
        for n in 0..=MAX_KEPT {
            d.record(&chat, &format!("{n}-0"), t0);
        }
        assert!(!d.dropped("events:chat", "0-0"), "the oldest made room");
        assert!(d.dropped("events:chat", "1-0") && d.dropped("events:chat", &format!("{MAX_KEPT}-0")));
        assert_eq!(d.kept.locked().order.len(), MAX_KEPT);
        // The same entry twice is kept once.
        d.record(&chat, &format!("{MAX_KEPT}-0"), t0);
        assert_eq!(d.kept.locked().order.len(), MAX_KEPT);
    }
}
