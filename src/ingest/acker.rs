//! Settles entries in batches: dead-letters invalid ones (every original
//! field plus `reason`), then acknowledges with one XACK per stream. Each
//! settlement of an entry the pipeline kept carries its original fields, so
//! nothing is kept here between the read and the settlement; the entries
//! of a read it passed over come as one note of ids.

use std::collections::HashMap;
use std::sync::Arc;

use redis::cluster_routing::Slot;
use tokio::sync::mpsc;

use super::{RedisConn, StreamId};
use crate::envelope::EntryFields;
use crate::pipeline::Outcome;
use crate::telemetry::events::DeadLettered;
use crate::telemetry::Metrics;

/// Entries whose fate is known. Each read of an entry settles once (a
/// claim may read it again before the first read settled).
pub(super) enum Note {
    /// One entry the pipeline kept.
    One(Settled),
    /// Entries of one read to acknowledge, nothing else (passed over).
    Acknowledged { stream: Arc<str>, ids: Vec<StreamId> },
}

/// One entry's outcome, with its original fields in case it becomes a dead
/// letter.
pub(super) struct Settled {
    pub stream: Arc<str>,
    pub id: StreamId,
    pub fields: EntryFields,
    pub outcome: Outcome,
}

/// Most entries settled in one round trip.
const BATCH: usize = 512;

/// How long settled entries wait for others to share their XACK. Events
/// arrive one at a time at a steady rate: acknowledging each at once costs
/// a round trip to Redis and a wake-up of this task per event (measured:
/// about 4 system calls, 0.4 per delivery at ten recipients an event). A
/// little later, one XACK covers every entry settled meanwhile. Nothing
/// waits on it: deliveries have gone, and an entry acknowledged a little
/// later is at most delivered again after a crash, which the idempotency
/// window hides. 250 ms: a round per 250 events at 1,000 events/s. Each
/// round is a timer (two wake-ups: tokio's wheel moves a timer this long
/// down a level first), a command built through the `redis` crate, a write
/// and a reply that wakes the lane once more; at 10 ms they were a fifth of
/// the CPU an instance spends on an event it skips, and at 50 ms still a
/// tenth (two instances side by side, one with rounds a second apart:
/// 0.88-0.91 of the other's CPU). Far inside the 30 s after which a
/// pending entry is claimed; `sidecar_stream_pending` reads up to a
/// quarter second of events higher.
const LINGER: std::time::Duration = std::time::Duration::from_millis(250);

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
    let script = redis::Script::new(DEAD_LETTER_SCRIPT);
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
        let mut acks: HashMap<Arc<str>, Vec<StreamId>, ahash::RandomState> = HashMap::default();
        // Kept entries settle in the order their fate is known (one refused
        // at once, another held for a window first): put in stream order,
        // so dead letters keep their entries' order within a batch. Almost
        // always in that order already (one reader per stream, one
        // pipeline), which the sort finds in one pass.
        let mut ones = Vec::new();
        for note in batch.drain(..) {
            match note {
                Note::One(settled) => ones.push(settled),
                Note::Acknowledged { stream, ids } => acks.entry(stream).or_default().extend(ids),
            }
        }
        ones.sort_by(|a, b| (&*a.stream, a.id).cmp(&(&*b.stream, b.id)));
        for Settled { stream, id, fields, outcome } in ones {
            let acknowledge = match &outcome {
                Outcome::Unsettled => false,
                Outcome::Invalid(reason) => {
                    match dead_letter(&script, &mut conn, &stream, id, &fields, reason, maxlen).await {
                        Ok(written) => {
                            if written {
                                metrics.record(DeadLettered { stream: &stream, entry_id: &id.to_string(), reason });
                            }
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

/// How long an entry's dead letter is remembered as written: every
/// instance reads every entry, and one that reads it this much later than
/// the first would copy it again.
const DEAD_LETTER_SEEN_MS: u64 = 3_600_000;

/// Writes a dead letter once however many instances try: `SET NX` of a
/// key beside the dead-letter stream (see [`seen_key`]), then the `XADD`; a failed XADD
/// forgets the key so a retry can write it. 1 when this call wrote it.
const DEAD_LETTER_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local add = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*'}
for i = 3, #ARGV do add[#add + 1] = ARGV[i] end
local added = redis.pcall(unpack(add))
if type(added) == 'table' and added.err then
  redis.call('DEL', KEYS[2])
  return added
end
return 1
";

/// Copies an invalid entry (every field, plus `reason`) to `<stream>:dead`,
/// once: every instance that finds the entry invalid tries (an invalid
/// head, a payload it decoded for its clients, or one the checking
/// instance decoded though nobody watches its room), the first writes it.
/// True when this call wrote it.
async fn dead_letter(
    script: &redis::Script,
    conn: &mut RedisConn,
    stream: &str,
    id: StreamId,
    fields: &EntryFields,
    reason: &str,
    maxlen: usize,
) -> redis::RedisResult<bool> {
    let dead = format!("{stream}:dead");
    let mut call = script.key(&dead);
    call.key(seen_key(&dead, id)).arg(DEAD_LETTER_SEEN_MS).arg(maxlen);
    for (k, v) in fields.iter() {
        call.arg(k).arg(v);
    }
    call.arg("reason").arg(reason);
    let written: i64 = call.invoke_async(conn).await?;
    Ok(written == 1)
}

/// The key that marks entry `id`'s dead letter as written: in the cluster
/// slot of the dead-letter stream `dead`, since one script touches both
/// (a Redis Cluster refuses keys of two slots: CROSSSLOT, and the entry
/// would stay pending for ever).
/// - `{<dead>}:seen:<id>` for an ordinary name (no `}`): the whole name
///   is the hash tag, as the whole name is what Redis hashes;
/// - `<dead>:seen:<id>` when the name carries a hash tag of its own
///   (`{tenant}:events:dead`): the suffix keeps that tag;
/// - `{<n>}:seen:<dead>:<id>` otherwise (a `}` but no tag, `a}b:dead`):
///   `<n>` is the smallest number hashing to the name's slot.
fn seen_key(dead: &str, id: StreamId) -> String {
    if hash_tag(dead).is_some() {
        return format!("{dead}:seen:{id}");
    }
    if !dead.contains('}') {
        return format!("{{{dead}}}:seen:{id}");
    }
    let slot = Slot::for_key(dead);
    let n = (0u32..).find(|n| Slot::for_key(n.to_string()) == slot).expect("every slot has a number hashing to it");
    format!("{{{n}}}:seen:{dead}:{id}")
}

/// What Redis Cluster hashes of `key` when it is not the whole key: the
/// text between its first `{` and the next `}`, if not empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    Some(&key[open + 1..open + 1 + close]).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seen_key_shares_its_dead_letter_streams_slot_whatever_the_name() {
        let id = StreamId { ms: 1_700_000_000_000, seq: 3 };
        assert_eq!(seen_key("events:chat:dead", id), "{events:chat:dead}:seen:1700000000000-3");
        for dead in [
            "events:chat:dead",
            "{tenant}:events:dead",
            "events:{chat}:dead",
            "a}b:dead",
            "{}x}:dead",
            "x{}y:dead",
            "{:dead",
            "x{y:dead",
            "}{a}:dead",
        ] {
            let key = seen_key(dead, id);
            assert_eq!(Slot::for_key(&key), Slot::for_key(dead), "{dead} -> {key}");
            assert!(key.contains(dead), "one key per stream: {dead} -> {key}");
        }
    }
}
