//! Envelope in, frames out: validate -> dedupe -> typing state -> coalesce
//! (or a room's typing roster, or its batch) -> route -> shape the
//! arguments -> encode once -> fan out, with every drop counted and every
//! outcome reported on its [`Ack`]. One task runs it, so per-event state
//! needs no locks, and its timers (coalescing, roster and batch windows,
//! typing timeouts) share the task's one `select!`.

mod ack;
mod batch;
mod coalesce;
mod cut;
mod dedupe;
mod duplicates;
mod entries;
mod grouped;
mod history;
mod lost;
mod push_tap;
mod queue;
mod roster;
mod route;
mod shape;
mod skip;
mod typing;
mod validate;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub(crate) use crate::fanout::{cut_channel, CutQueue, Cuts};
pub(crate) use ack::{Ack, Outcome};
pub(crate) use duplicates::DuplicateEntries;
pub(crate) use entries::{Entries, Settle};
pub(crate) use history::HistorySink;
pub(crate) use lost::{lost_channel, read_too_late, LostSender};
pub(crate) use push_tap::{push_channel, PushOffer, PushTap};
pub(crate) use queue::{channel, InputReceiver, InputSender};
pub(crate) use route::{encode_one, encode_replay, target_of};
pub(crate) use skip::ChecksAll;
pub(crate) use validate::Freshness;

use crate::config::{Delivery, DeliveryConfig, EventRoute, RouteTable};
use crate::envelope::Envelope;
use crate::fanout::Registry;
use crate::telemetry::events::Dropped;
use crate::telemetry::labels::{Consumed, DropReason};
use crate::telemetry::{self, Metrics};
use batch::Batches;
use coalesce::{Coalescer, Key, Offer, StateKey};
use dedupe::Dedupe;
use roster::Rosters;
use typing::TypingState;

/// What ingest hands the pipeline.
#[derive(Debug)]
pub(crate) enum Input {
    /// One decoded event (HTTP, the in-process bus, the sidecar's own).
    Event(Event),
    /// The entries of one stream read, undecoded (see `skip.rs`).
    Entries(Entries),
    /// Event ids appended before this instance's consumer groups existed,
    /// within the idempotency window, with when they were appended: the
    /// instances before it delivered them, so a publisher's retry that this
    /// one reads must be dropped as theirs would be (CONTRACT section 5).
    Seen(Vec<(String, Instant)>),
}

impl Input {
    /// How many events it brings (what it takes of the queue's room).
    pub(crate) fn events(&self) -> usize {
        match self {
            Input::Event(_) => 1,
            Input::Entries(entries) => entries.len(),
            Input::Seen(ids) => ids.len(),
        }
    }

    /// The envelope of a single event (the in-process bus's are).
    #[cfg(test)]
    pub(crate) fn decoded(self) -> Option<Envelope> {
        match self {
            Input::Event(event) => Some(event.envelope),
            Input::Entries(_) | Input::Seen(_) => None,
        }
    }
}

/// One decoded and schema-checked event.
#[derive(Debug)]
pub(crate) struct Event {
    /// The event.
    pub envelope: Envelope,
    /// Where the outcome goes.
    pub ack: Ack,
    /// The route's stream (which the in-process bus stands in for).
    pub source: Arc<str>,
    /// When ingest received it, for the queue-wait attribute.
    pub received: Instant,
}

/// The stages, and the state they keep between events.
pub(crate) struct Pipeline {
    routes: Arc<RouteTable>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    dedupe: Dedupe,
    /// The stream entries `dedupe` dropped, for replays (`duplicates.rs`).
    duplicates: Arc<DuplicateEntries>,
    freshness: Freshness,
    /// Whether entries passed over are checked too (see [`ChecksAll`]).
    checks_all: ChecksAll,
    coalescer: Coalescer<StateKey>,
    typing: TypingState,
    rosters: Rosters,
    batches: Batches,
    consumed: ConsumedCounters,
    push: Option<PushTap>,
    history: Option<Arc<dyn HistorySink>>,
    cuts: Option<CutQueue>,
    /// Where the connections of events read too late go (`lost.rs`).
    lost: Option<LostSender>,
    /// The (hub, room)s of the current read's events read too late.
    read_late: Vec<(usize, Box<str>)>,
}

