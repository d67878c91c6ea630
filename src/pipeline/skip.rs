//! Linear scale-out: every instance reads every stream entry (each has its
//! own consumer group), so an entry for a room or user with no connection
//! on this instance is acknowledged without decoding its payload. What
//! needs every entry whatever the local connections is never skipped:
//!
//! - broadcasts to `*`;
//! - routes that carry `position` (each instance writes the rooms' history
//!   and proves its own coverage of the stream);
//! - `push = true` routes (a user with no live connection anywhere must
//!   still get the notification, claimed once between instances);
//! - coalesced, roster and typing events, and any event to a room where
//!   this instance holds typing, roster or batch state (a connection that
//!   joins later sees that state);
//! - entries whose head fails the envelope's checks: they are decoded
//!   whole and dead-lettered with the schema's reason, as before.
//!
//! A skipped entry is still counted as consumed, remembered by the
//! idempotency window (a duplicate that arrives after a connection joined
//! is still dropped; one skipped as a duplicate is recorded for replays,
//! `duplicates.rs`) and moves the stream's position under the fan-out's
//! lock; it is acknowledged with the rest of its read passed over
//! (`entries.rs`). An entry whose head is valid but whose payload is not is
//! dead-lettered by the instances that decode it, and by the one instance
//! that checks every entry it passes over ([`ChecksAll`]), so it is
//! dead-lettered even when no instance has a connection in its room.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{route, Entries, Outcome, Pipeline};
use crate::config::{Delivery, EventRoute};
use crate::envelope::{Envelope, Head, Pending};
use crate::sync::Unpoisoned;
use crate::telemetry::events::Dropped;
use crate::telemetry::labels::DropReason;

/// The streams on which this instance checks the payload of every entry
/// it passes over (CONTRACT section 4: every invalid entry is
/// dead-lettered, one for a room nobody watches too). Checking costs a
/// decode, which skipping is there to save, so on each stream one instance
/// does it: the ingest elects it (the live instance with the smallest id
/// among those reading the stream); an instance alone, or one that cannot
/// tell, checks. Kept as the streams it does not check: none at first.
#[derive(Clone, Default)]
pub(crate) struct ChecksAll(Arc<Mutex<HashSet<Arc<str>>>>);

impl ChecksAll {
    /// Whether this instance is the one that checks `stream`.
    pub(crate) fn set(&self, stream: &Arc<str>, checks: bool) {
        let mut unchecked = self.0.locked();
        match checks {
            true => unchecked.remove(stream),
            false => unchecked.insert(stream.clone()),
        };
    }

    /// Whether it is.
    pub(crate) fn covers(&self, stream: &str) -> bool {
        !self.0.locked().contains(stream)
    }
}

/// Whether an event of `route` to `room_id` can do nothing on an instance
/// with no connection in that room (and no state for it).
pub(super) fn route_may_skip(route: &EventRoute, room_id: &str) -> bool {
    room_id != "*"
        && !route.push
        && !route.arguments.has_position()
        && matches!(route.delivery, Delivery::Immediate | Delivery::Batch)
}

impl Pipeline {
    /// A read's entries, in order: each one passed over (acknowledged with
    /// the others passed over once the read is done with), refused, or
    /// decoded and run through the stages.
    pub(super) fn process_entries(&mut self, entries: Entries) {
        let Entries { source, block, mut settle, schemas, received } = entries;
        let now = Instant::now();
        let checks = self.checks_all.covers(&source);
        for i in 0..block.len() {
            let id = block.id(i);
            // Read in place: copied out only if kept.
            let (decoded, fields) = match Pending::read(block.fields(i)) {
                Ok(pending) => {
                    if self.pass_over(pending.head(), &source, id, now) {
                        if !checks {
                            settle.acknowledge(i);
                            continue;
                        }
                        // Nobody here receives it, but a bad entry is still
                        // dead-lettered with its reason.
                        let pending = pending.into_owned();
                        match pending.decode(&schemas) {
                            Ok(_) => settle.acknowledge(i),
                            Err(e) => settle.ack(i, pending.into_fields()).resolve(Outcome::Invalid(e.to_string())),
                        }
                        continue;
                    }
                    let pending = pending.into_owned();
                    (pending.decode(&schemas), pending.into_fields())
                }
                // A head that fails the envelope's checks: decoded whole,
                // which names the problem.
                Err(fields) => {
                    let fields = fields.to_owned();
                    (Envelope::from_stream_fields(fields.iter(), &schemas), fields)
                }
            };
            let ack = settle.ack(i, fields);
            match decoded {
                Ok(envelope) => {
                    self.process_decoded(envelope, ack, &source, Some((source.clone(), id.into())), received)
                }
                Err(e) => {
                    // Logged (with its reason) once the dead letter is written.
                    ack.resolve(Outcome::Invalid(e.to_string()));
                    self.registry.advance(&source, id);
                }
            }
        }
        self.send_lost();
    }

    /// Passes the entry over if nothing here needs it (its position moved,
    /// its id remembered): true then.
    fn pass_over(&mut self, head: Head<'_>, source: &Arc<str>, id: &str, now: Instant) -> bool {
        let routes = self.routes.clone();
        let Some(route) = routes.route(head.event_type) else { return false };
        if !route_may_skip(route, head.room_id) || self.holds_state(route, head.room_id) {
            return false;
        }
        let target = route::target_of(route.hub, head.room_id);
        if !self.registry.pass_if_unwatched(target, Some((source, id))) {
            return false;
        }
        self.consumed.count(&self.metrics, source, &route.event_type);
        if self.dedupe.first_time(head.event_id, now) {
            self.metrics.events_skipped.inc();
        } else {
            self.duplicates.record(source, id, now);
            self.metrics.record(Dropped::event(DropReason::Duplicate, head.event_id));
        }
        true
    }

    /// Whether this instance keeps state the event could change: a typing
    /// event type, or typing, roster or batch state in its room.
    fn holds_state(&self, route: &EventRoute, room_id: &str) -> bool {
        self.typing.knows(&route.event_type)
            || self.typing.in_room(route.hub, room_id)
            || self.rosters.in_room(route.hub, room_id)
            || self.batches.in_room(route.hub, room_id)
    }
}
