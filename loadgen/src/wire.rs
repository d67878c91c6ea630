//! The client side of the SignalR hub protocols: what a client sends
//! (handshake, a JoinRoom invocation, pings, and the Acks of a stateful
//! client) and how it reads what the server sends, for JSON (records ending
//! in 0x1E) and MessagePack (VarInt length-prefixed arrays). The handshake
//! response is JSON in both.

use memchr::memmem;
use tokio_tungstenite::tungstenite::Message;

use crate::msgpack::{self, Reader};

/// The JSON record separator.
const RS: u8 = 0x1e;

/// A hub protocol.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    Json,
    MessagePack,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::MessagePack => "messagepack",
        }
    }

    /// The handshake request (always a JSON text record). Version 2 is what
    /// `@microsoft/signalr` sends once stateful reconnect was granted (both
    /// protocols are version 2 in it); version 1 otherwise.
    pub fn handshake(self, version: u8) -> Message {
        Message::text(format!("{{\"protocol\":\"{}\",\"version\":{version}}}\u{1e}", self.name()))
    }

    /// A blocking invocation of `target(arg)` with invocation id `id`.
    pub fn invocation(self, id: &str, target: &str, arg: &str) -> Message {
        match self {
            Protocol::Json => {
                let arg = serde_json::Value::from(arg);
                Message::text(format!(
                    "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"{target}\",\"arguments\":[{arg}]}}\u{1e}"
                ))
            }
            Protocol::MessagePack => {
                // [1, {}, id, target, [arg]]
                let mut body = vec![0x95, 0x01, 0x80];
                msgpack::put_str(&mut body, id);
                msgpack::put_str(&mut body, target);
                body.push(0x91);
                msgpack::put_str(&mut body, arg);
                Message::binary(msgpack::framed(&body))
            }
        }
    }

    /// A Ping message, as the official clients send every 15 s.
    pub fn ping(self) -> Message {
        match self {
            Protocol::Json => Message::text("{\"type\":6}\u{1e}"),
            Protocol::MessagePack => Message::binary(vec![0x02, 0x91, 0x06]),
        }
    }

    /// An Ack: every sequenced message up to `sequence_id` was received
    /// (HubProtocol.md, "Stateful Reconnect"), so the server may drop them
    /// from its replay buffer.
    pub fn ack(self, sequence_id: u64) -> Message {
        match self {
            Protocol::Json => Message::text(format!("{{\"type\":8,\"sequenceId\":{sequence_id}}}\u{1e}")),
            Protocol::MessagePack => {
                // [8, sequenceId]
                let mut body = vec![0x92, 0x08];
                msgpack::put_uint(&mut body, sequence_id);
                Message::binary(msgpack::framed(&body))
            }
        }
    }
}

/// One hub message from the server, borrowed from the received bytes.
#[derive(Debug, PartialEq)]
pub enum Incoming<'a> {
    /// The handshake response (JSON, without its separator).
    Handshake(&'a [u8]),
    /// A server-to-client invocation and its first argument.
    Invocation { target: &'a [u8], arg: Arg<'a> },
    /// A completion: invocation id and error text, if any.
    Completion { id: Vec<u8>, error: Option<String> },
    /// A Close message, with its error if any.
    Close(Option<String>),
    /// Another sequenced message (StreamItem, StreamInvocation,
    /// CancelInvocation, or an invocation the generator cannot read): only
    /// counted, by stateful clients.
    OtherSequenced,
    /// Ping, Ack, Sequence and everything else the generator does not look
    /// at; none of them is numbered.
    Other,
}

impl Incoming<'_> {
    /// Whether the message is one of the numbered ones of stateful
    /// reconnect (types 1 to 5), which a stateful client counts and acks.
    pub fn is_sequenced(&self) -> bool {
        matches!(self, Incoming::Invocation { .. } | Incoming::Completion { .. } | Incoming::OtherSequenced)
    }
}