/// `sidecar_events_consumed_total` handles, resolved once per (stream,
/// event type) so counting an event allocates nothing.
#[derive(Default)]
struct ConsumedCounters(
    std::collections::HashMap<
        Arc<str>,
        std::collections::HashMap<Arc<str>, prometheus_client::metrics::counter::Counter, ahash::RandomState>,
        ahash::RandomState,
    >,
);

impl ConsumedCounters {
    fn count(&mut self, metrics: &Metrics, stream: &Arc<str>, event_type: &str) {
        let by_type = self.0.entry(stream.clone()).or_default();
        if let Some(c) = by_type.get(event_type) {
            c.inc();
            return;
        }
        let labels = Consumed { stream: stream.clone(), event_type: Arc::from(event_type) };
        let c = metrics.events_consumed.get_or_create_owned(&labels);
        c.inc();
        by_type.insert(labels.event_type, c);
    }
}

impl Pipeline {
    /// Builds the pipeline.
    pub(crate) fn new(
        routes: Arc<RouteTable>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        config: &DeliveryConfig,
    ) -> Pipeline {
        Pipeline {
            typing: TypingState::new(&routes, config.typing_timeout),
            consumed: ConsumedCounters::default(),
            coalescer: Coalescer::new(config.coalesce_window, config.typing_timeout),
            rosters: Rosters::new(config.roster_window, config.typing_timeout),
            batches: Batches::new(config.batch_window),
            routes,
            registry,
            metrics,
            dedupe: Dedupe::new(config.dedupe_window, config.dedupe_max_entries),
            duplicates: Arc::new(DuplicateEntries::new(config.dedupe_window)),
            freshness: Freshness { max_age: config.max_event_age, max_skew: config.max_clock_skew },
            checks_all: ChecksAll::default(),
            push: None,
            history: None,
            cuts: None,
            lost: None,
            read_late: Vec::new(),
        }
    }

    /// Sends the connections that may have missed an event this instance
    /// read only after it went stale to `lost`, to be closed (`lost.rs`).
    pub(crate) fn with_lost(mut self, lost: LostSender) -> Pipeline {
        self.lost = Some(lost);
        self
    }

    /// The stream entries this pipeline drops as duplicates, for a replay
    /// of a stream to leave out as the live path did (a taken-over
    /// session's catch-up).
    pub(crate) fn duplicates(&self) -> Arc<DuplicateEntries> {
        self.duplicates.clone()
    }

    /// The switch that makes this instance check the entries it passes
    /// over, for the ingest that elects one instance to (see [`ChecksAll`]).
    pub(crate) fn checks_all(&self) -> ChecksAll {
        self.checks_all.clone()
    }

    /// Serves the cuts of history joins (see [`Cuts`]) between events.
    pub(crate) fn with_cuts(mut self, queue: CutQueue) -> Pipeline {
        self.cuts = Some(queue);
        self
    }

    /// Hands events of `push = true` routes to browser push as well.
    pub(crate) fn with_push(mut self, tap: PushTap) -> Pipeline {
        self.push = Some(tap);
        self
    }

    /// Hands every event of a route carrying `position` to `sink` before
    /// fanning it out (missed updates, CONTRACT section 15).
    pub(crate) fn with_history(mut self, sink: Arc<dyn HistorySink>) -> Pipeline {
        self.history = Some(sink);
        self
    }

    /// Processes events until `stop` fires, then refuses new ones and
    /// finishes those already queued, so every consumed event is delivered
    /// (and acknowledged) before the connections are closed.
    pub(crate) async fn run(mut self, mut rx: InputReceiver, stop: CancellationToken) {
        let mut cuts = self.cuts.take();
        // Waited on once for the whole loop: a new wait per event would
        // register with the token (a lock) and leave it again every time.
        let mut stopped = std::pin::pin!(stop.cancelled());
        loop {
            let deadline = [
                self.coalescer.next_deadline(),
                self.typing.next_deadline(),
                self.rosters.next_deadline(),
                self.batches.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                queued = rx.recv() => match queued {
                    Some(queued) => self.process(queued.input),
                    None => return,
                },
                _ = sleep_until(deadline) => self.fire(Instant::now()),
                request = next_cut(&mut cuts) => match request {
                    Some(request) => self.cut(request),
                    None => cuts = None,
                },
                _ = &mut stopped => break,
            }
        }
        rx.close();
        while let Some(queued) = rx.recv().await {
            self.process(queued.input);
        }
        self.flush_batches();
        tracing::info!("pipeline drained");
    }

