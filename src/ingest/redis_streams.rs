//! The Redis Streams reader (CONTRACT section 5): one consumer group per
//! instance, created at `$`; one reader task per stream (which also keeps
//! every XREADGROUP within one cluster slot); XACK only after the pipeline
//! reports the outcome.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{RedisError, RedisResult, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::acker::{self, Settled};
use super::replies::{self, Entry};
use super::{claim, RedisConn};
use crate::config::RedisConfig;
use crate::envelope::{Envelope, Schemas};
use crate::pipeline::{Ack, Input, InputSender, Outcome};
use crate::telemetry::Metrics;

/// Everything the reader tasks share.
pub(super) struct Shared {
    pub config: RedisConfig,
    pub group: String,
    pub consumer: String,
    pub schemas: Arc<Schemas>,
    pub input: InputSender,
    pub metrics: Arc<Metrics>,
    pub settled: mpsc::UnboundedSender<Settled>,
    pub redis_up: Arc<AtomicBool>,
}

/// The Redis ingest source, ready to start.
pub struct RedisIngest {
    shared: Arc<Shared>,
    conn: RedisConn,
    streams: Vec<Arc<str>>,
    settled_rx: mpsc::UnboundedReceiver<Settled>,
}

/// What `app` keeps of a running Redis ingest.
pub struct RedisIngestHandles {
    /// True while Redis answers; `/readyz` reads it.
    pub redis_up: Arc<AtomicBool>,
}

impl RedisIngest {
    /// Prepares the reader. `conn` is used for everything but blocking reads.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: RedisConfig,
        instance_id: &str,
        streams: &[String],
        conn: RedisConn,
        schemas: Arc<Schemas>,
        input: InputSender,
        metrics: Arc<Metrics>,
    ) -> RedisIngest {
        let (settled, settled_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            group: config.group_name(instance_id),
            consumer: instance_id.to_string(),
            config,
            schemas,
            input,
            metrics,
            settled,
            redis_up: Arc::new(AtomicBool::new(true)),
        });
        RedisIngest { shared, conn, streams: streams.iter().map(|s| Arc::from(s.as_str())).collect(), settled_rx }
    }

    /// Ensures this instance's group on every stream (the readiness latch
    /// waits for this), then starts the readers, the acker and the claimer
    /// on `tasks`. Readers stop when `stop` fires; the acker stops once every
    /// outstanding ack is settled.
    pub async fn start(self, tasks: &TaskTracker, stop: CancellationToken) -> RedisResult<RedisIngestHandles> {
        let RedisIngest { shared, conn, streams, settled_rx } = self;
        let mut existed = false;
        for stream in &streams {
            existed |= ensure_group(&mut conn.clone(), stream, &shared.group).await?;
        }
        tracing::info!(group = %shared.group, streams = ?streams, resumed = existed, "consumer group ready");
        shared.metrics.redis_up.set(1);
        let handles = RedisIngestHandles { redis_up: shared.redis_up.clone() };
        tasks.spawn(acker::run(conn.clone(), shared.clone(), settled_rx));
        tasks.spawn(claim::run(conn.clone(), shared.clone(), streams.clone(), stop.clone()));
        let grace = if existed { shared.config.resume_grace } else { Duration::ZERO };
        for stream in streams {
            let reader_conn = super::connect(&shared.config, None).await?;
            tasks.spawn(read_stream(reader_conn, shared.clone(), stream, grace, stop.clone()));
        }
        Ok(handles)
    }
}

/// Creates the group at `$` (and the stream) if missing. True if it existed.
pub(super) async fn ensure_group(conn: &mut RedisConn, stream: &str, group: &str) -> RedisResult<bool> {
    let created: RedisResult<()> =
        redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg("$").arg("MKSTREAM").query_async(conn).await;
    match created {
        Ok(()) => Ok(false),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(true),
        Err(e) => Err(e),
    }
}

