//! How connections are told to go: the drain on SIGTERM (stateful
//! sessions handed off, the rest closed with `allowReconnect: true`, spread
//! over the window), the closes after a hole in a stream, and those of the
//! connections that may have missed an event read too late.

use crate::sync::Unpoisoned;
use std::sync::Arc;
use std::time::Duration;

use super::{handoff, HubSession, Hubs};
use crate::config::HubId;
use crate::telemetry::events::ContinuityClosed;
use crate::telemetry::labels::ContinuityCause;

/// Tells every connection to reconnect elsewhere (Close with
/// `allowReconnect: true`), spread over `window` in 100 ms steps of at
/// least one connection each (fewer connections than steps finish early)
/// so clients do not all come back at once. Events keep flowing to the connections not yet
/// closed: the caller stops ingest only after this returns. Stateful
/// sessions are handed off instead: each leaves fan-out at a cut after
/// every held batch went out to it ([`handoff::detach_at_cut`]), so its snapshot
/// carries what a batch window was holding for it.
pub(crate) async fn drain(hubs: &Hubs, window: Duration) {
    let (resumable, rest): (Vec<_>, Vec<_>) =
        hubs.parked.drain().into_iter().partition(|s| hubs.handoff.is_some() && s.can_resume());
    for session in rest {
        session.finish(crate::transport::Ended::Kicked(crate::transport::Kick::ServerShutdown)).await;
    }
    if !resumable.is_empty() {
        let cuts = handoff::detach_at_cut(hubs, resumable.iter().map(HubSession::conn).collect()).await;
        for (session, (groups, positions)) in resumable.into_iter().zip(cuts) {
            handoff::hand_off(hubs, session, groups, positions).await;
        }
    }
    // Whatever enters fan-out after this list is told to go by whoever
    // adds it (a handshake or a takeover still under way).
    let all = hubs.registry.close_to_new();
    if !all.is_empty() {
        tracing::info!(connections = all.len(), window_s = window.as_secs_f64(), "closing connections");
    }
    if hubs.handoff.is_none() {
        kick_spread(&all, |_| crate::transport::Kick::ServerShutdown, window).await;
        return;
    }
    // Stateful sessions leave fan-out at the moment they are told to go, so
    // the instance their client resumes on knows exactly what they missed.
    let (per_step, pause) = steps(all.len(), window);
    for (i, chunk) in all.chunks(per_step).enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        let stateful: Vec<u64> = chunk.iter().filter(|e| e.outbox.is_stateful()).map(|e| e.id).collect();
        if !stateful.is_empty() {
            let cuts = handoff::detach_at_cut(hubs, stateful.clone()).await;
            hubs.handing_off.locked().extend(stateful.into_iter().zip(cuts));
        }
        for entry in chunk {
            entry.outbox.kick(if entry.outbox.is_stateful() {
                crate::transport::Kick::Handoff
            } else {
                crate::transport::Kick::ServerShutdown
            });
        }
        // A stateful session parked since the drain began has no transport
        // to hand it off on its kick (`connection.rs` looks again after it
        // parks, for a kick that comes in between).
        handoff::hand_off_parked_kicked(hubs).await;
    }
}

/// How many entries each step of a spread takes, and the pause between steps.
fn steps(entries: usize, window: Duration) -> (usize, Duration) {
    let steps = (window.as_millis() / 100).max(1) as usize;
    (entries.div_ceil(steps).max(1), window / steps as u32)
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

/// Closes (Close with `allowReconnect: true`) the connections the pipeline
/// sends on `lost`: they were in the room of an event this instance read
/// only after it had gone stale (it lagged), so they may have been owed it
/// (CONTRACT sections 5 and 14). Each batch, with whatever arrived while
/// the one before was being closed, is spread over `window`; a connection
/// already closing is neither closed nor counted again
/// (`sidecar_continuity_closes_total{cause="instance_lagged"}`). Runs until
/// the pipeline lets go of its sender.
pub(crate) async fn close_lost(
    metrics: Arc<crate::telemetry::Metrics>,
    mut lost: tokio::sync::mpsc::UnboundedReceiver<Vec<Arc<crate::fanout::ConnEntry>>>,
    window: Duration,
) {
    while let Some(mut batch) = lost.recv().await {
        while let Ok(more) = lost.try_recv() {
            batch.extend(more);
        }
        batch.sort_unstable_by_key(|e| e.id);
        batch.dedup_by_key(|e| e.id);
        let closed = kick_spread(&batch, |_| crate::transport::Kick::ContinuityLost, window).await;
        metrics.record(ContinuityClosed { cause: ContinuityCause::InstanceLagged, connections: closed as u64 });
    }
}

/// Kicks `entries` (each for the reason `why` gives) in steps of 100 ms
/// spread over `window`; how many were not closing already.
async fn kick_spread(
    entries: &[Arc<crate::fanout::ConnEntry>],
    why: impl Fn(&crate::fanout::ConnEntry) -> crate::transport::Kick,
    window: Duration,
) -> usize {
    if entries.is_empty() {
        return 0;
    }
    let (per_step, pause) = steps(entries.len(), window);
    let mut closed = 0;
    for (i, chunk) in entries.chunks(per_step).enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        for entry in chunk {
            closed += usize::from(entry.outbox.kick_if_open(why(entry)));
        }
    }
    closed
}

#[cfg(test)]
mod tests;
