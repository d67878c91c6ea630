//! The single mapping from why a connection ends to the SignalR Close the
//! client sees, and whether its automatic reconnect should try again.

use crate::codec::{CloseMessage, Error as CodecError};
use crate::transport::Kick;

/// A Close for a connection kicked from outside, or `None` where the
/// protocol allows no message (before the handshake completed).
pub fn for_kick(why: Kick, max_message_bytes: usize) -> Option<CloseMessage> {
    let (error, allow_reconnect) = match why {
        Kick::SlowConsumer => {
            ("Connection closed: the client did not read its messages fast enough.".to_string(), true)
        }
        Kick::ClientTimeout => {
            ("Server timeout elapsed without receiving a message from the client.".to_string(), true)
        }
        // Nothing failed: ASP.NET Core's Close carries no error then, and
        // clients that treat any error as fatal still reconnect.
        Kick::ServerShutdown | Kick::ContinuityLost => {
            return Some(CloseMessage { error: None, allow_reconnect: true })
        }
        Kick::TokenExpired => ("The access token expired.".to_string(), true),
        Kick::MessageTooLarge => (format!("Message larger than the limit of {max_message_bytes} bytes."), false),
        // The client must see a dropped socket, not a Close, to resume.
        Kick::HandshakeTimeout | Kick::Handoff => return None,
    };
    Some(CloseMessage { error: Some(error), allow_reconnect })
}

/// A Close for a message the client should never have sent.
pub fn for_protocol_error(e: &CodecError) -> CloseMessage {
    CloseMessage { error: Some(format!("Connection closed with an error: {e}")), allow_reconnect: false }
}

/// A Close for a `Sequence` the two sides cannot agree on. ASP.NET Core
/// allows a reconnect here (only an abort forbids it): the client starts a
/// new connection rather than a resume.
pub fn for_sequence_error(e: &super::reconnect::SequenceError) -> CloseMessage {
    CloseMessage { error: Some(format!("Connection closed with an error: {e}")), allow_reconnect: true }
}

/// A Close for an `Ack` of a message the server never sent.
pub fn for_ack_error(sequence_id: u64) -> CloseMessage {
    CloseMessage {
        error: Some(format!("Connection closed with an error: Ack {sequence_id} names a message never sent.")),
        allow_reconnect: true,
    }
}
