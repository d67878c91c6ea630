//! A read's entries in one buffer: the bytes of Redis's reply, and where
//! each entry's id, field names and values are in them.
//!
//! With N instances every instance reads every entry and passes over most
//! of them; as an [`EntryFields`] each one was copied field by field into
//! buffers of its own (three allocations), its payload checked for UTF-8,
//! its id formatted again as text, and all of it freed, before anything was
//! decided: a fifth of the instructions an instance spent on an entry it
//! passed over (bench/delivery.md, "Stop 35"). Held here, an entry is read in place
//! ([`FieldsRef`]): its head is found and checked, and only an entry the
//! pipeline keeps is copied out into an [`EntryFields`] of its own.

use std::ops::Range;

use super::fields::{FieldList, Values};
use super::EntryFields;

/// Where one entry is: its id's bytes and its fields' range in the spans.
#[derive(Debug, Clone, Copy)]
struct EntrySpan {
    id: (usize, usize),
    fields: (usize, usize),
}

/// Where the entries of one reply are in its bytes, as a parser finds
/// them: each field's name and value, then the entry they belong to.
#[derive(Debug, Default)]
pub struct Spans {
    /// Per field: name start, name end, value start, value end.
    fields: Vec<[usize; 4]>,
    entries: Vec<EntrySpan>,
    /// Where the fields of the entry being read start in `fields`.
    open: usize,
}

/// Fields an entry of the flat encoding has (five, and room for metadata).
const FIELDS_PER_ENTRY: usize = 6;

impl Spans {
    /// Spans for about `entries` entries.
    pub fn with_capacity(entries: usize) -> Spans {
        Spans { fields: Vec::with_capacity(entries * FIELDS_PER_ENTRY), entries: Vec::with_capacity(entries), open: 0 }
    }

    /// Room for `entries` more entries.
    pub fn reserve(&mut self, entries: usize) {
        self.fields.reserve(entries * FIELDS_PER_ENTRY);
        self.entries.reserve(entries);
    }

    /// A field of the entry being read.
    pub fn field(&mut self, name: Range<usize>, value: Range<usize>) {
        self.fields.push([name.start, name.end, value.start, value.end]);
    }

    /// Ends the entry being read (the fields added since the last one),
    /// whose id is at `id`.
    pub fn entry(&mut self, id: Range<usize>) {
        self.entries.push(EntrySpan { id: (id.start, id.end), fields: (self.open, self.fields.len()) });
        self.open = self.fields.len();
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One read's entries, in order, over the bytes they were read from.
#[derive(Debug, Default)]
pub struct EntryBlock {
    /// Checked for UTF-8 once, whole: the head's fields are then read as
    /// text without a check each (one pass over a read's bytes cost less
    /// than eight checks of short fields an entry).
    bytes: Values,
    spans: Spans,
}

impl EntryBlock {
    /// The entries `spans` found in `bytes`. A span past the bytes reads as
    /// empty.
    pub fn new(bytes: Vec<u8>, spans: Spans) -> EntryBlock {
        EntryBlock { bytes: Values::new(bytes), spans }
    }

    /// Adds an entry by copying it in (a read that did not come as one
    /// reply's bytes: a claim, a test).
    pub fn push<'a>(&mut self, id: &str, fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
        let mut put = |bytes: &[u8]| {
            let start = self.bytes.len();
            self.bytes.push(bytes);
            start..self.bytes.len()
        };
        let id = put(id.as_bytes());
        for (name, value) in fields {
            let (name, value) = (put(name), put(value));
            self.spans.field(name, value);
        }
        self.spans.entry(id);
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `i`th entry's id ("" past the end; Redis writes ids as text).
    pub fn id(&self, i: usize) -> &str {
        let Some(entry) = self.spans.entries.get(i) else { return "" };
        self.bytes.text(entry.id.0..entry.id.1).unwrap_or_default()
    }

    /// The `i`th entry's fields, in place (none past the end).
    pub fn fields(&self, i: usize) -> FieldsRef<'_> {
        let spans = match self.spans.entries.get(i) {
            Some(entry) => self.spans.fields.get(entry.fields.0..entry.fields.1).unwrap_or_default(),
            None => &[],
        };
        FieldsRef { bytes: &self.bytes, spans }
    }
}

/// One entry's fields, read in place in their [`EntryBlock`].
#[derive(Debug, Clone, Copy)]
pub struct FieldsRef<'a> {
    bytes: &'a Values,
    spans: &'a [[usize; 4]],
}

