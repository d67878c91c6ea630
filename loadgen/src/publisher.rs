//! The XADD publisher: chat messages at a fixed rate into one Redis Stream,
//! as flat seed-004 envelopes (`event_id`, `event_type`, `timestamp`,
//! `room_id`, `payload` as JSON text), each payload stamped with its send
//! time (`sent_ns`) and a per-room `sequence_number` so every client can
//! tell a loss from a duplicate.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use crate::client::Shared;
use crate::{stats, sys};

/// Where and how events are written.
#[derive(Clone)]
pub struct Sink {
    pub stream: String,
    /// `MAXLEN ~` on each XADD (0: no trimming).
    pub maxlen: u64,
}

impl Sink {
    /// Queues one flat envelope on `pipe`.
    pub fn xadd(&self, pipe: &mut redis::Pipeline, event_type: &str, iso: &str, room: &str, payload: &str) {
        pipe.cmd("XADD").arg(&self.stream);
        if self.maxlen > 0 {
            pipe.arg("MAXLEN").arg("~").arg(self.maxlen);
        }
        pipe.arg("*")
            .arg("event_id")
            .arg(Uuid::new_v4().to_string())
            .arg("event_type")
            .arg(event_type)
            .arg("timestamp")
            .arg(iso)
            .arg("room_id")
            .arg(room)
            .arg("payload")
            .arg(payload)
            .ignore();
    }
}

/// What the publisher did.
#[derive(Default, Debug)]
pub struct Published {
    pub events: u64,
    /// Chat messages stamped inside the window.
    pub measured: u64,
    /// Deliveries owed for them: room members at publish time.
    pub expected: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Published {
    pub fn failed(&mut self, n: u64, e: &redis::RedisError) {
        self.errors += n;
        self.first_error.get_or_insert_with(|| e.to_string());
    }
}

/// The payload of one chat message, as the backend of seed 004 writes it,
/// with the generator's two extra fields (passed through unchanged).
pub struct ChatPayload {
    request_ids: Vec<String>,
    content: String,
}

impl ChatPayload {
    pub fn new(rooms: usize, content_bytes: usize) -> ChatPayload {
        let content =
            "lorem ipsum dolor sit amet, consectetur adipiscing elit ".chars().cycle().take(content_bytes).collect();
        ChatPayload { request_ids: (0..rooms).map(|_| Uuid::new_v4().to_string()).collect(), content }
    }

    pub fn render(&self, room: usize, sender: &str, seq: u64, sent_ns: u64, iso: &str) -> String {
        format!(
            "{{\"id\":\"{}\",\"request_id\":\"{}\",\"sender_id\":\"{sender}\",\"content\":\"{}\",\
             \"sequence_number\":{seq},\"is_screenshot\":false,\"created_at\":\"{iso}\",\
             \"client_temp_id\":\"lg-{seq}\",\"sent_ns\":{sent_ns}}}",
            Uuid::new_v4(),
            self.request_ids[room],
            self.content,
        )
    }
}

/// Publishes `rate` chat messages per second, rooms in turn, until `stop`.
/// Paced every millisecond against the count due so far: a late tick
/// catches up instead of drifting.
pub async fn run(
    mut con: MultiplexedConnection,
    sink: Sink,
    rate: f64,
    content_bytes: usize,
    sh: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> Published {
    let rooms = sh.rooms.len();
    let payload = ChatPayload::new(rooms, content_bytes);
    let sender = Uuid::new_v4().to_string();
    let mut room_seq = vec![0u64; rooms];
    let mut out = Published::default();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let t0 = Instant::now();
    let mut sent_count = 0u64;
    while !stop.load(Relaxed) {
        ticker.tick().await;
        let due = (rate * t0.elapsed().as_secs_f64()) as u64;
        if due <= sent_count {
            continue;
        }
        let n = (due - sent_count).min(5000);
        let sent = sys::wall_ns();
        let measured = stats::in_window(sent);
        let iso = sys::iso8601(sent);
        let mut pipe = redis::pipe();
        let mut expected = 0;
        for i in 0..n {
            let room = ((sent_count + i) % rooms as u64) as usize;
            room_seq[room] += 1;
            let body = payload.render(room, &sender, room_seq[room], sent, &iso);
            sink.xadd(&mut pipe, "chat_message", &iso, &sh.rooms[room], &body);
            if measured {
                expected += sh.room_members[room].load(Relaxed);
            }
        }
        sent_count += n;
        match pipe.query_async::<()>(&mut con).await {
            Ok(()) => {
                out.events += n;
                if measured {
                    out.measured += n;
                    out.expected += expected;
                }
            }
            Err(e) => out.failed(n, &e),
        }
    }
    out
}
