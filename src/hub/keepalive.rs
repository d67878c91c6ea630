//! One shared tick for every connection: pings each idle one once per
//! keep-alive interval, spread over the interval rather than all at once,
//! and once a second drops those silent past the client timeout (once they
//! have sent a Ping: ASP.NET Core starts the client timeout there). No timer
//! per connection.
//!
//! Each connection has fixed checkpoints in the interval
//! ([`CHECKS_PER_INTERVAL`] of them, evenly spaced from a phase that is its
//! registry shard's, so a hash of its id); a tick visits only the shards
//! whose checkpoints the clock passed since the previous tick, not every
//! connection. So the tick may be short when
//! there are many connections (a short burst of sends per tick: at 10,000
//! connections a whole second's share, 667 sends, held deliveries behind it
//! for milliseconds) and long when there are few (an idle sidecar wakes
//! once a second).
//!
//! As ASP.NET Core's `HubConnectionContext.KeepAliveTick`, a connection is
//! pinged only when it was sent nothing for an interval: one that gets a
//! frame at least once per interval is never pinged (no needless write and
//! system call), an idle one is pinged exactly once per interval. Nothing
//! is timed per delivery: the outbox only notes that a frame was queued
//! since the last checkpoint. The client then waits at most an interval, a
//! checkpoint's gap and a tick for a frame (19.75 s with the defaults,
//! against the official clients' 30 s server timeout); with one checkpoint
//! per interval it would be two intervals, the server timeout itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::codec::{HubMessage, Protocol};
#[cfg(test)]
use crate::fanout::shard_of;
use crate::fanout::{ConnEntry, Payload, SHARDS};
use crate::transport::Kick;

use super::Hubs;

/// Pings per tick the tick length aims at.
const PINGS_PER_TICK: u64 = 64;
/// Bounds of the tick.
const MIN_TICK_MS: u64 = 100;
const MAX_TICK_MS: u64 = 1000;
/// Keep-alive checkpoints of a connection per interval (see the module doc).
const CHECKS_PER_INTERVAL: u8 = 4;
/// Expiry and timeouts are checked this often.
const CHECK_EVERY_MS: u64 = 1000;

/// Which phases of the keep-alive interval a tick covers.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Phases in `(from, to]`, modulo the interval; everything if `all`.
    from: u64,
    to: u64,
    all: bool,
}

/// The phase schedule of one keep-alive interval.
#[derive(Debug)]
struct Schedule {
    interval_ms: u64,
    last_ms: u64,
}

impl Schedule {
    fn new(interval: Duration, now_ms: u64) -> Schedule {
        Schedule { interval_ms: (interval.as_millis() as u64).max(1), last_ms: now_ms }
    }

    /// How long to wait before the next tick with `connections` open:
    /// never longer than the gap between checkpoints, or a frame sent just
    /// after one would be noticed a tick late.
    fn tick(&self, connections: usize) -> Duration {
        let ms = self.interval_ms.saturating_mul(PINGS_PER_TICK) / (connections as u64).max(1);
        let longest = MAX_TICK_MS.min(self.checkpoint_gap()).max(1);
        Duration::from_millis(ms.min(longest).max(MIN_TICK_MS.min(longest)))
    }

    fn checkpoint_gap(&self) -> u64 {
        self.interval_ms / u64::from(CHECKS_PER_INTERVAL)
    }

    /// The phases passed since the previous call.
    fn advance(&mut self, now_ms: u64) -> Window {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        let window = Window {
            from: self.last_ms % self.interval_ms,
            to: now_ms % self.interval_ms,
            all: elapsed >= self.interval_ms,
        };
        self.last_ms = self.last_ms.max(now_ms);
        window
    }

    /// A shard's phase: connections are kept in [`SHARDS`] shards by a hash
    /// of their id ([`shard_of`]), and the shards' first checkpoints are
    /// spread evenly over the first gap, so that connections opened
    /// together are spread out and a tick visits only the shards it passed.
    fn shard_phase(&self, shard: usize) -> u64 {
        shard as u64 * self.checkpoint_gap() / SHARDS as u64
    }

    /// How many of a shard's checkpoints `window` passed.
    fn shard_checks(&self, shard: usize, window: &Window) -> u8 {
        if window.all {
            return CHECKS_PER_INTERVAL;
        }
        let phase = self.shard_phase(shard);
        (0..u64::from(CHECKS_PER_INTERVAL))
            .map(|j| u8::from(window.contains((phase + j * self.checkpoint_gap()) % self.interval_ms)))
            .sum()
    }

    /// A connection's phase (its shard's).
    #[cfg(test)]
    fn phase(&self, id: u64) -> u64 {
        self.shard_phase(shard_of(id))
    }

    /// How many of a connection's checkpoints `window` passed.
    #[cfg(test)]
    fn checks(&self, id: u64, window: &Window) -> u8 {
        self.shard_checks(shard_of(id), window)
    }
}

impl Window {
    fn contains(&self, phase: u64) -> bool {
        match (self.all, self.from <= self.to) {
            (true, _) => true,
            (false, true) => phase > self.from && phase <= self.to,
            (false, false) => phase > self.from || phase <= self.to,
        }
    }
}

