//! Server-Sent Events: frames go down a `text/event-stream` response as
//! `data:` lines; client messages come up in POSTs (see `polling.rs`).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::{Ended, Kick, Outbox, Payload, PollingEnds, Session};

/// The first bytes of the stream: a comment, so proxies pass the headers on
/// and browsers fire `open`; ASP.NET Core's exactly.
pub(crate) const SSE_PREAMBLE: &[u8] = b":\r\n";

/// Runs one SSE connection: `body` is the response body's sender; the
/// connection ends when the client goes (the body is dropped) or the
/// session or server ends it, or when the handshake does not arrive within
/// `handshake_timeout`.
pub(crate) async fn serve_sse<S: Session>(
    session: &mut S,
    outbox: &Outbox,
    mut ends: PollingEnds,
    body: mpsc::Sender<Bytes>,
    handshake_timeout: Duration,
) -> Ended {
    let handshake = tokio::time::sleep(handshake_timeout);
    tokio::pin!(handshake);
    let mut awaiting_handshake = true;
    loop {
        tokio::select! {
            biased;
            _ = ends.stop.cancelled() => return Ended::ByClient,
            _ = body.closed() => return Ended::ByClient,
            _ = &mut handshake, if awaiting_handshake => {
                awaiting_handshake = false;
                if !session.is_open() {
                    outbox.kick(Kick::HandshakeTimeout);
                }
            }
            _ = outbox.ready() => {
                let batch = outbox.take(super::WRITE_BATCH_FRAMES);
                let full = batch.frames.len() == super::WRITE_BATCH_FRAMES;
                let (frames, end) = super::closing_frames(session, batch);
                if !frames.is_empty() && body.send(encode(&frames)).await.is_err() {
                    return Ended::ByClient;
                }
                if let Some(end) = end {
                    return end;
                }
                if full {
                    outbox.wake();
                }
            }
            data = ends.inbound.recv() => match data {
                Some(data) => super::receive(session, outbox, &data).await,
                None => return Ended::ByClient,
            },
        }
    }
}

/// `data:` framing: every line of every frame prefixed, a blank line after each.
fn encode(frames: &[Payload]) -> Bytes {
    let mut out = BytesMut::with_capacity(frames.iter().map(|f| f.len() + 16).sum());
    for frame in frames {
        for line in frame.as_bytes().split(|b| *b == b'\n') {
            out.put_slice(b"data: ");
            out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_a_data_line() {
        let out = encode(&[Payload::text("{}\u{1e}".into()), Payload::text("a\nb".into())]);
        assert_eq!(&out[..], b"data: {}\x1e\r\n\r\ndata: a\r\ndata: b\r\n\r\n");
    }
}

#[cfg(test)]
mod serve_tests;
