//! The single mapping from why a connection ends to the SignalR Close the
//! client sees, and whether its automatic reconnect should try again, and
//! to the reason it is counted and logged with; from
//! why a handshake fails to the handshake answer; and from why an
//! invocation failed to its Completion's error.

use crate::codec::{CloseMessage, Error as CodecError, Protocol};
use crate::telemetry::labels::DisconnectReason;
use crate::transport::{Ended, Kick};

/// The `reason` of `sidecar_disconnects` for how a connection ended.
pub(super) fn disconnect_reason(ended: Ended) -> DisconnectReason {
    use DisconnectReason as R;
    match ended {
        Ended::ByClient => R::Client,
        Ended::BySession => R::Session,
        Ended::WriteFailed => R::WriteFailed,
        Ended::Kicked(Kick::SlowConsumer) => R::SlowConsumer,
        Ended::Kicked(Kick::ClientTimeout) => R::ClientTimeout,
        Ended::Kicked(Kick::ServerShutdown) => R::Shutdown,
        Ended::Kicked(Kick::TokenExpired) => R::TokenExpired,
        Ended::Kicked(Kick::MessageTooLarge) => R::MessageTooLarge,
        Ended::Kicked(Kick::HandshakeTimeout) => R::HandshakeTimeout,
        Ended::Kicked(Kick::ContinuityLost) => R::Continuity,
        Ended::Kicked(Kick::Handoff) => R::Handoff,
        Ended::Kicked(Kick::Inactive) => R::Inactivity,
        // Its client left that socket for another (it parks, normally).
        Ended::Kicked(Kick::Superseded) => R::Client,
    }
}

/// A Close for a connection kicked from outside, or `None` where the
/// protocol allows no message (before the handshake completed).
pub(super) fn for_kick(why: Kick) -> Option<CloseMessage> {
    let (error, allow_reconnect) = match why {
        Kick::SlowConsumer => {
            ("Connection closed: the client did not read its messages fast enough.".to_string(), true)
        }
        // ASP.NET Core aborts with an OperationCanceledException ("Client
        // hasn't sent a message/ping ..."), which the Close shows only as its
        // generic text, with a reconnect allowed.
        Kick::ClientTimeout => (CLOSED_WITH_AN_ERROR.to_string(), true),
        // Nothing failed: ASP.NET Core's Close carries no error then, and
        // clients that treat any error as fatal still reconnect. Token expiry
        // is ASP.NET Core's CloseOnAuthenticationExpiration: a close request
        // that allows a reconnect, without an error.
        Kick::ServerShutdown | Kick::ContinuityLost | Kick::TokenExpired => {
            return Some(CloseMessage { error: None, allow_reconnect: true })
        }
        Kick::MessageTooLarge => (CLOSED_WITH_AN_ERROR.to_string(), true),
        // A session timeout (seed 003 FR-035), the sidecar's own: reconnecting
        // on its own would undo it, so the client stops, and the error says
        // why, for the app to show with a way to connect again.
        Kick::Inactive => ("Connection closed after a period of inactivity (session timeout).".to_string(), false),
        // The client must see a dropped socket, not a Close, to resume.
        Kick::HandshakeTimeout | Kick::Handoff | Kick::Superseded => return None,
    };
    Some(CloseMessage { error: Some(error), allow_reconnect })
}

/// ASP.NET Core's Close text for any failure while reading the client's
/// messages, and for the client timeout. It adds the exception's detail only with `EnableDetailedErrors`
/// (off by default); the sidecar keeps the detail in its log.
const CLOSED_WITH_AN_ERROR: &str = "Connection closed with an error.";

/// A Close for a message the client should never have sent (malformed,
/// too large). ASP.NET Core allows a reconnect here: only a Close or an
/// abort from the client forbids it.
pub(super) fn for_protocol_error(_e: &CodecError) -> CloseMessage {
    CloseMessage { error: Some(CLOSED_WITH_AN_ERROR.to_string()), allow_reconnect: true }
}

/// A Close for a `Sequence` the two sides cannot agree on: the client
/// starts a new connection rather than a resume.
pub(super) fn for_sequence_error(_e: &super::reconnect::SequenceError) -> CloseMessage {
    CloseMessage { error: Some(CLOSED_WITH_AN_ERROR.to_string()), allow_reconnect: true }
}