    /// Runs what ingest handed over through every stage.
    pub(crate) fn process(&mut self, input: Input) {
        match input {
            Input::Event(Event { envelope, ack, source, received }) => {
                self.process_decoded(envelope, ack, &source, None, received)
            }
            Input::Entries(entries) => self.process_entries(entries),
            Input::Seen(ids) => {
                for (id, at) in ids {
                    self.dedupe.first_time(&id, at);
                }
            }
        }
    }

    /// Runs one decoded event through every stage; `at` is the stream
    /// entry it came from, if it did.
    fn process_decoded(
        &mut self,
        envelope: Envelope,
        ack: Ack,
        source: &Arc<str>,
        at: Option<(Arc<str>, String)>,
        received: Instant,
    ) {
        let span = event_span(&envelope, source, at.as_ref().map(|(_, id)| id.as_str()), received);
        let _in_span = span.enter();
        let at = self.stages(envelope, ack, source, at);
        // An entry that was not fanned out still moves the stream's position
        // (a delivered one moved it under the fan-out's lock).
        if let Some((stream, id)) = at {
            self.registry.advance(&stream, &id);
        }
    }

    /// The stages for one event; gives `at` back unless a delivery took it.
    fn stages(
        &mut self,
        envelope: Envelope,
        ack: Ack,
        source: &Arc<str>,
        at: Option<(Arc<str>, String)>,
    ) -> Option<(Arc<str>, String)> {
        let routes = self.routes.clone();
        let route = routes.route(&envelope.event_type);
        // Label values come from the routing file only, so a publisher cannot
        // grow the number of series.
        let label = if route.is_some() { envelope.event_type.as_str() } else { "unrouted" };
        self.consumed.count(&self.metrics, source, label);
        let Some(route) = route else {
            self.metrics.record(Dropped::event(DropReason::NoRoute, &envelope.event_id));
            ack.resolve(Outcome::Invalid(format!("no route for event_type '{}'", envelope.event_type)));
            return at;
        };
        // Checked before any state is kept (dedupe, typing, coalescing), so
        // every event held for later can be shaped when it goes out. A
        // roster route's arguments are shaped from the roster, not the event.
        let missing = match route.delivery {
            Delivery::Roster => None,
            _ => route.arguments.missing_field(|| envelope.payload.object()),
        };
        if let Some(missing) = missing {
            let reason = format!("route '{}': {missing}", route.event_type);
            let dropped = Dropped::event(DropReason::MissingArgument, &envelope.event_id).with_detail(&reason);
            self.metrics.record(dropped);
            ack.resolve(Outcome::Invalid(reason));
            return at;
        }
        let now_utc = Utc::now();
        let Some(effective_time) = self.freshness.check(envelope.timestamp, now_utc) else {
            let dropped = Dropped::event(DropReason::Stale, &envelope.event_id).with_detail(&envelope.timestamp);
            self.metrics.record(dropped);
            if let Some((_, id)) = &at {
                self.note_if_read_late(route, &envelope.room_id, id, now_utc);
            }
            ack.resolve(Outcome::Dropped("stale"));
            return at;
        };
        let now = Instant::now();
        if !self.dedupe.first_time(&envelope.event_id, now) {
            if let Some((stream, id)) = &at {
                self.duplicates.record(stream, id, now);
            }
            self.metrics.record(Dropped::event(DropReason::Duplicate, &envelope.event_id));
            ack.resolve(Outcome::Dropped("duplicate"));
            return at;
        }
        if let Some(push) = &self.push {
            push.offer(route, &envelope, &self.metrics);
        }
        // Before any fan-out (or batch): a join's cut never passes an event
        // the history has not been handed.
        if let (Some(sink), Some((stream, id)), true) = (&self.history, &at, route.arguments.has_position()) {
            sink.record(stream, id, route.hub, &envelope);
        }

        match route.delivery {
            Delivery::Roster => {
                self.roster_event(route, &envelope, ack, now);
                return at;
            }
            Delivery::Batch => return self.batch_event(route, envelope, ack, at, now),
            Delivery::Immediate | Delivery::Coalesce => {}
        }
        let about =
            |field: &str| envelope.payload_str(field).map(|u| (route.hub, envelope.room_id.clone(), u.to_string()));
        if let Some(key) = about("user_id") {
            let starts = self.typing.observe(&key, &envelope, now);
            if route.delivery == Delivery::Coalesce {
                let kind = (!self.typing.knows(&envelope.event_type)).then(|| envelope.event_type.clone());
                match self.coalescer.offer((key, kind), envelope, starts, now) {
                    Offer::Send(envelope) => self.deliver(route, &envelope, effective_time, at),
                    // Held: counted when its window closes (merged into a
                    // later one, or found already sent), or goes out then.
                    Offer::Held => {
                        ack.resolve(Outcome::Dropped("coalesced"));
                        return at;
                    }
                    Offer::Unchanged => {
                        self.metrics.events_coalesced.inc();
                        ack.resolve(Outcome::Dropped("coalesced"));
                        return at;
                    }
                }
                ack.resolve(Outcome::Delivered);
                return None;
            }
        }
        // What this room holds in batches goes first: one room's events
        // reach a connection in stream order.
        self.flush_room(route.hub, &envelope.room_id);
        // Nobody typing anywhere (the common case): no key to make.
        // A typist's stop may still wait in its window (held) while clients
        // show the indicator: a message from them sends it at once.
        let anyone_typing = !self.typing.is_idle() || !self.rosters.is_idle() || self.coalescer.holds_any();
        let sender = anyone_typing.then(|| grouped::typing_ended_by(route, &envelope)).flatten();
        self.deliver(route, &envelope, effective_time, at);
        ack.resolve(Outcome::Delivered);
        if let Some(key) = sender {
            self.typing_ended(key, now);
        }
        None
    }

