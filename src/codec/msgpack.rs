//! The MessagePack hub protocol: each message is a MessagePack array,
//! framed by a VarInt length prefix (HubProtocol.md, "MessagePack Encoding").

use rmpv::Value as Mp;
use serde_json::Value;

use super::{CloseMessage, Completion, Error, HubMessage, Invocation};

/// Completion result kinds.
const RESULT_ERROR: u64 = 1;
const RESULT_VOID: u64 = 2;
const RESULT_VALUE: u64 = 3;

/// Nesting allowed in client messages; deeper input is refused, not recursed.
const MAX_DEPTH: usize = 64;

/// Decodes one message body (without its length prefix).
pub(super) fn decode(body: &[u8]) -> Result<HubMessage, Error> {
    let malformed = |m: &str| Error::Malformed(m.to_string());
    let mut rd = body;
    let value =
        rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH).map_err(|e| Error::Malformed(e.to_string()))?;
    let Mp::Array(items) = value else {
        return Err(malformed("a MessagePack message must be an array"));
    };
    let kind = items.first().and_then(Mp::as_i64).ok_or_else(|| malformed("missing message type"))?;
    let text = |i: usize| items.get(i).and_then(Mp::as_str).map(str::to_string);
    let id = |i: usize| text(i).ok_or_else(|| Error::Malformed(format!("message type {kind} needs an invocationId")));
    let seq = || {
        items
            .get(1)
            .and_then(Mp::as_u64)
            .ok_or_else(|| Error::Malformed(format!("message type {kind} needs a sequenceId")))
    };
    let invocation = || -> Result<Invocation, Error> {
        // A string or nil, as ASP.NET Core reads it; an empty one is a
        // non-blocking call.
        let invocation_id = match items.get(2) {
            Some(Mp::Nil) => None,
            Some(Mp::String(id)) => match id.as_str() {
                Some(id) => Some(id.to_string()).filter(|id| !id.is_empty()),
                None => return Err(malformed("Reading 'invocationId' as String failed.")),
            },
            _ => return Err(malformed("Reading 'invocationId' as String failed.")),
        };
        if kind == 4 && invocation_id.is_none() {
            return Err(malformed("a stream invocation needs an invocationId"));
        }
        let target = text(3).filter(|t| !t.is_empty()).ok_or_else(|| malformed("an invocation needs a target"))?;
        let Some(Mp::Array(args)) = items.get(4) else {
            return Err(malformed("an invocation needs an arguments array"));
        };
        // An argument no JSON value can stand for is ASP.NET Core's binding
        // failure (InvocationBindingFailureMessage), not a broken message.
        let arguments = args.iter().map(to_json).collect::<Result<_, _>>().map_err(|e| Error::Binding {
            invocation_id: invocation_id.clone(),
            target: target.clone(),
            reason: e,
        })?;
        let stream_ids = match items.get(5) {
            Some(Mp::Array(ids)) => ids.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        };
        Ok(Invocation { invocation_id, target, arguments, stream_ids })
    };
    Ok(match kind {
        1 => HubMessage::Invocation(invocation()?),
        2 => HubMessage::StreamItem { invocation_id: id(2)? },
        3 => {
            let invocation_id = id(2)?;
            let outcome = match items.get(3).and_then(Mp::as_u64) {
                Some(RESULT_ERROR) => Err(text(4).unwrap_or_default()),
                Some(RESULT_VOID) => Ok(Value::Null),
                // The server awaits no client result, so ASP.NET Core skips
                // the value unread: one no JSON stands for is no error.
                Some(RESULT_VALUE) => Ok(items.get(4).and_then(|v| to_json(v).ok()).unwrap_or(Value::Null)),
                _ => return Err(malformed("a completion needs a result kind of 1, 2 or 3")),
            };
            HubMessage::Completion(Completion { invocation_id, outcome })
        }
        4 => HubMessage::StreamInvocation(invocation()?),
        5 => HubMessage::CancelInvocation { invocation_id: id(2)? },
        6 => HubMessage::Ping,
        // As ASP.NET Core's CreateCloseMessage reads it: the error (a string
        // or nil) is required, allowReconnect a boolean where present.
        7 => HubMessage::Close(CloseMessage {
            error: match items.get(1) {
                Some(Mp::Nil) => None,
                Some(Mp::String(e)) => e.as_str().map(str::to_string),
                _ => return Err(malformed("Reading 'error' as String failed.")),
            },
            allow_reconnect: match items.get(2) {
                None => false,
                Some(Mp::Boolean(b)) => *b,
                Some(_) => return Err(malformed("Reading 'allowReconnect' as Boolean failed.")),
            },
        }),
        8 => HubMessage::Ack { sequence_id: seq()? },
        9 => HubMessage::Sequence { sequence_id: seq()? },
        other => return Err(Error::UnknownType(other)),
    })
}

