//! The entries of one stream read, handed to the pipeline as one message.
//!
//! With N instances every instance reads every entry and passes over most
//! of them (`skip.rs`). Handed over one by one, each entry cost a message,
//! a boxed [`Ack`], a copy of its id and a settlement note of its own: a
//! fifth of what an instance spent on an entry it passed over
//! (bench/gaps.md, section 4). Here a read is one message, its entries
//! read in place in the reply's bytes ([`EntryBlock`]); the entries passed
//! over are acknowledged together through its [`Settle`], and only an
//! entry the pipeline keeps is copied out and gets an `Ack` (and its
//! fields, for a dead letter).

use std::sync::Arc;
use std::time::Instant;

use super::Ack;
use crate::envelope::{EntryBlock, EntryFields, Schemas};

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
/// as the stream's position) and fields, read in place.
pub(crate) struct Entries {
    /// The stream they were read from.
    pub source: Arc<str>,
    /// Their ids and fields.
    pub block: EntryBlock,
    /// Settles them.
    pub settle: Box<dyn Settle>,
    /// The envelope's schemas, to decode the entries kept.
    pub schemas: Arc<Schemas>,
    /// When ingest received the read, for the queue-wait attribute.
    pub received: Instant,
}

impl Entries {
    /// The entries of `block`, read from `source`.
    pub(crate) fn new(source: Arc<str>, schemas: Arc<Schemas>, settle: Box<dyn Settle>, block: EntryBlock) -> Entries {
        Entries { source, block, settle, schemas, received: Instant::now() }
    }

    /// Adds the next entry, copied in.
    #[cfg(test)]
    pub(crate) fn push(&mut self, id: &str, fields: EntryFields) {
        self.block.push(id, fields.iter().map(|(name, value)| (name.as_bytes(), value)));
    }

    /// How many entries.
    pub(crate) fn len(&self) -> usize {
        self.block.len()
    }
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").field("source", &self.source).field("entries", &self.len()).finish_non_exhaustive()
    }
}
