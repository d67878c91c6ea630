//! Envelope in, frames out: validate -> dedupe -> route -> encode once ->
//! fan out, with every drop counted and every outcome reported on its
//! [`Ack`]. One task runs it, so per-event state needs no locks.

mod ack;
mod dedupe;
mod route;
mod validate;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use ack::{Ack, Outcome};

use crate::config::{Delivery, DeliveryConfig, RouteTable};
use crate::envelope::Envelope;
use crate::fanout::Registry;
use crate::telemetry::Metrics;
use dedupe::Dedupe;
use validate::Freshness;

/// One event on its way to the pipeline.
#[derive(Debug)]
pub struct Input {
    /// The decoded, schema-checked event.
    pub envelope: Envelope,
    /// Where the outcome goes.
    pub ack: Ack,
    /// The stream it came from, or `http` for the in-process bus.
    pub source: Arc<str>,
}

/// The sending side of the pipeline's bounded queue: ingest awaits room in
/// it, which is what pauses the Redis reader when the sidecar falls behind.
pub type InputSender = mpsc::Sender<Input>;

/// Creates the pipeline's queue.
pub fn channel(capacity: usize) -> (InputSender, mpsc::Receiver<Input>) {
    mpsc::channel(capacity)
}

/// The stages, and the state they keep between events.
pub struct Pipeline {
    routes: Arc<RouteTable>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    dedupe: Dedupe,
    freshness: Freshness,
}

impl Pipeline {
    /// Builds the pipeline.
    pub fn new(
        routes: Arc<RouteTable>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        config: &DeliveryConfig,
    ) -> Pipeline {
        Pipeline {
            routes,
            registry,
            metrics,
            dedupe: Dedupe::new(config.dedupe_window, config.dedupe_max_entries),
            freshness: Freshness { max_age: config.max_event_age, max_skew: config.max_clock_skew },
        }
    }

    /// Processes events until `stop` fires, then refuses new ones and
    /// finishes those already queued, so every consumed event is delivered
    /// (and acknowledged) before the connections are closed.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Input>, stop: CancellationToken) {
        loop {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.process(input),
                    None => return,
                },
                _ = stop.cancelled() => break,
            }
        }
        rx.close();
        while let Some(input) = rx.recv().await {
            self.process(input);
        }
        tracing::info!("pipeline drained");
    }

    /// Runs one event through every stage.
    pub fn process(&mut self, input: Input) {
        let Input { envelope, ack, source } = input;
        self.metrics
            .events_consumed
            .get_or_create(&vec![("stream", source.to_string()), ("event_type", envelope.event_type.clone())])
            .inc();
        let Some(route) = self.routes.route(&envelope.event_type) else {
            self.metrics.dropped("no_route", 1);
            return ack.resolve(Outcome::Invalid(format!("no route for event_type '{}'", envelope.event_type)));
        };
        let now = chrono::Utc::now();
        let Some(effective_time) = self.freshness.check(envelope.timestamp, now) else {
            self.metrics.dropped("stale", 1);
            tracing::debug!(event_id = %envelope.event_id, timestamp = %envelope.timestamp, "stale event dropped");
            return ack.resolve(Outcome::Dropped("stale"));
        };
        if !self.dedupe.first_time(&envelope.event_id, Instant::now()) {
            self.metrics.dropped("duplicate", 1);
            tracing::debug!(event_id = %envelope.event_id, "duplicate event dropped");
            return ack.resolve(Outcome::Dropped("duplicate"));
        }

        let started = Instant::now();
        let droppable = route.delivery == Delivery::Coalesce;
        let (frame, _bytes) = route::encode(&self.registry, &route.method, &envelope, droppable);
        let report = self.registry.deliver(route::target_of(route.hub, &envelope.room_id), &frame);
        self.metrics.broadcast_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.events_delivered.inc_by(report.queued as u64);
        self.metrics.dropped("outbox_full", report.dropped as u64);
        self.metrics.slow_consumer_disconnects.inc_by(report.overflowed as u64);
        if report.queued > 0 {
            let age = chrono::Utc::now().signed_duration_since(effective_time);
            self.metrics.event_delivery_seconds.observe(age.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
        }
        ack.resolve(Outcome::Delivered);
    }
}
