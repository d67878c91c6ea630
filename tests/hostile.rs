//! Hostile input leaves the server healthy and its memory back near the
//! baseline: slow or half-open handshakes, thousands of garbage connections.

mod support;

use std::time::Duration;

use serde_json::json;
use support::http::request;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn slow_and_garbage_connections_leave_the_server_healthy() {
    let s = Sidecar::start(&[
        ("SIDECAR_HTTP_HEADER_TIMEOUT_SECONDS", "2".into()),
        ("SIDECAR_HANDSHAKE_TIMEOUT_SECONDS", "2".into()),
        // This test is one source address opening thousands of connections.
        ("SIDECAR_CONNECTION_RATE_PER_IP", "100000".into()),
        ("SIDECAR_CONNECTION_BURST_PER_IP", "100000".into()),
    ])
    .await;
    let baseline = s.rss_kib();

    // Slowloris: headers that never end.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).await.expect("connect");
        c.write_all(b"GET /hubs/chat HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("write");
        slow.push(c);
    }
    // Half-open SignalR: upgraded, then silent.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(support::raw::RawWs::connect(s.port, "/hubs/chat").await.expect("upgrade"));
    }
    // Garbage: random bytes, bad HTTP, bad WebSocket upgrades.
    let garbage: [&[u8]; 4] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /hubs/chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"POST /hubs/chat/negotiate HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ];
    let port = s.port;
    for round in 0..50 {
        let mut batch = Vec::new();
        for i in 0..100 {
            let bytes = garbage[(round + i) % garbage.len()];
            batch.push(tokio::spawn(async move {
                let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)).await else { return };
                let _ = c.write_all(bytes).await;
                let mut sink = [0u8; 512];
                let _ = tokio::time::timeout(Duration::from_millis(300), c.read(&mut sink)).await;
            }));
        }
        for t in batch {
            let _ = t.await;
        }
    }

    // Meanwhile a real client is served.
    let mut d = Driver::start().await;
    d.connect("real", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({})).await.expect("a real client connects");
    d.invoke("real", "JoinRoom", json!(["r"])).await.expect("joins");
    let e = envelope("chat_message", "r", chat_payload("r", 1));
    assert_eq!(s.post_event(e.to_string().as_bytes()).await.0, 202);
    d.message("real", "ReceiveMessage", WAIT).await.expect("delivered");

    // The slow and silent ones are cut off by the timeouts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut buf = [0u8; 64];
    let mut closed = 0;
    for c in &mut slow {
        if matches!(
            tokio::time::timeout(Duration::from_millis(100), c.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Ok(_)) | Ok(Err(_))
        ) {
            closed += 1;
        }
    }
    assert_eq!(closed, 200, "every slowloris connection was answered or closed");
    for ws in &mut silent {
        // ASP.NET Core's answer, then the close.
        assert_eq!(ws.recv().await.as_deref(), Some("{\"error\":\"Handshake was canceled.\"}\u{1e}"));
        assert_eq!(ws.recv().await, None, "a silent upgraded socket is closed after the handshake timeout");
    }
    drop(slow);
    drop(silent);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(request(s.admin_port, "GET", "/healthz", &[], b"").await.expect("healthz").0, 200);
    let after = s.rss_kib();
    assert!(after < baseline + 20 * 1024, "RSS grew from {baseline} KiB to {after} KiB");
}
