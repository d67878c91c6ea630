//! A stateful session another instance asks for (CONTRACT section 14):
//! its client's socket dropped and the reconnect reached another instance
//! (a Service without session affinity). That instance finds no snapshot
//! and asks the deployment for the token ([`super::SessionStore::ask_release`]);
//! the instance holding the session, parked or still served on a socket
//! it has not yet seen die, hands it off as a drain does, and the asking
//! instance takes it over with what it missed meanwhile.

use std::sync::Arc;

use super::{handoff, Hubs};
use crate::sync::Unpoisoned;
use crate::transport::Kick;

/// Hands off the stateful session of `token`, if this instance holds one
/// that can resume; does nothing otherwise (every instance hears the ask).
pub(crate) async fn release(hubs: &Arc<Hubs>, token: &str) {
    let Some(handoff) = hubs.handoff.clone() else { return };
    // Only a session another instance could carry on is noted: for any
    // other the asker answers at once, as it would here.
    let served = hubs.parked.served_session(token).filter(|(_, outbox)| outbox.is_stateful() && !outbox.is_closed());
    if let Some((_, outbox)) = served.as_ref().filter(|(_, outbox)| !outbox.replay_intact()) {
        // Its buffer lost frames its client never acknowledged: no instance
        // can carry it on. Its old transport ends, as a resume here would
        // end it, and the asker, told nothing, refuses at once.
        outbox.kick(Kick::Superseded);
        return;
    }
    if !hubs.parked.holds_resumable(token) && served.is_none() {
        return;
    }
    // Told first, so the asker keeps waiting for the snapshot.
    if let Err(e) = handoff.store.mark_releasing(token).await {
        tracing::warn!(error = %e, "stateful session asked for elsewhere: cannot tell the asker");
        return;
    }
    if let Some(session) = hubs.parked.take_any(token) {
        if !session.can_resume() {
            // It stopped being resumable since the look above: kept, and the
            // asker answers after its wait.
            hubs.parked.park(token.to_string(), session);
            return;
        }
        tracing::debug!(connection_id = %session.connection_id, "stateful session asked for by another instance: handed off");
        let cut = handoff::detach_at_cut(hubs, vec![session.conn()]).await.pop();
        let (groups, positions) = cut.unwrap_or_else(|| session.detach());
        handoff::hand_off(hubs, session, groups, positions).await;
        return;
    }
    // Still served here: its old socket has not been seen to end. Out of
    // fan-out at a cut, then the transport ends and hands it off (as a drain
    // does, `connection.rs`).
    if let Some((conn, outbox)) = served {
        tracing::debug!(conn, "stateful session still served here asked for by another instance: handed off");
        if let Some(cut) = handoff::detach_at_cut(hubs, vec![conn]).await.pop() {
            hubs.handing_off.locked().insert(conn, cut);
        }
        outbox.kick(Kick::Handoff);
        settle(hubs, token, conn).await;
    }
}

/// How long a release waits for the transport it kicked to end.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// After the kick of a session still served here: its transport may have
/// ended on its own (the old socket's end read) while the session was
/// being taken out of fan-out, too early to see the kick. It then parked
/// the session, out of fan-out already (no event reached it, and its
/// groups were gone, so its end would leave no room and presence kept the
/// user, refreshed, for the life of the process), or finished it; either
/// way its cut stayed in `handing_off` for good and the asker, told the
/// session was coming, waited in vain. Once the transport has ended, a
/// session parked meanwhile is handed off from here with its cut, and a cut
/// nobody took is dropped.
async fn settle(hubs: &Arc<Hubs>, token: &str, conn: u64) {
    if !hubs.parked.served_ended(token, conn, SETTLE_WAIT).await {
        // Still served: the kick ends it, and its end hands it off.
        return;
    }
    match hubs.parked.take_conn(token, conn) {
        Some(session) => {
            tracing::debug!(connection_id = %session.connection_id, "stateful session parked as it was asked for: handed off");
            handoff::hand_off_at_cut(hubs, session).await;
        }
        None => drop(hubs.take_handing_off(conn)),
    }
}

#[cfg(test)]
mod tests;
