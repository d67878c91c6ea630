//! The typing trace: typists per room who type in realistic bursts, with a
//! client that calls `SendTyping(room, true)` on every keystroke (the
//! traffic coalescing exists for), as envelopes XADDed the way the backend
//! or the sidecar's SendTyping would write them.
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
//!
//! Measured: typing frames received against what a server without
//! coalescing would send (each typing event to every member of its room),
//! and first-indicator latency: from the send stamp of a burst's first
//! keystroke event to the first typing frame about it at each client.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::time::MissedTickBehavior;

use crate::client::Shared;
use crate::publisher::{ChatPayload, Published, Sink};
use crate::{stats, sys};

/// Quiet time after which the client sends `typing_stop`, ms.
const DEBOUNCE_MS: u64 = 2000;
const USER_PREFIX: &str = "typist-";

/// The typists' burst starts, shared with the clients.
pub struct Board {
    pub per_room: usize,
    rooms: usize,
    /// Send stamp (wall ns) of each typist's current burst.
    burst_start: Vec<AtomicU64>,
}

impl Board {
    pub fn new(rooms: usize, per_room: usize) -> Board {
        Board { per_room, rooms, burst_start: (0..rooms * per_room).map(|_| AtomicU64::new(0)).collect() }
    }

    fn user_id(&self, global: usize) -> String {
        format!("{USER_PREFIX}{global}")
    }

    /// A typist's (global, within-room) index from its user id, if it is
    /// one of `room`'s typists.
    pub fn typist(&self, user_id: &[u8], room: usize) -> Option<(usize, usize)> {
        let n: usize = std::str::from_utf8(user_id.strip_prefix(USER_PREFIX.as_bytes())?).ok()?.parse().ok()?;
        (n / self.per_room == room && n < self.rooms * self.per_room).then_some((n, n % self.per_room))
    }

    pub fn burst_start(&self, global: usize) -> u64 {
        self.burst_start[global].load(Relaxed)
    }
}

/// What the typing publisher did, beyond the chat messages.
#[derive(Default, Debug)]
pub struct TypingPublished {
    pub chat: Published,
    /// Typing events (start and stop) stamped inside the window.
    pub typing_measured: u64,
    /// Frames a server without coalescing would send for them.
    pub naive_frames: u64,
    /// Bursts started inside the window.
    pub bursts_measured: u64,
    pub typing_events: u64,
}

/// A small deterministic generator (SplitMix64): the trace is the same for
/// the same seed.
struct Rng(u64);

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
    fn key_gap(&mut self) -> u64 {
        let normal = (-2.0 * (1.0 - self.unit()).ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos();
        (200.0 * (0.6 * normal).exp()).clamp(30.0, 1500.0) as u64
    }
}

#[derive(Clone, Copy)]
enum Step {
    /// A keystroke.
    Key,
    /// The debounce stop; then keys again after this many ms, or idle.
    Stop(Option<u64>),
    /// The message is sent.
    Send,
}

struct Typist {
    next: Step,
    typing: bool,
    keys_left: u64,
}

