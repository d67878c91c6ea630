//! The client's WebSocket frames (RFC 6455 section 5), parsed without a
//! WebSocket library: clients send little (a handshake, a few invocations,
//! a ping every 15 seconds) and most connections sit idle for hours, so
//! between frames a connection holds no read buffer at all. Bytes are kept
//! only while a frame is incomplete, and a message only while it arrives in
//! pieces. This knows bytes and frames, not sockets: the transport feeds it
//! what it read.

use crate::transport::opcode::{BINARY, CLOSE, CONTINUATION, FIN, OPCODE_BITS, PING, PONG, TEXT};

/// Largest payload of a control frame (section 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What the client sent, one whole frame or message at a time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientFrame {
    /// A whole data message, its fragments joined; text is valid UTF-8.
    Message(Vec<u8>),
    /// A Ping, answered with a Pong carrying the same bytes.
    Ping(Vec<u8>),
    /// A Pong (an answer to nothing the server sent, or a heartbeat).
    Pong,
    /// The client's Close, with its status code when it gave one.
    Close(Option<u16>),
}

/// Bytes that are not a valid client frame: the connection ends with the
/// Close code each names (as ASP.NET Core's WebSocket ends it).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// A rule of RFC 6455 was broken (Close 1002).
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or a Close reason that is not UTF-8 (Close 1007).
    #[error("websocket text is not valid UTF-8")]
    InvalidUtf8,
    /// A frame or message larger than the limit (the hub's Close, then 1000).
    #[error("websocket message of {size} bytes is over the limit of {limit}")]
    TooLong {
        /// Its size (so far, for a message in pieces).
        size: u64,
        /// The limit.
        limit: usize,
    },
}

impl FrameError {
    /// The WebSocket Close code the server ends with.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            FrameError::Protocol(_) => 1002,
            FrameError::InvalidUtf8 => 1007,
            FrameError::TooLong { .. } => 1009,
        }
    }
}

/// One frame's header.
#[derive(Debug)]
struct Head {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes, up to the payload.
    len: usize,
    /// Payload bytes.
    payload: usize,
}

/// Turns the bytes read from one client into frames.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// Bytes read that do not yet make a whole frame; unallocated between
    /// frames.
    pending: Vec<u8>,
    /// A message arriving in pieces: its bytes so far, and whether it is
    /// text. `None` between messages.
    fragments: Option<(Vec<u8>, bool)>,
    /// Largest frame and message.
    limit: usize,
}

impl FrameReader {
    /// A reader for messages of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> FrameReader {
        FrameReader { pending: Vec::new(), fragments: None, limit }
    }

    /// Where the next read goes: `chunk` bytes of room at the end of what
    /// is pending (allocated for the read, released once it is parsed).
    pub(crate) fn buffer(&mut self, chunk: usize) -> &mut Vec<u8> {
        self.pending.reserve(chunk);
        &mut self.pending
    }

    /// Adds bytes read elsewhere (what the HTTP layer read past the upgrade).
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next frame in what was read, `None` until a whole one is there.
    /// After an error the connection is over: call it no more.
    pub(crate) fn next_frame(&mut self) -> Result<Option<ClientFrame>, FrameError> {
        loop {
            let Some(head) = parse_head(&self.pending, self.limit)? else {
                self.release();
                return Ok(None);
            };
            let end = head.len + head.payload;
            if self.pending.len() < end {
                return Ok(None);
            }
            let mut payload = self.pending[head.len..end].to_vec();
            unmask(&mut payload, head.mask);
            self.pending.drain(..end);
            self.release();
            if let Some(frame) = self.frame(&head, payload)? {
                return Ok(Some(frame));
            }
        }
    }

    /// Frees the room made for a read when nothing is pending: a waiting
    /// connection holds no buffer.
    pub(crate) fn release(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = Vec::new();
        }
    }

    /// What one whole frame amounts to: `None` for a piece of a message.
    fn frame(&mut self, head: &Head, payload: Vec<u8>) -> Result<Option<ClientFrame>, FrameError> {
        match head.opcode {
            TEXT | BINARY => {
                if self.fragments.is_some() {
                    return Err(FrameError::Protocol("a new message began before the previous one ended"));
                }
                let text = head.opcode == TEXT;
                if head.fin {
                    return message(payload, text).map(Some);
                }
                self.fragments = Some((payload, text));
                Ok(None)
            }
            CONTINUATION => {
                let Some((so_far, text)) = self.fragments.as_mut() else {
                    return Err(FrameError::Protocol("a continuation frame with no message to continue"));
                };
                let size = so_far.len() + payload.len();
                if size > self.limit {
                    return Err(FrameError::TooLong { size: size as u64, limit: self.limit });
                }
                so_far.extend_from_slice(&payload);
                let text = *text;
                if !head.fin {
                    return Ok(None);
                }
                let (whole, _) = self.fragments.take().unwrap_or_default();
                message(whole, text).map(Some)
            }
            PING => Ok(Some(ClientFrame::Ping(payload))),
            PONG => Ok(Some(ClientFrame::Pong)),
            CLOSE => close(&payload).map(Some),
            _ => Err(FrameError::Protocol("unknown opcode")),
        }
    }
}

fn message(bytes: Vec<u8>, text: bool) -> Result<ClientFrame, FrameError> {
    if text && std::str::from_utf8(&bytes).is_err() {
        return Err(FrameError::InvalidUtf8);
    }
    Ok(ClientFrame::Message(bytes))
}

/// A Close frame's body: nothing, or a code and a UTF-8 reason.
fn close(payload: &[u8]) -> Result<ClientFrame, FrameError> {
    match payload {
        [] => Ok(ClientFrame::Close(None)),
        [_] => Err(FrameError::Protocol("a close frame with a one-byte body")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // Codes a peer may send (section 7.4): 1004-1006 and 1015 are
            // reserved, under 1000 and from 5000 unused.
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(FrameError::Protocol("a close frame with a reserved or invalid code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::InvalidUtf8);
            }
            Ok(ClientFrame::Close(Some(code)))
        }
    }
}

/// The header at the start of `b`, `None` while it is incomplete. Every
/// check that needs only the header is made here, so an oversized frame is
/// refused before its payload is waited for.
fn parse_head(b: &[u8], limit: usize) -> Result<Option<Head>, FrameError> {
    let [b0, b1, ..] = *b else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set, and no extension was negotiated"));
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("a client frame that is not masked"));
    }
    let (fin, opcode) = (b0 & FIN != 0, b0 & OPCODE_BITS);
    let (payload, at) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(&[hi, lo]) => (u64::from(u16::from_be_bytes([hi, lo])), 4),
            _ => return Ok(None),
        },
        127 => match b.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            Some(bytes) => (u64::from_be_bytes(bytes), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    match opcode {
        CONTINUATION | TEXT | BINARY => {}
        CLOSE | PING | PONG => {
            if !fin {
                return Err(FrameError::Protocol("a fragmented control frame"));
            }
            if payload > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::Protocol("a control frame over 125 bytes"));
            }
        }
        _ => return Err(FrameError::Protocol("unknown opcode")),
    }
    if payload > limit as u64 {
        return Err(FrameError::TooLong { size: payload, limit });
    }
    let Some(&[m0, m1, m2, m3]) = b.get(at..at + 4) else { return Ok(None) };
    // Fits: not over `limit`, a usize.
    Ok(Some(Head { fin, opcode, mask: [m0, m1, m2, m3], len: at + 4, payload: payload as usize }))
}

/// Client payloads are XORed with the frame's mask (section 5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
