//! Server-Sent Events: frames go down a `text/event-stream` response as
//! `data:` lines; client messages come up in POSTs (see `polling.rs`).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Ended, Kick, Outbox, Payload, PollingEnds, Session};

/// The first bytes of the stream: a comment, so proxies pass the headers on
/// and browsers fire `open`; ASP.NET Core's exactly.
pub(crate) const SSE_PREAMBLE: &[u8] = b":\r\n";

/// Chunks of the response body that may wait for hyper to write them. One:
/// what the connection's outbox holds is what it holds, not a multiple of
/// it hidden in this channel (each chunk is up to a whole write batch).
pub(crate) const SSE_BODY_CHUNKS: usize = 1;

/// The response body of one SSE connection, as its task writes it.
#[derive(Debug)]
pub(crate) struct SseBody {
    /// Feeds the response body (at most [`SSE_BODY_CHUNKS`] waiting).
    pub chunks: mpsc::Sender<Bytes>,
    /// Drops the HTTP connection under the response, socket and all: a
    /// client that stopped reading never lets hyper finish the response.
    pub abort: CancellationToken,
}

/// Runs one SSE connection: `body` is the response body; the connection
/// ends when the client goes (the body is dropped) or the session or server
/// ends it, when the handshake does not arrive within `handshake_timeout`,
/// or when the client takes nothing for `write_timeout` (it stopped
/// reading: the HTTP connection is then dropped, as a WebSocket's socket is).
pub(crate) async fn serve_sse<S: Session>(
    session: &mut S,
    outbox: &Outbox,
    mut ends: PollingEnds,
    body: SseBody,
    handshake_timeout: Duration,
    write_timeout: Duration,
) -> Ended {
    let handshake = tokio::time::sleep(handshake_timeout);
    tokio::pin!(handshake);
    let mut awaiting_handshake = true;
    loop {
        tokio::select! {
            biased;
            _ = ends.stop.cancelled() => return Ended::ByClient,
            _ = body.chunks.closed() => return Ended::ByClient,
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
                if !frames.is_empty() {
                    match write(&body, encode(&frames), write_timeout).await {
                        Written::All => {}
                        Written::Gone => return Ended::ByClient,
                        Written::Stalled => {
                            body.abort.cancel();
                            // A slow consumer's Close cannot reach it now.
                            return outbox.kicked().map_or(Ended::WriteFailed, Ended::Kicked);
                        }
                    }
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

/// Most bytes of one chunk of the response body. A write waits for hyper to
/// take the chunk before it, which it does once it has written most of
/// what it holds: in chunks this small, each wait measures the client's
/// progress on a few kilobytes, not on a whole batch (up to the outbox's
/// size), so a client on a slow link that keeps reading is not taken for
/// one that stopped, as a WebSocket's write timeout waits for any progress.
const SSE_CHUNK_BYTES: usize = 16 * 1024;

/// How a [`write`] went.
enum Written {
    /// Every byte was handed to the response body.
    All,
    /// The response is gone (the client left).
    Gone,
    /// The client took nothing for the write timeout.
    Stalled,
}

/// Hands `bytes` to the response body in chunks of [`SSE_CHUNK_BYTES`],
/// each within `write_timeout`.
async fn write(body: &SseBody, mut bytes: Bytes, write_timeout: Duration) -> Written {
    while !bytes.is_empty() {
        let chunk = bytes.split_to(bytes.len().min(SSE_CHUNK_BYTES));
        match tokio::time::timeout(write_timeout, body.chunks.send(chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Written::Gone,
            Err(_) => return Written::Stalled,
        }
    }
    Written::All
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