/// The JSON value a MessagePack value stands for, or why there is none
/// (binary data, an extension type, a map keyed by something else than
/// strings).
fn to_json(v: &Mp) -> Result<Value, String> {
    rmpv::ext::from_value(v.clone()).map_err(|e| format!("an argument cannot be read as JSON: {e}"))
}

/// Encodes a server-to-client invocation, converting each argument once.
/// Six elements, the last the (empty) StreamIds array, exactly as ASP.NET
/// Core writes it: clients that read element 5 depend on it.
pub(super) fn encode_invocation<A: serde::Serialize>(target: &str, arguments: &[A]) -> Vec<u8> {
    let args = arguments.iter().map(|a| rmpv::ext::to_value(a).unwrap_or(Mp::Nil)).collect();
    frame(&Mp::Array(vec![
        1.into(),
        Mp::Map(Vec::new()),
        Mp::Nil,
        target.into(),
        Mp::Array(args),
        Mp::Array(Vec::new()),
    ]))
}

/// Encodes any message with its length prefix.
pub(super) fn encode(message: &HubMessage) -> Vec<u8> {
    let json = |v: &Value| rmpv::ext::to_value(v).unwrap_or(Mp::Nil);
    let value = match message {
        HubMessage::Invocation(inv) => return encode_invocation(&inv.target, &inv.arguments),
        HubMessage::Completion(c) => {
            let mut items = vec![3.into(), Mp::Map(Vec::new()), c.invocation_id.as_str().into()];
            // A hub method that returns nothing still has a result, nil:
            // ASP.NET Core's dispatcher sends CompletionMessage.WithResult(id,
            // null), written [3, {}, id, 3, nil]. The void kind (2) is only
            // for the end of a stream, which the sidecar never sends.
            match &c.outcome {
                Err(e) => items.extend([RESULT_ERROR.into(), e.as_str().into()]),
                Ok(v) => items.extend([RESULT_VALUE.into(), json(v)]),
            }
            Mp::Array(items)
        }
        HubMessage::Ping => Mp::Array(vec![6.into()]),
        HubMessage::Close(c) => {
            Mp::Array(vec![7.into(), c.error.as_deref().map(Mp::from).unwrap_or(Mp::Nil), c.allow_reconnect.into()])
        }
        HubMessage::Ack { sequence_id } => Mp::Array(vec![8.into(), (*sequence_id).into()]),
        HubMessage::Sequence { sequence_id } => Mp::Array(vec![9.into(), (*sequence_id).into()]),
        HubMessage::StreamItem { invocation_id } => {
            Mp::Array(vec![2.into(), Mp::Map(Vec::new()), invocation_id.as_str().into(), Mp::Nil])
        }
        HubMessage::StreamInvocation(inv) => Mp::Array(vec![
            4.into(),
            Mp::Map(Vec::new()),
            inv.invocation_id.as_deref().map(Mp::from).unwrap_or(Mp::Nil),
            inv.target.as_str().into(),
            Mp::Array(inv.arguments.iter().map(json).collect()),
            Mp::Array(inv.stream_ids.iter().map(|s| Mp::from(s.as_str())).collect()),
        ]),
        HubMessage::CancelInvocation { invocation_id } => {
            Mp::Array(vec![5.into(), Mp::Map(Vec::new()), invocation_id.as_str().into()])
        }
    };
    frame(&value)
}

