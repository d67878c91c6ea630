//! The pipeline's side of browser push: events of a `push = true` route
//! addressed to one user are copied into a bounded queue for the Web Push
//! sender, which decides whether the user is offline. The pipeline never
//! waits on it: a full queue drops the copy and counts it.

use tokio::sync::mpsc;

use crate::config::{EventRoute, HubId};
use crate::envelope::Envelope;
use crate::telemetry::labels::PushOutcome;
use crate::telemetry::Metrics;

/// One event for one user that may have to go by Web Push.
#[derive(Debug, Clone)]
pub(crate) struct PushOffer {
    /// The user (`user:<id>` without the prefix).
    pub user: String,
    /// The hub the route delivers on: only a connection there gets it in
    /// the app.
    pub hub: HubId,
    /// The client method the app receives it as.
    pub method: String,
    /// The event.
    pub envelope: Envelope,
}

/// The sending end of the browser-push queue.
#[derive(Debug, Clone)]
pub(crate) struct PushTap {
    tx: mpsc::Sender<PushOffer>,
}

/// Creates the browser-push queue.
pub(crate) fn push_channel(capacity: usize) -> (PushTap, mpsc::Receiver<PushOffer>) {
    let (tx, rx) = mpsc::channel(capacity);
    (PushTap { tx }, rx)
}

impl PushTap {
    /// Copies the event into the queue if its route asks for push and it
    /// is addressed to a user.
    pub(super) fn offer(&self, route: &EventRoute, envelope: &Envelope, metrics: &Metrics) {
        if !route.push {
            return;
        }
        let Some(user) = envelope.room_id.strip_prefix("user:").filter(|u| !u.is_empty()) else { return };
        let offer = PushOffer {
            user: user.to_string(),
            hub: route.hub,
            method: route.method.clone(),
            envelope: envelope.clone(),
        };
        if self.tx.try_send(offer).is_err() {
            metrics.push(PushOutcome::QueueFull);
        }
    }
}