    /// A message from someone typing in this room ends their indicator
    /// and takes them off the room's roster.
    fn typing_ended(&mut self, key: Key, now: Instant) {
        self.roster_left(&key, now);
        if let Some(stop) = self.typing.message_sent(&key) {
            self.send_server_stop((key, stop), now);
        } else if let Some(stop) = self.coalescer.take_held(&(key.clone(), None)) {
            // The typist had stopped, but the stop waits in its window while
            // clients still show the indicator: the message makes it due now.
            self.send_server_stop((key, stop), now);
        }
    }

    /// Closes coalescing windows and typing timeouts due by `now`.
    fn fire(&mut self, now: Instant) {
        let (trailing, dropped) = self.coalescer.due(now);
        self.metrics.events_coalesced.inc_by(dropped);
        let routes = self.routes.clone();
        for (mut envelope, merged) in trailing {
            if merged > 1 {
                self.metrics.events_coalesced.inc_by(merged - 1);
                envelope.metadata.get_or_insert_with(Default::default).insert("coalesced_count".into(), merged.into());
            }
            if let Some(route) = routes.route(&envelope.event_type) {
                self.deliver(route, &envelope, Utc::now(), None);
            }
        }
        for stop in self.typing.due(now) {
            self.send_server_stop(stop, now);
        }
        self.fire_grouped(now);
    }

    /// Sends a typing stop the server decided on, past any open window.
    fn send_server_stop(&mut self, (key, stop): (Key, Envelope), now: Instant) {
        let obsolete = self.coalescer.force((key, None), &stop, now);
        self.metrics.events_coalesced.inc_by(obsolete);
        let routes = self.routes.clone();
        if let Some(route) = routes.route(&stop.event_type) {
            self.deliver(route, &stop, Utc::now(), None);
        }
    }

