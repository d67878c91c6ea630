//! The SignalR wire format: negotiate bodies, the handshake, hub messages and
//! their framing.
//!
//! This module knows bytes and serde, nothing else: no sockets, no tokio, no
//! Redis. It could become its own crate the day a fuzzer or a second binary
//! needs it. The specs it follows live in dotnet/aspnetcore under
//! `src/SignalR/docs/specs/` (HubProtocol.md, TransportProtocols.md).

mod error;
mod framing;
mod handshake;
mod json;
mod message;
mod msgpack;
mod negotiate;

pub use error::Error;
pub use framing::{Framer, LengthBuffer, RecordBuffer, RECORD_SEPARATOR};
pub use handshake::{HandshakeRequest, HandshakeResponse};
pub use message::{CloseMessage, Completion, HubMessage, Invocation};
pub use negotiate::{AvailableTransport, NegotiateResponse, TransferFormat, TransportKind};

/// An argument that writes itself as JSON text into an invocation, where
/// serializing would not do: a publisher's payload is spliced in as the
/// checked text it came as, not parsed and written again.
pub trait WriteJson {
    /// Appends this argument's JSON text to `out`.
    fn write_json(&self, out: &mut Vec<u8>);

    /// About how many bytes `write_json` appends, so the frame's buffer is
    /// sized once instead of grown while a payload is copied in.
    fn json_len_hint(&self) -> usize {
        16
    }
}

/// A hub protocol the sidecar speaks. Each one has its own encoding of every
/// message, and each event is encoded once per protocol in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `{"protocol":"json","version":1}`: text frames, records end with 0x1E.
    Json,
    /// `{"protocol":"messagepack","version":1}`: binary frames, VarInt length prefixes.
    MessagePack,
}

impl Protocol {
    /// Every protocol, in slot order (see [`Protocol::slot`]).
    pub const ALL: [Protocol; 2] = [Protocol::Json, Protocol::MessagePack];

    /// The protocol a handshake names, if the sidecar speaks it at that
    /// version. Names match in any case (ASP.NET Core's protocol resolver
    /// compares them so). Version 2 adds Ack and Sequence (stateful
    /// reconnect); the encoding of every other message is the same. Any
    /// version up to the server's is accepted, as ASP.NET Core's
    /// `IsVersionSupported` does (`version <= Version`): clients of the 1.x
    /// era send 0.
    pub fn from_handshake(name: &str, version: u32) -> Result<Protocol, Error> {
        let protocol = Protocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| Error::UnknownProtocol { name: name.to_string() })?;
        if version > 2 {
            return Err(Error::UnsupportedVersion { name: name.to_string(), version });
        }
        Ok(protocol)
    }

    /// The name a handshake gives it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::MessagePack => "messagepack",
        }
    }

    /// A small dense index, so per-protocol encodings can live in an array.
    pub fn slot(self) -> usize {
        match self {
            Protocol::Json => 0,
            Protocol::MessagePack => 1,
        }
    }

    /// Whether the transport must carry this protocol in binary frames.
    pub fn is_binary(self) -> bool {
        matches!(self, Protocol::MessagePack)
    }

    /// The framing that splits this protocol's messages, refusing any longer than `limit`.
    pub fn framer(self, limit: usize) -> Framer {
        match self {
            Protocol::Json => Framer::Records(RecordBuffer::new(limit)),
            Protocol::MessagePack => Framer::Lengths(LengthBuffer::new(limit)),
        }
    }

    /// Decodes one record (already split off by the protocol's framing).
    pub fn decode(self, record: &[u8]) -> Result<HubMessage, Error> {
        match self {
            Protocol::Json => json::decode(record),
            Protocol::MessagePack => msgpack::decode(record),
        }
    }

    /// Encodes a server-to-client Invocation, serializing each argument once.
    pub fn encode_invocation<A: serde::Serialize>(self, target: &str, arguments: &[A]) -> Vec<u8> {
        match self {
            Protocol::Json => json::encode_invocation(target, arguments),
            Protocol::MessagePack => msgpack::encode_invocation(target, arguments),
        }
    }

    /// Appends a server-to-client invocation in JSON to `out`, from
    /// arguments that write their own text (a publisher's payload goes out
    /// as the bytes it came in). Appending lets the caller keep room in
    /// front of it: a WebSocket frame's header, written once the length is
    /// known, so the message is not copied behind a header afterwards.
    pub fn write_json_invocation<A: WriteJson>(out: &mut Vec<u8>, target: &str, arguments: &[A]) {
        json::write_invocation(out, target, arguments);
    }

    /// About how long that invocation is, to size its buffer once.
    pub fn json_invocation_len_hint<A: WriteJson>(target: &str, arguments: &[A]) -> usize {
        48 + target.len() + arguments.iter().map(|a| a.json_len_hint() + 1).sum::<usize>()
    }

    /// Encodes any message the server sends (Completion, Ping, Close, ...).
    pub fn encode(self, message: &HubMessage) -> Vec<u8> {
        match self {
            Protocol::Json => json::encode(message),
            Protocol::MessagePack => msgpack::encode(message),
        }
    }
}
