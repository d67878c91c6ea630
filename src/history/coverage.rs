//! Whether stretches of a stream, each written whole to the history by
//! some instance, together cover everything between a client's position
//! and a join's cut (so a replay has no hole).

use crate::ingest::StreamId;

/// Entries after `from` up to `to` are all in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stretch {
    /// Exclusive start.
    pub from: StreamId,
    /// Inclusive end.
    pub to: StreamId,
}

/// True when every id after `after` up to `upto` lies in some stretch.
pub(super) fn covers(stretches: &[Stretch], after: StreamId, upto: StreamId) -> bool {
    // Walk back from the cut: each step takes, among the stretches that
    // reach the frontier, the one that starts earliest.
    let mut frontier = upto;
    while frontier > after {
        let earliest = stretches.iter().filter(|s| s.to >= frontier && s.from < frontier).map(|s| s.from).min();
        match earliest {
            Some(from) => frontier = from,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn s(from: u64, to: u64) -> Stretch {
        Stretch { from: id(from), to: id(to) }
    }

    #[test]
    fn chained_stretches_cover_and_a_gap_does_not() {
        let runs = [s(10, 20), s(15, 40), s(40, 50)];
        assert!(covers(&runs, id(12), id(50)));
        assert!(covers(&runs, id(10), id(45)));
        assert!(!covers(&runs, id(5), id(45)), "nothing before 10");
        assert!(!covers(&[s(10, 20), s(25, 50)], id(12), id(50)), "20..25 unwritten");
        assert!(covers(&[], id(50), id(50)), "nothing to replay");
        assert!(covers(&[], id(60), id(50)), "the client is ahead");
    }
}
