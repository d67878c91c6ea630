//! The WebSocket transport. Frames go out pre-framed ([`Payload::wire`]):
//! on a plain TCP socket the outbox writes them itself, from whoever pushes
//! them (one `send()` per delivery, no task woken), and the connection's
//! task only reads client messages and finishes what the socket would not
//! take at once. Over TLS the task writes what the outbox queues.
//! tungstenite reads and decodes client frames; what it writes itself
//! (Pongs, the answer to a Close) goes through the outbox too, so frames
//! are never interleaved.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::outbox::Flushed;
use super::{End, Ended, Error, Flow, Kick, Outbox, Payload, Session};

/// A WebSocket message may carry several hub messages (the .NET client
/// sends what it has buffered in one), each held to the limit by the hub's
/// framing, as ASP.NET Core limits hub messages and not WebSocket messages.
/// The WebSocket layer only bounds the buffer, at this many messages' worth
/// (the same allowance as a POST body).
const MESSAGES_PER_WEBSOCKET_MESSAGE: usize = 4;

/// WebSocket close codes ASP.NET Core's `WebSocketsServerTransport` ends
/// with: 1000 (normal closure), 1011 only when sending failed. A close
/// frame without a code reaches clients as 1005, which the JavaScript client
/// reports as an error and the .NET client throws on.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_ERROR: u16 = 1011;

/// WebSocket settings taken from the server configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WsSettings {
    /// Read buffer per connection, in bytes (small: most connections idle).
    pub read_buffer_bytes: usize,
    /// Largest client hub message (a WebSocket message may carry several).
    pub max_message_bytes: usize,
    /// Time allowed for the handshake.
    pub handshake_timeout: Duration,
    /// Time a blocked socket may take to accept more bytes before the
    /// client counts as gone.
    pub write_timeout: Duration,
}

/// The `Sec-WebSocket-Accept` value for a request's `Sec-WebSocket-Key`.
pub(crate) fn accept_key(key: Option<&[u8]>) -> Result<String, Error> {
    let key = key.ok_or(Error::BadUpgrade("missing Sec-WebSocket-Key"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key))
}

/// An accepted WebSocket's socket, before the WebSocket layer is put on it.
pub(crate) enum WsSocket {
    /// Plain TCP: shared with the outbox, which writes to it directly.
    Tcp {
        /// The socket.
        stream: Arc<TcpStream>,
        /// Bytes the HTTP layer read past the upgrade request.
        early: Bytes,
    },
    /// Anything else (TLS): read and written by the connection's task.
    Split {
        /// The reading half.
        read: ReadHalf<TokioIo<Upgraded>>,
        /// The writing half.
        write: WriteHalf<TokioIo<Upgraded>>,
    },
}

/// Takes an upgraded connection apart: the plain TCP socket underneath when
/// there is one (hyper hands back what it read past the request), else
/// the two halves of whatever carries it.
pub(crate) fn websocket_socket(upgraded: Upgraded) -> WsSocket {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            // The read-ahead is a slice of the HTTP layer's read buffer
            // (kilobytes): copied, so that buffer is not kept for the
            // connection's life.
            let early = if parts.read_buf.is_empty() { Bytes::new() } else { Bytes::copy_from_slice(&parts.read_buf) };
            WsSocket::Tcp { stream: Arc::new(parts.io.into_inner()), early }
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            WsSocket::Split { read, write }
        }
    }
}