fn frame(value: &Mp) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    rmpv::encode::write_value(&mut body, value).expect("writing to a Vec cannot fail");
    let mut out = Vec::with_capacity(body.len() + 5);
    let mut len = body.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::LengthBuffer;

    fn roundtrip(m: &HubMessage) -> HubMessage {
        let bytes = encode(m);
        let mut buf = LengthBuffer::new(1024);
        let mut out = Vec::new();
        buf.push::<Error>(&bytes, |body| {
            out.push(decode(body)?);
            Ok(())
        })
        .expect("decodes");
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    fn body(items: Vec<Mp>) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &Mp::Array(items)).expect("encodes");
        out
    }

    /// A Close read as ASP.NET Core reads it: its error element required
    /// (nil or a string), allowReconnect a boolean when it is there.
    #[test]
    fn a_close_needs_its_error_element_and_a_boolean_allow_reconnect() {
        let close = |error, allow_reconnect| HubMessage::Close(CloseMessage { error, allow_reconnect });
        assert_eq!(decode(&body(vec![7.into(), Mp::Nil])).ok(), Some(close(None, false)));
        assert_eq!(decode(&body(vec![7.into(), "x".into(), true.into()])).ok(), Some(close(Some("x".into()), true)));
        for bad in [vec![7.into()], vec![7.into(), 1.into()], vec![7.into(), Mp::Nil, 1.into()]] {
            assert!(matches!(decode(&body(bad.clone())), Err(Error::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            HubMessage::Ping,
            HubMessage::Ack { sequence_id: 300 },
            HubMessage::Sequence { sequence_id: 1 },
            HubMessage::Close(CloseMessage { error: Some("bye".into()), allow_reconnect: true }),
            HubMessage::Completion(Completion { invocation_id: "1".into(), outcome: Err("no".into()) }),
            HubMessage::Completion(Completion { invocation_id: "2".into(), outcome: Ok(Value::Null) }),
            HubMessage::Completion(Completion {
                invocation_id: "3".into(),
                outcome: Ok(serde_json::json!({"a": [1, "x"]})),
            }),
        ] {
            assert_eq!(roundtrip(&m), m);
        }
    }

    #[test]
    fn a_server_invocation_carries_the_payload_as_a_map() {
        let payload = serde_json::json!({"content": "hi", "n": 5, "ok": true, "f": 1.5});
        let bytes = encode_invocation("ReceiveMessage", &[&payload]);
        match roundtrip_raw(&bytes) {
            HubMessage::Invocation(inv) => {
                assert_eq!((inv.target.as_str(), inv.invocation_id), ("ReceiveMessage", None));
                assert_eq!(inv.arguments, vec![payload]);
            }
            other => panic!("{other:?}"),
        }
    }

    fn roundtrip_raw(bytes: &[u8]) -> HubMessage {
        let mut buf = LengthBuffer::new(1024);
        let mut out = None;
        buf.push::<Error>(bytes, |body| {
            out = Some(decode(body)?);
            Ok(())
        })
        .expect("decodes");
        out.expect("one message")
    }

    /// Decodes a `JoinRoom` invocation of message type `kind` with `id` and
    /// one argument, `argument` (and an empty StreamIds array if `streams`).
    fn invocation(kind: i64, id: Mp, argument: Mp, streams: bool) -> Result<HubMessage, Error> {
        let mut items = vec![kind.into(), Mp::Map(Vec::new()), id, "JoinRoom".into(), Mp::Array(vec![argument])];
        if streams {
            items.push(Mp::Array(Vec::new()));
        }
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &Mp::Array(items)).expect("encodes");
        decode(&body)
    }

    #[test]
    fn an_empty_invocation_id_is_a_non_blocking_call_and_a_stream_needs_one() {
        let call = |kind: i64, id: &str| invocation(kind, id.into(), "r".into(), true);
        assert!(matches!(call(1, ""), Ok(HubMessage::Invocation(Invocation { invocation_id: None, .. }))));
        assert!(matches!(call(4, ""), Err(Error::Malformed(_))));
        assert!(matches!(call(4, "7"), Ok(HubMessage::StreamInvocation(_))));
    }

    #[test]
    fn an_argument_no_json_stands_for_is_a_binding_failure() {
        let call = |kind: i64, id: &str| invocation(kind, id.into(), Mp::Binary(vec![1, 2]), true);
        let binding = |id: Option<&str>| Error::Binding {
            invocation_id: id.map(String::from),
            target: "JoinRoom".into(),
            reason: String::new(),
        };
        let without_reason = |r: Result<HubMessage, Error>| match r {
            Err(Error::Binding { invocation_id, target, .. }) => {
                Err(Error::Binding { invocation_id, target, reason: String::new() })
            }
            other => other,
        };
        assert_eq!(without_reason(call(1, "5")), Err(binding(Some("5"))));
        assert_eq!(without_reason(call(1, "")), Err(binding(None)));
        assert_eq!(without_reason(call(4, "6")), Err(binding(Some("6"))));
        assert!(matches!(call(4, ""), Err(Error::Malformed(_))), "a stream invocation needs an id first");
    }

    #[test]
    fn an_invocation_id_is_a_string_or_nil() {
        let call = |id: Mp| invocation(1, id, "r".into(), false);
        assert!(matches!(call(Mp::Nil), Ok(HubMessage::Invocation(Invocation { invocation_id: None, .. }))));
        assert!(matches!(call(7.into()), Err(Error::Malformed(_))));
        assert!(matches!(call(Mp::Boolean(true)), Err(Error::Malformed(_))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&[0xc1]).is_err());
        assert!(decode(&[0x93, 0x01]).is_err());
        assert!(matches!(decode(&[0x91, 0x63]), Err(Error::UnknownType(99))));
    }
}
