//! A stream entry before it is decoded: its head (`event_id`,
//! `event_type`, `room_id`) is read without touching the payload, so the
//! pipeline can decide whether this instance has any use for the entry
//! (a connection in its room) before paying for the rest. With N
//! instances each reads every entry; this keeps N instances near the cost
//! of one.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

use super::{checks, EntryFields, Envelope, EnvelopeError, Schemas};

/// A stream entry's fields, in order, shared between the pending event and
/// whoever dead-letters it if its decoding fails.
pub type Fields = Arc<EntryFields>;

/// The fields of an entry that say where it goes and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// UUID, the idempotency key.
    pub event_id: String,
    /// Picks the route.
    pub event_type: String,
    /// The group, `user:<id>` or `*`.
    pub room_id: String,
}

/// The `data` encoding's envelope fields, borrowed; the payload is skipped.
#[derive(Deserialize)]
struct DataHead<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    room_id: Cow<'a, str>,
}

impl Head {
    /// The head of an entry in either encoding, and whether the entry is
    /// flat (its fields, not `data`), if its envelope fields pass the
    /// envelope's checks (`None` otherwise: such an entry is decoded whole,
    /// and refused with the schema's reason, by every instance).
    fn read<'a, I>(fields: I) -> Option<(Head, bool)>
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        let (mut id, mut kind, mut time, mut room, mut data) = (None, None, None, None, None);
        for (name, bytes) in fields {
            let slot = match name {
                "event_id" => &mut id,
                "event_type" => &mut kind,
                "timestamp" => &mut time,
                "room_id" => &mut room,
                "data" => &mut data,
                _ => continue,
            };
            *slot = Some(bytes);
        }
        let text = |b: Option<&'a [u8]>| b.and_then(|b| std::str::from_utf8(b).ok()).map(Cow::Borrowed);
        let head = match (kind, data) {
            (Some(_), _) => {
                DataHead { event_id: text(id)?, event_type: text(kind)?, timestamp: text(time)?, room_id: text(room)? }
            }
            (None, Some(data)) => serde_json::from_slice(data).ok()?,
            (None, None) => return None,
        };
        let valid = checks::is_uuid(&head.event_id)
            && checks::has_chars(&head.event_type, 1, 128)
            && checks::is_timestamp_text(&head.timestamp)
            && checks::has_chars(&head.room_id, 1, 512);
        let flat = kind.is_some();
        valid.then(|| {
            let head = Head {
                event_id: head.event_id.into_owned(),
                event_type: head.event_type.into_owned(),
                room_id: head.room_id.into_owned(),
            };
            (head, flat)
        })
    }
}

/// An entry whose head is known and whose rest is decoded only when the
/// pipeline wants it.
pub struct Pending {
    /// Its head.
    pub head: Head,
    fields: Fields,
    schemas: Arc<Schemas>,
    /// The flat encoding: decoding reuses the head's checked strings.
    flat: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("head", &self.head).finish_non_exhaustive()
    }
}

impl Pending {
    /// The entry as a pending event, or `None` when its head does not pass
    /// the envelope's checks (decode it whole then).
    pub fn new(fields: &Fields, schemas: &Arc<Schemas>) -> Option<Pending> {
        let (head, flat) = Head::read(fields.iter())?;
        Some(Pending { head, fields: fields.clone(), schemas: schemas.clone(), flat })
    }

    /// Decodes and checks the whole envelope. A flat entry's head moves
    /// into it (its strings were read and checked once, here); anything
    /// the quick way does not take goes the slow way, which names the
    /// problem.
    pub fn decode(self) -> Result<Envelope, EnvelopeError> {
        if self.flat {
            if let Some(envelope) = Envelope::from_flat_head(self.head, &self.fields, &self.schemas)? {
                return Ok(envelope);
            }
        }
        Envelope::from_stream_fields(self.fields.iter(), &self.schemas)
    }
}