/// Runs until `stop`.
pub(crate) async fn run_keepalive(hubs: Arc<Hubs>, stop: CancellationToken) {
    let pings: Vec<Option<Payload>> = Protocol::ALL
        .iter()
        .map(|p| {
            let bytes = p.encode(&HubMessage::Ping);
            if p.is_binary() {
                Some(Payload::binary(&bytes))
            } else {
                Payload::text_from_vec(bytes)
            }
        })
        .collect();
    let keepalive_ms = hubs.settings.keepalive.as_millis() as u64;
    let timeout_ms = hubs.settings.client_timeout.as_millis() as u64;
    let mut schedule = Schedule::new(hubs.settings.keepalive, hubs.now_ms());
    let (mut last_check, mut last_sweep) = (hubs.now_ms(), 0);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(schedule.tick(hubs.registry.len())) => {}
            _ = stop.cancelled() => return,
        }
        let now = hubs.now_ms();
        let window = schedule.advance(now);
        // What a tick does to each connection of a shard its window passed
        // (`checks` of its checkpoints, `first` if its phase itself).
        // Long Polling is never pinged: its polls keep it alive (ASP.NET Core
        // registers the keep-alive only for transports without an inherent
        // one), and a ping would only end each poll early.
        let ping = |entry: &ConnEntry, checks: u8, first: bool| {
            if first {
                entry.outbox.shrink();
            }
            if entry.transport == "longpolling" {
                return;
            }
            if checks > 0 && entry.outbox.keepalive_due(checks, CHECKS_PER_INTERVAL) {
                if let Some(Some(ping)) = pings.get(entry.slot) {
                    entry.outbox.push_ping(ping.clone());
                }
            }
        };
        let passed =
            |shard: usize| (schedule.shard_checks(shard, &window), window.contains(schedule.shard_phase(shard)));
        // Half a tick of slack: a timer that fires a millisecond early must
        // not put the check off by a whole (one-second) tick.
        if now.saturating_sub(last_check) + MIN_TICK_MS / 2 < CHECK_EVERY_MS {
            for shard in 0..SHARDS {
                let (checks, first) = passed(shard);
                // A shard's phase is its first checkpoint: `first` implies `checks > 0`.
                if checks > 0 {
                    hubs.registry.for_each_in_shard(shard, |entry| ping(entry, checks, first));
                }
            }
            continue;
        }
        last_check = now;
        let sweep_now = now.saturating_sub(last_sweep) >= keepalive_ms;
        if sweep_now {
            last_sweep = now;
            hubs.tokens.sweep(hubs.settings.negotiate_timeout);
        }
        for session in hubs.parked.expired(hubs.settings.client_timeout) {
            session.finish(crate::transport::Ended::ByClient).await;
        }
        if sweep_now {
            hubs.invocation_limiter.sweep();
            hubs.connection_limiter.sweep();
        }
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut timed_out = 0u64;
        for shard in 0..SHARDS {
            let (checks, first) = passed(shard);
            hubs.registry.for_each_in_shard(shard, |entry| {
                if unix_ms >= entry.expires_at_ms.load(Ordering::Relaxed) {
                    entry.outbox.kick(Kick::TokenExpired);
                } else if entry.timeout_armed.load(Ordering::Relaxed)
                    && now.saturating_sub(entry.last_seen_ms.load(Ordering::Relaxed)) > timeout_ms
                {
                    entry.outbox.kick(Kick::ClientTimeout);
                    timed_out += 1;
                } else if !hubs.activity.check(entry, now) {
                    ping(entry, checks, first);
                }
            });
        }
        if timed_out > 0 {
            tracing::debug!(connections = timed_out, "client timeout: connections dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_is_pinged_once_per_interval_whatever_the_ticks() {
        let mut s = Schedule::new(Duration::from_secs(15), 1_000_000);
        let ids: Vec<u64> = (0..1000).collect();
        let mut pinged = vec![0u32; ids.len()];
        let mut now = 1_000_000;
        // Uneven ticks, as the tick follows the connection count; three
        // rounds of 5 s make exactly one interval.
        for step in [100, 1000, 250, 150, 1000, 2500].iter().cycle().take(18) {
            now += step;
            let w = s.advance(now);
            for &id in &ids {
                pinged[id as usize] += u32::from(w.contains(s.phase(id)));
            }
        }
        assert_eq!(now - 1_000_000, 15_000);
        assert!(pinged.iter().all(|&n| n == 1), "each connection pinged exactly once: {pinged:?}");
    }

    #[test]
    fn the_tick_is_short_for_many_connections_and_long_for_few() {
        let s = Schedule::new(Duration::from_secs(15), 0);
        assert_eq!(s.tick(10), Duration::from_secs(1));
        assert_eq!(s.tick(10_000), Duration::from_millis(100));
        assert_eq!(s.tick(2_000), Duration::from_millis(480));
        // Never longer than the gap between a connection's checkpoints.
        assert_eq!(Schedule::new(Duration::from_secs(2), 0).tick(1), Duration::from_millis(500));
    }

    #[test]
    fn every_checkpoint_of_every_connection_passes_once_per_interval() {
        let mut s = Schedule::new(Duration::from_secs(15), 1_000_000);
        let mut checks = vec![0u32; 1000];
        let mut now = 1_000_000;
        for step in [100, 1000, 250, 150, 1000, 2500].iter().cycle().take(18) {
            now += step;
            let w = s.advance(now);
            for (id, n) in checks.iter_mut().enumerate() {
                *n += u32::from(s.checks(id as u64, &w));
            }
        }
        let each = u32::from(CHECKS_PER_INTERVAL);
        assert!(checks.iter().all(|&n| n == each), "{each} checkpoints each: {checks:?}");
    }

    #[test]
    fn a_late_tick_pings_everyone() {
        let mut s = Schedule::new(Duration::from_secs(15), 0);
        let w = s.advance(20_000);
        assert!((0..100).all(|id| w.contains(s.phase(id))));
    }
}

#[cfg(test)]
mod run_tests;
