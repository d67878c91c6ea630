//! The task that appends spooled events to their streams once Redis answers
//! again, oldest first, one at a time (a later event never lands before an
//! earlier one). While Redis stays away it retries with a back-off of at
//! most a second, so the outage ends for POSTed events within a second of
//! Redis's return, and drops what went stale meanwhile.
//!
//! At shutdown it closes the spool (later POSTs get 503), keeps trying for
//! as long as the shutdown allows (Redis may come back: every event it
//! answered `queued` for is owed to every instance's clients, CONTRACT
//! section 14), and logs and counts whatever it could not append.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::append::{append, is_unavailable};
use super::spool::{Left, Spool};
use super::RedisConn;

/// First wait after a failed attempt.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts while Redis is away.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Appends the spool's events to Redis; made by the publisher that fills the
/// spool, run by `app` on its task tracker.
pub(crate) struct SpoolFlusher {
    pub(super) spool: Arc<Spool>,
    pub(super) conn: RedisConn,
    pub(super) maxlen: usize,
}

/// How one pass over the spool ended.
enum Pass {
    /// Nothing left.
    Empty,
    /// Redis did not answer; the head is still in place.
    Unavailable,
}

impl SpoolFlusher {
    /// Runs until `stop`, then keeps trying for up to `last_attempts` (an
    /// empty spool ends it at once) and reports the loss.
    pub(crate) async fn run(self, stop: CancellationToken, last_attempts: Duration) {
        let mut backoff = RETRY_MIN;
        loop {
            // A pass is never cut short by `stop`: an XADD abandoned half-way
            // may have landed, and the last attempt would append it again.
            match self.pass().await {
                Pass::Empty => {
                    backoff = RETRY_MIN;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = self.spool.pushed() => {}
                    }
                }
                Pass::Unavailable => {
                    self.spool.drop_stale(Utc::now());
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
        self.spool.close();
        let last = async {
            let mut backoff = RETRY_MIN;
            while let Pass::Unavailable = self.pass().await {
                self.spool.drop_stale(Utc::now());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        };
        if tokio::time::timeout(last_attempts, last).await.is_err() {
            tracing::warn!(waited = ?last_attempts, "Redis did not come back before the shutdown deadline");
        }
        let lost = self.spool.abandon();
        if lost > 0 {
            tracing::error!(
                events = lost,
                "POSTed events answered `queued` could not be appended to Redis before exit: they are lost"
            );
        }
    }

    /// Appends events, oldest first, until the spool is empty or Redis does
    /// not answer.
    async fn pass(&self) -> Pass {
        let mut flushed = 0usize;
        let outcome = loop {
            let Some(head) = self.spool.head() else { break Pass::Empty };
            if self.spool.is_stale(&head, Utc::now()) {
                tracing::debug!(event_id = %head.envelope.event_id, "spooled event went stale: dropped");
                self.spool.remove(&head, Left::Stale);
                continue;
            }
            match append(&self.conn, &head.stream, self.maxlen, &head.envelope).await {
                Ok(_) => {
                    self.spool.remove(&head, Left::Flushed);
                    flushed += 1;
                }
                Err(e) if is_unavailable(&e) => {
                    tracing::debug!(error = %e, waiting = self.spool.len(), "Redis still unavailable for the spool");
                    break Pass::Unavailable;
                }
                Err(e) => {
                    tracing::error!(error = %e, event_id = %head.envelope.event_id, stream = %head.stream,
                        "Redis refused a spooled event for good: dropped");
                    self.spool.remove(&head, Left::Refused);
                }
            }
        };
        if flushed > 0 {
            tracing::info!(events = flushed, waiting = self.spool.len(), "spooled events appended to their streams");
        }
        outcome
    }
}
