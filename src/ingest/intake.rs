//! What the stream reader and the claimer share, and the one step they
//! both take: hand a read's entries to the pipeline, which passes over,
//! decodes or refuses each, and settle them (XACK, or a dead letter of an
//! entry's raw fields) through the acker.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::acker::{Note, Settled};
use super::hole::OnHole;
use super::replies::Read;
use super::StreamId;
use crate::config::RedisConfig;
use crate::envelope::{EntryFields, Schemas};
use crate::pipeline::{Ack, Entries, Input, InputSender, Settle};
use crate::telemetry::Metrics;

/// Everything the reader tasks share.
pub(super) struct Shared {
    pub config: RedisConfig,
    pub group: String,
    pub consumer: String,
    pub schemas: Arc<Schemas>,
    pub input: InputSender,
    pub metrics: Arc<Metrics>,
    pub settled: mpsc::UnboundedSender<Note>,
    pub redis_up: Arc<AtomicBool>,
    pub on_hole: OnHole,
    /// Set when this instance is the one that checks the entries every
    /// instance passes over (`claim.rs` elects it).
    pub checks_all: crate::pipeline::ChecksAll,
}

/// Hands one read's entries to the pipeline, in order, waiting for room in
/// its queue (which pauses this reader; the stream keeps the events).
/// False when the pipeline is gone (shutting down).
pub(super) async fn hand_over(shared: &Shared, stream: &Arc<str>, read: Read) -> bool {
    if read.is_empty() {
        return true;
    }
    let Read { ids, block } = read;
    let settle = ReadSettle { stream: stream.clone(), ids, acknowledged: Vec::new(), settled: shared.settled.clone() };
    let entries = Entries::new(stream.clone(), shared.schemas.clone(), Box::new(settle), block);
    let started = entries.received;
    match shared.input.send(Input::Entries(entries)).await {
        Ok(waited) => {
            if waited {
                shared.metrics.ingest_wait_seconds.observe(started.elapsed().as_secs_f64());
            }
            true
        }
        Err(_) => false,
    }
}

/// Settles the entries of one read: those the pipeline passes over in one
/// note once it is done with the read, the others through their own acks.
/// An entry the pipeline never reached (it stopped mid-read) is settled by
/// nobody and stays pending for a later claim.
struct ReadSettle {
    stream: Arc<str>,
    /// The read's entry ids, by index.
    ids: Vec<StreamId>,
    /// Those passed over so far.
    acknowledged: Vec<StreamId>,
    settled: mpsc::UnboundedSender<Note>,
}

impl Settle for ReadSettle {
    fn acknowledge(&mut self, i: usize) {
        if let Some(&id) = self.ids.get(i) {
            self.acknowledged.push(id);
        }
    }

    fn ack(&mut self, i: usize, fields: EntryFields) -> Ack {
        let Some(&id) = self.ids.get(i) else { return Ack::none() };
        let (settled, stream) = (self.settled.clone(), self.stream.clone());
        // The ack keeps the fields until the entry settles: a dead letter
        // carries every one of them.
        Ack::new(move |outcome| {
            let _ = settled.send(Note::One(Settled { stream, id, fields, outcome }));
        })
    }
}

impl Drop for ReadSettle {
    fn drop(&mut self) {
        if !self.acknowledged.is_empty() {
            let ids = std::mem::take(&mut self.acknowledged);
            let _ = self.settled.send(Note::Acknowledged { stream: self.stream.clone(), ids });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Outcome;

    fn id(seq: u64) -> StreamId {
        StreamId { ms: 7, seq }
    }

    #[test]
    fn a_read_passed_over_is_acknowledged_in_one_note_and_a_kept_entry_on_its_own() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut settle = ReadSettle {
            stream: Arc::from("s"),
            ids: vec![id(0), id(1), id(2)],
            acknowledged: Vec::new(),
            settled: tx,
        };
        settle.acknowledge(0);
        let kept = settle.ack(1, EntryFields::from_pairs([("a", &b"1"[..])]));
        settle.acknowledge(2);
        settle.acknowledge(9); // no such entry: nothing to acknowledge
        assert!(rx.try_recv().is_err(), "nothing is sent before the read is done with");
        drop(settle);
        match rx.try_recv() {
            Ok(Note::Acknowledged { stream, ids }) => assert_eq!((&*stream, ids), ("s", vec![id(0), id(2)])),
            _ => panic!("one note for the entries passed over"),
        }
        assert!(rx.try_recv().is_err(), "the kept entry waits for its outcome");
        kept.resolve(Outcome::Invalid("bad".into()));
        match rx.try_recv() {
            Ok(Note::One(Settled { id: kept_id, fields, outcome, .. })) => {
                assert_eq!((kept_id, fields.len(), outcome), (id(1), 1, Outcome::Invalid("bad".into())))
            }
            _ => panic!("the kept entry's own note"),
        }
    }
}
