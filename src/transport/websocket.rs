//! The WebSocket transport. Frames go out pre-framed ([`Payload::wire`]):
//! on a plain TCP socket the outbox writes them itself, from whoever pushes
//! them (one `send()` per delivery, no task woken), and the connection's
//! task only reads client frames and finishes what the socket would not
//! take at once. Over TLS the task writes what the outbox queues.
//! Client frames are parsed here ([`frames`]), so an idle connection holds
//! no read buffer; what the WebSocket layer answers itself (a Pong, the
//! answer to a Close) goes through the outbox too, so frames are never
//! interleaved.

mod frames;

use std::io;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::Interest;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use self::frames::{ClientFrame, FrameError, FrameReader};
use super::outbox::Flushed;
use super::{End, Ended, Error, Flow, Kick, Outbox, Payload, Session};

/// WebSocket close codes ASP.NET Core's `WebSocketsServerTransport` ends
/// with: 1000 (normal closure), 1011 only when sending failed. A close
/// frame without a code reaches clients as 1005, which the JavaScript client
/// reports as an error and the .NET client throws on.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_ERROR: u16 = 1011;

/// WebSocket settings taken from the server configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WsSettings {
    /// Bytes one read takes from the socket at most: the buffer exists
    /// only while a read is parsed, never while a connection waits.
    pub read_buffer_bytes: usize,
    /// Largest WebSocket message. It may carry many hub messages (the .NET
    /// and Java clients send what they have buffered in one), each held to
    /// the hub message limit by the session's framing, as ASP.NET Core
    /// limits hub messages and not WebSocket messages; this only bounds
    /// what one message may make the reader buffer.
    pub max_transport_message_bytes: usize,
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
    let (mut client, mut writer) = ClientFrames::attach(socket, session, outbox, settings);
    let ended = serve(&mut client, &mut writer, session, outbox, settings).await;
    // A session handed to another instance, or resumed on a new socket,
    // ends with the socket dropped, no close frame: that is what makes
    // every client resume. A client that closed has had its Close answered
    // already.
    if !matches!(ended, Ended::Kicked(Kick::Handoff | Kick::Superseded) | Ended::ByClient) {
        let code = if ended == Ended::WriteFailed { CLOSE_ERROR } else { CLOSE_NORMAL };
        outbox.push_final(Payload::websocket_close(code));
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), writer.write_out(outbox, settings))).await;
    }
    outbox.detach();
    ended
}

async fn serve<S: Session>(
    client: &mut ClientFrames<'_>,
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
        if let Some(ended) = Box::pin(until_open(client, writer, session, outbox, settings)).await {
            return ended;
        }
    }
    loop {
        // Reading is cancel-safe: what a read took is in `client.frames`
        // before the read returns, whichever branch wins.
        let step = tokio::select! {
            biased;
            _ = outbox.ready() => Box::pin(drain(writer, session, outbox, settings)).await,
            frame = std::future::poll_fn(|cx| client.poll_next(cx)) => {
                Box::pin(on_frame(writer, session, outbox, settings, frame)).await
            }
        };
        if let Some(ended) = step {
            return ended;
        }
    }
}

