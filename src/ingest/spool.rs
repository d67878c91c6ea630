//! The spool: events POSTed while Redis does not answer, in the order they
//! were received, bounded, waiting to be appended to their streams
//! (`spool_flush` does that). Without it a POST during an outage could only
//! be refused or delivered to this instance's clients alone, and the clients
//! of every other instance would silently miss it (CONTRACT section 14).
//!
//! The spool owns its metrics: depth, and every way an event leaves it.

use crate::sync::Unpoisoned;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::envelope::Envelope;
use crate::telemetry::events::Dropped;
use crate::telemetry::labels::{DropReason, SpoolOutcome};
use crate::telemetry::Metrics;

/// Why an event was not put in the spool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SpoolError {
    /// The spool holds its maximum (`SIDECAR_SPOOL_MAX_EVENTS`).
    #[error("the spool is full ({0} events)")]
    Full(usize),
    /// The sidecar is shutting down: nothing would append it any more.
    #[error("the sidecar is shutting down")]
    Closed,
}

/// One spooled event: where it goes, and what.
#[derive(Debug)]
pub(super) struct Spooled {
    /// Its stream (from the event's route).
    pub stream: Arc<str>,
    /// The envelope, appended exactly as a direct XADD would have.
    pub envelope: Envelope,
}

/// How an event left the spool, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Left {
    /// Appended to its stream.
    Flushed,
    /// Older than the maximum event age: no instance would deliver it.
    Stale,
    /// Redis refused it for good (a refusal retrying cannot fix).
    Refused,
}

/// A bounded FIFO of spooled events, shared by the publisher (which pushes)
/// and the flusher (which alone removes).
pub(crate) struct Spool {
    state: Mutex<State>,
    capacity: usize,
    max_age: Duration,
    pushed: Notify,
    metrics: Arc<Metrics>,
}

struct State {
    queue: VecDeque<Arc<Spooled>>,
    closed: bool,
}

