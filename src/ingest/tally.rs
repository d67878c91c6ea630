//! Whether a reader was handed every entry after its position: XREADGROUP
//! `>` silently starts at the first entry the stream still holds, so
//! entries trimmed (`MAXLEN`, `MINID`) or deleted before this instance read
//! them leave no trace in the read itself (CONTRACT section 14: the client
//! must know). Neither can the stream's own marks tell afterwards: Redis 7.0
//! leaves `max-deleted-entry-id` at `0-0` on a trim, and once the reader has
//! read past a trimmed stretch, "is anything after my position gone?" is
//! answered no.
//!
//! What cannot lie is counting. Redis 7 keeps `entries-added`, how many
//! entries the stream was ever given; `last-generated-id` is the entry that
//! made that count. The reader counts what it is handed. Once in a while
//! (never per read: see [`Tally::wants_checkpoint`]) it takes both from
//! XINFO STREAM as a checkpoint; when its reads reach that entry, its own
//! count there must equal `entries-added` then. Fewer means entries were
//! added after its position and never reached it: a hole, whatever removed
//! them and whichever Redis 7 version. An entry deleted after it was read
//! changes neither count, so it is never taken for one. Entries Redis
//! handed to a read whose reply never arrived (the socket died with reads
//! queued on it) count as missing too: they would come back only through a
//! later claim, late and out of order, so their clients are told as well.
//! On the hot path a read costs an addition and, with a checkpoint
//! pending, one comparison. Before Redis 7 (no `entries-added`) nothing is
//! checked.

use super::StreamId;

/// A stream's count at one moment (XINFO STREAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamCount {
    /// `last-generated-id`: the newest entry ever added.
    pub last: StreamId,
    /// `entries-added`: how many entries the stream was ever given, that
    /// one included.
    pub added: u64,
}

/// Entries the reader should have been handed and was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Missing {
    /// How many (at least one).
    pub entries: u64,
}

/// One reader's count of the entries it was handed, checked against the
/// stream's.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// The stream's `entries-added` as of the reader's position, when known
    /// (from a checkpoint the reader has reached); `None` until then.
    counted: Option<u64>,
    /// A count taken ahead of the reader's position, waiting to be reached.
    pending: Option<StreamCount>,
}

impl Tally {
    /// Whether a new checkpoint would help: none is waiting to be reached.
    /// A reader that keeps falling behind resolves its oldest one first
    /// instead of replacing it with newer ones it never reaches.
    pub(super) fn wants_checkpoint(&self) -> bool {
        self.pending.is_none()
    }

    /// A read handed the entries `ids` (in stream order, none empty reads).
    /// `Some` when the read passed the pending checkpoint and the count
    /// there falls short: entries between the last checkpoint and this one
    /// never reached the reader.
    pub(super) fn read(&mut self, ids: &[StreamId]) -> Option<Missing> {
        let last = *ids.last()?;
        let n = ids.len() as u64;
        let Some(at) = self.pending.filter(|p| last >= p.last) else {
            if let Some(c) = &mut self.counted {
                *c += n;
            }
            return None;
        };
        self.pending = None;
        match ids.binary_search(&at.last) {
            Ok(i) => {
                let before = self.counted.map(|c| c + i as u64 + 1);
                // Counted again from the checkpoint: a hole is reported once.
                self.counted = Some(at.added + (n - i as u64 - 1));
                before.and_then(|c| shortfall(c, at.added))
            }
            // The checkpoint's own entry was added after the reader's
            // position and never handed to it: gone before it was read.
            Err(_) => {
                self.counted = None;
                Some(Missing { entries: 1 })
            }
        }
    }

    /// The stream's count taken when the reader stood at `position`. `Some`
    /// when the reader is at the stream's newest entry and its count falls
    /// short; otherwise the count waits for the reader to reach its entry.
    pub(super) fn checkpoint(&mut self, position: StreamId, count: StreamCount) -> Option<Missing> {
        if count.last > position {
            self.pending = Some(count);
            return None;
        }
        self.pending = None;
        let before = self.counted.replace(count.added);
        if count.last < position {
            // The stream was made anew under the reader (its newest entry
            // is older than one already read): counting starts again.
            self.counted = None;
            return None;
        }
        before.and_then(|c| shortfall(c, count.added))
    }

    /// Counting starts again from the next checkpoint (the group or the
    /// stream was recreated, and the counts no longer share an origin).
    pub(super) fn restart(&mut self) {
        *self = Tally::default();
    }
}

