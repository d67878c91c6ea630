//! Settles entries in batches: dead-letters invalid ones (every original
//! field plus `reason`), then acknowledges with one XACK per stream. The
//! original fields of each entry in flight are kept here, not in the
//! pipeline: the reader hands them over when it reads the entry, and the
//! pipeline's ack names only the stream and the entry id.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::RedisConn;
use crate::pipeline::Outcome;
use crate::telemetry::events::DeadLettered;
use crate::telemetry::Metrics;

/// An entry's fields as Redis returned them, shared with the pipeline
/// (which decodes a skippable entry's payload only when it needs it).
pub(super) use crate::envelope::Fields;

/// What the acker hears of an entry, in order: read, then settled.
pub(super) enum Note {
    /// Read and handed on (or found invalid): its original fields, kept
    /// until it settles in case it becomes a dead letter.
    Read { stream: Arc<str>, id: String, fields: Fields },
    /// Its fate is known.
    Settled { stream: Arc<str>, id: String, outcome: Outcome },
}

/// Most entries settled in one round trip.
const BATCH: usize = 512;

/// How long settled entries wait for others to share their XACK. Events
/// arrive one at a time at a steady rate: acknowledging each at once costs
/// a round trip to Redis and a wake-up of this task per event (measured:
/// about 4 system calls, 0.4 per delivery at ten recipients an event). A
/// few milliseconds later, one XACK covers every entry settled meanwhile.
/// Nothing waits on it: deliveries have gone, and an entry acknowledged a
/// little later is at most delivered again after a crash, which the
/// idempotency window hides.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// Runs until every sender is gone (readers stopped, every ack resolved or
/// dropped), so acknowledgements finish during shutdown. It gets only what
/// it uses: the group, the dead-letter cap and the metrics.
pub(super) async fn run(
    mut conn: RedisConn,
    group: String,
    maxlen: usize,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Note>,
) {
    let mut kept = Kept::default();
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < BATCH && !rx.is_closed() {
            tokio::time::sleep(LINGER).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(note) => batch.push(note),
                    Err(_) => break,
                }
            }
        }
        // One command per key, so the same code works on a Redis Cluster
        // (a stream and its dead-letter stream live in different slots).
        // A dead letter is written before its entry is acknowledged; if the
        // write fails the entry stays pending and is claimed again later.
        let mut acks: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        // Entries settle in the order their fate is known (an entry that is
        // not JSON at intake, a schema failure later in the pipeline): every
        // read first, then the settled ones in stream order, so dead letters
        // keep their entries' order within a batch.
        batch.sort_by(|a, b| note_order(a).cmp(&note_order(b)));
        for note in batch.drain(..) {
            let (stream, id, outcome) = match note {
                Note::Read { stream, id, fields } => {
                    kept.read(stream, id, fields);
                    continue;
                }
                Note::Settled { stream, id, outcome } => (stream, id, outcome),
            };
            let acknowledge = match &outcome {
                Outcome::Unsettled => false,
                Outcome::Invalid(reason) => {
                    let mut cmd = redis::cmd("XADD");
                    cmd.arg(format!("{stream}:dead")).arg("MAXLEN").arg("~").arg(maxlen).arg("*");
                    for (k, v) in kept.fields(&stream, &id) {
                        cmd.arg(k).arg(v.as_slice());
                    }
                    cmd.arg("reason").arg(reason);
                    match cmd.query_async::<String>(&mut conn).await {
                        Ok(_) => {
                            metrics.record(DeadLettered { stream: &stream, entry_id: &id, reason });
                            true
                        }
                        Err(e) => {
                            tracing::warn!(stream = %stream, entry_id = %id, error = %e, "dead-letter write failed; the entry stays pending");
                            false
                        }
                    }
                }
                Outcome::Delivered | Outcome::Dropped(_) => true,
            };
            kept.settle(&stream, &id);
            if acknowledge {
                acks.entry(stream).or_default().push(id);
            }
        }
        for (stream, ids) in &acks {
            let acked: redis::RedisResult<i64> =
                redis::cmd("XACK").arg(&**stream).arg(&group).arg(ids.as_slice()).query_async(&mut conn).await;
            if let Err(e) = acked {
                // Unacknowledged entries stay pending and are claimed again
                // later; the idempotency window hides the repeat.
                tracing::warn!(stream = %stream, error = %e, entries = ids.len(), "XACK failed; the entries stay pending");
            }
        }
    }
    tracing::info!("acknowledgements finished");
}

/// Where a note goes in a batch: reads in arrival order (the sort is
/// stable), then settlements by stream and entry id (`ms-seq`, compared as
/// numbers; an id that is not one sorts last, by text).
fn note_order(note: &Note) -> (bool, &str, (u64, u64), &str) {
    match note {
        Note::Read { .. } => (false, "", (0, 0), ""),
        Note::Settled { stream, id, .. } => {
            let numeric = id.split_once('-').and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)));
            (true, stream, numeric.unwrap_or((u64::MAX, u64::MAX)), id)
        }
    }
}

/// The fields of the entries in flight, by stream and entry id, with how
/// many reads of each are unsettled (a claim may read an entry again before
/// its first read settled; each read settles once, dropped acks included).
#[derive(Default)]
struct Kept(HashMap<Arc<str>, HashMap<String, (Fields, usize)>>);

impl Kept {
    fn read(&mut self, stream: Arc<str>, id: String, fields: Fields) {
        let slot = self.0.entry(stream).or_default().entry(id).or_insert_with(|| (Fields::default(), 0));
        if slot.1 == 0 {
            slot.0 = fields;
        }
        slot.1 += 1;
    }

    fn fields(&self, stream: &str, id: &str) -> &[(String, Vec<u8>)] {
        self.0.get(stream).and_then(|s| s.get(id)).map_or(&[], |(fields, _)| fields.as_slice())
    }

    fn settle(&mut self, stream: &str, id: &str) {
        let Some(entries) = self.0.get_mut(stream) else { return };
        if let Some(slot) = entries.get_mut(id) {
            slot.1 -= 1;
            if slot.1 == 0 {
                entries.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: &str) -> Fields {
        std::sync::Arc::new(vec![("data".to_string(), v.as_bytes().to_vec())])
    }

    #[test]
    fn fields_are_kept_until_every_read_of_the_entry_settles() {
        let mut k = Kept::default();
        let s: Arc<str> = Arc::from("events:chat");
        k.read(s.clone(), "1-0".into(), fields("a"));
        k.read(s.clone(), "1-0".into(), fields("a"));
        k.read(s.clone(), "2-0".into(), fields("b"));
        k.settle(&s, "1-0");
        assert_eq!(k.fields(&s, "1-0"), fields("a").as_slice(), "a second read is still in flight");
        k.settle(&s, "1-0");
        assert!(k.fields(&s, "1-0").is_empty());
        assert_eq!(k.fields(&s, "2-0"), fields("b").as_slice());
        k.settle(&s, "2-0");
        k.settle(&s, "2-0"); // an unknown settle changes nothing
        assert!(k.0[&s].is_empty());
    }
}
