//! The bytes of one frame as the socket sends them, shared by every
//! connection that receives the same event.
//!
//! A payload is kept *pre-framed*: the WebSocket frame header (RFC 6455
//! section 5.2; server frames are never masked) is written once in front of
//! the encoded message, so a delivery to a WebSocket is one `send()` of
//! shared bytes and nothing per connection. Server-Sent Events and Long
//! Polling send the message alone ([`Payload::as_bytes`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::opcode::{self, FIN};

/// The longest frame header: FIN and opcode, 127, a 64-bit length.
const MAX_HEADER: usize = 10;

/// The header of a frame carrying `len` bytes (the first `n` of the
/// array), RFC 6455 section 5.2: the shortest length form that fits.
fn header(opcode: u8, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut head = [0; MAX_HEADER];
    head[0] = FIN | opcode;
    let n = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, n)
}

/// Encoded bytes, already in the form the socket sends. Clones share the
/// buffer (one reference count, no copy).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Payload {
    /// The WebSocket frame: header, then the message.
    wire: Bytes,
    /// Length of the header in `wire`; the message follows it.
    header: u8,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_binary() { "binary" } else { "text" };
        write!(f, "Payload({kind}, {:?})", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl Payload {
    /// Wraps encoded JSON (a text frame).
    #[cfg(test)]
    pub(crate) fn text(s: String) -> Payload {
        Payload::framed(opcode::TEXT, s.as_bytes())
    }

    /// Wraps encoded bytes that must travel as text; `None` if not UTF-8.
    pub(crate) fn text_from_vec(v: Vec<u8>) -> Option<Payload> {
        std::str::from_utf8(&v).ok()?;
        Some(Payload::framed(opcode::TEXT, &v))
    }

    /// Wraps a binary-protocol message (MessagePack: a binary frame), or
    /// a JSON record on a connection whose protocol is binary.
    pub(crate) fn binary(v: &[u8]) -> Payload {
        Payload::framed(opcode::BINARY, v)
    }

    /// The WebSocket Close frame with a status code and no reason.
    pub(crate) fn websocket_close(code: u16) -> Payload {
        Payload::framed(opcode::CLOSE, &code.to_be_bytes())
    }

    /// The answer to the client's Close: its code echoed, or an empty
    /// Close for one that had none (RFC 6455 section 5.5.1).
    pub(crate) fn websocket_close_answer(code: Option<u16>) -> Payload {
        match code {
            Some(code) => Payload::websocket_close(code),
            None => Payload::framed(opcode::CLOSE, &[]),
        }
    }

    /// The Pong answering a client's Ping, with the Ping's bytes.
    pub(crate) fn websocket_pong(data: &[u8]) -> Payload {
        Payload::framed(opcode::PONG, data)
    }

    /// A text frame whose message `write` appends, in place behind room
    /// kept for the header (`capacity`: about the message's length): the
    /// message is written once and never copied behind a header.
    /// `None` if what was written is not UTF-8.
    pub(crate) fn text_written(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Option<Payload> {
        let mut wire = Vec::with_capacity(MAX_HEADER + capacity);
        wire.resize(MAX_HEADER, 0);
        write(&mut wire);
        std::str::from_utf8(&wire[MAX_HEADER..]).ok()?;
        let (head, n) = header(opcode::TEXT, wire.len() - MAX_HEADER);
        let start = MAX_HEADER - n;
        wire[start..MAX_HEADER].copy_from_slice(&head[..n]);
        let mut wire = Bytes::from(wire);
        wire.advance(start);
        Some(Payload { wire, header: n as u8 })
    }

    fn framed(opcode: u8, message: &[u8]) -> Payload {
        let (head, n) = header(opcode, message.len());
        let mut wire = BytesMut::with_capacity(n + message.len());
        wire.put_slice(&head[..n]);
        wire.put_slice(message);
        Payload { wire: wire.freeze(), header: n as u8 }
    }

    /// The message alone, as Server-Sent Events and Long Polling send it.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.wire[usize::from(self.header)..]
    }

    /// The whole WebSocket frame, as a WebSocket sends it.
    pub(crate) fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Whether the frame is binary (a MessagePack message).
    pub(crate) fn is_binary(&self) -> bool {
        self.wire.first().is_some_and(|b| b & opcode::OPCODE_BITS == opcode::BINARY)
    }

    /// Length of the message in bytes (what queue limits count).
    pub(crate) fn len(&self) -> usize {
        self.wire.len() - usize::from(self.header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_rfc_6455_for_each_length_class() {
        let short = Payload::text("ab".into());
        assert_eq!(short.wire(), b"\x81\x02ab");
        assert_eq!((short.as_bytes(), short.len(), short.is_binary()), (&b"ab"[..], 2, false));

        let medium = Payload::binary(&[7u8; 300]);
        assert_eq!(&medium.wire()[..4], &[0x82, 126, 0x01, 0x2c]);
        assert_eq!((medium.len(), medium.is_binary()), (300, true));

        let long = Payload::binary(&vec![1u8; 70_000]);
        assert_eq!(&long.wire()[..10], &[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
        assert_eq!(long.as_bytes().len(), 70_000);

        assert_eq!(Payload::websocket_close(1000).wire(), b"\x88\x02\x03\xe8");
        assert!(Payload::text_from_vec(vec![0xff]).is_none());
    }

    #[test]
    fn a_message_written_in_place_is_the_frame_a_copied_one_is() {
        for len in [0, 1, 125, 126, 300, 65_535, 65_536, 70_000] {
            let message = "x".repeat(len);
            let copied = Payload::text(message.clone());
            // A hint too small or too large changes nothing but the allocation.
            for hint in [0, len, len + 100] {
                let written = Payload::text_written(hint, |out| out.extend_from_slice(message.as_bytes()));
                assert_eq!(written.as_ref(), Some(&copied), "{len} bytes, hint {hint}");
                assert_eq!(written.map(|w| w.len()), Some(len));
            }
        }
        assert!(Payload::text_written(4, |out| out.push(0xff)).is_none());
    }
}
