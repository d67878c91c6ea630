//! The WebSocket transport: one task per connection that reads client
//! messages and drains the outbox, feeding every queued frame before a
//! single flush.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{End, Ended, Error, Flow, Kick, Outbox, Payload, Session};

/// Frames taken from the outbox per write; bounds one batch's memory.
const BATCH_FRAMES: usize = 256;

/// WebSocket settings taken from the server configuration.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// Read buffer per connection, in bytes (small: most connections idle).
    pub read_buffer_bytes: usize,
    /// Largest client message.
    pub max_message_bytes: usize,
    /// Time allowed for the handshake.
    pub handshake_timeout: Duration,
    /// Time one batch of writes may take before the client counts as gone.
    pub write_timeout: Duration,
}

/// The `Sec-WebSocket-Accept` value for a request's `Sec-WebSocket-Key`.
pub fn accept_key(key: Option<&[u8]>) -> Result<String, Error> {
    let key = key.ok_or(Error::BadUpgrade("missing Sec-WebSocket-Key"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key))
}

/// Runs one WebSocket connection until it ends. Most connections sit idle
/// for hours, so the rare, large steps (handling a client message, closing)
/// are boxed: only the waiting state lives in every connection's task.
pub async fn serve_websocket<S: Session>(
    upgraded: Upgraded,
    session: &mut S,
    outbox: &Outbox,
    settings: WsSettings,
) -> Ended {
    let config = WebSocketConfig::default()
        .read_buffer_size(settings.read_buffer_bytes)
        .write_buffer_size(0)
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_message_bytes));
    let mut ws = Box::pin(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))).await;
    let handshake_deadline = Instant::now() + settings.handshake_timeout;
    let resend = session.first_frames();
    if !resend.is_empty() && !Box::pin(write(&mut ws, resend, session.is_binary(), settings.write_timeout)).await {
        return Ended::WriteFailed;
    }

    let ended = loop {
        tokio::select! {
            biased;
            _ = outbox.ready() => {
                let batch = outbox.take(BATCH_FRAMES);
                let more = batch.frames.len() == BATCH_FRAMES;
                let binary = session.is_binary();
                if !Box::pin(write(&mut ws, batch.frames, binary, settings.write_timeout)).await {
                    break Ended::WriteFailed;
                }
                match batch.end {
                    Some(End::Finished) => break Ended::BySession,
                    Some(End::Kicked(k)) => break Box::pin(kicked(&mut ws, session, k, binary, settings.write_timeout)).await,
                    None if more => outbox.wake(), // the rest of a long queue
                    None => {}
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if Box::pin(session.receive(t.as_bytes())).await == Flow::Stop {
                        outbox.finish();
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    if Box::pin(session.receive(&b)).await == Flow::Stop {
                        outbox.finish();
                    }
                }
                Some(Ok(Message::Close(_))) | None => break Ended::ByClient,
                Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    break Box::pin(kicked(&mut ws, session, Kick::MessageTooLarge, session.is_binary(), settings.write_timeout)).await;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    break Ended::ByClient;
                }
            },
            _ = tokio::time::sleep_until(handshake_deadline), if !session.is_open() => {
                break Box::pin(kicked(&mut ws, session, Kick::HandshakeTimeout, session.is_binary(), settings.write_timeout)).await;
            }
        }
    };
    let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), ws.close(None))).await;
    ended
}

/// Feeds every frame, then flushes once. False when the socket failed or
/// did not take the bytes in time.
async fn write<T>(ws: &mut WebSocketStream<T>, frames: Vec<Payload>, binary: bool, limit: Duration) -> bool
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if frames.is_empty() {
        return true;
    }
    let work = async {
        for p in frames {
            let msg = match p {
                Payload::Text(t) if !binary => Message::Text(t),
                Payload::Text(t) => Message::Binary(t.into()),
                Payload::Binary(b) => Message::Binary(b),
            };
            ws.feed(msg).await?;
        }
        ws.flush().await
    };
    matches!(tokio::time::timeout(limit, work).await, Ok(Ok(())))
}

/// Sends the session's Close for `why`, within the write limit, and ends.
async fn kicked<T, S: Session>(
    ws: &mut WebSocketStream<T>,
    session: &S,
    why: Kick,
    binary: bool,
    limit: Duration,
) -> Ended
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(frame) = session.close_frame(why) {
        let _ = write(ws, vec![frame], binary, limit.min(Duration::from_secs(2))).await;
    }
    Ended::Kicked(why)
}
