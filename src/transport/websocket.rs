//! The WebSocket transport: one task per connection that reads client
//! messages and drains the outbox, feeding every queued frame before a
//! single flush.

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{End, Ended, Error, Flow, Kick, Outbox, Payload, Session};

/// A WebSocket message may carry several hub messages (the .NET client
/// sends what it has buffered in one), each held to the limit by the hub's
/// framing, as ASP.NET Core limits hub messages and not WebSocket messages.
/// The WebSocket layer only bounds the buffer, at this many messages' worth
/// (the same allowance as a POST body).
const MESSAGES_PER_WEBSOCKET_MESSAGE: usize = 4;

/// WebSocket settings taken from the server configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WsSettings {
    /// Read buffer per connection, in bytes (small: most connections idle).
    pub read_buffer_bytes: usize,
    /// Largest client hub message (a WebSocket message may carry several).
    pub max_message_bytes: usize,
    /// Time allowed for the handshake.
    pub handshake_timeout: Duration,
    /// Time one batch of writes may take before the client counts as gone.
    pub write_timeout: Duration,
}

/// The `Sec-WebSocket-Accept` value for a request's `Sec-WebSocket-Key`.
pub(crate) fn accept_key(key: Option<&[u8]>) -> Result<String, Error> {
    let key = key.ok_or(Error::BadUpgrade("missing Sec-WebSocket-Key"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key))
}

/// An accepted WebSocket, the client's side of one connection.
pub(crate) type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// Wraps an upgraded connection in the WebSocket layer with this server's
/// limits. Synchronous, so no future keeps `upgraded` for the connection's
/// life: tokio-tungstenite's `from_raw_socket` performs no I/O (there is no
/// handshake to do) and is ready on its first poll. `None` if a future
/// version of it ever is not, which the caller reports as an error.
pub(crate) fn websocket_stream(upgraded: Upgraded, settings: &WsSettings) -> Option<WsStream> {
    let limit = settings.max_message_bytes.saturating_mul(MESSAGES_PER_WEBSOCKET_MESSAGE);
    let config = WebSocketConfig::default()
        .read_buffer_size(settings.read_buffer_bytes)
        .write_buffer_size(0)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let start = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config));
    let mut start = std::pin::pin!(start);
    match start.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(ws) => Some(ws),
        std::task::Poll::Pending => None,
    }
}

/// Runs one WebSocket connection until it ends. Most connections sit idle
/// for hours, so the rare, large steps (the handshake's deadline, handling
/// a client message, closing) are boxed: only the waiting state lives in
/// every connection's task.
///
/// Every argument is a reference: an `async fn` keeps a by-value argument
/// twice in its future (the argument and the local it is moved into), and a
/// WebSocket stream is a few hundred bytes.
pub(crate) async fn serve_websocket<S: Session>(
    ws: &mut WsStream,
    session: &mut S,
    outbox: &Outbox,
    settings: &WsSettings,
) -> Ended {
    let resend = session.first_frames();
    if !resend.is_empty() && !Box::pin(write(ws, resend, session.is_binary(), settings.write_timeout)).await {
        return Ended::WriteFailed;
    }
    if !session.is_open() {
        if let Some(ended) = Box::pin(until_open(ws, session, outbox, settings)).await {
            return ended;
        }
    }

    let ended = loop {
        let step = tokio::select! {
            biased;
            _ = outbox.ready() => Box::pin(drain(ws, session, outbox, settings)).await,
            msg = ws.next() => Box::pin(on_message(ws, session, outbox, settings, msg)).await,
        };
        if let Some(ended) = step {
            break ended;
        }
    };
    // A session handed to another instance ends with the socket dropped, no
    // close frame: that is what makes every client resume.
    if ended != Ended::Kicked(Kick::Handoff) {
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), ws.close(Some(close_frame(ended))))).await;
    }
    ended
}

/// The WebSocket close frame ASP.NET Core's `WebSocketsServerTransport`
/// ends with: 1000 (normal closure), 1011 only when sending failed. A close
/// frame without a code reaches clients as 1005, which the JavaScript client
/// reports as an error and the .NET client throws on.
fn close_frame(ended: Ended) -> CloseFrame {
    let code = match ended {
        Ended::WriteFailed => CloseCode::Error,
        _ => CloseCode::Normal,
    };
    CloseFrame { code, reason: "".into() }
}

/// The connection until its handshake is done, with the handshake's
/// deadline; `Some` if it ended before that.
async fn until_open<S: Session>(
    ws: &mut WsStream,
    session: &mut S,
    outbox: &Outbox,
    settings: &WsSettings,
) -> Option<Ended> {
    let deadline = tokio::time::sleep(settings.handshake_timeout);
    tokio::pin!(deadline);
    while !session.is_open() {
        let step = tokio::select! {
            biased;
            _ = outbox.ready() => drain(ws, session, outbox, settings).await,
            msg = ws.next() => on_message(ws, session, outbox, settings, msg).await,
            _ = &mut deadline => {
                Some(kicked(ws, session, Kick::HandshakeTimeout, session.is_binary(), settings.write_timeout).await)
            }
        };
        if step.is_some() {
            return step;
        }
    }
    None
}

/// Writes what the outbox holds; `Some` when the connection ends with it.
async fn drain<S: Session>(
    ws: &mut WsStream,
    session: &mut S,
    outbox: &Outbox,
    settings: &WsSettings,
) -> Option<Ended> {
    let batch = outbox.take(super::WRITE_BATCH_FRAMES);
    let more = batch.frames.len() == super::WRITE_BATCH_FRAMES;
    let binary = session.is_binary();
    if !write(ws, batch.frames, binary, settings.write_timeout).await {
        return Some(Ended::WriteFailed);
    }
    match batch.end {
        Some(End::Finished) => Some(Ended::BySession),
        Some(End::Kicked(k)) => Some(kicked(ws, session, k, binary, settings.write_timeout).await),
        None => {
            if more {
                outbox.wake(); // the rest of a long queue
            }
            None
        }
    }
}

/// Handles what the client sent; `Some` when the connection ends with it.
async fn on_message<S: Session>(
    ws: &mut WsStream,
    session: &mut S,
    outbox: &Outbox,
    settings: &WsSettings,
    msg: Option<Result<Message, WsError>>,
) -> Option<Ended> {
    let flow = match msg {
        Some(Ok(Message::Text(t))) => session.receive(t.as_bytes()).await,
        Some(Ok(Message::Binary(b))) => session.receive(&b).await,
        Some(Ok(Message::Close(_))) | None => return Some(Ended::ByClient),
        Some(Ok(_)) => return None, // ping/pong: tungstenite answers pings itself
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
            let binary = session.is_binary();
            return Some(kicked(ws, session, Kick::MessageTooLarge, binary, settings.write_timeout).await);
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "websocket read failed");
            return Some(Ended::ByClient);
        }
    };
    if flow == Flow::Stop {
        outbox.finish();
    }
    None
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
