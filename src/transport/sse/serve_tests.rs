//! `serve_sse` with a fake session and tokio's clock paused.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::transport::fake::{FakeSession, Seen};
use crate::transport::{polling_channel, PollingHandle};

struct Conn {
    handle: PollingHandle,
    outbox: Arc<Outbox>,
    seen: Seen,
    body: mpsc::Receiver<Bytes>,
    abort: CancellationToken,
    task: JoinHandle<Ended>,
}

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn start(open: bool) -> Conn {
    let (handle, ends) = polling_channel(false);
    let (tx, body) = mpsc::channel(8);
    let abort = CancellationToken::new();
    let sse_body = SseBody { chunks: tx, abort: abort.clone() };
    let mut session = FakeSession::new(open);
    let (outbox, seen) = (session.outbox.clone(), session.seen.clone());
    let task = tokio::spawn(async move {
        let outbox = session.outbox.clone();
        serve_sse(&mut session, &outbox, ends, sse_body, Duration::from_secs(15), WRITE_TIMEOUT).await
    });
    Conn { handle, outbox, seen, body, abort, task }
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

impl Conn {
    fn written(&mut self) -> String {
        let mut out = String::new();
        while let Ok(b) = self.body.try_recv() {
            out.push_str(&String::from_utf8_lossy(&b));
        }
        out
    }
}

#[tokio::test(start_paused = true)]
async fn queued_frames_go_down_the_stream_as_data_lines() {
    let mut c = start(true);
    c.outbox.push_critical(Payload::text("a\u{1e}".into())).expect("room");
    c.outbox.push_critical(Payload::text("b\u{1e}".into())).expect("room");
    settle().await;
    assert_eq!(c.written(), "data: a\u{1e}\r\n\r\ndata: b\u{1e}\r\n\r\n");
}

#[tokio::test(start_paused = true)]
async fn posts_reach_the_session_and_a_stop_ends_after_the_last_frame() {
    let mut c = start(true);
    c.handle.inbound.send(Bytes::from_static(b"hello")).await.expect("running");
    c.handle.inbound.send(Bytes::from_static(b"bye")).await.expect("running");
    assert_eq!((&mut c.task).await.expect("ends"), Ended::BySession);
    assert_eq!(c.seen.received(), ["hello", "bye"]);
    assert_eq!(c.written(), "data: close\r\n\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_kicked_connection_writes_its_close_and_ends() {
    let mut c = start(true);
    c.outbox.kick(Kick::ServerShutdown);
    assert_eq!((&mut c.task).await.expect("ends"), Ended::Kicked(Kick::ServerShutdown));
    assert_eq!(c.written(), "data: kicked:ServerShutdown\r\n\r\n");
}

#[tokio::test(start_paused = true)]
async fn the_client_going_away_ends_the_connection() {
    let c = start(true);
    drop(c.body);
    assert_eq!(c.task.await.expect("ends"), Ended::ByClient);
    let c = start(true);
    c.handle.stop.cancel();
    assert_eq!(c.task.await.expect("ends"), Ended::ByClient);
}

#[tokio::test(start_paused = true)]
async fn a_handshake_that_does_not_come_in_time_ends_the_stream() {
    let mut c = start(false);
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(!c.task.is_finished());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((&mut c.task).await.expect("ends"), Ended::Kicked(Kick::HandshakeTimeout));
    assert_eq!(c.written(), "data: kicked:HandshakeTimeout\r\n\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_takes_nothing_for_the_write_timeout_is_dropped() {
    let mut c = start(true);
    // Nobody reads the body: its 8 chunks fill, and the 9th waits.
    for i in 0..9 {
        c.outbox.push_critical(Payload::text(format!("{i}\u{1e}"))).expect("room");
        settle().await;
    }
    tokio::time::sleep(WRITE_TIMEOUT - Duration::from_secs(1)).await;
    assert!(!c.task.is_finished() && !c.abort.is_cancelled(), "a write may take up to the timeout");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((&mut c.task).await.expect("ends"), Ended::WriteFailed);
    assert!(c.abort.is_cancelled(), "the HTTP connection is dropped");

    // A slow consumer's overflow while the write waits ends it as one.
    let mut c = start(true);
    for i in 0..9 {
        c.outbox.push_critical(Payload::text(format!("{i}\u{1e}"))).expect("room");
        settle().await;
    }
    c.outbox.kick(Kick::SlowConsumer);
    tokio::time::sleep(WRITE_TIMEOUT + Duration::from_secs(1)).await;
    assert_eq!((&mut c.task).await.expect("ends"), Ended::Kicked(Kick::SlowConsumer));
    assert!(c.abort.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_client_that_keeps_reading_a_large_backlog_slowly_is_kept() {
    let mut c = start(true);
    // 1 MB in one batch, taken by the client at 16 KiB per second: 64 s in
    // all, each chunk well within the write timeout.
    for _ in 0..10 {
        c.outbox.push_critical(Payload::text("x".repeat(100_000))).expect("room");
    }
    let mut got = 0;
    while got < 1_000_000 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let chunk = c.body.recv().await.expect("a chunk");
        assert!(chunk.len() <= 16 * 1024, "{}", chunk.len());
        got += chunk.iter().filter(|b| **b == b'x').count();
        assert!(!c.task.is_finished(), "dropped after {got} bytes");
    }
    assert!(!c.abort.is_cancelled());
}
