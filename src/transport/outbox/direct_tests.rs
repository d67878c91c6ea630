//! The direct path on real loopback sockets: a delivery written from the
//! pusher's thread, what the socket would not take finished by the task,
//! frames never torn or reordered.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

async fn pair() -> (Arc<TcpStream>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (Arc::new(server), client)
}

fn attached(socket: &Arc<TcpStream>) -> Outbox {
    let o = Outbox::new(Limits { max_frames: 100_000, max_bytes: 1 << 30 });
    o.attach(Some(socket.clone()), Vec::new());
    o
}

/// Splits a byte stream into WebSocket frames: (opcode, message).
fn frames(mut wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let opcode = wire[0] & 0x0f;
        let (len, at) = match wire[1] {
            126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
            127 => (u64::from_be_bytes(wire[2..10].try_into().expect("8 bytes")) as usize, 10),
            n => (usize::from(n), 2),
        };
        out.push((opcode, wire[at..at + len].to_vec()));
        wire = &wire[at + len..];
    }
    out
}

async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut buf)).await.expect("in time").expect("read");
    buf
}

#[tokio::test]
async fn a_push_to_an_idle_socket_is_written_at_once_without_waking_the_task() {
    let (server, mut client) = pair().await;
    let o = attached(&server);
    o.ready().await; // attach's own wake-up
    let p = Payload::text("{\"type\":1}\u{1e}".into());
    o.push_critical(p.clone()).expect("room");
    assert!(o.is_empty(), "nothing left for the task");
    assert_eq!(read_exactly(&mut client, p.wire().len()).await, p.wire());
    assert!(tokio::time::timeout(Duration::from_millis(50), o.ready()).await.is_err(), "the task was not woken");
}

/// Pushes `n` frames of 64 KiB, numbered in their first byte, without
/// reading: the socket's buffers fill and the rest waits in the queue.
fn fill(o: &Outbox, n: u8) -> Vec<Payload> {
    let sent: Vec<_> = (0..n).map(|i| Payload::binary(&vec![i; 64 * 1024])).collect();
    for p in &sent {
        o.push_critical(p.clone()).expect("room");
    }
    sent
}

async fn write_out(o: &Outbox, socket: &TcpStream) -> Flushed {
    loop {
        match o.flush() {
            Flushed::Blocked => socket.writable().await.expect("writable"),
            done => return done,
        }
    }
}

#[tokio::test]
async fn what_the_socket_would_not_take_waits_and_goes_after_in_order() {
    let (server, mut client) = pair().await;
    let o = attached(&server);
    o.enable_replay(1 << 30);
    let sent = fill(&o, 200);
    assert!(!o.is_empty(), "12.5 MiB do not fit in loopback buffers unread");
    let total: usize = sent.iter().map(|p| p.wire().len()).sum();
    let reader = tokio::spawn(async move { read_exactly(&mut client, total).await });
    assert_eq!(write_out(&o, &server).await, Flushed::Done(None));
    let got = frames(&reader.await.expect("reader"));
    assert_eq!(got.len(), 200);
    assert!(got.iter().enumerate().all(|(i, (op, m))| *op == 2 && m.len() == 64 * 1024 && m[0] == i as u8));
    assert_eq!(o.resume().expect("replay on").1.len(), 200, "every frame numbered once");
}

#[tokio::test]
async fn a_slow_consumer_kick_keeps_a_half_written_frame_whole_before_the_close() {
    let (server, mut client) = pair().await;
    let o = attached(&server);
    fill(&o, 200);
    o.kick(Kick::SlowConsumer);
    o.push_final(Payload::websocket_close(1000));
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut all)).await;
        all
    });
    assert_eq!(write_out(&o, &server).await, Flushed::Done(Some(End::Kicked(Kick::SlowConsumer))));
    o.detach();
    drop(o);
    drop(server);
    let got = frames(&reader.await.expect("reader"));
    let (close, data) = got.split_last().expect("frames");
    assert_eq!(close, &(8, vec![0x03, 0xe8]), "the stream ends with a whole Close frame");
    assert!(data.iter().enumerate().all(|(i, (op, m))| *op == 2 && m.len() == 64 * 1024 && m[0] == i as u8));
    assert!(data.len() < 200, "the queued rest was dropped");
}

#[tokio::test]
async fn a_detached_session_resends_a_half_written_frame_whole_and_never_twice() {
    let (server, _client) = pair().await;
    let o = attached(&server);
    o.enable_replay(1 << 30);
    fill(&o, 200);
    let queued = o.len();
    o.detach();
    assert_eq!(o.len(), queued - 1, "the half-written front frame left the queue");
    let (_, unacknowledged) = o.resume().expect("replay on");
    assert_eq!(unacknowledged.len() + o.len(), 200, "each frame is resent or queued, once");
}

