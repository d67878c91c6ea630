//! The typing trace's model, without I/O: which typist does what, when.
//! `typing.rs` publishes it into Redis for the benchmark; the sidecar's
//! roster measurement (`src/pipeline/roster/frames.rs`) includes this very
//! file and replays it through the per-user and roster deliveries, so both
//! figures come from the same trace. Only `std` here, for that reason.
//!
//! One typist's life, in a loop:
//! - idle 3-10 s (the first wait is 0-10 s, so typists are out of phase);
//! - a burst of 8-60 keystrokes, one `typing_start` each, spaced by the
//!   inter-key interval of ordinary typists: log-normal, median 200 ms,
//!   sigma 0.6, clamped to 30-1500 ms (Dhakal et al., CHI 2018, 136 M
//!   keystrokes: mean 239 ms); after 8 % of keys a pause of 0.5-4 s;
//! - a gap of 2 s without a key makes the client send `typing_stop`
//!   (debounce), and the next key starts a new burst;
//! - at the end of a burst 60 % send the message (a `chat_message` from
//!   that user, which clears the indicator on the server) and 40 % give up
//!   (`typing_stop` after the 2 s debounce).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Quiet time after which the client sends `typing_stop`, ms.
pub const DEBOUNCE_MS: u64 = 2000;

/// A small deterministic generator (SplitMix64): the trace is the same for
/// the same seed.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + (self.unit() * (hi - lo) as f64) as u64
    }

    /// Inter-key interval, ms.
    pub fn key_gap(&mut self) -> u64 {
        let normal = (-2.0 * (1.0 - self.unit()).ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos();
        (200.0 * (0.6 * normal).exp()).clamp(30.0, 1500.0) as u64
    }
}

/// What a typist does when its turn comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// A keystroke (`typing_start`); `burst_start` for the first of a burst.
    Key {
        /// The typist was not typing before this key.
        burst_start: bool,
    },
    /// The client's debounce stop (`typing_stop`).
    Stop,
    /// The message is sent (`chat_message` from the typist).
    Send,
}

#[derive(Clone, Copy)]
enum Step {
    Key,
    /// The debounce stop; then keys again after this many ms, or idle.
    Stop(Option<u64>),
    Send,
}

struct Typist {
    next: Step,
    typing: bool,
    keys_left: u64,
}

/// Every typist of the trace, and when each acts next.
pub struct Trace {
    rng: Rng,
    typists: Vec<Typist>,
    queue: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Trace {
    /// `typists` typists (typist i is in room i / per_room), from `seed`.
    pub fn new(seed: u64, typists: usize) -> Trace {
        let mut rng = Rng(seed);
        let queue = (0..typists).map(|i| Reverse((rng.range(0, 10_000), i))).collect();
        let typists = (0..typists).map(|_| Typist { next: Step::Key, typing: false, keys_left: 0 }).collect();
        Trace { rng, typists, queue }
    }

    /// The next typist due by `now_ms` and what it does; its following
    /// step is queued from `now_ms`. `None` when nobody is due.
    pub fn next_due(&mut self, now_ms: u64) -> Option<(usize, Act)> {
        let &Reverse((due, i)) = self.queue.peek()?;
        if due > now_ms {
            return None;
        }
        self.queue.pop();
        let rng = &mut self.rng;
        let t = &mut self.typists[i];
        let (act, wait) = match t.next {
            Step::Key => {
                if t.keys_left == 0 {
                    t.keys_left = rng.range(8, 61);
                }
                let burst_start = !t.typing;
                t.typing = true;
                t.keys_left -= 1;
                let gap = if rng.unit() < 0.08 { rng.range(500, 4000) } else { rng.key_gap() };
                let wait = if t.keys_left == 0 && rng.unit() < 0.6 {
                    t.next = Step::Send;
                    gap
                } else if t.keys_left == 0 {
                    t.next = Step::Stop(None);
                    DEBOUNCE_MS
                } else if gap > DEBOUNCE_MS {
                    t.next = Step::Stop(Some(gap - DEBOUNCE_MS));
                    DEBOUNCE_MS
                } else {
                    gap
                };
                (Act::Key { burst_start }, wait)
            }
            Step::Stop(resume) => {
                t.typing = false;
                t.next = Step::Key;
                (Act::Stop, resume.unwrap_or_else(|| rng.range(3000, 10_000)))
            }
            Step::Send => {
                t.typing = false;
                t.next = Step::Key;
                (Act::Send, rng.range(3000, 10_000))
            }
        };
        self.queue.push(Reverse((now_ms + wait.max(1), i)));
        Some((i, act))
    }
}
