//! The bytes of one frame as the socket sends them, shared by every
//! connection that receives the same event.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Encoded bytes, already in the form the socket sends. Text is kept as
/// `Utf8Bytes` so each connection's WebSocket frame is built without
/// checking the UTF-8 again; clones share the buffer.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    /// A text-protocol record (JSON).
    Text(Utf8Bytes),
    /// A binary-protocol message (MessagePack).
    Binary(Bytes),
}

impl Payload {
    /// Wraps encoded JSON.
    pub(crate) fn text(s: String) -> Payload {
        Payload::Text(Utf8Bytes::from(s))
    }

    /// Wraps encoded bytes that must travel as text; `None` if not UTF-8.
    pub(crate) fn text_from_vec(v: Vec<u8>) -> Option<Payload> {
        String::from_utf8(v).ok().map(Payload::text)
    }

    /// The bytes as they go on the wire.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Text(t) => t.as_ref(),
            Payload::Binary(b) => b,
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.as_bytes().len()
    }
}
