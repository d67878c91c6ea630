//! Hub messages (HubProtocol.md), independent of their encoding.

use serde_json::Value;

/// One hub message, in either direction.
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// Type 1: call a method (client to server, or server to client).
    Invocation(Invocation),
    /// Type 2: one item of a stream; the sidecar offers no streaming methods.
    StreamItem {
        /// The stream's invocation id.
        invocation_id: String,
    },
    /// Type 3: the result of a blocking invocation.
    Completion(Completion),
    /// Type 4: start a server-to-client stream; refused with a Completion error.
    StreamInvocation(Invocation),
    /// Type 5: cancel a stream.
    CancelInvocation {
        /// The stream's invocation id.
        invocation_id: String,
    },
    /// Type 6: keep-alive.
    Ping,
    /// Type 7: the sender is closing the connection.
    Close(CloseMessage),
    /// Type 8: stateful reconnect, "I have everything up to this sequence id".
    Ack {
        /// The last sequence id received.
        sequence_id: u64,
    },
    /// Type 9: stateful reconnect, "the next message has this sequence id".
    Sequence {
        /// The sequence id of the next message.
        sequence_id: u64,
    },
}

impl HubMessage {
    /// Whether this message counts toward the stateful-reconnect sequence
    /// (HubProtocol.md: invocations, stream items, completions and cancels do;
    /// pings, closes, acks and sequences do not).
    pub fn is_sequenced(&self) -> bool {
        !matches!(self, HubMessage::Ping | HubMessage::Close(_) | HubMessage::Ack { .. } | HubMessage::Sequence { .. })
    }
}

/// A method call: `target(arguments...)`, blocking when it has an id.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Present when the caller waits for a Completion.
    pub invocation_id: Option<String>,
    /// The method name.
    pub target: String,
    /// The arguments, in order.
    pub arguments: Vec<Value>,
    /// Ids of client-to-server streams passed as arguments (unsupported).
    pub stream_ids: Vec<String>,
}

/// The answer to a blocking invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The invocation this answers.
    pub invocation_id: String,
    /// `Ok(value)` for a result (`Value::Null` for void), `Err(message)` for an error.
    pub outcome: Result<Value, String>,
}

/// Why a connection is closing, and whether the client should come back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CloseMessage {
    /// A plain message for the client; absent for a normal close.
    pub error: Option<String>,
    /// True when the client's automatic reconnect should try again.
    pub allow_reconnect: bool,
}