/// Runs every typist until `stop`.
pub async fn run(
    mut con: MultiplexedConnection,
    sink: Sink,
    board: Arc<Board>,
    seed: u64,
    content_bytes: usize,
    sh: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> TypingPublished {
    let rooms = sh.rooms.len();
    let mut rng = Rng(seed);
    let payload = ChatPayload::new(rooms, content_bytes);
    let mut room_seq = vec![0u64; rooms];
    let n = rooms * board.per_room;
    let mut typists: Vec<Typist> = (0..n).map(|_| Typist { next: Step::Key, typing: false, keys_left: 0 }).collect();
    let mut queue: BinaryHeap<Reverse<(u64, usize)>> = (0..n).map(|i| Reverse((rng.range(0, 10_000), i))).collect();
    let mut out = TypingPublished::default();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let t0 = Instant::now();
    while !stop.load(Relaxed) {
        ticker.tick().await;
        let now_ms = t0.elapsed().as_millis() as u64;
        let sent = sys::wall_ns();
        let measured = stats::in_window(sent);
        let iso = sys::iso8601(sent);
        let mut pipe = redis::pipe();
        let (mut typing_events, mut chats, mut naive, mut expected, mut bursts) = (0u64, 0u64, 0u64, 0u64, 0u64);
        while let Some(&Reverse((due, i))) = queue.peek() {
            if due > now_ms {
                break;
            }
            queue.pop();
            let room = i / board.per_room;
            let members = sh.room_members[room].load(Relaxed);
            let user = board.user_id(i);
            let t = &mut typists[i];
            let typing_event = |pipe: &mut redis::Pipeline, on: bool| {
                let (kind, body) = match on {
                    true => (
                        "typing_start",
                        format!("{{\"user_id\":\"{user}\",\"username\":\"Typist {i}\",\"is_typing\":true}}"),
                    ),
                    false => (
                        "typing_stop",
                        format!("{{\"user_id\":\"{user}\",\"username\":\"Typist {i}\",\"is_typing\":false}}"),
                    ),
                };
                sink.xadd(pipe, kind, &iso, &sh.rooms[room], &body);
            };
            let wait = match t.next {
                Step::Key => {
                    if t.keys_left == 0 {
                        t.keys_left = rng.range(8, 61);
                    }
                    if !t.typing {
                        t.typing = true;
                        board.burst_start[i].store(sent, Relaxed);
                        bursts += 1;
                    }
                    typing_event(&mut pipe, true);
                    typing_events += 1;
                    naive += members;
                    t.keys_left -= 1;
                    let gap = if rng.unit() < 0.08 { rng.range(500, 4000) } else { rng.key_gap() };
                    if t.keys_left == 0 && rng.unit() < 0.6 {
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
                    }
                }
                Step::Stop(resume) => {
                    t.typing = false;
                    typing_event(&mut pipe, false);
                    typing_events += 1;
                    naive += members;
                    t.next = Step::Key;
                    resume.unwrap_or_else(|| rng.range(3000, 10_000))
                }
                Step::Send => {
                    t.typing = false;
                    room_seq[room] += 1;
                    let body = payload.render(room, &user, room_seq[room], sent, &iso);
                    sink.xadd(&mut pipe, "chat_message", &iso, &sh.rooms[room], &body);
                    chats += 1;
                    expected += members;
                    t.next = Step::Key;
                    rng.range(3000, 10_000)
                }
            };
            queue.push(Reverse((now_ms + wait.max(1), i)));
        }
        if typing_events + chats == 0 {
            continue;
        }
        match pipe.query_async::<()>(&mut con).await {
            Ok(()) => {
                out.typing_events += typing_events;
                out.chat.events += chats;
                if measured {
                    out.typing_measured += typing_events;
                    out.naive_frames += naive;
                    out.bursts_measured += bursts;
                    out.chat.measured += chats;
                    out.chat.expected += expected;
                }
            }
            Err(e) => out.chat.failed(typing_events + chats, &e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typist_ids_map_to_their_room() {
        let b = Board::new(5, 10);
        assert_eq!(b.typist(b"typist-23", 2), Some((23, 3)));
        assert_eq!(b.typist(b"typist-23", 1), None);
        assert_eq!(b.typist(b"typist-50", 5), None);
        assert_eq!(b.typist(b"someone", 0), None);
    }

    #[test]
    fn key_gaps_look_like_typing() {
        let mut rng = Rng(7);
        let mut gaps: Vec<u64> = (0..10_000).map(|_| rng.key_gap()).collect();
        gaps.sort_unstable();
        let median = gaps[gaps.len() / 2];
        assert!((185..=215).contains(&median), "median {median}");
        assert!(gaps[0] >= 30 && gaps[gaps.len() - 1] <= 1500);
    }
}
