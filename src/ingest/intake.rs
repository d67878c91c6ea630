//! What the stream reader and the claimer share, and the one step they
//! both take: decode an entry and hand it to the pipeline with an `Ack`
//! that settles it (XACK, or a dead letter of its raw fields) through the
//! acker.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::acker::Note;
use super::hole::OnHole;
use super::replies::Entry;
use crate::config::RedisConfig;
use crate::envelope::{Envelope, Fields, Pending, Schemas};
use crate::pipeline::{Ack, Event, Input, InputSender, Outcome};
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
}

/// Hands one entry to the pipeline: pending when its head passes the
/// envelope's checks (the pipeline decodes the rest only if this instance
/// delivers it), decoded here otherwise, or dead-lettered if that fails.
/// False when the pipeline is gone (shutting down).
pub(super) async fn handle_entry(shared: &Shared, stream: &Arc<str>, entry: Entry) -> bool {
    let Entry { id, fields } = entry;
    let fields: Fields = Arc::new(fields);
    let event = match Pending::new(&fields, &shared.schemas) {
        Some(pending) => Event::Pending(pending),
        None => {
            match Envelope::from_stream_fields(fields.iter(), &shared.schemas) {
                Ok(e) => Event::Decoded(e),
                Err(e) => {
                    // Logged (with its reason) once the dead letter is written.
                    let outcome = Outcome::Invalid(e.to_string());
                    let _ = shared.settled.send(Note { stream: stream.clone(), id, fields, outcome });
                    return true;
                }
            }
        }
    };
    let settled = shared.settled.clone();
    let ack_stream = stream.clone();
    // The ack keeps the fields (shared with the pending event) until the
    // entry settles: a dead letter carries every one of them.
    let ack = Ack::new(move |outcome| {
        let _ = settled.send(Note { stream: ack_stream, id, fields, outcome });
    });
    let started = Instant::now();
    let input = Input { event, ack, source: stream.clone(), entry_id: Some(id.to_text()), received: started };
    let sent = match shared.input.try_send(input) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(input)) => {
            // The pipeline is behind: wait for room, which pauses this reader
            // (the stream keeps the events).
            let ok = shared.input.send(input).await.is_ok();
            shared.metrics.ingest_wait_seconds.observe(started.elapsed().as_secs_f64());
            ok
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    };
    sent
}
