//! The entries of one stream read, handed to the pipeline as one message.
//!
//! With N instances every instance reads every entry and passes over most
//! of them (`skip.rs`). Handed over one by one, each entry cost a message,
//! a boxed [`Ack`], a copy of its id and a settlement note of its own: a
//! fifth of what an instance spent on an entry it passed over
//! (bench/gaps.md, section 4). Here a read is one message; the entries
//! passed over are acknowledged together through its [`Settle`], and only
//! an entry the pipeline keeps gets an `Ack` (and its fields, for a dead
//! letter).

use std::sync::Arc;
use std::time::Instant;

use super::Ack;
use crate::envelope::{EntryFields, Schemas};

/// How the producer of a read settles its entries, by their index in it.
pub(crate) trait Settle: Send {
    /// Entry `i` needs nothing more (passed over, or a duplicate): it is
    /// acknowledged with the others settled so, once the read is done with.
    fn acknowledge(&mut self, i: usize);

    /// An ack for entry `i`, which goes with it through the stages;
    /// `fields` are kept for a dead letter until it resolves.
    fn ack(&mut self, i: usize, fields: EntryFields) -> Ack;
}

/// One read's entries, in stream order, by index: each one's id (text,
/// as the stream's position) and fields.
pub(crate) struct Entries {
    /// The stream they were read from.
    pub source: Arc<str>,
    /// Their ids.
    pub ids: Ids,
    /// Their fields.
    pub fields: Vec<EntryFields>,
    /// Settles them.
    pub settle: Box<dyn Settle>,
    /// The envelope's schemas, to decode the entries kept.
    pub schemas: Arc<Schemas>,
    /// When ingest received the read, for the queue-wait attribute.
    pub received: Instant,
}

/// A read's entry ids, in one string.
#[derive(Debug, Default)]
pub(crate) struct Ids {
    text: String,
    /// Where each id ends in `text`.
    ends: Vec<usize>,
}

impl Ids {
    /// The `i`th id ("" past the end).
    pub(crate) fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends.get(i - 1).copied().unwrap_or(usize::MAX) };
        let end = self.ends.get(i).copied().unwrap_or(0);
        self.text.get(start..end).unwrap_or_default()
    }
}

impl Entries {
    /// An empty read of `source`, for `capacity` entries.
    pub(crate) fn new(source: Arc<str>, schemas: Arc<Schemas>, settle: Box<dyn Settle>, capacity: usize) -> Entries {
        Entries {
            source,
            ids: Ids { text: String::with_capacity(capacity * 16), ends: Vec::with_capacity(capacity) },
            fields: Vec::with_capacity(capacity),
            settle,
            schemas,
            received: Instant::now(),
        }
    }

    /// Adds the next entry.
    pub(crate) fn push(&mut self, id: &str, fields: EntryFields) {
        self.ids.text.push_str(id);
        self.ids.ends.push(self.ids.text.len());
        self.fields.push(fields);
    }

    /// How many entries.
    pub(crate) fn len(&self) -> usize {
        self.fields.len()
    }
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").field("source", &self.source).field("ids", &self.ids).finish_non_exhaustive()
    }
}
