//! WebSocket opcodes and header bits (RFC 6455 section 5.2), for the frames
//! the server writes (`payload.rs`) and the client frames it parses
//! (`websocket/frames.rs`).

pub(super) const CONTINUATION: u8 = 0x0;
pub(super) const TEXT: u8 = 0x1;
pub(super) const BINARY: u8 = 0x2;
pub(super) const CLOSE: u8 = 0x8;
pub(super) const PING: u8 = 0x9;
pub(super) const PONG: u8 = 0xA;
/// The first byte's FIN bit: the last (for the server, the only) frame of a message.
pub(super) const FIN: u8 = 0x80;
/// The opcode's bits in the first byte.
pub(super) const OPCODE_BITS: u8 = 0x0f;