/// A Close for an `Ack` of a message the server never sent (the session
/// logs which).
pub(super) fn for_ack_error(_sequence_id: u64) -> CloseMessage {
    CloseMessage { error: Some(CLOSED_WITH_AN_ERROR.to_string()), allow_reconnect: true }
}

/// ASP.NET Core's handshake answer when the handshake did not arrive in
/// time or grew past the message limit.
pub(super) const HANDSHAKE_CANCELED: &str = "Handshake was canceled.";

/// The handshake answer for a handshake that cannot be accepted, in ASP.NET
/// Core's words (`HubConnectionContext.HandshakeAsync`); a malformed one
/// gets only the generic text, the detail stays in the log.
pub(super) fn for_handshake_error(e: &CodecError) -> String {
    match e {
        CodecError::UnknownProtocol { name } => format!("The protocol '{name}' is not supported."),
        CodecError::UnsupportedVersion { name, version } => {
            format!("The server does not support version {version} of the '{name}' protocol.")
        }
        CodecError::TooLarge { .. } => HANDSHAKE_CANCELED.to_string(),
        CodecError::Malformed(_) | CodecError::UnknownType(_) | CodecError::Binding { .. } => {
            "An unexpected error occurred during connection handshake.".to_string()
        }
    }
}

/// The handshake answer for a binary protocol on a text-only transport
/// (MessagePack over Server-Sent Events).
pub(super) fn for_transfer_format(protocol: Protocol) -> String {
    format!(
        "Cannot use the '{}' protocol on the current transport. The transport does not support 'Binary' transfer format.",
        protocol.name()
    )
}

/// The Completion error for a failed invocation of `target` (as the client
/// wrote it), in ASP.NET Core's words (`DefaultHubDispatcher` and
/// `ErrorMessageHelper`): an unknown method is a binding failure; every
/// other refusal is what a hub method throwing a `HubException` gets (its
/// message is shown); a failure of the server itself shows no detail.
pub(super) fn for_invocation_error(target: &str, e: &super::Error) -> String {
    use super::Error;
    match e {
        Error::UnknownMethod(_) => {
            format!("Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist.")
        }
        Error::Publish(_) | Error::Presence(_) | Error::Push(crate::push::Error::Redis(_)) => {
            format!("An unexpected error occurred invoking '{target}' on the server.")
        }
        Error::BadArguments(_)
        | Error::StreamingUnsupported(_)
        | Error::Denied(_)
        | Error::Limited(_)
        | Error::Push(_) => {
            format!("An unexpected error occurred invoking '{target}' on the server. HubException: {e}")
        }
    }
}

/// The Completion error for an invocation whose arguments could not be
/// bound, in ASP.NET Core's words (`ProcessInvocationBindingFailure`
/// without detailed errors). Its binder looks the method up before it reads
/// the arguments, so an unknown method is reported as such.
pub(super) fn for_binding_failure(target: &str, method_exists: bool) -> String {
    if method_exists {
        format!("Failed to invoke '{target}' due to an error on the server.")
    } else {
        for_invocation_error(target, &super::Error::UnknownMethod(target.to_string()))
    }
}

/// The Completion error for a StreamInvocation: no server method streams.
pub(super) fn for_stream_invocation(target: &str, method_exists: bool) -> String {
    if method_exists {
        format!("The client attempted to invoke the non-streaming '{target}' method with a streaming invocation.")
    } else {
        for_invocation_error(target, &super::Error::UnknownMethod(target.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_errors_read_as_aspnet_cores() {
        let unknown = super::super::Error::UnknownMethod("Nope".into());
        assert_eq!(
            for_invocation_error("Nope", &unknown),
            "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."
        );
        let bad = super::super::Error::BadArguments("JoinRoom expects one argument".into());
        assert_eq!(
            for_invocation_error("joinRoom", &bad),
            "An unexpected error occurred invoking 'joinRoom' on the server. HubException: JoinRoom expects one argument"
        );
        assert_eq!(
            for_stream_invocation("JoinRoom", true),
            "The client attempted to invoke the non-streaming 'JoinRoom' method with a streaming invocation."
        );
    }
}
