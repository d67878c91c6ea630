//! The JSON hub protocol: one JSON object per record.

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

/// Decodes one record (without its separator).
pub(super) fn decode(record: &[u8]) -> Result<HubMessage, Error> {
    let wire: Wire = serde_json::from_slice(record).map_err(|e| Error::Malformed(e.to_string()))?;
    let id = |w: &Wire| {
        w.invocation_id
            .clone()
            .ok_or_else(|| Error::Malformed(format!("message type {} needs an invocationId", w.kind)))
    };
    let invocation = |w: Wire| -> Result<Invocation, Error> {
        let target = w
            .target
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Malformed("an invocation needs a target".into()))?;
        Ok(Invocation {
            invocation_id: w.invocation_id,
            target,
            arguments: w.arguments.unwrap_or_default(),
            stream_ids: w.stream_ids.unwrap_or_default(),
        })
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
        4 => HubMessage::StreamInvocation(invocation(wire)?),
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
    let mut out = Vec::with_capacity(64 + target.len());
    out.extend_from_slice(br#"{"type":1,"target":"#);
    serde_json::to_writer(&mut out, target).expect("writing to a Vec cannot fail");
    out.extend_from_slice(br#","arguments":["#);
    for (i, arg) in arguments.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, arg).expect("JSON values and maps always serialize");
    }
    out.extend_from_slice(b"]}");
    out.push(RECORD_SEPARATOR);
    out
}

/// Encodes any message as one record, separator included.
pub(super) fn encode(message: &HubMessage) -> Vec<u8> {
    let value = match message {
        HubMessage::Invocation(inv) => {
            let args: Vec<&Value> = inv.arguments.iter().collect();
            return encode_invocation(&inv.target, &args);
        }
        HubMessage::Completion(c) => match &c.outcome {
            Ok(result) => {
                serde_json::json!({"type": 3, "invocationId": c.invocation_id, "result": result})
            }
            Err(error) => {
                serde_json::json!({"type": 3, "invocationId": c.invocation_id, "error": error})
            }
        },
        HubMessage::Ping => serde_json::json!({"type": 6}),
        HubMessage::Close(close) => {
            let mut v = serde_json::json!({"type": 7});
            if let Some(error) = &close.error {
                v["error"] = Value::from(error.as_str());
            }
            if close.allow_reconnect {
                v["allowReconnect"] = Value::Bool(true);
            }
            v
        }
        HubMessage::Ack { sequence_id } => {
            serde_json::json!({"type": 8, "sequenceId": sequence_id})
        }
        HubMessage::Sequence { sequence_id } => {
            serde_json::json!({"type": 9, "sequenceId": sequence_id})
        }
        HubMessage::StreamItem { invocation_id } => {
            serde_json::json!({"type": 2, "invocationId": invocation_id})
        }
        HubMessage::StreamInvocation(inv) => {
            serde_json::json!({"type": 4, "invocationId": inv.invocation_id, "target": inv.target, "arguments": inv.arguments})
        }
        HubMessage::CancelInvocation { invocation_id } => {
            serde_json::json!({"type": 5, "invocationId": invocation_id})
        }
    };
    let mut out = serde_json::to_vec(&value).expect("a serde_json::Value always serializes");
    out.push(RECORD_SEPARATOR);
    out
}

#[cfg(test)]
mod tests;