/// The first argument of an invocation: a payload object.
#[derive(Debug, PartialEq, Clone, Copy)]
pub enum Arg<'a> {
    /// The whole JSON record: fields are found by key in it (the payloads
    /// the generator publishes have no string that looks like a key).
    Json(&'a [u8]),
    /// A MessagePack map and what follows it.
    MessagePack(&'a [u8]),
}

impl<'a> Arg<'a> {
    /// An unsigned integer field of the payload.
    pub fn u64(&self, key: &str) -> Option<u64> {
        match self {
            Arg::Json(rec) => json_value(rec, key).and_then(|v| {
                let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
                std::str::from_utf8(&v[..digits]).ok()?.parse().ok()
            }),
            Arg::MessagePack(m) => Reader::new(m).field(key.as_bytes())?.uint(),
        }
    }

    /// A string field of the payload (no escapes expected).
    pub fn str(&self, key: &str) -> Option<&'a [u8]> {
        match self {
            Arg::Json(rec) => {
                let v = json_value(rec, key)?.strip_prefix(b"\"")?;
                Some(&v[..memchr::memchr(b'"', v)?])
            }
            Arg::MessagePack(m) => Reader::new(m).field(key.as_bytes())?.str(),
        }
    }

    /// A boolean field of the payload.
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self {
            Arg::Json(rec) => {
                let v = json_value(rec, key)?;
                if v.starts_with(b"true") {
                    Some(true)
                } else if v.starts_with(b"false") {
                    Some(false)
                } else {
                    None
                }
            }
            Arg::MessagePack(m) => Reader::new(m).field(key.as_bytes())?.bool(),
        }
    }
}

/// The bytes after `"key":` (and any spaces) in a JSON record.
fn json_value<'a>(rec: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut needle = Vec::with_capacity(key.len() + 3);
    needle.push(b'"');
    needle.extend_from_slice(key.as_bytes());
    needle.extend_from_slice(b"\":");
    let at = memmem::find(rec, &needle)? + needle.len();
    let rest = &rec[at..];
    let spaces = rest.iter().take_while(|b| **b == b' ').count();
    Some(&rest[spaces..])
}

/// Splits the server's byte stream into hub messages, keeping a partial
/// message across WebSocket frames.
pub struct Decoder {
    protocol: Protocol,
    carry: Vec<u8>,
    handshake_done: bool,
}

impl Decoder {
    pub fn new(protocol: Protocol) -> Decoder {
        Decoder { protocol, carry: Vec::new(), handshake_done: false }
    }

    /// Feeds one frame's bytes and calls `each` per complete message;
    /// `each` returns false to stop early (a Close). Err on bad framing.
    pub fn feed(&mut self, data: &[u8], mut each: impl FnMut(Incoming<'_>) -> bool) -> Result<(), String> {
        if self.carry.is_empty() {
            let used = self.split(data, &mut each)?;
            self.carry.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.carry);
            buf.extend_from_slice(data);
            let used = self.split(&buf, &mut each)?;
            buf.drain(..used);
            self.carry = buf;
        }
        Ok(())
    }

    /// Handles every complete message in `data`; returns the bytes used.
    fn split(&mut self, data: &[u8], each: &mut impl FnMut(Incoming<'_>) -> bool) -> Result<usize, String> {
        let mut at = 0;
        if !self.handshake_done {
            let Some(end) = memchr::memchr(RS, data) else { return Ok(0) };
            self.handshake_done = true;
            at = end + 1;
            if !each(Incoming::Handshake(&data[..end])) {
                return Ok(at);
            }
        }
        while at < data.len() {
            let (body, next) = match self.protocol {
                Protocol::Json => match memchr::memchr(RS, &data[at..]) {
                    Some(end) => (&data[at..at + end], at + end + 1),
                    None => break,
                },
                Protocol::MessagePack => match msgpack::varint(&data[at..]) {
                    Err(()) => return Err("MessagePack length prefix over 5 bytes".into()),
                    Ok(None) => break,
                    Ok(Some((len, prefix))) if data.len() - at - prefix >= len => {
                        (&data[at + prefix..at + prefix + len], at + prefix + len)
                    }
                    Ok(Some(_)) => break,
                },
            };
            at = next;
            if !each(parse(self.protocol, body)) {
                break;
            }
        }
        Ok(at)
    }
}

/// Reads one message body.
pub fn parse(protocol: Protocol, body: &[u8]) -> Incoming<'_> {
    match protocol {
        Protocol::Json => parse_json(body),
        Protocol::MessagePack => parse_msgpack(body),
    }
}