/// Runs one WebSocket connection until it ends. Most connections sit idle
/// for hours, so the rare, large steps (the handshake's deadline, handling
/// a client message, closing) are boxed: only the waiting state lives in
/// every connection's task.
///
/// Every argument is a reference: an `async fn` keeps a by-value argument
/// twice in its future (the argument and the local it is moved into).
pub(crate) async fn serve_websocket<S: Session>(
    socket: &mut WsSocket,
    session: &mut S,
    outbox: &Outbox,
    settings: &WsSettings,
) -> Ended {
    let (reader, mut writer) = match socket {
        WsSocket::Tcp { stream, early } => {
            outbox.attach(Some(stream.clone()), session.first_frames());
            let stream: &TcpStream = stream;
            (Reader::Tcp { stream, early: std::mem::take(early) }, Writer::Direct(stream))
        }
        WsSocket::Split { read, write } => {
            outbox.attach(None, session.first_frames());
            (Reader::Split(read), Writer::Task(write))
        }
    };
    let ended = match websocket_layer(WsIo { reader, outbox }, settings) {
        Some(mut ws) => serve(&mut ws, &mut writer, session, outbox, settings).await,
        None => {
            tracing::error!("the WebSocket layer did not start: connection closed");
            Ended::WriteFailed
        }
    };
    // A session handed to another instance ends with the socket dropped, no
    // close frame: that is what makes every client resume. A client that
    // closed has had its Close answered by tungstenite already.
    if !matches!(ended, Ended::Kicked(Kick::Handoff) | Ended::ByClient) {
        let code = if ended == Ended::WriteFailed { CLOSE_ERROR } else { CLOSE_NORMAL };
        outbox.push_final(Payload::websocket_close(code));
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), writer.write_out(outbox, settings))).await;
    }
    outbox.detach();
    ended
}

async fn serve<S: Session>(
    ws: &mut WebSocketStream<WsIo<'_>>,
    writer: &mut Writer<'_>,
    session: &mut S,
    outbox: &Outbox,
    settings: &WsSettings,
) -> Ended {
    // What attach queued (a resumed session's resend) goes first.
    if let Some(ended) = Box::pin(drain(writer, session, outbox, settings)).await {
        return ended;
    }
    if !session.is_open() {
        if let Some(ended) = Box::pin(until_open(ws, writer, session, outbox, settings)).await {
            return ended;
        }
    }
    loop {
        let step = tokio::select! {
            biased;
            _ = outbox.ready() => Box::pin(drain(writer, session, outbox, settings)).await,
            msg = ws.next() => Box::pin(on_message(writer, session, outbox, settings, msg)).await,
        };
        if let Some(ended) = step {
            return ended;
        }
    }
}

/// Puts the WebSocket layer on the socket with this server's limits.
/// Synchronous: tokio-tungstenite's `from_raw_socket` performs no I/O (there
/// is no handshake to do) and is ready on its first poll. `None` if a future
/// version of it ever is not.
fn websocket_layer<'a>(io: WsIo<'a>, settings: &WsSettings) -> Option<WebSocketStream<WsIo<'a>>> {
    let limit = settings.max_message_bytes.saturating_mul(MESSAGES_PER_WEBSOCKET_MESSAGE);
    let config = WebSocketConfig::default()
        .read_buffer_size(settings.read_buffer_bytes)
        .write_buffer_size(0)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let start = WebSocketStream::from_raw_socket(io, Role::Server, Some(config));
    let mut start = std::pin::pin!(start);
    match start.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(ws) => Some(ws),
        Poll::Pending => None,
    }
}

/// The connection until its handshake is done, with the handshake's
/// deadline; `Some` if it ended before that.
async fn until_open<S: Session>(
    ws: &mut WebSocketStream<WsIo<'_>>,
    writer: &mut Writer<'_>,
    session: &mut S,
    outbox: &Outbox,
    settings: &WsSettings,
) -> Option<Ended> {
    let deadline = tokio::time::sleep(settings.handshake_timeout);
    tokio::pin!(deadline);
    while !session.is_open() {
        let step = tokio::select! {
            biased;
            _ = outbox.ready() => drain(writer, session, outbox, settings).await,
            msg = ws.next() => on_message(writer, session, outbox, settings, msg).await,
            _ = &mut deadline => Some(kicked(writer, session, outbox, Kick::HandshakeTimeout, settings).await),
        };
        if step.is_some() {
            return step;
        }
    }
    None
}

/// Writes what the outbox holds; `Some` when the connection ends with it.
async fn drain<S: Session>(
    writer: &mut Writer<'_>,
    session: &mut S,
    outbox: &Outbox,
    settings: &WsSettings,
) -> Option<Ended> {
    match writer.write_out(outbox, settings).await {
        Err(()) => Some(Ended::WriteFailed),
        Ok(None) => None,
        Ok(Some(End::Finished)) => Some(Ended::BySession),
        Ok(Some(End::Kicked(k))) => Some(kicked(writer, session, outbox, k, settings).await),
    }
}

