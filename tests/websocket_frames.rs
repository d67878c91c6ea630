//! The WebSocket layer against hand-built client frames on a real socket:
//! what browsers and the .NET client send (fragments, pings, closes with a
//! code) is answered as RFC 6455 asks, and broken framing closes only the
//! connection that sent it, with the code ASP.NET Core's WebSocket uses.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";
const MASK: [u8; 4] = [0xa1, 0x07, 0x5c, 0xe3];

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A server frame as read: opcode and payload.
type ServerFrame = (u8, Vec<u8>);

struct Client {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Client {
    /// Upgrades `ws://127.0.0.1:port/hubs/chat` (skipNegotiation).
    async fn connect(port: u16) -> Client {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let request = format!(
            "GET /hubs/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("upgrade request");
        let mut client = Client { stream, read: Vec::new() };
        let head = client.until(|b| b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)).await;
        let head = String::from_utf8_lossy(&head).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "the accept key of RFC 6455's example: {head}");
        client
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads until `complete` says how many bytes make the next item.
    async fn until(&mut self, complete: impl Fn(&[u8]) -> Option<usize>) -> Vec<u8> {
        loop {
            if let Some(n) = complete(&self.read) {
                return self.read.drain(..n).collect();
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("bytes within the wait")
                .expect("read");
            assert!(n > 0, "the socket ended with {:?} unread", self.read);
            self.read.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next server frame (server frames are never masked).
    async fn frame(&mut self) -> ServerFrame {
        let bytes = self
            .until(|b| {
                let (len, at) = match *b.get(1)? & 0x7f {
                    126 => (usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
                    127 => (usize::try_from(u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)).ok()?, 10),
                    n => (usize::from(n), 2),
                };
                (b.len() >= at + len).then_some(at + len)
            })
            .await;
        assert_eq!(bytes[1] & 0x80, 0, "a server frame is not masked");
        let at = match bytes[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        assert_eq!(bytes[0] & 0x80, 0x80, "server frames are whole messages");
        (bytes[0] & 0x0f, bytes[at..].to_vec())
    }

    /// Frames until a Close; its code.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            let (op, payload) = self.frame().await;
            if op == 0x8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }

    /// Whether the server closed the TCP connection (within the wait).
    async fn ended(&mut self) -> bool {
        let mut chunk = [0u8; 256];
        matches!(tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await, Ok(Ok(0)) | Ok(Err(_)))
    }

    /// Completes the SignalR handshake in one frame.
    async fn handshake(&mut self) {
        self.send(&frame(true, 0x1, HANDSHAKE)).await;
        assert_eq!(self.frame().await, (0x1, b"{}\x1e".to_vec()));
    }
}

#[tokio::test]
async fn fragments_and_pings_are_answered_as_rfc_6455_asks() {
    let s = Sidecar::start(&[]).await;
    let mut c = Client::connect(s.port).await;
    // The handshake in three fragments, a Ping between two of them, all in
    // one write: the Pong comes first, then the handshake's answer.
    let mut bytes = frame(false, 0x1, &HANDSHAKE[..10]);
    bytes.extend(frame(true, 0x9, b"are you there"));
    bytes.extend(frame(false, 0x0, &HANDSHAKE[10..20]));
    bytes.extend(frame(true, 0x0, &HANDSHAKE[20..]));
    c.send(&bytes).await;
    assert_eq!(c.frame().await, (0xA, b"are you there".to_vec()));
    assert_eq!(c.frame().await, (0x1, b"{}\x1e".to_vec()));
    // A message sent one byte at a time still arrives whole: an invocation
    // gets its completion.
    let invoke = b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"r1\"]}\x1e";
    for b in frame(true, 0x1, invoke) {
        c.send(&[b]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (op, completion) = c.frame().await;
    let completion = String::from_utf8(completion).expect("text");
    assert_eq!(op, 0x1);
    assert!(completion.contains("\"type\":3") && completion.contains("\"invocationId\":\"1\""), "{completion}");
    // The client's Close is answered with its code, then the socket ends.
    let mut close = 4001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"leaving");
    c.send(&frame(true, 0x8, &close)).await;
    assert_eq!(c.close_code().await, Some(4001));
    assert!(c.ended().await, "the server ends the TCP connection after the closing handshake");
}

#[tokio::test]
async fn broken_framing_closes_only_its_own_connection() {
    let s = Sidecar::start(&[]).await;
    let mut bystander = Client::connect(s.port).await;
    bystander.handshake().await;
    // Not masked: a protocol error, Close 1002.
    let mut unmasked = Client::connect(s.port).await;
    unmasked.handshake().await;
    let mut bad = frame(true, 0x1, b"{}");
    bad[1] &= 0x7f;
    bad.drain(2..6);
    unmasked.send(&bad).await;
    assert_eq!(unmasked.close_code().await, Some(1002));
    assert!(unmasked.ended().await);
    // Text that is not UTF-8: Close 1007.
    let mut not_utf8 = Client::connect(s.port).await;
    not_utf8.handshake().await;
    not_utf8.send(&frame(true, 0x1, &[0xc3, 0x28])).await;
    assert_eq!(not_utf8.close_code().await, Some(1007));
    // A reserved close code: 1002 again.
    let mut reserved = Client::connect(s.port).await;
    reserved.handshake().await;
    reserved.send(&frame(true, 0x8, &1005u16.to_be_bytes())).await;
    assert_eq!(reserved.close_code().await, Some(1002));
    // The bystander still pings and is answered.
    bystander.send(&frame(true, 0x9, b"still here")).await;
    assert_eq!(bystander.frame().await, (0xA, b"still here".to_vec()));
}

/// A WebSocket message may carry many hub messages, so its own bound is a
/// separate, larger one (`SIDECAR_MAX_TRANSPORT_MESSAGE_BYTES`); a frame
/// whose header announces more than that is refused from the header alone.
#[tokio::test]
async fn a_frame_over_the_transport_limit_gets_the_hubs_close_before_its_payload_arrives() {
    let s = Sidecar::start(&[
        ("SIDECAR_MAX_MESSAGE_BYTES", "1024".into()),
        ("SIDECAR_MAX_TRANSPORT_MESSAGE_BYTES", "16384".into()),
    ])
    .await;
    let mut c = Client::connect(s.port).await;
    c.handshake().await;
    // The header announces 60,000 bytes (over the 16,384 of a WebSocket
    // message); only the header and a few bytes are sent.
    let whole = frame(true, 0x1, &vec![b' '; 60_000]);
    c.send(&whole[..20]).await;
    let (op, close) = c.frame().await;
    let close = String::from_utf8(close).expect("text");
    assert_eq!(op, 0x1);
    assert!(close.contains("\"type\":7") && close.contains("error"), "a SignalR Close with an error: {close}");
    assert_eq!(c.close_code().await, Some(1000));
}

/// The limit that closes a connection is the hub message's, as ASP.NET
/// Core's `MaximumReceiveMessageSize`: a WebSocket message well under its
/// own bound but holding one hub message over the limit gets the hub's
/// Close, and the WebSocket closes normally.
#[tokio::test]
async fn a_hub_message_over_the_limit_inside_a_smaller_frame_gets_the_hubs_close() {
    let s = Sidecar::start(&[("SIDECAR_MAX_MESSAGE_BYTES", "1024".into())]).await;
    let mut c = Client::connect(s.port).await;
    c.handshake().await;
    let record = format!(
        "{{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"{}\"]}}\u{1e}",
        "x".repeat(2000)
    );
    c.send(&frame(true, 0x1, record.as_bytes())).await;
    let (op, close) = c.frame().await;
    let close = String::from_utf8(close).expect("text");
    assert_eq!(op, 0x1);
    assert_eq!(close, "{\"type\":7,\"error\":\"Connection closed with an error.\",\"allowReconnect\":true}\u{1e}");
    assert_eq!(c.close_code().await, Some(1000));
    // Counted under its own reason (the operator's view of why).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let counted = "sidecar_disconnects_total{reason=\"message_too_large\"} 1";
    loop {
        let (_, metrics) = support::http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
        if metrics.lines().any(|l| l == counted) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{counted} not in:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
