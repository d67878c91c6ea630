//! The pipeline's side of the two deliveries that group events (seed 003):
//! typing rosters (`delivery = "roster"`, state in [`super::roster`]) and
//! batched bursts (`delivery = "batch"`, state in [`super::batch`]), and
//! `ends_typing`, which takes a user off the typing state when their
//! response reaches the room.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::Value;

use super::ack::{Ack, Outcome};
use super::batch::{Held, Offer};
use super::coalesce::Key;
use super::{shape, Pipeline};
use crate::config::{Delivery, EventRoute};
use crate::envelope::Envelope;
use crate::telemetry::events::Dropped;
use crate::telemetry::labels::DropReason;

/// Whose typing an event ends in its room: the route's `ends_typing`
/// field, or `payload.sender_id` (the Support-Center's chat messages)
/// when the route names none.
pub(super) fn typing_ended_by(route: &EventRoute, envelope: &Envelope) -> Option<Key> {
    let user = match &route.ends_typing {
        Some(path) => path.lookup(envelope.payload.object()).and_then(Value::as_str),
        None => envelope.payload_str("sender_id"),
    };
    user.map(|u| (route.hub, envelope.room_id.clone(), u.to_string()))
}

impl Pipeline {
    /// An event of a roster route: its user starts or stops typing in the
    /// room's roster, which goes out if clients must see the change now.
    pub(super) fn roster_event(&mut self, route: &EventRoute, envelope: &Envelope, ack: Ack, now: Instant) {
        let Some(user) = envelope.payload_str("user_id") else {
            let reason = format!("route '{}': an event of a roster route needs payload.user_id", route.event_type);
            let dropped = Dropped::event(DropReason::MissingArgument, &envelope.event_id).with_detail(&reason);
            self.metrics.record(dropped);
            ack.resolve(Outcome::Invalid(reason));
            return;
        };
        let username = envelope.payload_str("username").unwrap_or(user);
        let typing = self.starts_typing(route, envelope);
        match self.rosters.observe((route.hub, envelope.room_id.clone()), user, username, typing, now) {
            Some(roster) => {
                self.send_roster(route.hub, &roster);
                ack.resolve(Outcome::Delivered);
            }
            None => {
                self.metrics.events_coalesced.inc();
                ack.resolve(Outcome::Dropped("coalesced"));
            }
        }
    }

    /// A start, unless the payload says `is_typing: false` or the event
    /// type is the stop event of one of the hub's `typing` methods.
    fn starts_typing(&self, route: &EventRoute, envelope: &Envelope) -> bool {
        if envelope.payload.object().get("is_typing").and_then(Value::as_bool) == Some(false) {
            return false;
        }
        let hub = self.routes.hubs.get(route.hub);
        !hub.is_some_and(|h| h.typing_events().any(|(_, stop)| *stop == envelope.event_type))
    }

    /// The user of `key` left the room's roster (their response was posted).
    pub(super) fn roster_left(&mut self, key: &Key, now: Instant) {
        let (hub, room, user) = key;
        if let Some(roster) = self.rosters.observe((*hub, room.clone()), user, user, false, now) {
            self.send_roster(*hub, &roster);
        }
    }

    /// Sends a roster through its hub's roster route (they all share one
    /// method and arguments: the routing file is checked for it).
    fn send_roster(&self, hub: usize, roster: &Envelope) {
        let routes = self.routes.clone();
        let route = routes.routes().find(|r| r.hub == hub && r.delivery == Delivery::Roster);
        if let Some(route) = route {
            self.deliver(route, roster, Utc::now(), None);
        }
    }

    /// An event of a batch route: sent at once (a list of one) when its
    /// room has no open window, else held for the window's end. Gives the
    /// stream position back for the caller to move when it was held.
    pub(super) fn batch_event(
        &mut self,
        route: &EventRoute,
        envelope: Envelope,
        ack: Ack,
        at: Option<(Arc<str>, String)>,
        now: Instant,
    ) -> Option<(Arc<str>, String)> {
        let ender = typing_ended_by(route, &envelope);
        let position = at.as_ref().map(|(_, id)| id.clone());
        let held = match self.batches.offer(route.hub, envelope, ack, position, now) {
            Offer::Send(envelope, ack, position) => {
                self.send_batch(route, vec![(envelope, ack, position)], at);
                None
            }
            Offer::Held => at,
        };
        if let Some(key) = ender {
            self.typing_ended(key, now);
        }
        held
    }

    /// Sends what a room holds in batches, before an event that must not
    /// overtake it.
    pub(super) fn flush_room(&mut self, hub: usize, room: &str) {
        for held in self.batches.take_room(hub, room) {
            self.send_held(held);
        }
    }

    /// Sends every room's held batches now, the windows staying open.
    pub(super) fn flush_every_room(&mut self) {
        for held in self.batches.take_every_room() {
            self.send_held(held);
        }
    }

    /// Closes the roster and batch windows due by `now`.
    pub(super) fn fire_grouped(&mut self, now: Instant) {
        for (hub, roster) in self.rosters.due(now) {
            self.send_roster(hub, &roster);
        }
        for (_, held) in self.batches.due(now) {
            self.send_held(held);
        }
    }

    /// Sends everything held, at shutdown.
    pub(super) fn flush_batches(&mut self) {
        for (_, held) in self.batches.take_all() {
            self.send_held(held);
        }
    }

    fn send_held(&self, held: Held) {
        let routes = self.routes.clone();
        if let Some(route) = held.first().and_then(|(e, _, _)| routes.route(&e.event_type)) {
            self.send_batch(route, held, None);
        }
    }

    /// One invocation for the batch (see [`shape::shape_batch`]), then
    /// every event's ack.
    fn send_batch(&self, route: &EventRoute, held: Held, at: Option<(Arc<str>, String)>) {
        let mut events = Vec::with_capacity(held.len());
        let mut acks = Vec::with_capacity(held.len());
        let mut positions = Vec::with_capacity(held.len());
        for (envelope, ack, position) in held {
            events.push(envelope);
            acks.push(ack);
            positions.push(position);
        }
        let Some(first) = events.first() else { return };
        let positions: Vec<Option<&str>> = positions.iter().map(Option::as_deref).collect();
        match shape::shape_batch(&route.arguments, &events, &positions) {
            Ok(arguments) => {
                self.send(route, &first.room_id, &arguments, first.timestamp.min(Utc::now()), at);
                if events.len() > 1 {
                    self.metrics.events_batched.inc_by(events.len() as u64);
                }
                acks.into_iter().for_each(|a| a.resolve(Outcome::Delivered));
            }
            // Unreachable: every held event was checked against the
            // route's arguments before it was held.
            Err(missing) => {
                let reason = format!("route '{}': {missing}", route.event_type);
                let dropped = Dropped::many(DropReason::MissingArgument, events.len() as u64).with_detail(&reason);
                self.metrics.record(dropped);
                acks.into_iter().for_each(|a| a.resolve(Outcome::Invalid(reason.clone())));
            }
        }
    }
}