    /// Shapes the route's arguments, encodes them once per protocol in use
    /// and fans out; records the fan-out on the current event span.
    /// `at` is the stream entry the event came from: its position moves
    /// with the fan-out (see [`crate::fanout::Positions`]).
    fn deliver(
        &self,
        route: &EventRoute,
        envelope: &Envelope,
        effective_time: DateTime<Utc>,
        at: Option<(Arc<str>, String)>,
    ) {
        // A copy only for the routes that send it: `send` takes the entry on.
        let position = at.as_ref().filter(|_| route.arguments.has_position()).map(|(_, id)| id.clone());
        let arguments = match shape::shape(&route.arguments, envelope, position.as_deref()) {
            Ok(a) => a,
            Err(missing) => {
                // Only the sidecar's own events get here unchecked, and the
                // routing file's validation makes their payloads fit.
                let dropped = Dropped::event(DropReason::MissingArgument, &envelope.event_id).with_detail(&missing);
                self.metrics.record(dropped);
                if let Some((stream, id)) = at {
                    self.registry.advance(&stream, &id);
                }
                return;
            }
        };
        self.send(route, &envelope.room_id, &arguments, effective_time, at);
    }

    /// Encodes `arguments` once per protocol in use and fans them out to
    /// `room_id`'s target on the route's hub.
    fn send(
        &self,
        route: &EventRoute,
        room_id: &str,
        arguments: &[shape::Argument<'_>],
        effective_time: DateTime<Utc>,
        at: Option<(Arc<str>, String)>,
    ) {
        let started = Instant::now();
        // Typing states may be lost by a client too slow to keep up; events may not.
        let droppable = matches!(route.delivery, Delivery::Coalesce | Delivery::Roster);
        let (frame, bytes) = route::encode(&self.registry, &route.method, arguments, droppable);
        let target = route::target_of(route.hub, room_id);
        let report = self.registry.deliver_at(target, &frame, at.as_ref().map(|(s, id)| (s, id.clone())));
        let span = tracing::Span::current();
        span.record("connections", report.queued as i64);
        span.record("bytes", bytes as i64);
        self.metrics.broadcast_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.events_delivered.inc_by(report.queued as u64);
        self.metrics.record(Dropped::many(DropReason::OutboxFull, report.dropped as u64));
        self.metrics.slow_consumer_disconnects.inc_by(report.overflowed as u64);
        if report.queued > 0 {
            let age = Utc::now().signed_duration_since(effective_time);
            self.metrics.event_delivery_seconds.observe(age.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
        }
    }
}

/// One span per consumed event, continuing the publisher's trace; none at
/// all (no cost) when no trace exporter runs.
fn event_span(envelope: &Envelope, source: &str, entry_id: Option<&str>, received: Instant) -> tracing::Span {
    if !telemetry::tracing_enabled() {
        return tracing::Span::none();
    }
    let in_redis_ms = (Utc::now() - envelope.timestamp).num_microseconds().unwrap_or(0).max(0) as f64 / 1000.0;
    let span = tracing::info_span!(
        "sidecar.event",
        otel.name = %format!("deliver {}", envelope.event_type),
        otel.kind = "consumer",
        messaging.system = "redis",
        messaging.destination.name = %source,
        messaging.message.id = entry_id.unwrap_or(""),
        event_id = %envelope.event_id,
        event_type = %envelope.event_type,
        room_id = %envelope.room_id,
        queue_wait_ms = received.elapsed().as_secs_f64() * 1000.0,
        since_published_ms = in_redis_ms,
        connections = tracing::field::Empty,
        bytes = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if let Some(parent) = telemetry::trace_context::from_metadata(envelope.metadata.as_ref(), &envelope.event_id) {
        telemetry::set_remote_parent(&span, parent);
    }
    if let Some(id) = telemetry::trace_id_of(&span) {
        span.record("trace_id", telemetry::trace_context::format_trace_id(id));
    }
    span
}

/// The next cut a history join asks for; never, without history joins.
async fn next_cut(cuts: &mut Option<CutQueue>) -> Option<crate::fanout::CutRequest> {
    match cuts {
        Some(queue) => queue.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
