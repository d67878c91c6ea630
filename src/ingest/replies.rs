//! Redis replies taken apart by value: the stream entries of XREADGROUP and
//! XAUTOCLAIM, and the key/value maps of XINFO (maps in RESP3, flat arrays
//! in RESP2). The redis crate's typed stream replies (`StreamReadReply`)
//! clone every field into a map first, which cost about a tenth of the
//! sidecar's instructions per event; here each entry's fields are copied
//! once, into the read's block. (The reader's own connection parses its
//! replies from the socket's bytes instead, `resp.rs`; this is the path of
//! TLS, Unix sockets, clusters, claims and ranges.)

use redis::Value;

#[cfg(test)]
use super::position::IdText;
use super::StreamId;
use crate::envelope::EntryBlock;
#[cfg(test)]
use crate::envelope::EntryFields;

/// One stream entry, copied out of its read (tests compare these).
#[cfg(test)]
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
pub(super) fn from_read_reply(reply: Value) -> Read {
    let mut read = Read::default();
    match reply {
        Value::Array(streams) => {
            for stream in streams {
                if let Value::Array(pair) = stream {
                    if let Some(entries) = pair.into_iter().nth(1) {
                        add_entries(entries, &mut read);
                    }
                }
            }
        }
        Value::Map(streams) => streams.into_iter().for_each(|(_, entries)| add_entries(entries, &mut read)),
        _ => {}
    }
    read
}

/// The entries of an XAUTOCLAIM reply (`[next id, entries, deleted ids]`)
/// and the id to continue from.
pub(super) fn from_autoclaim_reply(reply: Value) -> (String, Read) {
    let mut read = Read::default();
    let Value::Array(parts) = reply else { return ("0-0".to_string(), read) };
    let mut parts = parts.into_iter();
    let next = parts.next().and_then(text).unwrap_or_else(|| "0-0".to_string());
    if let Some(entries) = parts.next() {
        add_entries(entries, &mut read);
    }
    (next, read)
}

/// The entries of an XRANGE reply.
pub(super) fn from_range_reply(reply: Value) -> Read {
    let mut read = Read::default();
    add_entries(reply, &mut read);
    read
}

/// Adds `[[id, [field, value, ...]], ...]` to `read`. An entry deleted
/// while pending comes as `[id, nil]` from older servers: it keeps its id
/// and has no fields (the caller dead-letters it, which also acknowledges
/// it). Redis writes every id as `<ms>-<seq>`; an item that is not one is
/// left out.
fn add_entries(v: Value, read: &mut Read) {
    let Value::Array(items) = v else { return };
    for item in items {
        let Value::Array(pair) = item else { continue };
        let mut pair = pair.into_iter();
        let Some(id_text) = pair.next().and_then(text) else { continue };
        let Ok(id) = id_text.parse() else { continue };
        let fields: Vec<(String, Vec<u8>)> =
            pair.next().map(pairs).unwrap_or_default().into_iter().map(|(name, value)| (name, bytes(value))).collect();
        read.ids.push(id);
        read.block.push(&id_text, fields.iter().map(|(name, value)| (name.as_bytes(), value.as_slice())));
    }
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
        assert_eq!(from_read_reply(resp2).entries(), want);
        let resp3 = Value::Map(vec![(bulk("events:chat"), entries)]);
        assert_eq!(from_read_reply(resp3).entries(), want);
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
        assert_eq!(got.entries(), vec![expected("3-0", &[("data", "{}")]), expected("4-0", &[])]);
    }
}
