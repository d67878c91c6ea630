//! `codec::Error`: what can be wrong with bytes a client sent.

/// A client sent something the SignalR protocol does not allow. Every variant
/// is the client's fault; the hub turns it into a Close with the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not JSON, or not the JSON shape of a hub message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message's `type` is not one this protocol defines (perhaps one
    /// of a later version): the hub ignores the message.
    #[error("unknown message type {0}")]
    UnknownType(i64),
    /// An invocation whose arguments cannot be bound to values the hub
    /// reads (in MessagePack: binary data, an extension type, a map keyed
    /// by numbers). ASP.NET Core's `InvocationBindingFailureMessage`: the
    /// hub answers it with a Completion error and the connection goes on.
    #[error("the arguments of '{target}' cannot be bound: {reason}")]
    Binding {
        /// The invocation's id; `None` for a non-blocking call.
        invocation_id: Option<String>,
        /// The method the client named.
        target: String,
        /// What could not be read, for the log.
        reason: String,
    },
    /// A record grew past the configured maximum before its separator came.
    #[error("message larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The handshake named a protocol the sidecar does not speak.
    #[error("the protocol '{name}' is not supported")]
    UnknownProtocol {
        /// The protocol name from the handshake.
        name: String,
    },
    /// The handshake named a version newer than the sidecar's.
    #[error("version {version} of the '{name}' protocol is not supported")]
    UnsupportedVersion {
        /// The protocol name from the handshake, as the client wrote it.
        name: String,
        /// The version from the handshake.
        version: u32,
    },
}