/// Handles what the client sent; `Some` when the connection ends with it.
async fn on_message<S: Session>(
    writer: &mut Writer<'_>,
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
            return Some(kicked(writer, session, outbox, Kick::MessageTooLarge, settings).await);
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

/// Sends the session's Close for `why`, within the write limit, and ends.
async fn kicked<S: Session>(
    writer: &mut Writer<'_>,
    session: &S,
    outbox: &Outbox,
    why: Kick,
    settings: &WsSettings,
) -> Ended {
    if let Some(frame) = session.close_frame(why) {
        outbox.push_final(frame);
        let limit = settings.write_timeout.min(Duration::from_secs(2));
        let _ = tokio::time::timeout(limit, writer.write_out(outbox, settings)).await;
    }
    Ended::Kicked(why)
}

/// Who writes the outbox's frames to the socket.
enum Writer<'a> {
    /// The outbox itself (plain TCP): the task only waits for room.
    Direct(&'a TcpStream),
    /// The task, through the writing half (TLS).
    Task(&'a mut WriteHalf<TokioIo<Upgraded>>),
}

impl Writer<'_> {
    /// Writes everything the outbox holds; the end due after it, if any.
    /// `Err` when the socket failed or took nothing for the write timeout.
    async fn write_out(&mut self, outbox: &Outbox, settings: &WsSettings) -> Result<Option<End>, ()> {
        match self {
            Writer::Direct(stream) => loop {
                match outbox.flush() {
                    Flushed::Done(end) => return Ok(end),
                    Flushed::Failed => return Err(()),
                    Flushed::Blocked => match tokio::time::timeout(settings.write_timeout, stream.writable()).await {
                        Ok(Ok(())) => {}
                        _ => return Err(()),
                    },
                }
            },
            Writer::Task(write) => loop {
                let batch = outbox.take(super::WRITE_BATCH_FRAMES);
                let more = batch.frames.len() == super::WRITE_BATCH_FRAMES;
                let work = async {
                    for p in &batch.frames {
                        write.write_all(p.wire()).await?;
                    }
                    write.flush().await
                };
                if !matches!(tokio::time::timeout(settings.write_timeout, work).await, Ok(Ok(()))) {
                    return Err(());
                }
                if batch.end.is_some() || !more {
                    return Ok(batch.end);
                }
            },
        }
    }
}

/// What tungstenite reads from and writes to.
enum Reader<'a> {
    /// The shared TCP socket, after the bytes the HTTP layer read ahead.
    Tcp { stream: &'a TcpStream, early: Bytes },
    /// The reading half of anything else.
    Split(&'a mut ReadHalf<TokioIo<Upgraded>>),
}

/// The socket as tungstenite sees it: reads come from the socket, writes
/// (tungstenite's own control frames) join the outbox's queue, so they
/// never tear a frame the outbox is writing.
struct WsIo<'a> {
    reader: Reader<'a>,
    outbox: &'a Outbox,
}

impl AsyncRead for WsIo<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().reader {
            Reader::Tcp { stream, early } => {
                if !early.is_empty() {
                    let n = early.len().min(buf.remaining());
                    buf.put_slice(&early.split_to(n));
                    return Poll::Ready(Ok(()));
                }
                loop {
                    ready!(stream.poll_read_ready(cx))?;
                    let room = buf.remaining();
                    let unfilled = buf.initialize_unfilled();
                    let mut short = None;
                    // A short read drained the socket (epoll is edge-triggered),
                    // so its readiness is forgotten at once, as tokio's own reads
                    // do, instead of learnt from one more read that fails. It is
                    // reported as WouldBlock from inside `try_io`, which clears
                    // only the readiness seen before the read: data arriving
                    // after it keeps the socket readable.
                    let result = stream.try_io(Interest::READABLE, || {
                        let n = stream.try_read(unfilled)?;
                        if n > 0 && n < room {
                            short = Some(n);
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        Ok(n)
                    });
                    let n = match (result, short) {
                        (_, Some(n)) | (Ok(n), None) => n,
                        (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        (Err(e), None) => return Poll::Ready(Err(e)),
                    };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
            }
            Reader::Split(read) => Pin::new(&mut **read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WsIo<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // Refused only once the connection is closing: nothing more goes then.
        let _ = self.outbox.push_unsequenced(Payload::websocket_control(Bytes::copy_from_slice(buf)));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
