//! A stream entry before it is decoded: its head (`event_id`,
//! `event_type`, `room_id`) is read without touching the payload, so the
//! pipeline can decide whether this instance has any use for the entry
//! (a connection in its room) before paying for the rest. With N
//! instances each reads every entry; this keeps N instances near the cost
//! of one.

use std::borrow::Cow;

use serde::Deserialize;

use super::{checks, EntryFields, Envelope, EnvelopeError, FieldList, FieldsRef, Schemas};

/// The fields of an entry that say where it goes and what it is, borrowed
/// from the entry: reading them allocates nothing, so an entry an instance
/// passes over costs no copies of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// UUID, the idempotency key.
    pub event_id: &'a str,
    /// Picks the route.
    pub event_type: &'a str,
    /// The group, `user:<id>` or `*`.
    pub room_id: &'a str,
}

/// Where a pending entry's head is.
enum HeadText {
    /// The flat encoding: the indexes of its `event_id`, `event_type` and
    /// `room_id` fields (text, checked).
    Fields([usize; 3]),
    /// The `data` encoding: read out of its JSON (which may escape them).
    Data { event_id: String, event_type: String, room_id: String },
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

impl HeadText {
    /// Where the head of an entry in either encoding is, if its envelope
    /// fields pass the envelope's checks (`None` otherwise: such an entry
    /// is decoded whole, and refused with the schema's reason, by every
    /// instance). The last of a repeated name wins, as in the decoding.
    fn read(fields: &impl FieldList) -> Option<HeadText> {
        let (mut id, mut kind, mut time, mut room, mut data) = (None, None, None, None, None);
        for i in 0..fields.count() {
            let slot = match fields.name(i) {
                b"event_id" => &mut id,
                b"event_type" => &mut kind,
                b"timestamp" => &mut time,
                b"room_id" => &mut room,
                b"data" => &mut data,
                _ => continue,
            };
            *slot = Some(i);
        }
        let text = |at: Option<usize>| at.and_then(|i| fields.text(i));
        let (head, found) = match (kind, data) {
            (Some(_), _) => {
                let head = Head { event_id: text(id)?, event_type: text(kind)?, room_id: text(room)? };
                (head, HeadText::Fields([id?, kind?, room?]))
            }
            (None, Some(data)) => {
                let d: DataHead<'_> = serde_json::from_slice(fields.value(data)?).ok()?;
                if !checks::is_timestamp_text(&d.timestamp) {
                    return None;
                }
                let head = HeadText::Data {
                    event_id: d.event_id.into_owned(),
                    event_type: d.event_type.into_owned(),
                    room_id: d.room_id.into_owned(),
                };
                return Self::passes(head.head(fields)).then_some(head);
            }
            (None, None) => return None,
        };
        let valid = checks::is_timestamp_text(text(time)?) && Self::passes(head);
        valid.then_some(found)
    }

    /// Whether a head passes the envelope's checks of its three fields.
    fn passes(head: Head<'_>) -> bool {
        checks::is_uuid(head.event_id)
            && checks::has_chars(head.event_type, 1, 128)
            && checks::has_chars(head.room_id, 1, 512)
    }

    /// The head, from `fields` (the entry it was read from).
    fn head<'a>(&'a self, fields: &'a impl FieldList) -> Head<'a> {
        match self {
            HeadText::Fields(at) => {
                let [id, kind, room] = at.map(|i| fields.text(i));
                Head {
                    event_id: id.unwrap_or_default(),
                    event_type: kind.unwrap_or_default(),
                    room_id: room.unwrap_or_default(),
                }
            }
            HeadText::Data { event_id, event_type, room_id } => Head { event_id, event_type, room_id },
        }
    }
}

/// An entry whose head is known and whose rest is decoded only when the
/// pipeline wants it: read in place in its read ([`FieldsRef`]) to decide
/// that, copied out ([`EntryFields`], the default) to decode and keep it.
pub struct Pending<F = EntryFields> {
    head: HeadText,
    fields: F,
}

impl<F: FieldList> std::fmt::Debug for Pending<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("head", &self.head()).finish_non_exhaustive()
    }
}

impl<F: FieldList> Pending<F> {
    /// The entry as a pending event, or its fields back when its head does
    /// not pass the envelope's checks (decode it whole then).
    pub fn read(fields: F) -> Result<Pending<F>, F> {
        match HeadText::read(&fields) {
            Some(head) => Ok(Pending { head, fields }),
            None => Err(fields),
        }
    }

    /// Its head, borrowed from the entry.
    pub fn head(&self) -> Head<'_> {
        self.head.head(&self.fields)
    }
}

impl Pending<FieldsRef<'_>> {
    /// The entry copied out of its read, to be decoded and kept; the head
    /// found is kept with it (the fields keep their order).
    pub fn into_owned(self) -> Pending {
        Pending { head: self.head, fields: self.fields.to_owned() }
    }
}

impl Pending {
    /// Decodes and checks the whole envelope. A flat entry's head is not
    /// read or checked again; anything the quick way does not take goes
    /// the slow way, which names the problem.
    pub fn decode(&self, schemas: &Schemas) -> Result<Envelope, EnvelopeError> {
        if let HeadText::Fields(_) = self.head {
            if let Some(envelope) = Envelope::from_flat_head(self.head(), &self.fields, schemas)? {
                return Ok(envelope);
            }
        }
        Envelope::from_stream_fields(self.fields.iter(), schemas)
    }

    /// The entry's fields (kept for a dead letter).
    pub fn into_fields(self) -> EntryFields {
        self.fields
    }
}