/// The connection until its handshake is done, with the handshake's
/// deadline; `Some` if it ended before that.
async fn until_open<S: Session>(
    client: &mut ClientFrames<'_>,
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
            frame = std::future::poll_fn(|cx| client.poll_next(cx)) => {
                on_frame(writer, session, outbox, settings, frame).await
            }
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
async fn on_frame<S: Session>(
    writer: &mut Writer<'_>,
    session: &mut S,
    outbox: &Outbox,
    settings: &WsSettings,
    frame: Option<Result<ClientFrame, ReadError>>,
) -> Option<Ended> {
    let flow = match frame {
        Some(Ok(ClientFrame::Message(message))) => session.receive(&message).await,
        Some(Ok(ClientFrame::Ping(data))) => {
            // Refused only once the connection is closing: nothing more goes then.
            let _ = outbox.push_unsequenced(Payload::websocket_pong(&data));
            return None;
        }
        Some(Ok(ClientFrame::Pong)) => return None,
        Some(Ok(ClientFrame::Close(code))) => {
            // The closing handshake: the client's code echoed (section 5.5.1).
            send_last(writer, outbox, settings, Payload::websocket_close_answer(code)).await;
            return Some(Ended::ByClient);
        }
        None => return Some(Ended::ByClient),
        Some(Err(ReadError::Frame(FrameError::TooLong { .. }))) => {
            return Some(kicked(writer, session, outbox, Kick::MessageTooLarge, settings).await);
        }
        Some(Err(ReadError::Frame(e))) => {
            tracing::debug!(error = %e, "websocket frame refused: connection closed");
            send_last(writer, outbox, settings, Payload::websocket_close(e.close_code())).await;
            return Some(Ended::ByClient);
        }
        Some(Err(ReadError::Io(e))) => {
            tracing::debug!(error = %e, "websocket read failed");
            return Some(Ended::ByClient);
        }
    };
    if flow == Flow::Stop {
        outbox.finish();
    }
    None
}

/// Sends a frame of the WebSocket layer's own after which the connection
/// ends (the answer to the client's Close, or a Close for broken framing),
/// within a second.
async fn send_last(writer: &mut Writer<'_>, outbox: &Outbox, settings: &WsSettings, frame: Payload) {
    let _ = outbox.push_unsequenced(frame);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.write_out(outbox, settings)).await;
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

/// Why no frame came from the client.
#[derive(Debug)]
enum ReadError {
    /// The socket failed.
    Io(io::Error),
    /// The bytes were not a valid client frame.
    Frame(FrameError),
}

/// Where the client's bytes come from.
enum Source<'a> {
    /// The shared TCP socket.
    Tcp(&'a TcpStream),
    /// The reading half of anything else.
    Split(&'a mut ReadHalf<TokioIo<Upgraded>>),
}

/// The client's side of the connection: its socket and the frames its
/// bytes make.
struct ClientFrames<'a> {
    source: Source<'a>,
    frames: FrameReader,
    /// Bytes one read takes at most.
    chunk: usize,
}

impl<'a> ClientFrames<'a> {
    /// Gives the outbox the socket (and the session's first frames) and
    /// takes the socket's reading side. A plain function, so that nothing
    /// of it stays in the connection's future but its result.
    fn attach<S: Session>(
        socket: &'a mut WsSocket,
        session: &mut S,
        outbox: &Outbox,
        settings: &WsSettings,
    ) -> (ClientFrames<'a>, Writer<'a>) {
        let mut frames = FrameReader::new(settings.max_transport_message_bytes);
        let (source, writer) = match socket {
            WsSocket::Tcp { stream, early } => {
                outbox.attach(Some(stream.clone()), session.first_frames());
                frames.feed(&std::mem::take(early));
                let stream: &TcpStream = stream;
                (Source::Tcp(stream), Writer::Direct(stream))
            }
            WsSocket::Split { read, write } => {
                outbox.attach(None, session.first_frames());
                (Source::Split(read), Writer::Task(write))
            }
        };
        (ClientFrames { source, frames, chunk: settings.read_buffer_bytes }, writer)
    }

    /// The client's next frame; `None` once it closed the socket. A read
    /// buffer exists only from the moment the socket is readable until
    /// what it held is parsed: a waiting connection holds none.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ClientFrame, ReadError>>> {
        loop {
            match self.frames.next_frame() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(ReadError::Frame(e)))),
            }
            match ready!(self.poll_read(cx)) {
                Ok(0) => return Poll::Ready(None),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(ReadError::Io(e)))),
            }
        }
    }

    /// Reads what the socket has into the frame reader: the byte count,
    /// 0 at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match &mut self.source {
            Source::Tcp(stream) => loop {
                ready!(stream.poll_read_ready(cx))?;
                let buf = self.frames.buffer(self.chunk);
                let room = buf.capacity() - buf.len();
                let mut short = None;
                // A short read drained the socket (epoll is edge-triggered),
                // so its readiness is forgotten at once, as tokio's own reads
                // do, instead of learnt from one more read that fails. It is
                // reported as WouldBlock from inside `try_io`, which clears
                // only the readiness seen before the read: data arriving
                // after it keeps the socket readable.
                let result = stream.try_io(Interest::READABLE, || {
                    let n = stream.try_read_buf(buf)?;
                    if n > 0 && n < room {
                        short = Some(n);
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(n)
                });
                match (result, short) {
                    (_, Some(n)) | (Ok(n), None) => return Poll::Ready(Ok(n)),
                    (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => self.frames.release(),
                    (Err(e), None) => return Poll::Ready(Err(e)),
                }
            },
            Source::Split(read) => {
                let buf = self.frames.buffer(self.chunk);
                let polled = tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut **read), cx, buf);
                if polled.is_pending() {
                    self.frames.release();
                }
                polled
            }
        }
    }
}
