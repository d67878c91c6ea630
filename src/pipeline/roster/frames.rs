//! What the roster saves, measured on the benchmark's typing trace
//! (`loadgen/src/trace.rs`, included as is, seed 1, 50 rooms of 10 typists
//! and 10 readers each, 10 s of warm-up then 60 s measured, as
//! `BENCH_SCENARIOS=typing bash bench/run.sh` runs it). The same events go
//! through the per-user path the Support-Center uses (coalescing per
//! (room, user) in 100 ms windows, the 5 s typing timeout, the stop on a
//! message: the pipeline's own `Coalescer` and `TypingState`) and through
//! the roster (500 ms per room). Printed frames and bytes are what the
//! readers of every room receive, JSON protocol.
//!
//! `cargo test --lib roster::frames -- --nocapture` prints the table that
//! BENCHMARKS.md records. Time is simulated (explicit instants, 1 ms
//! steps), so the figures are the same on every machine.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::Rosters;
use crate::codec::Protocol;
use crate::config::RouteTable;
use crate::envelope::Envelope;
use crate::pipeline::coalesce::{Coalescer, Key, Offer};
use crate::pipeline::typing::TypingState;

#[path = "../../../loadgen/src/trace.rs"]
// The load generator's own file, shared so both replay the same trace.
#[allow(dead_code, unreachable_pub)]
mod trace;

use trace::{Act, Trace};

const ROOMS: usize = 50;
const TYPISTS_PER_ROOM: usize = 10;
const READERS_PER_ROOM: u64 = 10;
const WARMUP_MS: u64 = 10_000;
const END_MS: u64 = 70_000;

/// Frames and bytes the readers of every room receive, inside the window.
#[derive(Default, Debug)]
struct Count {
    frames: u64,
    bytes: u64,
}

impl Count {
    fn add(&mut self, at_ms: u64, method: &str, payload: &Map<String, Value>) {
        if (WARMUP_MS..END_MS).contains(&at_ms) {
            self.frames += READERS_PER_ROOM;
            self.bytes += READERS_PER_ROOM * Protocol::Json.encode_invocation(method, &[payload]).len() as u64;
        }
    }
}

fn typing_event(typist: usize, on: bool) -> Envelope {
    let payload =
        json!({"user_id": format!("typist-{typist}"), "username": format!("Typist {typist}"), "is_typing": on});
    Envelope {
        event_id: String::new(),
        event_type: if on { "typing_start" } else { "typing_stop" }.into(),
        timestamp: chrono::Utc::now(),
        room_id: format!("room-{}", typist / TYPISTS_PER_ROOM),
        payload: payload.as_object().cloned().unwrap_or_default().into(),
        metadata: None,
    }
}

/// The Support-Center's path, step for step as `Pipeline::stages` and
/// `Pipeline::fire` take it.
struct PerUser {
    coalescer: Coalescer,
    typing: TypingState,
    count: Count,
}

impl PerUser {
    fn fire(&mut self, now: Instant, ms: u64) {
        let (trailing, _) = self.coalescer.due(now);
        for (e, _) in trailing {
            self.count.add(ms, "UserTyping", e.payload.object());
        }
        for (key, stop) in self.typing.due(now) {
            self.coalescer.force(key, &stop, now);
            self.count.add(ms, "UserTyping", stop.payload.object());
        }
    }

    fn act(&mut self, typist: usize, act: Act, now: Instant, ms: u64) {
        let key: Key = (0, format!("room-{}", typist / TYPISTS_PER_ROOM), format!("typist-{typist}"));
        match act {
            Act::Key { .. } | Act::Stop => {
                let e = typing_event(typist, matches!(act, Act::Key { .. }));
                let starts = self.typing.observe(&key, &e, now);
                if let Offer::Send(e) = self.coalescer.offer(key, e, starts, now) {
                    self.count.add(ms, "UserTyping", e.payload.object());
                }
            }
            Act::Send => {
                if let Some(stop) = self.typing.message_sent(&key) {
                    self.coalescer.force(key, &stop, now);
                    self.count.add(ms, "UserTyping", stop.payload.object());
                }
            }
        }
    }
}