fn parse_json(rec: &[u8]) -> Incoming<'_> {
    match Arg::Json(rec).u64("type") {
        Some(1) => match Arg::Json(rec).str("target") {
            Some(target) => Incoming::Invocation { target, arg: Arg::Json(rec) },
            None => Incoming::OtherSequenced,
        },
        Some(2 | 4 | 5) => Incoming::OtherSequenced,
        Some(kind @ (3 | 7)) => {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(rec) else {
                return if kind == 3 { Incoming::OtherSequenced } else { Incoming::Other };
            };
            let error = v.get("error").and_then(|e| e.as_str()).map(str::to_string);
            if kind == 7 {
                return Incoming::Close(error);
            }
            let id = v.get("invocationId").and_then(|i| i.as_str()).unwrap_or("").as_bytes().to_vec();
            Incoming::Completion { id, error }
        }
        _ => Incoming::Other,
    }
}

/// A MessagePack message; one of types 1 to 5 that cannot be read is
/// still counted as sequenced.
fn parse_msgpack(body: &[u8]) -> Incoming<'_> {
    let mut r = Reader::new(body);
    let Some(kind) = r.array_len().and_then(|_| r.uint()) else { return Incoming::Other };
    match read_msgpack(kind, r) {
        Some(m) => m,
        None if (1..=5).contains(&kind) => Incoming::OtherSequenced,
        None => Incoming::Other,
    }
}

