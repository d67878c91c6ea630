//! Settles entries in batches: dead-letters invalid ones (every original
//! field plus `reason`), then acknowledges with one XACK per stream.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::RedisConn;
use crate::pipeline::Outcome;
use crate::telemetry::events::DeadLettered;
use crate::telemetry::Metrics;

/// One entry whose fate is known.
pub(super) struct Settled {
    pub stream: Arc<str>,
    pub id: String,
    pub outcome: Outcome,
    /// The original fields, kept only for entries to dead-letter.
    pub fields: Vec<(String, Vec<u8>)>,
}

/// Most entries settled in one round trip.
const BATCH: usize = 512;

/// Runs until every sender is gone (readers stopped, every ack resolved or
/// dropped), so acknowledgements finish during shutdown. It gets only what
/// it uses: the group, the dead-letter cap and the metrics.
pub(super) async fn run(
    mut conn: RedisConn,
    group: String,
    maxlen: usize,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Settled>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // One command per key, so the same code works on a Redis Cluster
        // (a stream and its dead-letter stream live in different slots).
        // A dead letter is written before its entry is acknowledged; if the
        // write fails the entry stays pending and is claimed again later.
        let mut acks: HashMap<&str, Vec<&str>> = HashMap::new();
        for s in &batch {
            if let Outcome::Invalid(reason) = &s.outcome {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(format!("{}:dead", s.stream)).arg("MAXLEN").arg("~").arg(maxlen).arg("*");
                for (k, v) in &s.fields {
                    cmd.arg(k).arg(v.as_slice());
                }
                cmd.arg("reason").arg(reason);
                if let Err(e) = cmd.query_async::<String>(&mut conn).await {
                    tracing::warn!(stream = %s.stream, entry_id = %s.id, error = %e, "dead-letter write failed; the entry stays pending");
                    continue;
                }
                metrics.record(DeadLettered { stream: &s.stream, entry_id: &s.id, reason });
            }
            acks.entry(&s.stream).or_default().push(&s.id);
        }
        for (stream, ids) in &acks {
            let acked: redis::RedisResult<i64> =
                redis::cmd("XACK").arg(*stream).arg(&group).arg(ids.as_slice()).query_async(&mut conn).await;
            if let Err(e) = acked {
                // Unacknowledged entries stay pending and are claimed again
                // later; the idempotency window hides the repeat.
                tracing::warn!(stream = %stream, error = %e, entries = ids.len(), "XACK failed; the entries stay pending");
            }
        }
        batch.clear();
    }
    tracing::info!("acknowledgements finished");
}
