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
//! is still dropped) and moves the stream's position under the fan-out's
//! lock. An entry whose head is valid but whose payload is not is
//! dead-lettered only by the instances that decode it.

use std::sync::Arc;
use std::time::Instant;

use super::{route, Outcome, Pipeline};
use crate::config::{Delivery, EventRoute};
use crate::envelope::{Envelope, Head, Pending};
use crate::telemetry::events::Dropped;
use crate::telemetry::labels::DropReason;

/// Whether an event of `route` to `room_id` can do nothing on an instance
/// with no connection in that room (and no state for it).
pub(super) fn route_may_skip(route: &EventRoute, room_id: &str) -> bool {
    room_id != "*"
        && !route.push
        && !route.arguments.has_position()
        && matches!(route.delivery, Delivery::Immediate | Delivery::Batch)
}

impl Pipeline {
    /// A pending stream entry: passed over (`Err` with its outcome, `at`
    /// taken once the position moved), refused (`Err(Invalid)`), or
    /// decoded for the stages (`Ok`).
    pub(super) fn admit(
        &mut self,
        pending: Pending,
        source: &Arc<str>,
        at: &mut Option<(Arc<str>, String)>,
    ) -> Result<Envelope, Outcome> {
        if let Some(outcome) = self.skip(pending.head(), source, at) {
            return Err(outcome);
        }
        pending.decode().map_err(|e| {
            let reason = e.to_string();
            let entry_id = at.as_ref().map_or("", |(_, id)| id.as_str());
            tracing::warn!(stream = %source, entry_id = %entry_id, reason = %reason, "invalid entry: dead-lettered");
            Outcome::Invalid(reason)
        })
    }

    /// Skips the entry if nothing here needs it; its outcome then.
    fn skip(&mut self, head: Head<'_>, source: &Arc<str>, at: &mut Option<(Arc<str>, String)>) -> Option<Outcome> {
        let routes = self.routes.clone();
        let route = routes.route(head.event_type)?;
        if !route_may_skip(route, head.room_id) || self.holds_state(route, head.room_id) {
            return None;
        }
        let target = route::target_of(route.hub, head.room_id);
        if !self.registry.pass_if_unwatched(target, at.as_ref().map(|(s, id)| (s, id.as_str()))) {
            return None;
        }
        *at = None;
        self.consumed.count(&self.metrics, source, &route.event_type);
        if !self.dedupe.first_time(head.event_id, Instant::now()) {
            self.metrics.record(Dropped::event(DropReason::Duplicate, head.event_id));
            return Some(Outcome::Dropped("duplicate"));
        }
        self.metrics.events_skipped.inc();
        Some(Outcome::Dropped("skipped"))
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
