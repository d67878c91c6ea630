//! How connections are told to go: the drain on SIGTERM (stateful
//! sessions handed off, the rest closed with `allowReconnect: true`, spread
//! over the window) and the closes after a hole in a stream.

use crate::sync::Unpoisoned;
use std::sync::Arc;
use std::time::Duration;

use super::{handoff, Hubs};
use crate::config::HubId;
use crate::telemetry::events::ContinuityClosed;
use crate::telemetry::labels::ContinuityCause;

/// Tells every connection to reconnect elsewhere (Close with
/// `allowReconnect: true`), spread evenly over `window` so clients do not
/// all come back at once. Events keep flowing to the connections not yet
/// closed: the caller stops ingest only after this returns.
pub(crate) async fn drain(hubs: &Hubs, window: Duration) {
    for session in hubs.parked.drain() {
        if hubs.handoff.is_some() && session.can_resume() {
            let (groups, positions) = session.detach();
            handoff::hand_off(hubs, session, groups, positions).await;
        } else {
            session.finish(crate::transport::Ended::Kicked(crate::transport::Kick::ServerShutdown)).await;
        }
    }
    let all = hubs.registry.snapshot();
    if !all.is_empty() {
        tracing::info!(connections = all.len(), window_s = window.as_secs_f64(), "closing connections");
    }
    if hubs.handoff.is_none() {
        return kick_spread(&all, |_| crate::transport::Kick::ServerShutdown, window).await;
    }
    // Stateful sessions leave fan-out at the moment they are told to go, so
    // the instance their client resumes on knows exactly what they missed.
    kick_spread(
        &all,
        |entry| {
            if !entry.outbox.is_stateful() {
                return crate::transport::Kick::ServerShutdown;
            }
            let cut = hubs.registry.detach(entry.id);
            hubs.handing_off.locked().insert(entry.id, cut);
            crate::transport::Kick::Handoff
        },
        window,
    )
    .await;
}

/// Closes (Close with `allowReconnect: true`) every connection of `hubs_fed`
/// that may have missed events of a stream with a hole, spread over
/// `window`, and refuses the resume of parked sessions: their client
/// reconnects afresh and refetches (CONTRACT section 14).
pub(crate) async fn close_for_hole(hubs: &Hubs, hubs_fed: &[HubId], cause: ContinuityCause, window: Duration) {
    for session in hubs.parked.drain() {
        session.finish(crate::transport::Ended::Kicked(crate::transport::Kick::ContinuityLost)).await;
    }
    let affected: Vec<_> =
        hubs.registry.snapshot().into_iter().filter(|e| hubs_fed.is_empty() || hubs_fed.contains(&e.hub)).collect();
    hubs.metrics.record(ContinuityClosed { cause, connections: affected.len() as u64 });
    kick_spread(&affected, |_| crate::transport::Kick::ContinuityLost, window).await;
}

/// Kicks `entries` (each for the reason `why` gives) in steps of 100 ms
/// spread over `window`.
async fn kick_spread(
    entries: &[Arc<crate::fanout::ConnEntry>],
    why: impl Fn(&crate::fanout::ConnEntry) -> crate::transport::Kick,
    window: Duration,
) {
    if entries.is_empty() {
        return;
    }
    let steps = (window.as_millis() / 100).max(1) as usize;
    let per_step = entries.len().div_ceil(steps);
    for (i, chunk) in entries.chunks(per_step).enumerate() {
        if i > 0 {
            tokio::time::sleep(window / steps as u32).await;
        }
        for entry in chunk {
            entry.outbox.kick(why(entry));
        }
    }
}

#[cfg(test)]
mod tests;