/// How far `counted` falls short of the stream's `added`; a count ahead of
/// the stream's (a stream made anew with as many entries) is no hole.
fn shortfall(counted: u64, added: u64) -> Option<Missing> {
    (added > counted).then(|| Missing { entries: added - counted })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn ids(range: std::ops::RangeInclusive<u64>) -> Vec<StreamId> {
        range.map(id).collect()
    }

    #[test]
    fn every_entry_read_is_no_hole() {
        let mut t = Tally::default();
        // The group starts at entry 10, the stream's 10th.
        assert_eq!(t.checkpoint(id(10), StreamCount { last: id(10), added: 10 }), None);
        assert_eq!(t.read(&ids(11..=15)), None);
        assert_eq!(t.checkpoint(id(15), StreamCount { last: id(20), added: 20 }), None);
        assert!(!t.wants_checkpoint());
        assert_eq!(t.read(&ids(16..=18)), None, "not reached yet");
        assert_eq!(t.read(&ids(19..=22)), None, "reached, every entry counted");
        assert!(t.wants_checkpoint());
        assert_eq!(t.checkpoint(id(22), StreamCount { last: id(22), added: 22 }), None, "at the end, counts agree");
    }

    #[test]
    fn entries_trimmed_before_they_were_read_are_counted_missing() {
        let mut t = Tally::default();
        t.checkpoint(id(10), StreamCount { last: id(10), added: 10 });
        assert_eq!(t.read(&ids(11..=13)), None);
        // 14..=150 trimmed while the reader was stopped; it reads on from 151.
        assert_eq!(t.read(&ids(151..=200)), None, "the read alone shows nothing");
        assert_eq!(t.checkpoint(id(200), StreamCount { last: id(200), added: 200 }), Some(Missing { entries: 137 }));
        // Counted again from there: reported once.
        assert_eq!(t.read(&ids(201..=205)), None);
        assert_eq!(t.checkpoint(id(205), StreamCount { last: id(205), added: 205 }), None);
    }

    #[test]
    fn a_checkpoint_ahead_is_settled_when_the_reader_passes_it() {
        let mut t = Tally::default();
        t.checkpoint(id(10), StreamCount { last: id(10), added: 10 });
        t.read(&ids(11..=12));
        assert_eq!(t.checkpoint(id(12), StreamCount { last: id(40), added: 40 }), None);
        // 13..=29 trimmed before they were read.
        assert_eq!(t.read(&ids(30..=35)), None);
        assert_eq!(t.read(&ids(36..=45)), Some(Missing { entries: 17 }));
        assert_eq!(t.checkpoint(id(45), StreamCount { last: id(45), added: 45 }), None, "counted from 40 on");
    }

    #[test]
    fn a_checkpoint_entry_that_never_arrives_is_a_hole() {
        let mut t = Tally::default();
        t.checkpoint(id(10), StreamCount { last: id(10), added: 10 });
        t.checkpoint(id(10), StreamCount { last: id(20), added: 20 });
        // 11..=20 trimmed or deleted before the reader got there.
        assert_eq!(t.read(&ids(25..=30)), Some(Missing { entries: 1 }));
        // Unknown until the next checkpoint, which only starts counting.
        assert_eq!(t.checkpoint(id(30), StreamCount { last: id(30), added: 30 }), None);
        assert_eq!(t.read(&ids(31..=32)), None);
        assert_eq!(t.checkpoint(id(32), StreamCount { last: id(32), added: 32 }), None);
    }

    #[test]
    fn entries_deleted_after_they_were_read_are_no_hole() {
        let mut t = Tally::default();
        t.checkpoint(id(10), StreamCount { last: id(10), added: 10 });
        t.read(&ids(11..=20));
        // XDEL of 15 and a trim of everything up to 18 change neither count.
        assert_eq!(t.checkpoint(id(20), StreamCount { last: id(20), added: 20 }), None);
    }

    #[test]
    fn without_a_checkpoint_nothing_is_claimed() {
        let mut t = Tally::default();
        assert_eq!(t.read(&ids(1..=5)), None);
        assert_eq!(t.read(&[]), None);
        // The first checkpoint only starts the count.
        assert_eq!(t.checkpoint(id(90), StreamCount { last: id(90), added: 1000 }), None);
        assert_eq!(t.read(&ids(91..=95)), None);
        assert_eq!(t.checkpoint(id(95), StreamCount { last: id(95), added: 1005 }), None);
    }

    #[test]
    fn a_stream_made_anew_restarts_the_count() {
        let mut t = Tally::default();
        t.checkpoint(id(10), StreamCount { last: id(10), added: 10 });
        // Its newest entry is older than the reader's position.
        assert_eq!(t.checkpoint(id(10), StreamCount { last: id(5), added: 3 }), None);
        assert_eq!(t.checkpoint(id(10), StreamCount { last: id(10), added: 8 }), None, "counting from here");
        t.restart();
        assert!(t.wants_checkpoint());
        assert_eq!(t.checkpoint(id(10), StreamCount { last: id(10), added: 1 }), None);
    }
}
