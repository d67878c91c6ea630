//! The idempotency window: an `event_id` seen in the last window is
//! delivered once.
//!
//! Every event goes through here, each one an instance passes over
//! (`skip.rs`) too, so it should cost one look at memory: a set of ids
//! beside a queue of them in arrival order cost an insert and an eviction
//! in the set (two random places each) and the queue's turn per event,
//! about an eighth of what a skipped event cost (two skipping instances
//! side by side, one with the window turned off: 0.87 of the CPU). Here an
//! id is one 16-byte slot of an open-addressed table (linear probing, at
//! most half full), holding a 96-bit fingerprint of the id and the second
//! it was seen: a look is one cache line or two, and a slot whose second
//! is past the window is taken again by the next id that passes it, so
//! nothing is evicted one by one.
//!
//! The table grows with the ids it holds: once half its slots are in use
//! it is rebuilt from the ids still within the window, at four slots per
//! id (a power of two, from [`MIN_SLOTS`] up to `2 x max_entries`), so
//! memory follows the highest rate seen (32-64 bytes an id, at most 32
//! bytes per id of `max_entries`) and fresh pages are taken a table at a
//! time (one table sized for `max_entries` from the start took a page
//! fault per id for its first minutes: 1.18x the CPU of the set it
//! replaced, side by side). Only a table at its largest and full past
//! [`PROBE`] slots from an id's place forgets an id before its window
//! ends: the oldest on the way. Fingerprints of 96 bits taken from a
//! bijective mix of the id's 128 bits (a UUID, or a hash of any other id)
//! mistake one id for another with a chance of about 2^-96 per id held.

use std::time::{Duration, Instant};

/// The smallest table (64 KiB).
const MIN_SLOTS: usize = 4096;
/// Slots an id may be from its place (a half-full table needs ~1.5).
const PROBE: usize = 32;

/// Remembers recent event ids.
pub(super) struct Dedupe {
    table: Table,
    /// Slots the table may grow to (a power of two).
    max_slots: usize,
    /// The table is rebuilt once more slots than this are in use.
    rebuild_at: usize,
    /// The window in whole seconds (rounded up).
    window_secs: u32,
    start: Instant,
    /// Ids that are not UUIDs (the sidecar's own), hashed to 128 bits.
    text_hash: [ahash::RandomState; 2],
}

/// What became of an id offered to the table.
enum Recorded {
    /// Seen within the window.
    Seen,
    /// Written.
    New,
    /// No room near its place: not written.
    Full,
}

/// Slots, each an id's fingerprint (high 96 bits) and the second it was
/// seen since the window's start, plus one (low 32 bits); 0 is a slot
/// never used. An id is at its place (its fingerprint's low bits) or in
/// the first [`PROBE`] slots after it, with no never-used slot between.
struct Table {
    slots: Vec<u128>,
    /// Slots - 1 (a power of two).
    mask: usize,
    /// Slots not 0.
    used: usize,
}

impl Table {
    fn new(slots: usize) -> Table {
        // Zeroed memory: the system hands it over as it is first written.
        Table { slots: vec![0u128; slots], mask: slots - 1, used: 0 }
    }

    /// Records `fingerprint` seen at `second`, unless it was seen within
    /// `window` seconds (up to a second more, as seconds are whole: an id
    /// seen less than `window` ago always is). With no room within
    /// [`PROBE`] slots of its place, the oldest id on the way is forgotten
    /// for it if `evict`, and nothing is written otherwise.
    fn record(&mut self, fingerprint: u128, second: u32, window: u32, evict: bool) -> Recorded {
        let mut at = ((fingerprint >> 32) as usize) & self.mask;
        let slot = fingerprint | u128::from(second);
        // Where to write if the id is not found: a slot past the window on
        // the way, else the never-used slot that ends the way, else (the
        // way ran out) the oldest on it.
        let (mut free, mut oldest) = (None, (u32::MAX, at));
        for _ in 0..PROBE.min(self.slots.len()) {
            let Some(&held) = self.slots.get(at) else { break };
            if held == 0 {
                if free.is_none() {
                    self.used += 1;
                }
                self.put(free.unwrap_or(at), slot);
                return Recorded::New;
            }
            let seen = held as u32;
            let live = second.saturating_sub(seen) <= window;
            if held >> 32 == fingerprint >> 32 {
                if live {
                    return Recorded::Seen;
                }
                self.put(at, slot);
                return Recorded::New;
            }
            if !live {
                free.get_or_insert(at);
            } else if seen < oldest.0 {
                oldest = (seen, at);
            }
            at = (at + 1) & self.mask;
        }
        match (free, evict) {
            (Some(at), _) => self.put(at, slot),
            (None, true) => self.put(oldest.1, slot),
            (None, false) => return Recorded::Full,
        }
        Recorded::New
    }

