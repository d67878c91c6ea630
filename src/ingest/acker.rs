//! Settles entries in batches: dead-letters invalid ones (every original
//! field plus `reason`), then acknowledges with one XACK per stream.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::redis_streams::Shared;
use super::RedisConn;
use crate::pipeline::Outcome;

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
/// dropped), so acknowledgements finish during shutdown.
pub(super) async fn run(mut conn: RedisConn, shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Settled>) {
    let mut batch = Vec::with_capacity(BATCH);
    // The channel's own senders include `shared.settled`; drop our Arc's
    // claim on it by only holding what we need.
    let (group, maxlen, metrics) = (shared.group.clone(), shared.config.dead_letter_maxlen, shared.metrics.clone());
    drop(shared);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        let mut acks: HashMap<&str, Vec<&str>> = HashMap::new();
        for s in &batch {
            if let Outcome::Invalid(reason) = &s.outcome {
                let dead = format!("{}:dead", s.stream);
                let cmd = pipe.cmd("XADD").arg(&dead).arg("MAXLEN").arg("~").arg(maxlen).arg("*");
                for (k, v) in &s.fields {
                    cmd.arg(k).arg(v.as_slice());
                }
                cmd.arg("reason").arg(reason).ignore();
                metrics.dead_letters.get_or_create(&vec![("stream", s.stream.to_string())]).inc();
            }
            acks.entry(&s.stream).or_default().push(&s.id);
        }
        for (stream, ids) in &acks {
            pipe.cmd("XACK").arg(*stream).arg(&group).arg(ids.as_slice()).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            // Unacknowledged entries stay pending and are claimed again later;
            // the idempotency window hides the repeat.
            tracing::warn!(error = %e, entries = batch.len(), "XACK failed; the entries stay pending");
        }
        batch.clear();
    }
    tracing::info!("acknowledgements finished");
}
