//! One shared tick for every connection: pings each one every keep-alive
//! interval (a share of them every 100 ms, not all at once) and, once a
//! second, drops those silent past the client timeout. No timer per
//! connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::codec::{HubMessage, Protocol};
use crate::fanout::{ConnEntry, Payload};
use crate::transport::Kick;

use super::Hubs;

/// How often a share of the connections is pinged.
const TICK: Duration = Duration::from_millis(100);
/// Every this many ticks (once a second), expiry and timeouts are checked.
const CHECKS_EVERY: u64 = 10;

/// Runs until `stop`.
pub async fn run_keepalive(hubs: Arc<Hubs>, stop: CancellationToken) {
    let pings: Vec<Option<Payload>> = Protocol::ALL
        .iter()
        .map(|p| {
            let bytes = p.encode(&HubMessage::Ping);
            if p.is_binary() {
                Some(Payload::Binary(bytes.into()))
            } else {
                Payload::text_from_vec(bytes)
            }
        })
        .collect();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keepalive_ms = hubs.settings.keepalive.as_millis() as u64;
    let timeout_ms = hubs.settings.client_timeout.as_millis() as u64;
    let mut last_sweep = 0;
    // Each tick pings the connections whose id falls in its share, so every
    // connection is pinged once per keep-alive interval. Small shares keep
    // each tick's burst of sends short (at 10,000 connections a whole
    // second's share held deliveries behind it for milliseconds).
    let shares = (keepalive_ms / TICK.as_millis() as u64).max(1);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = hubs.now_ms();
        ticks = ticks.wrapping_add(1);
        let share = ticks % shares;
        let ping = |entry: &ConnEntry| {
            if entry.id % shares == share {
                if let Some(Some(ping)) = pings.get(entry.slot) {
                    let _ = entry.outbox.push_unsequenced(ping.clone());
                }
            }
        };
        if !ticks.is_multiple_of(CHECKS_EVERY) {
            hubs.registry.for_each(&ping);
            continue;
        }
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
        hubs.registry.for_each(|entry| {
            if entry.expires_at_ms.is_some_and(|exp| unix_ms >= exp) {
                entry.outbox.kick(Kick::TokenExpired);
            } else if now.saturating_sub(entry.last_seen_ms.load(Ordering::Relaxed)) > timeout_ms {
                entry.outbox.kick(Kick::ClientTimeout);
                timed_out += 1;
            } else {
                ping(entry);
            }
        });
        if timed_out > 0 {
            tracing::debug!(connections = timed_out, "client timeout: connections dropped");
        }
    }
}