    fn put(&mut self, at: usize, slot: u128) {
        if let Some(s) = self.slots.get_mut(at) {
            *s = slot;
        }
    }

    /// The slots held within `window` seconds of `second`.
    fn live(&self, second: u32, window: u32) -> impl Iterator<Item = u128> + '_ {
        self.slots.iter().copied().filter(move |&held| {
            let seen = held as u32;
            seen != 0 && second.saturating_sub(seen) <= window
        })
    }
}

impl Dedupe {
    /// A window of `window`, holding up to about `max_entries` ids.
    pub(super) fn new(window: Duration, max_entries: usize) -> Dedupe {
        let max_slots = max_entries.saturating_mul(2).max(2).next_power_of_two();
        let slots = MIN_SLOTS.min(max_slots);
        let window_secs = u32::try_from(window.as_secs() + u64::from(window.subsec_nanos() > 0)).unwrap_or(u32::MAX);
        Dedupe {
            table: Table::new(slots),
            max_slots,
            rebuild_at: slots / 2,
            window_secs,
            // A window back, so that ids seen before this table existed (a
            // new instance learns those its stream held) keep their age.
            start: Instant::now().checked_sub(window).unwrap_or_else(Instant::now),
            text_hash: [ahash::RandomState::with_seeds(1, 2, 3, 4), ahash::RandomState::with_seeds(5, 6, 7, 8)],
        }
    }

    /// Records `id`; false if it was already seen within the window.
    pub(super) fn first_time(&mut self, id: &str, now: Instant) -> bool {
        let fingerprint = self.fingerprint(id);
        let second = now.saturating_duration_since(self.start).as_secs().min(u64::from(u32::MAX - 1)) as u32 + 1;
        loop {
            let at_largest = self.table.slots.len() >= self.max_slots;
            match self.table.record(fingerprint, second, self.window_secs, at_largest) {
                Recorded::Seen => return false,
                Recorded::New => break,
                // A run of slots in use longer than a probe: a larger table.
                Recorded::Full => self.rebuild(second, true),
            }
        }
        if self.table.used > self.rebuild_at {
            self.rebuild(second, false);
        }
        true
    }