impl Spool {
    /// A spool of at most `capacity` events (0: none; every push is
    /// refused), whose events go stale after `max_age` by their timestamp.
    pub(crate) fn new(capacity: usize, max_age: Duration, metrics: Arc<Metrics>) -> Spool {
        Spool {
            state: Mutex::new(State { queue: VecDeque::new(), closed: false }),
            capacity,
            max_age,
            pushed: Notify::new(),
            metrics,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    /// Appends `envelope` behind every event already spooled, or says why not
    /// (a refusal is counted as `refused`).
    pub(super) fn push(&self, stream: Arc<str>, envelope: Envelope) -> Result<(), SpoolError> {
        let mut state = self.state();
        if state.closed {
            return Err(SpoolError::Closed);
        }
        if state.queue.len() >= self.capacity {
            drop(state);
            self.metrics.spool(SpoolOutcome::Refused, 1);
            return Err(SpoolError::Full(self.capacity));
        }
        state.queue.push_back(Arc::new(Spooled { stream, envelope }));
        self.metrics.spool_depth.set(state.queue.len() as i64);
        drop(state);
        self.metrics.spool(SpoolOutcome::Spooled, 1);
        self.pushed.notify_one();
        Ok(())
    }

    /// True when nothing waits: a new event may then go to Redis directly
    /// without overtaking an earlier one.
    pub(super) fn is_empty(&self) -> bool {
        self.state().queue.is_empty()
    }

    /// Events waiting.
    pub(super) fn len(&self) -> usize {
        self.state().queue.len()
    }

    /// The oldest event, left in place (so that later POSTs keep queueing
    /// behind it) until [`Spool::remove`] says how it left.
    pub(super) fn head(&self) -> Option<Arc<Spooled>> {
        self.state().queue.front().cloned()
    }

    /// Removes `head` if it is still the oldest event, and counts how it left.
    pub(super) fn remove(&self, head: &Arc<Spooled>, how: Left) {
        let mut state = self.state();
        if !state.queue.front().is_some_and(|f| Arc::ptr_eq(f, head)) {
            return;
        }
        state.queue.pop_front();
        self.metrics.spool_depth.set(state.queue.len() as i64);
        drop(state);
        match how {
            Left::Flushed => self.metrics.spool(SpoolOutcome::Flushed, 1),
            Left::Stale => self.metrics.record(Dropped::many(DropReason::SpoolStale, 1)),
            Left::Refused => self.metrics.record(Dropped::many(DropReason::SpoolRefused, 1)),
        }
    }

    /// True when `event` is older than the maximum event age at `now`: every
    /// instance would drop it, so it must not be appended.
    pub(super) fn is_stale(&self, event: &Spooled, now: DateTime<Utc>) -> bool {
        let age = now.signed_duration_since(event.envelope.timestamp);
        age.num_milliseconds() > self.max_age.as_millis() as i64
    }

    /// Drops (and counts) every event that went stale while Redis was away,
    /// wherever it sits: timestamps are the publishers', not in order.
    /// Returns how many.
    pub(super) fn drop_stale(&self, now: DateTime<Utc>) -> usize {
        let mut state = self.state();
        let before = state.queue.len();
        state.queue.retain(|e| !self.is_stale(e, now));
        let dropped = before - state.queue.len();
        self.metrics.spool_depth.set(state.queue.len() as i64);
        drop(state);
        self.metrics.record(Dropped::many(DropReason::SpoolStale, dropped as u64));
        dropped
    }

    /// Refuses every later push: at shutdown, before the last flush.
    pub(super) fn close(&self) {
        self.state().closed = true;
    }

    /// Empties the spool at exit, counting what is lost; returns how many.
    pub(super) fn abandon(&self) -> usize {
        let mut state = self.state();
        let lost = state.queue.len();
        state.queue.clear();
        self.metrics.spool_depth.set(0);
        drop(state);
        self.metrics.record(Dropped::many(DropReason::SpoolShutdown, lost as u64));
        lost
    }

    /// Resolves once an event was pushed since the last call (a push while
    /// nobody waits is remembered).
    pub(super) async fn pushed(&self) {
        self.pushed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64, age_seconds: i64) -> Envelope {
        let mut payload = serde_json::Map::new();
        payload.insert("n".into(), n.into());
        Envelope {
            event_id: format!("00000000-0000-4000-8000-{n:012}"),
            event_type: "chat_message".into(),
            timestamp: Utc::now() - chrono::Duration::seconds(age_seconds),
            room_id: "r".into(),
            payload: payload.into(),
            metadata: None,
        }
    }

    fn spool(capacity: usize) -> (Spool, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        (Spool::new(capacity, Duration::from_secs(300), metrics.clone()), metrics)
    }

    fn n_of(s: &Spooled) -> u64 {
        s.envelope.payload.object()["n"].as_u64().expect("n")
    }

    fn metric(metrics: &Metrics, line_start: &str) -> Option<String> {
        metrics.render().lines().find(|l| l.starts_with(line_start)).map(|l| l.to_string())
    }

    #[test]
    fn events_leave_in_the_order_they_came() {
        let (s, metrics) = spool(10);
        for n in 0..5 {
            s.push(Arc::from("events:chat"), event(n, 0)).expect("room");
        }
        let mut out = Vec::new();
        while let Some(head) = s.head() {
            assert_eq!(s.head().map(|h| n_of(&h)), Some(n_of(&head)), "head stays until removed");
            out.push(n_of(&head));
            s.remove(&head, Left::Flushed);
        }
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
        assert!(s.is_empty());
        assert_eq!(metric(&metrics, "sidecar_spool_depth ").as_deref(), Some("sidecar_spool_depth 0"));
        assert_eq!(
            metric(&metrics, "sidecar_spool_events_total{outcome=\"flushed\"}").as_deref(),
            Some("sidecar_spool_events_total{outcome=\"flushed\"} 5")
        );
    }

    #[test]
    fn a_full_spool_refuses_and_counts() {
        let (s, metrics) = spool(3);
        for n in 0..3 {
            s.push(Arc::from("events:chat"), event(n, 0)).expect("room");
        }
        assert_eq!(s.push(Arc::from("events:chat"), event(3, 0)), Err(SpoolError::Full(3)));
        assert_eq!(s.len(), 3, "the refused event did not push another out");
        assert_eq!(s.head().map(|h| n_of(&h)), Some(0), "the oldest is kept");
        assert_eq!(metric(&metrics, "sidecar_spool_depth ").as_deref(), Some("sidecar_spool_depth 3"));
        assert_eq!(
            metric(&metrics, "sidecar_spool_events_total{outcome=\"refused\"}").as_deref(),
            Some("sidecar_spool_events_total{outcome=\"refused\"} 1")
        );
        let head = s.head().expect("head");
        s.remove(&head, Left::Flushed);
        s.push(Arc::from("events:chat"), event(4, 0)).expect("room again once one left");
    }

    #[test]
    fn a_spool_of_zero_refuses_everything() {
        let (s, _) = spool(0);
        assert_eq!(s.push(Arc::from("events:chat"), event(0, 0)), Err(SpoolError::Full(0)));
        assert!(s.is_empty());
    }

    #[test]
    fn stale_events_are_dropped_wherever_they_sit_and_counted() {
        let (s, metrics) = spool(10);
        // Publishers' clocks differ: a stale event can sit behind fresh ones.
        for (n, age) in [(0, 10), (1, 299), (2, 5), (3, 400)] {
            s.push(Arc::from("events:chat"), event(n, age)).expect("room");
        }
        assert_eq!(s.drop_stale(Utc::now()), 1, "only the 400 s old one is past 300 s");
        let later = Utc::now() + chrono::Duration::seconds(2);
        let head = s.head().expect("head");
        assert!(!s.is_stale(&head, later));
        assert_eq!(s.drop_stale(later), 1, "the 299 s old one went stale while it waited");
        let mut left = Vec::new();
        while let Some(head) = s.head() {
            left.push(n_of(&head));
            s.remove(&head, Left::Flushed);
        }
        assert_eq!(left, vec![0, 2]);
        assert_eq!(
            metric(&metrics, "sidecar_events_dropped_total{reason=\"spool_stale\"}").as_deref(),
            Some("sidecar_events_dropped_total{reason=\"spool_stale\"} 2")
        );
    }

    #[test]
    fn removing_a_head_that_is_gone_removes_nothing() {
        let (s, _) = spool(10);
        s.push(Arc::from("events:chat"), event(0, 0)).expect("room");
        s.push(Arc::from("events:chat"), event(1, 0)).expect("room");
        let head = s.head().expect("head");
        s.remove(&head, Left::Flushed);
        s.remove(&head, Left::Flushed);
        assert_eq!(s.len(), 1, "a second remove of the same event leaves the next one alone");
    }

    #[test]
    fn a_closed_spool_refuses_and_abandon_counts_the_loss() {
        let (s, metrics) = spool(10);
        s.push(Arc::from("events:chat"), event(0, 0)).expect("room");
        s.push(Arc::from("events:chat"), event(1, 0)).expect("room");
        s.close();
        assert_eq!(s.push(Arc::from("events:chat"), event(2, 0)), Err(SpoolError::Closed));
        assert_eq!(s.abandon(), 2);
        assert!(s.is_empty());
        assert_eq!(
            metric(&metrics, "sidecar_events_dropped_total{reason=\"spool_shutdown\"}").as_deref(),
            Some("sidecar_events_dropped_total{reason=\"spool_shutdown\"} 2")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_wakes_the_flusher_even_before_it_waits() {
        let s = Arc::new(spool(10).0);
        s.push(Arc::from("events:chat"), event(0, 0)).expect("room");
        tokio::time::timeout(Duration::from_secs(1), s.pushed()).await.expect("the earlier push is remembered");
        assert!(tokio::time::timeout(Duration::from_secs(1), s.pushed()).await.is_err(), "one push wakes once");
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.pushed().await }
        });
        tokio::task::yield_now().await;
        s.push(Arc::from("events:chat"), event(1, 0)).expect("room");
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken").expect("joined");
    }
}
