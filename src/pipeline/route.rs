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
/// events a stateful session taken over from another instance missed.
/// `None` when the payload lacks a field the route's arguments name, and
/// for a roster route (a roster is a live state, not an event to replay).
/// A batch route's event is a batch of one, so the method keeps its signature.
pub(crate) fn encode_one(route: &EventRoute, envelope: &Envelope, protocol: Protocol) -> Option<Payload> {
    let arguments = match route.delivery {
        Delivery::Roster => return None,
        Delivery::Batch => super::shape::shape_batch(&route.arguments, std::slice::from_ref(envelope)).ok()?,
        Delivery::Immediate | Delivery::Coalesce => super::shape::shape(&route.arguments, envelope).ok()?,
    };
    let encoded = protocol.encode_invocation(&route.method, &arguments);
    if protocol.is_binary() {
        Some(Payload::Binary(encoded.into()))
    } else {
        Payload::text_from_vec(encoded)
    }
}

/// Encodes `method(arguments...)` for every protocol some connection speaks.
pub(super) fn encode(registry: &Registry, method: &str, arguments: &[Argument<'_>], droppable: bool) -> (Frame, usize) {
    let mut frame = Frame { droppable, ..Frame::default() };
    let mut bytes = 0;
    for protocol in Protocol::ALL {
        if !registry.slot_in_use(protocol.slot()) {
            continue;
        }
        let encoded = protocol.encode_invocation(method, arguments);
        bytes += encoded.len();
        frame.by_slot[protocol.slot()] =
            if protocol.is_binary() { Some(Payload::Binary(encoded.into())) } else { Payload::text_from_vec(encoded) };
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
