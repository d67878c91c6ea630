//! Redis replies taken apart by value: the stream entries of XREADGROUP and
//! XAUTOCLAIM, and the key/value maps of XINFO (maps in RESP3, flat arrays
//! in RESP2). The redis crate's typed stream replies (`StreamReadReply`)
//! clone every field into a map first, which cost about a tenth of the
//! sidecar's instructions per event; here each field's bytes are moved.

use redis::Value;

use super::position::IdText;
use super::StreamId;
use crate::envelope::{EntryBlock, EntryFields};

/// One stream entry: its id and its fields in order.
#[derive(Debug, PartialEq)]
pub(super) struct Entry {
    pub id: StreamId,
    pub fields: EntryFields,
}

/// One read's entries as the pipeline takes them: their ids, parsed (to
/// acknowledge them and move the stream's position), and the entries
/// themselves in one block.
#[derive(Debug, Default)]
pub(super) struct Read {
    pub ids: Vec<StreamId>,
    pub block: EntryBlock,
}

impl Read {
    /// Entries that came one by one (a claim, the `redis` crate's reply),
    /// copied into a block.
    pub(super) fn from_entries(entries: Vec<Entry>) -> Read {
        let mut read = Read { ids: Vec::with_capacity(entries.len()), block: EntryBlock::default() };
        let mut text = IdText::default();
        for Entry { id, fields } in entries {
            read.ids.push(id);
            read.block.push(id.text(&mut text), fields.iter().map(|(name, value)| (name.as_bytes(), value)));
        }
        read
    }

    /// How many entries.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// No entries (the block timed out).
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The last entry's id.
    pub(super) fn last_id(&self) -> Option<StreamId> {
        self.ids.last().copied()
    }

    /// Each entry copied out, its id as parsed and as the block holds it
    /// checked to be the same.
    #[cfg(test)]
    pub(super) fn entries(&self) -> Vec<Entry> {
        let mut text = IdText::default();
        let entries = self.ids.iter().enumerate().map(|(i, &id)| {
            assert_eq!(self.block.id(i), id.text(&mut text), "entry {i}'s id");
            Entry { id, fields: self.block.fields(i).to_owned() }
        });
        entries.collect()
    }
}

/// The entries of an XREADGROUP reply: `[[stream, entries], ...]` in RESP2,
/// `{stream: entries}` in RESP3, nil when the block timed out.
pub(super) fn from_read_reply(reply: Value) -> Vec<Entry> {
    match reply {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(pair) => pair.into_iter().nth(1).map(entries).unwrap_or_default(),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().flat_map(|(_, v)| entries(v)).collect(),
        _ => Vec::new(),
    }
}

/// The entries of an XAUTOCLAIM reply (`[next id, entries, deleted ids]`)
/// and the id to continue from.
pub(super) fn from_autoclaim_reply(reply: Value) -> (String, Vec<Entry>) {
    let Value::Array(parts) = reply else { return ("0-0".to_string(), Vec::new()) };
    let mut parts = parts.into_iter();
    let next = parts.next().and_then(text).unwrap_or_else(|| "0-0".to_string());
    (next, parts.next().map(entries).unwrap_or_default())
}

/// The entries of an XRANGE reply.
pub(super) fn from_range_reply(reply: Value) -> Vec<Entry> {
    entries(reply)
}

/// `[[id, [field, value, ...]], ...]`. An entry deleted while pending comes
/// as `[id, nil]` from older servers: it keeps its id and has no fields
/// (the caller dead-letters it, which also acknowledges it). Redis writes
/// every id as `<ms>-<seq>`; an item that is not one is left out.
fn entries(v: Value) -> Vec<Entry> {
    let Value::Array(items) = v else { return Vec::new() };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else { return None };
            let mut pair = pair.into_iter();
            let id = pair.next().and_then(text)?.parse().ok()?;
            let pairs = pair.next().map(pairs).unwrap_or_default();
            let mut fields = EntryFields::default();
            for (k, v) in pairs {
                fields.push(k.as_bytes(), &bytes(v));
            }
            Some(Entry { id, fields })
        })
        .collect()
}

/// A key/value reply (XINFO, an entry's fields) as pairs: a map in RESP3, a
/// flat `[key, value, ...]` array in RESP2. Keys that are not text are skipped.
pub(super) fn pairs(v: Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(pairs) => pairs.into_iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
        Value::Array(flat) => {
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                if let Some(k) = text(k) {
                    out.push((k, v));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// A bulk or simple string as text.
pub(super) fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        other => format!("{other:?}").into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, kv: &[&str]) -> Value {
        Value::Array(vec![bulk(id), Value::Array(kv.iter().map(|s| bulk(s)).collect())])
    }

    fn expected(id: &str, kv: &[(&str, &str)]) -> Entry {
        Entry {
            id: id.parse().expect("id"),
            fields: EntryFields::from_pairs(kv.iter().map(|(k, v)| (*k, v.as_bytes()))),
        }
    }

    #[test]
    fn reads_resp2_and_resp3_xreadgroup_replies() {
        let entries =
            Value::Array(vec![entry("1-0", &["data", "{}"]), entry("2-0", &["event_type", "x", "room_id", "r"])]);
        let want = vec![expected("1-0", &[("data", "{}")]), expected("2-0", &[("event_type", "x"), ("room_id", "r")])];
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("events:chat"), entries.clone()])]);
        assert_eq!(from_read_reply(resp2), want);
        let resp3 = Value::Map(vec![(bulk("events:chat"), entries)]);
        assert_eq!(from_read_reply(resp3), want);
        assert!(from_read_reply(Value::Nil).is_empty());
    }

    #[test]
    fn reads_an_xautoclaim_reply_with_a_deleted_entry() {
        let reply = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![entry("3-0", &["data", "{}"]), Value::Array(vec![bulk("4-0"), Value::Nil])]),
            Value::Array(vec![]),
        ]);
        let (next, got) = from_autoclaim_reply(reply);
        assert_eq!(next, "5-0");
        assert_eq!(got, vec![expected("3-0", &[("data", "{}")]), expected("4-0", &[])]);
    }
}
