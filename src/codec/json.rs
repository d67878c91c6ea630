//! The JSON hub protocol: one JSON object per record.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::{CloseMessage, Completion, Error, HubMessage, Invocation, RECORD_SEPARATOR};

/// Every field any message type may carry; unknown fields (such as
/// `headers`) are ignored, as the spec asks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(rename = "type")]
    kind: i64,
    invocation_id: Option<String>,
    target: Option<String>,
    arguments: Option<Vec<Value>>,
    stream_ids: Option<Vec<String>>,
    error: Option<String>,
    result: Option<Value>,
    allow_reconnect: Option<bool>,
    sequence_id: Option<u64>,
}

/// Parses a JSON object (a hub message, a handshake) as ASP.NET Core's
/// readers do when a key repeats: the last of each counts (serde's derive
/// refuses a repeated field). The second parse runs only after the first
/// failed, so well-formed records never pay for it, and a record it
/// cannot read either keeps the first parse's error.
pub(super) fn from_object<T: DeserializeOwned>(record: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(record).or_else(|first| {
        serde_json::from_slice::<serde_json::Map<String, Value>>(record)
            .and_then(|fields| T::deserialize(Value::Object(fields)))
            .map_err(|_| first)
    })
}

/// Decodes one record (without its separator).
pub(super) fn decode(record: &[u8]) -> Result<HubMessage, Error> {
    let wire: Wire = from_object(record).map_err(|e| Error::Malformed(e.to_string()))?;
    let id = |w: &Wire| {
        w.invocation_id
            .clone()
            .ok_or_else(|| Error::Malformed(format!("message type {} needs an invocationId", w.kind)))
    };
    // As ASP.NET Core's JsonHubProtocol binds them: `arguments` is required,
    // an empty invocationId is a non-blocking call (no Completion), and a
    // stream invocation needs one.
    let invocation = |w: Wire| -> Result<Invocation, Error> {
        let target = w
            .target
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Malformed("an invocation needs a target".into()))?;
        let arguments = w.arguments.ok_or_else(|| Error::Malformed("Missing required property 'arguments'.".into()))?;
        Ok(Invocation {
            invocation_id: w.invocation_id.filter(|id| !id.is_empty()),
            target,
            arguments,
            stream_ids: w.stream_ids.unwrap_or_default(),
        })
    };
    let stream_invocation = |w: Wire| -> Result<Invocation, Error> {
        let inv = invocation(w)?;
        match inv.invocation_id {
            Some(_) => Ok(inv),
            None => Err(Error::Malformed("Missing required property 'invocationId'.".into())),
        }
    };
    let sequence =
        |w: &Wire| w.sequence_id.ok_or_else(|| Error::Malformed(format!("message type {} needs a sequenceId", w.kind)));
    Ok(match wire.kind {
        1 => HubMessage::Invocation(invocation(wire)?),
        2 => HubMessage::StreamItem { invocation_id: id(&wire)? },
        3 => HubMessage::Completion(Completion {
            invocation_id: id(&wire)?,
            outcome: match wire.error {
                Some(e) => Err(e),
                None => Ok(wire.result.unwrap_or(Value::Null)),
            },
        }),
        4 => HubMessage::StreamInvocation(stream_invocation(wire)?),
        5 => HubMessage::CancelInvocation { invocation_id: id(&wire)? },
        6 => HubMessage::Ping,
        7 => HubMessage::Close(CloseMessage {
            error: wire.error,
            allow_reconnect: wire.allow_reconnect.unwrap_or(false),
        }),
        8 => HubMessage::Ack { sequence_id: sequence(&wire)? },
        9 => HubMessage::Sequence { sequence_id: sequence(&wire)? },
        other => return Err(Error::UnknownType(other)),
    })
}

/// Encodes a server-to-client invocation, serializing each argument once.
pub(super) fn encode_invocation<A: serde::Serialize>(target: &str, arguments: &[A]) -> Vec<u8> {
    invocation(target, arguments, |out, arg| {
        serde_json::to_writer(out, arg).expect("JSON values and maps always serialize");
    })
}

/// Appends a server-to-client invocation whose arguments write their own
/// JSON text.
pub(super) fn write_invocation<A: super::WriteJson>(out: &mut Vec<u8>, target: &str, arguments: &[A]) {
    write_invocation_with(out, target, arguments, |out, arg| arg.write_json(out));
}

fn invocation<A>(target: &str, arguments: &[A], write: impl FnMut(&mut Vec<u8>, &A)) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + target.len());
    write_invocation_with(&mut out, target, arguments, write);
    out
}

/// The invocation record, each argument written by `write`.
fn write_invocation_with<A>(out: &mut Vec<u8>, target: &str, arguments: &[A], mut write: impl FnMut(&mut Vec<u8>, &A)) {
    out.extend_from_slice(br#"{"type":1,"target":"#);
    serde_json::to_writer(&mut *out, target).expect("writing to a Vec cannot fail");
    out.extend_from_slice(br#","arguments":["#);
    for (i, arg) in arguments.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, arg);
    }
    out.extend_from_slice(b"]}");
    out.push(RECORD_SEPARATOR);
}

/// Encodes any message as one record, separator included, with the keys in
/// ASP.NET Core's order (`type` first, then as `JsonHubProtocol` writes
/// them): clients that read `type` before the rest see what they expect.
pub(super) fn encode(message: &HubMessage) -> Vec<u8> {
    /// `,"name":value`, the value serialized in place.
    fn field<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, name: &str, value: &T) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        serde_json::to_writer(out, value).expect("strings, numbers and JSON values always serialize");
    }
    let mut out = Vec::with_capacity(64);
    match message {
        HubMessage::Invocation(inv) => {
            let args: Vec<&Value> = inv.arguments.iter().collect();
            return encode_invocation(&inv.target, &args);
        }
        HubMessage::StreamItem { invocation_id } => {
            out.extend_from_slice(br#"{"type":2"#);
            field(&mut out, "invocationId", invocation_id);
        }
        HubMessage::Completion(c) => {
            out.extend_from_slice(br#"{"type":3"#);
            field(&mut out, "invocationId", &c.invocation_id);
            match &c.outcome {
                Ok(result) => field(&mut out, "result", result),
                Err(error) => field(&mut out, "error", error),
            }
        }
        HubMessage::StreamInvocation(inv) => {
            out.extend_from_slice(br#"{"type":4"#);
            if let Some(id) = &inv.invocation_id {
                field(&mut out, "invocationId", id);
            }
            field(&mut out, "target", &inv.target);
            field(&mut out, "arguments", &inv.arguments);
        }
        HubMessage::CancelInvocation { invocation_id } => {
            out.extend_from_slice(br#"{"type":5"#);
            field(&mut out, "invocationId", invocation_id);
        }
        HubMessage::Ping => out.extend_from_slice(br#"{"type":6"#),
        HubMessage::Close(close) => {
            out.extend_from_slice(br#"{"type":7"#);
            if let Some(error) = &close.error {
                field(&mut out, "error", error);
            }
            if close.allow_reconnect {
                field(&mut out, "allowReconnect", &true);
            }
        }
        HubMessage::Ack { sequence_id } => {
            out.extend_from_slice(br#"{"type":8"#);
            field(&mut out, "sequenceId", sequence_id);
        }
        HubMessage::Sequence { sequence_id } => {
            out.extend_from_slice(br#"{"type":9"#);
            field(&mut out, "sequenceId", sequence_id);
        }
    }
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
    out
}

#[cfg(test)]
mod tests;