#[tokio::test]
async fn frames_of_a_socket_that_failed_do_not_reach_the_next_one() {
    let (server, client) = pair().await;
    let o = attached(&server);
    o.enable_replay(1 << 20);
    drop(client);
    // Writes to a closed peer fail sooner or later (EPIPE after its RST).
    let mut n = 0;
    while o.flush() != Flushed::Failed && n < 1000 {
        o.push_critical(Payload::text(format!("{n}"))).expect("room");
        n += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(o.flush(), Flushed::Failed, "a write to the closed socket failed");
    o.push_final(Payload::websocket_close(1011));
    o.push_unsequenced(Payload::text("ping".into())).expect("room");
    o.detach();
    let (_, sent) = o.resume().expect("replay on");
    let queued = o.take(usize::MAX).frames;
    assert!(queued.iter().all(|p| !p.wire().starts_with(b"\x88") && p.as_bytes() != b"ping"), "{queued:?}");
    assert_eq!(sent.len() + queued.len(), n, "every event is resent or still queued");
}

#[tokio::test]
async fn an_empty_queue_gives_its_memory_back_unless_a_hold_waits() {
    let (server, mut client) = pair().await;
    let o = attached(&server);
    let p = Payload::text("{\"type\":1}\u{1e}".into());
    o.push_critical(p.clone()).expect("room");
    read_exactly(&mut client, p.wire().len()).await;
    assert!(o.is_empty());
    assert_eq!(o.capacity(), 0, "written at once, never queued");
    o.push_ping(p.clone());
    read_exactly(&mut client, p.wire().len()).await;
    assert_eq!(o.capacity(), 0, "nor a ping");
    // Frames that had to wait leave capacity behind, given back once the
    // queue is empty and no hold waits.
    o.hold();
    o.push_critical(p.clone()).expect("room");
    assert!(o.capacity() > 0, "queued behind the hold");
    o.release(Vec::new());
    assert!(matches!(o.flush(), Flushed::Done(None)));
    read_exactly(&mut client, p.wire().len()).await;
    o.hold();
    o.shrink();
    assert!(o.capacity() > 0, "kept while a hold waits");
    o.release(Vec::new());
    o.shrink();
    assert_eq!(o.capacity(), 0);
}

/// Claims `frame` on every outbox and sends them as one batch, as the
/// fan-out does for a room.
fn push_batched(outboxes: &[&Outbox], frame: &Payload) {
    let mut claims = Vec::new();
    for o in outboxes {
        let out = OutFrame { payload: frame.clone(), droppable: false, sequenced: true };
        match o.try_claim(out).expect("room") {
            Claimed::Claim(c) => claims.push(c),
            Claimed::Queued(_) => {}
            Claimed::Busy(_) => panic!("nobody else holds the outbox"),
        }
    }
    send_claims(&mut claims);
}

#[tokio::test]
async fn a_batch_of_sends_reaches_every_idle_socket_and_a_full_one_finishes_in_order() {
    let (a_server, mut a_client) = pair().await;
    let (b_server, mut b_client) = pair().await;
    let (a, b) = (attached(&a_server), attached(&b_server));
    a.ready().await;
    b.ready().await;
    // `b`'s socket is full: its frames wait, and the batch's frame goes after them.
    let sent = fill(&b, 64);
    assert!(!b.is_empty(), "the socket's buffers are full");
    let p = Payload::text("{\"type\":1,\"target\":\"x\"}\u{1e}".into());
    push_batched(&[&a, &b], &p);
    assert!(a.is_empty(), "the idle socket took the frame in the batch");
    assert_eq!(read_exactly(&mut a_client, p.wire().len()).await, p.wire());
    assert!(tokio::time::timeout(Duration::from_millis(50), a.ready()).await.is_err(), "a's task was not woken");

    let expected: Vec<u8> = sent.iter().chain([&p]).flat_map(|f| f.wire().to_vec()).collect();
    let reader = tokio::spawn(async move { read_exactly(&mut b_client, expected.len()).await == expected });
    assert!(matches!(write_out(&b, &b_server).await, Flushed::Done(None)));
    assert!(reader.await.expect("reader"), "b got every frame whole and in order");

    // Once `b` is drained, the next batch writes both at once.
    let q = Payload::text("{\"type\":1,\"target\":\"y\"}\u{1e}".into());
    push_batched(&[&a, &b], &q);
    assert!(a.is_empty() && b.is_empty());
    assert_eq!(read_exactly(&mut a_client, q.wire().len()).await, q.wire());
}

#[tokio::test]
async fn a_claim_finds_a_held_outbox_busy_and_a_closed_peer_fails_only_its_own_connection() {
    let (a_server, a_client) = pair().await;
    let (b_server, mut b_client) = pair().await;
    let (a, b) = (attached(&a_server), attached(&b_server));
    let out = || OutFrame { payload: Payload::text("x\u{1e}".into()), droppable: false, sequenced: true };
    {
        let _held = a.lock();
        assert!(matches!(a.try_claim(out()), Ok(Claimed::Busy(_))), "never waits for a lock");
    }
    // A reset peer: the send fails, that outbox is marked failed, the other gets its frame.
    #[allow(deprecated)]
    a_client.set_linger(Some(Duration::ZERO)).expect("linger");
    drop(a_client);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p = Payload::text("x\u{1e}".into());
    push_batched(&[&a, &b], &p);
    push_batched(&[&a, &b], &p);
    assert!(matches!(a.flush(), Flushed::Failed), "the reset socket's outbox failed");
    assert_eq!(read_exactly(&mut b_client, 2 * p.wire().len()).await, [p.wire(), p.wire()].concat());
}
