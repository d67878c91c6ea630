//! The Web Push sender: one task reads the queue the pipeline feeds, asks
//! whether the user is live anywhere, and for an offline user sends one
//! push per subscription (each on a task of its own, a bounded number at
//! once), claimed so that only one instance sends it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::task::TaskTracker;

use super::ece;
use super::liveness::Liveness;
use super::message;
use super::store::Store;
use super::subscription::{origin, Subscription};
use super::vapid::Vapid;
use super::PushClient;
use crate::pipeline::PushOffer;
use crate::telemetry::labels::PushOutcome;
use crate::telemetry::Metrics;

/// Tries per subscription: the first, then up to three retries (NFR-011).
const ATTEMPTS: u32 = 4;

/// Wait before the first retry; doubled before each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Pushes in flight at once; past it the queue fills and then drops.
const IN_FLIGHT: usize = 64;

/// What every push shares.
pub(super) struct Sender {
    /// Subscriptions.
    pub store: Arc<Store>,
    /// Who is connected anywhere.
    pub liveness: Arc<Liveness>,
    /// The signing key.
    pub vapid: Arc<Vapid>,
    /// The HTTP client.
    pub client: Arc<dyn PushClient>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The `TTL` header.
    pub ttl: Duration,
}

impl Sender {
    /// Reads the queue until the pipeline lets go of it; the pushes run on
    /// `tasks` (the app's, so shutdown waits for them up to its deadline).
    pub(super) async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<PushOffer>, tasks: TaskTracker) {
        let limit = Arc::new(Semaphore::new(IN_FLIGHT));
        while let Some(offer) = rx.recv().await {
            self.handle(offer, &limit, &tasks).await;
        }
    }

    async fn handle(self: &Arc<Self>, offer: PushOffer, limit: &Arc<Semaphore>, tasks: &TaskTracker) {
        match self.liveness.is_live(&offer.user, offer.hub).await {
            Ok(true) => return self.metrics.push(PushOutcome::Online),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, event_id = %offer.envelope.event_id, "push: liveness unknown; not sent");
                return self.metrics.push(PushOutcome::Error);
            }
        }
        let subs = match self.store.list(&offer.user).await {
            Ok(subs) if subs.is_empty() => return self.metrics.push(PushOutcome::NoSubscription),
            Ok(subs) => subs,
            Err(e) => {
                tracing::warn!(error = %e, event_id = %offer.envelope.event_id, "push: subscriptions unreadable");
                return self.metrics.push(PushOutcome::Error);
            }
        };
        let plaintext: Arc<[u8]> = message::plaintext(&offer).into();
        for sub in subs {
            match self.store.claim(&offer.envelope.event_id, &sub.endpoint).await {
                Ok(true) => {}
                Ok(false) => {
                    self.metrics.push(PushOutcome::Taken);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "push: cannot claim the send; not sent");
                    self.metrics.push(PushOutcome::Error);
                    continue;
                }
            }
            let Ok(permit) = limit.clone().acquire_owned().await else { return };
            let (this, user, plaintext) = (self.clone(), offer.user.clone(), plaintext.clone());
            tasks.spawn(async move {
                this.deliver(&user, &sub, &plaintext).await;
                drop(permit);
            });
        }
    }

    /// One push to one subscription, retried with back-off; 404 and 410
    /// remove the subscription (RFC 8030 section 7.3).
    async fn deliver(&self, user: &str, sub: &Subscription, plaintext: &[u8]) {
        let body = match ece::encrypt(plaintext, &sub.keys) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "push: not encrypted");
                return self.metrics.push(PushOutcome::Error);
            }
        };
        let Some(audience) = origin(&sub.endpoint) else { return self.metrics.push(PushOutcome::Rejected) };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                self.metrics.push(PushOutcome::Retried);
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let authorization = match self.vapid.authorization(&audience) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "push: VAPID token not signed");
                    return self.metrics.push(PushOutcome::Error);
                }
            };
            let headers = [
                ("authorization", authorization),
                ("ttl", self.ttl.as_secs().to_string()),
                ("content-encoding", "aes128gcm".to_string()),
                ("content-type", "application/octet-stream".to_string()),
                ("urgency", "normal".to_string()),
            ];
            match self.client.post(&sub.endpoint, &headers, body.clone()).await {
                Ok(status) if (200..300).contains(&status) => return self.metrics.push(PushOutcome::Sent),
                Ok(404 | 410) => {
                    tracing::debug!(user, "push: subscription gone (404/410); removed");
                    if let Err(e) = self.store.remove(user, &sub.endpoint).await {
                        tracing::warn!(error = %e, "push: expired subscription not removed");
                    }
                    return self.metrics.push(PushOutcome::Expired);
                }
                Ok(status) if status == 429 || status >= 500 => {
                    tracing::debug!(status, attempt, "push: the push service failed");
                }
                Ok(status) => {
                    tracing::warn!(status, "push: the push service refused the message; not retried");
                    return self.metrics.push(PushOutcome::Rejected);
                }
                Err(e) => tracing::debug!(error = %e, attempt, "push: no answer from the push service"),
            }
        }
        tracing::warn!(user, attempts = ATTEMPTS, "push: not delivered");
        self.metrics.push(PushOutcome::Failed);
    }
}
