//! The typing trace: typists per room who type in realistic bursts, with a
//! client that calls `SendTyping(room, true)` on every keystroke (the
//! traffic coalescing exists for), as envelopes XADDed the way the backend
//! or the sidecar's SendTyping would write them.
//!
//! The model (who types when) is `trace.rs`.
//!
//! Measured: typing frames received against what a server without
//! coalescing would send (each typing event to every member of its room),
//! and first-indicator latency: from the send stamp of a burst's first
//! keystroke event to the first typing frame about it at each client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::time::MissedTickBehavior;

use crate::client::Shared;
use crate::publisher::{ChatPayload, Published, Sink};
use crate::trace::{Act, Trace};
use crate::{stats, sys};

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
    let payload = ChatPayload::new(rooms, content_bytes);
    let mut room_seq = vec![0u64; rooms];
    let mut trace = Trace::new(seed, rooms * board.per_room);
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
        while let Some((i, act)) = trace.next_due(now_ms) {
            let room = i / board.per_room;
            let members = sh.room_members[room].load(Relaxed);
            let user = board.user_id(i);
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
            match act {
                Act::Key { burst_start } => {
                    if burst_start {
                        board.burst_start[i].store(sent, Relaxed);
                        bursts += 1;
                    }
                    typing_event(&mut pipe, true);
                    typing_events += 1;
                    naive += members;
                }
                Act::Stop => {
                    typing_event(&mut pipe, false);
                    typing_events += 1;
                    naive += members;
                }
                Act::Send => {
                    room_seq[room] += 1;
                    let body = payload.render(room, &user, room_seq[room], sent, &iso);
                    sink.xadd(&mut pipe, "chat_message", &iso, &sh.rooms[room], &body);
                    chats += 1;
                    expected += members;
                }
            }
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
        let mut rng = crate::trace::Rng(7);
        let mut gaps: Vec<u64> = (0..10_000).map(|_| rng.key_gap()).collect();
        gaps.sort_unstable();
        let median = gaps[gaps.len() / 2];
        assert!((185..=215).contains(&median), "median {median}");
        assert!(gaps[0] >= 30 && gaps[gaps.len() - 1] <= 1500);
    }
}