impl<'a> FieldsRef<'a> {
    /// The `i`th field, as (name, value) bytes.
    pub fn get(&self, i: usize) -> Option<(&'a [u8], &'a [u8])> {
        let [ns, ne, vs, ve] = *self.spans.get(i)?;
        let bytes = self.bytes.bytes();
        Some((bytes.get(ns..ne)?, bytes.get(vs..ve)?))
    }

    /// The fields in order, as (name, value) bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        (0..self.spans.len()).filter_map(|i| self.get(i))
    }

    /// The fields copied out, for an entry the pipeline keeps: as text not
    /// checked again when the read was text (almost always).
    pub fn to_owned(&self) -> EntryFields {
        let text = |&[ns, ne, vs, ve]: &[usize; 4]| Some((self.bytes.text(ns..ne)?, self.bytes.text(vs..ve)?));
        match self.spans.iter().map(text).collect::<Option<Vec<_>>>() {
            Some(parts) => EntryFields::from_text_parts(&parts),
            None => EntryFields::from_parts(&self.iter().collect::<Vec<_>>()),
        }
    }
}

impl FieldList for FieldsRef<'_> {
    fn count(&self) -> usize {
        self.spans.len()
    }

    fn name(&self, i: usize) -> &[u8] {
        self.get(i).map(|(name, _)| name).unwrap_or_default()
    }

    fn value(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(|(_, value)| value)
    }

    fn text(&self, i: usize) -> Option<&str> {
        let [_, _, start, end] = *self.spans.get(i)?;
        self.bytes.text(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_in_place_are_the_fields_they_were_read_from() {
        // As a parser sees a reply: ids and fields at their places in it.
        let reply = b"1-0 event_type chat room_id r1 2-0 data {} 3-0".to_vec();
        let at = |s: &str| {
            let start = reply.windows(s.len()).position(|w| w == s.as_bytes()).expect("in the reply");
            start..start + s.len()
        };
        let mut spans = Spans::with_capacity(3);
        spans.field(at("event_type"), at("chat"));
        spans.field(at("room_id"), at("r1"));
        spans.entry(at("1-0"));
        spans.field(at("data"), at("{}"));
        spans.entry(at("2-0"));
        spans.entry(at("3-0")); // deleted while pending: no fields
        let mut block = EntryBlock::new(reply.clone(), spans);
        block.push("4-0", [(&b"payload"[..], &b"\xff"[..])]);
        assert_eq!((block.len(), block.id(0), block.id(1), block.id(3), block.id(4)), (4, "1-0", "2-0", "4-0", ""));
        let first = block.fields(0);
        assert_eq!(first.iter().collect::<Vec<_>>(), [(&b"event_type"[..], &b"chat"[..]), (b"room_id", b"r1")]);
        assert_eq!(
            (first.count(), first.name(1), first.text(1), first.text(2)),
            (2, &b"room_id"[..], Some("r1"), None)
        );
        assert_eq!(first.to_owned(), EntryFields::from_pairs([("event_type", &b"chat"[..]), ("room_id", b"r1")]));
        assert_eq!((block.fields(2).count(), block.fields(9).count()), (0, 0));
        let copied = block.fields(3);
        assert_eq!((copied.value(0), copied.text(0)), (Some(&b"\xff"[..]), None), "bytes that are not text stay bytes");
        assert_eq!(copied.to_owned(), EntryFields::from_pairs([("payload", &b"\xff"[..])]));
        assert_eq!(
            block.fields(1).to_owned(),
            EntryFields::from_pairs([("data", &b"{}"[..])]),
            "a read no longer text"
        );
    }
}