    /// A new table of four slots per id still within the window (at least
    /// twice the old one's if `grow`), with them.
    fn rebuild(&mut self, second: u32, grow: bool) {
        let live = self.table.live(second, self.window_secs).count();
        let mut slots = live.saturating_mul(4).max(MIN_SLOTS).next_power_of_two();
        if grow {
            slots = slots.max(self.table.slots.len() * 2);
        }
        let table = 'sized: loop {
            slots = slots.min(self.max_slots);
            let mut table = Table::new(slots);
            let at_largest = slots >= self.max_slots;
            for held in self.table.live(second, self.window_secs) {
                if let Recorded::Full = table.record(held & !u128::from(u32::MAX), held as u32, u32::MAX, at_largest) {
                    slots *= 2;
                    continue 'sized;
                }
            }
            break table;
        };
        self.table = table;
        // At its largest the table may hold more than half: the next
        // rebuild waits for another quarter of it to be taken, so
        // rebuilding stays within a few slots' copy per id recorded.
        self.rebuild_at = (slots / 2).max(self.table.used + slots / 4);
    }

    /// 96 bits that stand for the id, in the high bits (the low 32 are
    /// zero): a UUID's 128 bits (either case) or another id's hash, mixed
    /// so that every bit of the id moves the fingerprint (time-ordered
    /// UUIDs of one millisecond differ only in their low bits).
    fn fingerprint(&self, id: &str) -> u128 {
        let bits = match uuid::Uuid::try_parse(id) {
            Ok(uuid) => uuid.as_u128(),
            Err(_) => {
                let [a, b] = &self.text_hash;
                (u128::from(a.hash_one(id)) << 64) | u128::from(b.hash_one(id))
            }
        };
        // Odd multipliers and a xor-shift: a bijection of 128 bits, so two
        // ids differ after it as before; its high bits depend on all of them.
        let mixed = bits.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        let mixed = (mixed ^ (mixed >> 64)).wrapping_mul(0xd6e8_feb8_6659_fd93_a3b1_95b8_b0d8_1f6b);
        mixed & !u128::from(u32::MAX)
    }

    /// Ids remembered now (seen within the window).
    #[cfg(test)]
    fn len(&self, now: Instant) -> usize {
        let second = now.saturating_duration_since(self.start).as_secs() as u32 + 1;
        self.table.live(second, self.window_secs).count()
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
        assert!(d.first_time("b", t0), "another id");
        assert!(!d.first_time("a", t0 + Duration::from_secs(299)));
        assert!(d.first_time("a", t0 + Duration::from_secs(302)), "forgotten after the window");
        assert!(!d.first_time("a", t0 + Duration::from_secs(303)), "and remembered again");
    }

    #[test]
    fn an_id_seen_before_the_table_existed_keeps_its_age() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(300), 10);
        let Some(before) = t0.checked_sub(Duration::from_secs(200)) else { return };
        assert!(d.first_time("a", before), "learned from the stream");
        assert!(!d.first_time("a", t0), "a retry now is a duplicate");
        assert!(d.first_time("a", t0 + Duration::from_secs(102)), "forgotten a window after it was appended");
    }

    #[test]
    fn memory_is_bounded_and_a_full_table_forgets_its_oldest() {
        let t0 = Instant::now();
        // Eight slots at most: the ninth id of the window takes the oldest's.
        let mut d = Dedupe::new(Duration::from_secs(300), 4);
        let ids: Vec<String> = (0..=8).map(|i| format!("id-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            // Each in its own second (half a second in: whole seconds from the start).
            assert!(d.first_time(id, t0 + Duration::from_millis(1000 * i as u64 + 500)), "{id}");
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(d.len(later), 8);
        assert!(ids[1..].iter().all(|id| !d.first_time(id, later)), "the newer eight are remembered");
        assert!(d.first_time(&ids[0], later), "the oldest was forgotten");
        // A slot past the window is free again before any id is forgotten early.
        let mut d = Dedupe::new(Duration::from_secs(10), 4);
        for id in &ids[..8] {
            assert!(d.first_time(id, t0));
        }
        assert!(d.first_time(&ids[8], t0 + Duration::from_secs(12)));
        assert_eq!(d.len(t0 + Duration::from_secs(12)), 1);
    }

    #[test]
    fn the_table_grows_with_the_ids_and_keeps_every_one() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(300), 100_000);
        let ids: Vec<String> = (0..50_000).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        assert!(ids.iter().all(|id| d.first_time(id, t0)), "none taken for another");
        assert!(d.table.slots.len() >= 131_072, "grown to a quarter full at most: {} slots", d.table.slots.len());
        let later = t0 + Duration::from_secs(1);
        assert!(ids.iter().all(|id| !d.first_time(id, later)), "every one remembered through the rebuilds");
        // Past the window their slots are free again: the table stays as it is.
        let past = t0 + Duration::from_secs(400);
        let (slots, used) = (d.table.slots.len(), d.table.used);
        assert!(ids.iter().all(|id| d.first_time(id, past)), "forgotten after the window");
        assert_eq!((d.table.slots.len(), d.table.used), (slots, used), "each took its own slot again");
    }

    #[test]
    fn a_run_longer_than_a_probe_is_full_unless_the_oldest_may_go() {
        let mut table = Table::new(64);
        // Fingerprints whose place is all slot 5.
        let at_five = |k: u128| ((k << 6) | 5) << 32;
        for k in 1..=PROBE as u128 {
            assert!(matches!(table.record(at_five(k), k as u32, 300, false), Recorded::New));
        }
        let next = at_five(PROBE as u128 + 1);
        assert!(matches!(table.record(next, 40, 300, false), Recorded::Full), "nothing written");
        assert!(matches!(table.record(at_five(1), 40, 300, false), Recorded::Seen), "the first still there");
        assert!(matches!(table.record(next, 40, 300, true), Recorded::New));
        assert!(matches!(table.record(at_five(1), 41, 300, false), Recorded::Full), "the oldest made room");
        assert_eq!(table.used, PROBE);
    }

    #[test]
    fn time_ordered_uuids_of_one_millisecond_are_told_apart() {
        // UUIDv7: 48 bits of milliseconds first; the ids of one millisecond
        // differ only further down.
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(300), 10_000);
        let v7 = |n: u128| uuid::Uuid::from_u128((0x0190_0000_0000u128 << 80) | (0x7 << 76) | n).to_string();
        let ids: Vec<String> = (0..5_000u128).map(v7).collect();
        assert!(ids.iter().all(|id| d.first_time(id, t0)));
        assert!(ids.iter().all(|id| !d.first_time(id, t0)));
    }

    #[test]
    fn a_uuid_is_the_same_id_in_either_case() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(300), 10);
        assert!(d.first_time("0f8fad5b-d9cb-469f-a165-70867728950e", t0));
        assert!(!d.first_time("0F8FAD5B-D9CB-469F-A165-70867728950E", t0));
        assert!(d.first_time("0f8fad5b-d9cb-469f-a165-70867728950f", t0), "another uuid");
        assert!(d.first_time("not-a-uuid", t0) && !d.first_time("not-a-uuid", t0), "any other id by its text");
    }
}