/// One stream's read loop: first this consumer's own pending entries (left
/// by a crash), then new ones, until `stop`.
async fn read_stream(
    mut conn: RedisConn,
    shared: Arc<Shared>,
    stream: Arc<str>,
    grace: Duration,
    stop: CancellationToken,
) {
    if !grace.is_zero() {
        tracing::info!(stream = %stream, grace_s = grace.as_secs_f64(), "resuming a group: waiting for clients to reconnect before reading the backlog");
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = stop.cancelled() => return,
        }
    }
    let mut backoff = Backoff::default();
    let mut cursor = "0".to_string(); // own pending entries first; ">" once they are done
    loop {
        let read = read_once(&mut conn, &shared, &stream, &cursor);
        let result = tokio::select! {
            r = read => r,
            _ = stop.cancelled() => break,
        };
        match result {
            Ok(entries) => {
                backoff.reset(&shared);
                if cursor != ">" {
                    match entries.last() {
                        Some(last) => cursor = last.id.clone(),
                        None => cursor = ">".to_string(),
                    }
                }
                for entry in entries {
                    if !handle_entry(&shared, &stream, entry).await {
                        break;
                    }
                }
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!(stream = %stream, group = %shared.group, "consumer group lost (Redis restarted without persistence?): recreating it; events in between are skipped");
                shared.metrics.dropped("group_lost", 1);
                if let Err(e) = ensure_group(&mut conn, &stream, &shared.group).await {
                    backoff.fail(&shared, &stream, &e).await;
                }
            }
            Err(e) => {
                tokio::select! {
                    _ = backoff.fail(&shared, &stream, &e) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
    }
    tracing::info!(stream = %stream, "reader stopped");
}

async fn read_once(conn: &mut RedisConn, shared: &Shared, stream: &str, cursor: &str) -> RedisResult<Vec<Entry>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg(&shared.group).arg(&shared.consumer).arg("COUNT").arg(shared.config.read_count);
    if cursor == ">" {
        cmd.arg("BLOCK").arg(shared.config.read_block.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(stream).arg(cursor);
    let reply: Value = cmd.query_async(conn).await?;
    Ok(replies::from_read_reply(reply))
}

/// Decodes one entry and hands it to the pipeline, or dead-letters it.
/// False when the pipeline is gone (shutting down).
pub(super) async fn handle_entry(shared: &Shared, stream: &Arc<str>, entry: Entry) -> bool {
    let Entry { id, fields } = entry;
    let decoded = Envelope::from_stream_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())), &shared.schemas);
    let envelope = match decoded {
        Ok(e) => e,
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(stream = %stream, entry_id = %id, reason = %reason, "invalid entry: dead-lettered");
            let _ =
                shared.settled.send(Settled { stream: stream.clone(), id, outcome: Outcome::Invalid(reason), fields });
            return true;
        }
    };
    let settled = shared.settled.clone();
    let ack_entry_id = id.clone();
    let (ack_stream, ack_id) = (stream.clone(), id);
    let mut fields = Some(fields);
    let ack = Ack::new(move |outcome| {
        let fields = match outcome {
            Outcome::Invalid(_) => fields.take().unwrap_or_default(),
            _ => Vec::new(),
        };
        let _ = settled.send(Settled { stream: ack_stream, id: ack_id, outcome, fields });
    });
    let started = Instant::now();
    let input = Input { envelope, ack, source: stream.clone(), entry_id: Some(ack_entry_id), received: started };
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

/// Exponential backoff for Redis errors, which also keeps `redis_up`.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn reset(&mut self, shared: &Shared) {
        if self.failures > 0 {
            tracing::info!("redis answers again");
            shared.metrics.redis_up.set(1);
            shared.redis_up.store(true, Ordering::Relaxed);
        }
        self.failures = 0;
    }

    async fn fail(&mut self, shared: &Shared, stream: &str, e: &RedisError) {
        self.failures += 1;
        shared.metrics.redis_up.set(0);
        shared.redis_up.store(false, Ordering::Relaxed);
        let delay = Duration::from_millis(100 * 2u64.pow(self.failures.min(6))).min(Duration::from_secs(5));
        tracing::warn!(stream = %stream, error = %e, retry_in_ms = delay.as_millis() as u64, "redis read failed");
        tokio::time::sleep(delay).await;
    }
}
