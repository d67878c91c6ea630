//! How the rooms' history sits in Redis (CONTRACT section 15).
//!
//! - One sorted set per room of a history hub,
//!   `<prefix>:history:{<hub>:<room>}` (one cluster slot per room): each
//!   member is the event's stream entry id, zero-padded so that members of
//!   the same millisecond sort as their ids do, a space, and the envelope as
//!   JSON; the score is the id's millisecond. Every instance adds each event
//!   it reads (ZADD of the same member is a no-op), so the set survives any
//!   one instance; entries older than the hub's history window are trimmed
//!   on each write, and the key expires when a room goes quiet. A replay is
//!   one ZRANGEBYSCORE over the missed stretch: its cost follows the room's
//!   missed events, not the stream's length.
//! - One hash per stream, `<prefix>:history-coverage:<stream>`: for each
//!   run of an instance (`<instance>@<group start>`), the stretch of the
//!   stream (`<from> <to>`, entry ids) whose history events that run has
//!   written. A join proves that nothing between its client's position and
//!   its own cut is missing from the history with these stretches.

use crate::ingest::StreamId;

/// Digits of each padded half of an id: u64 has at most 20.
const WIDTH: usize = 20;

/// The sorted set of one room.
pub(super) fn room_key(prefix: &str, hub: &str, room: &str) -> String {
    format!("{prefix}:history:{{{hub}:{room}}}")
}

/// The coverage hash of one stream.
pub(super) fn coverage_key(prefix: &str, stream: &str) -> String {
    format!("{prefix}:history-coverage:{stream}")
}

/// One event as a member of its room's set.
pub(super) fn member(id: StreamId, envelope_json: &str) -> String {
    format!("{:0w$}-{:0w$} {envelope_json}", id.ms, id.seq, w = WIDTH)
}

/// A member back into its id and envelope bytes; `None` if it is not one.
pub(super) fn parse_member(member: &[u8]) -> Option<(StreamId, &[u8])> {
    let head = member.get(..2 * WIDTH + 2)?;
    if head[WIDTH] != b'-' || head[2 * WIDTH + 1] != b' ' {
        return None;
    }
    let number = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    let id = StreamId { ms: number(&head[..WIDTH])?, seq: number(&head[WIDTH + 1..2 * WIDTH + 1])? };
    Some((id, &member[2 * WIDTH + 2..]))
}

/// A coverage field's value: `<from> <to>`.
pub(super) fn stretch_value(from: StreamId, to: StreamId) -> String {
    format!("{from} {to}")
}

/// A coverage value back into its ends.
pub(super) fn parse_stretch(value: &str) -> Option<(StreamId, StreamId)> {
    let (from, to) = value.split_once(' ')?;
    Some((from.parse().ok()?, to.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sort_as_their_ids_and_read_back() {
        let a = member(StreamId { ms: 1_700_000_000_000, seq: 9 }, "{}");
        let b = member(StreamId { ms: 1_700_000_000_000, seq: 10 }, "{}");
        assert!(a < b, "same millisecond: the sequence orders them");
        let (id, json) = parse_member(b.as_bytes()).expect("member");
        assert_eq!((id, json), (StreamId { ms: 1_700_000_000_000, seq: 10 }, &b"{}"[..]));
        assert!(parse_member(b"1-2 {}").is_none());
        assert_eq!(
            parse_stretch(&stretch_value(StreamId { ms: 1, seq: 2 }, StreamId { ms: 3, seq: 0 })),
            Some((StreamId { ms: 1, seq: 2 }, StreamId { ms: 3, seq: 0 }))
        );
        assert_eq!(room_key("p", "discussion", "d1"), "p:history:{discussion:d1}");
    }
}