/// The rest of a MessagePack message of type `kind`, after its type.
fn read_msgpack(kind: u64, mut r: Reader<'_>) -> Option<Incoming<'_>> {
    Some(match kind {
        1 => {
            r.skip()?; // headers
            r.skip()?; // invocation id (nil for server invocations)
            let target = r.str()?;
            if r.array_len()? == 0 {
                return None;
            }
            Incoming::Invocation { target, arg: Arg::MessagePack(r.rest()) }
        }
        3 => {
            r.skip()?;
            let id = r.str()?.to_vec();
            let error = match r.uint()? {
                1 => Some(String::from_utf8_lossy(r.str()?).into_owned()),
                _ => None,
            };
            Incoming::Completion { id, error }
        }
        2 | 4 | 5 => Incoming::OtherSequenced,
        7 => Incoming::Close(r.str_or_nil().map(|e| String::from_utf8_lossy(e).into_owned())),
        _ => Incoming::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(d: &mut Decoder, data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        d.feed(data, |m| {
            out.push(format!("{m:?}"));
            true
        })
        .expect("framing");
        out
    }

    #[test]
    fn json_records_split_anywhere() {
        let stream = b"{}\x1e{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[{\"sent_ns\":17,\"sequence_number\":3,\"is_typing\":false,\"user_id\":\"t-9\"}]}\x1e{\"type\":6}\x1e";
        for cut in 0..stream.len() {
            let mut d = Decoder::new(Protocol::Json);
            let mut all = collect(&mut d, &stream[..cut]);
            all.extend(collect(&mut d, &stream[cut..]));
            assert_eq!(all.len(), 3, "cut at {cut}");
        }
        let rec = &stream[3..stream.len() - 12];
        let Incoming::Invocation { target, arg } = parse(Protocol::Json, rec) else { panic!("invocation") };
        assert_eq!(target, b"ReceiveMessage");
        assert_eq!((arg.u64("sent_ns"), arg.u64("sequence_number")), (Some(17), Some(3)));
        assert_eq!((arg.bool("is_typing"), arg.str("user_id")), (Some(false), Some(&b"t-9"[..])));
    }

    #[test]
    fn json_completion_and_close() {
        let c = parse(Protocol::Json, br#"{"type":3,"invocationId":"1","error":"no"}"#);
        assert_eq!(c, Incoming::Completion { id: b"1".to_vec(), error: Some("no".into()) });
        assert_eq!(parse(Protocol::Json, br#"{"type":7}"#), Incoming::Close(None));
        assert_eq!(parse(Protocol::Json, br#"{"type":10}"#), Incoming::Other);
    }

    #[test]
    fn msgpack_invocation_and_completion() {
        // [1, {}, nil, "UserTyping", [{"is_typing": true}]]
        let mut body = vec![0x95, 0x01, 0x80, 0xc0];
        msgpack::put_str(&mut body, "UserTyping");
        body.extend_from_slice(&[0x91, 0x81]);
        msgpack::put_str(&mut body, "is_typing");
        body.push(0xc3);
        let mut stream = b"{}\x1e".to_vec();
        stream.extend(msgpack::framed(&body));
        stream.extend(msgpack::framed(&[0x94, 0x03, 0x80, 0xa1, b'1', 0x02])); // void completion
        let mut d = Decoder::new(Protocol::MessagePack);
        let mut seen = Vec::new();
        d.feed(&stream, |m| {
            if let Incoming::Invocation { target, arg } = &m {
                seen.push((target.to_vec(), arg.bool("is_typing")));
            }
            if let Incoming::Completion { id, error } = &m {
                seen.push((id.clone(), error.as_ref().map(|_| true)));
            }
            true
        })
        .expect("framing");
        assert_eq!(seen, vec![(b"UserTyping".to_vec(), Some(true)), (b"1".to_vec(), None)]);
    }

    #[test]
    fn handshake_version_and_acks() {
        let Message::Text(t) = Protocol::MessagePack.handshake(2) else { panic!("text") };
        assert_eq!(t.as_str(), "{\"protocol\":\"messagepack\",\"version\":2}\u{1e}");
        let Message::Text(t) = Protocol::Json.ack(1234) else { panic!("text") };
        assert_eq!(t.as_str(), "{\"type\":8,\"sequenceId\":1234}\u{1e}");
        let Message::Binary(b) = Protocol::MessagePack.ack(1234) else { panic!("binary") };
        assert_eq!(&b[..], [0x05, 0x92, 0x08, 0xcd, 0x04, 0xd2], "[8, 1234], length-prefixed");
    }

    #[test]
    fn only_types_one_to_five_are_sequenced() {
        let json = |rec: &'static str| parse(Protocol::Json, rec.as_bytes()).is_sequenced();
        assert!(json(r#"{"type":1,"target":"ReceiveMessage","arguments":[{}]}"#));
        assert!(json(r#"{"type":1,"arguments":[]}"#), "an invocation without a target still counts");
        assert!(json(r#"{"type":2,"invocationId":"1","item":1}"#));
        assert!(json(r#"{"type":3,"invocationId":"1"}"#));
        assert!(json(r#"{"type":4,"invocationId":"1","target":"S","arguments":[]}"#));
        assert!(json(r#"{"type":5,"invocationId":"1"}"#));
        for rec in [r#"{"type":6}"#, r#"{"type":7}"#, r#"{"type":8,"sequenceId":3}"#, r#"{"type":9,"sequenceId":1}"#] {
            assert!(!json(rec), "{rec}");
        }
        let msgpack = |body: &[u8]| parse(Protocol::MessagePack, body).is_sequenced();
        assert!(msgpack(&[0x95, 0x01, 0x80, 0xc0, 0xa1, b'T', 0x90]), "invocation without arguments");
        assert!(msgpack(&[0x94, 0x03, 0x80, 0xa1, b'1', 0x02]), "void completion");
        assert!(msgpack(&[0x93, 0x05, 0x80, 0xa1, b'1']), "cancel");
        assert!(!msgpack(&[0x91, 0x06]), "ping");
        assert!(!msgpack(&[0x92, 0x08, 0x03]), "ack");
        assert!(!msgpack(&[0x92, 0x09, 0x01]), "sequence");
        assert!(!msgpack(&[0xc1]), "garbage");
    }

    #[test]
    fn msgpack_join_is_what_the_hub_expects() {
        let Message::Binary(b) = Protocol::MessagePack.invocation("1", "JoinRoom", "room-3") else { panic!("binary") };
        assert_eq!(b[0] as usize, b.len() - 1, "one length byte");
        let mut r = Reader::new(&b[1..]);
        assert_eq!(r.array_len(), Some(5));
        assert_eq!(r.uint(), Some(1));
        r.skip();
        assert_eq!(r.str(), Some(&b"1"[..]));
        assert_eq!(r.str(), Some(&b"JoinRoom"[..]));
        assert_eq!(r.array_len(), Some(1));
        assert_eq!(r.str(), Some(&b"room-3"[..]));
    }
}
