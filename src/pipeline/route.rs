//! Looks up an event's route and encodes its frame exactly once per
//! protocol in use.

use super::shape::Argument;
use crate::codec::Protocol;
use crate::config::{Delivery, EventRoute};
use crate::envelope::Envelope;
use crate::fanout::{Frame, Payload, Registry, Target};

// Each protocol has a slot in a fan-out frame: a protocol added to the codec
// without a slot is a compile error here, not a panic at `by_slot[slot]`.
const _: () = assert!(Protocol::ALL.len() == crate::fanout::MAX_SLOTS);

/// The target a `room_id` names (CONTRACT section 3).
pub(crate) fn target_of(hub: usize, room_id: &str) -> Target<'_> {
    if room_id == "*" {
        Target::All { hub }
    } else if let Some(user) = room_id.strip_prefix("user:") {
        Target::User { hub, user }
    } else {
        Target::Group { hub, group: room_id }
    }
}

/// One event encoded for one protocol, outside the live fan-out: the
/// events a stateful session taken over from another instance missed, and
/// those a `history` join replays; `position` is its stream entry id.
/// `None` when the payload lacks a field the route's arguments name, and
/// for a roster route (a roster is a live state, not an event to replay).
/// A batch route's event is a batch of one, so the method keeps its signature.
pub(crate) fn encode_one(
    route: &EventRoute,
    envelope: &Envelope,
    position: Option<&str>,
    protocol: Protocol,
) -> Option<Payload> {
    encode_replay(route, std::slice::from_ref(envelope), &[position], protocol)
}

/// Events of one route and room encoded as one invocation for one
/// protocol, outside the live fan-out: a batch route's missed burst goes
/// out as one batch, as it did live. Several events of another route are
/// not one invocation: `None`, as for a roster route or a missing field.
pub(crate) fn encode_replay(
    route: &EventRoute,
    events: &[Envelope],
    positions: &[Option<&str>],
    protocol: Protocol,
) -> Option<Payload> {
    let arguments = match (route.delivery, events) {
        (Delivery::Roster, _) => return None,
        (Delivery::Batch, _) => super::shape::shape_batch(&route.arguments, events, positions).ok()?,
        (Delivery::Immediate | Delivery::Coalesce, [envelope]) => {
            super::shape::shape(&route.arguments, envelope, positions.first().copied().flatten()).ok()?
        }
        (Delivery::Immediate | Delivery::Coalesce, _) => return None,
    };
    super::shape::encode(protocol, &route.method, &arguments)
}

/// Encodes `method(arguments...)` for every protocol some connection speaks.
pub(super) fn encode(registry: &Registry, method: &str, arguments: &[Argument<'_>], droppable: bool) -> (Frame, usize) {
    let mut frame = Frame { droppable, ..Frame::default() };
    let mut bytes = 0;
    for protocol in Protocol::ALL {
        if !registry.slot_in_use(protocol.slot()) {
            continue;
        }
        let encoded = super::shape::encode(protocol, method, arguments);
        bytes += encoded.as_ref().map_or(0, Payload::len);
        frame.by_slot[protocol.slot()] = encoded;
    }
    (frame, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_name_targets() {
        assert_eq!(target_of(1, "*"), Target::All { hub: 1 });
        assert_eq!(target_of(1, "user:42"), Target::User { hub: 1, user: "42" });
        assert_eq!(target_of(1, "room-9"), Target::Group { hub: 1, group: "room-9" });
    }
}