/// The roster path: the same events, a `response_posted` for the message.
struct Roster {
    rosters: Rosters,
    count: Count,
}

impl Roster {
    fn fire(&mut self, now: Instant, ms: u64) {
        for (_, e) in self.rosters.due(now) {
            self.count.add(ms, "TypingRoster", e.payload.object());
        }
    }

    fn act(&mut self, typist: usize, act: Act, now: Instant, ms: u64) {
        let room = (0, format!("room-{}", typist / TYPISTS_PER_ROOM));
        let (user, name) = (format!("typist-{typist}"), format!("Typist {typist}"));
        let typing = matches!(act, Act::Key { .. });
        if let Some(e) = self.rosters.observe(room, &user, &name, typing, now) {
            self.count.add(ms, "TypingRoster", e.payload.object());
        }
    }
}

#[test]
fn the_roster_sends_fewer_frames_than_per_user_indicators_on_the_typing_trace() {
    let routes = RouteTable::load(Path::new("protocol/routes.toml")).expect("the Support-Center routes");
    let timeout = Duration::from_secs(5);
    let per_user_with = |window_ms| PerUser {
        coalescer: Coalescer::new(Duration::from_millis(window_ms), timeout),
        typing: TypingState::new(&routes, timeout),
        count: Count::default(),
    };
    // As deployed (100 ms), and with the roster's window, to tell the
    // roster's share of the saving from the longer window's.
    let (mut per_user, mut per_user_slow) = (per_user_with(100), per_user_with(500));
    let mut roster = Roster { rosters: Rosters::new(Duration::from_millis(500), timeout), count: Count::default() };
    let mut trace = Trace::new(1, ROOMS * TYPISTS_PER_ROOM);
    let mut typing_events = 0u64;
    let t0 = Instant::now();
    for ms in 0..END_MS {
        let now = t0 + Duration::from_millis(ms);
        per_user.fire(now, ms);
        per_user_slow.fire(now, ms);
        roster.fire(now, ms);
        while let Some((typist, act)) = trace.next_due(ms) {
            if act != Act::Send && (WARMUP_MS..END_MS).contains(&ms) {
                typing_events += 1;
            }
            per_user.act(typist, act, now, ms);
            per_user_slow.act(typist, act, now, ms);
            roster.act(typist, act, now, ms);
        }
    }
    let naive = typing_events * READERS_PER_ROOM;
    let (p, r) = (&per_user.count, &roster.count);
    let pct = |a: u64, b: u64| 100.0 * (1.0 - a as f64 / b as f64);
    println!(
        "typing trace, seed 1, {ROOMS} rooms x {TYPISTS_PER_ROOM} typists, {READERS_PER_ROOM} readers per room, 60 s:"
    );
    println!("  typing events {typing_events}: {naive} frames to readers with one frame per event");
    println!("  per-user UserTyping (100 ms coalescing): {} frames, {} bytes", p.frames, p.bytes);
    let slow = &per_user_slow.count;
    println!("  per-user UserTyping (500 ms coalescing): {} frames, {} bytes", slow.frames, slow.bytes);
    println!("  roster TypingRoster (500 ms per room):  {} frames, {} bytes", r.frames, r.bytes);
    println!(
        "  roster vs per-user: {:.1} % fewer frames, {:.2}x the bytes; vs one frame per event: {:.1} % fewer frames",
        pct(r.frames, p.frames),
        r.bytes as f64 / p.bytes as f64,
        pct(r.frames, naive)
    );
    assert!(typing_events > 10_000, "the trace ran: {typing_events} events");
    assert!(r.frames < p.frames, "roster {} vs per-user {} frames", r.frames, p.frames);
    assert!(r.frames < slow.frames, "roster {} vs per-user at 500 ms {} frames", r.frames, slow.frames);
    // Bytes are printed, not bounded: a roster lists everyone typing in
    // the room, so on this trace (every member types) it is the larger frame.
    // At most one roster per room per 500 ms, whatever the trace.
    assert!(r.frames <= READERS_PER_ROOM * ROOMS as u64 * (END_MS - WARMUP_MS) / 500 + READERS_PER_ROOM * ROOMS as u64);
}
