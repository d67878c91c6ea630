//! The checks behind every fuzz target, shared by the fuzzers (nightly,
//! `fuzz/fuzz_targets/*.rs`) and the corpus replay (stable,
//! `tests/fuzz_corpus.rs`); both take this file with `#[path]`, so a corpus
//! file and a crash input mean the same thing in both places.
//!
//! Each check feeds hostile bytes to a public decoder of `signalr_sidecar`
//! and panics when the decoder panics or when an invariant that costs little
//! to state does not hold. The invariants are the ones the rest of the
//! sidecar relies on: an encoded message is exactly one message to the
//! client's framing; the framings hand out the same messages however the
//! bytes are chunked; an envelope the sidecar accepts is accepted again after
//! it republishes it.

use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;
use signalr_sidecar::codec::{self, Framer, HandshakeRequest, LengthBuffer, Protocol, RecordBuffer, RECORD_SEPARATOR};
use signalr_sidecar::envelope::{format_timestamp, Envelope, Schemas};

/// Every target with its check, by the name of its corpus directory. A
/// directory under `fuzz/corpus/` or `fuzz/artifacts/` with no entry here
/// fails the replay test, so a new target cannot be left out of it.
pub const TARGETS: &[(&str, Check)] = &[
    ("json_hub_message", |data, _| hub_message(Protocol::Json, data)),
    ("msgpack_hub_message", |data, _| hub_message(Protocol::MessagePack, data)),
    ("record_framing", |data, _| record_framing(data)),
    ("length_framing", |data, _| length_framing(data)),
    ("handshake", |data, _| handshake(data)),
    ("envelope_json", envelope_json),
    ("envelope_stream_fields", envelope_stream_fields),
];

/// One target's check: the input, and the schemas the envelope checks need.
pub type Check = fn(&[u8], &Schemas);

/// The largest client message by default (`SIDECAR_MAX_MESSAGE_BYTES`).
const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// A limit no input reaches (`usize::MAX` would overflow `LengthBuffer`'s
/// `limit + 5`; settings cap the real limit at 16 MiB).
const NO_LIMIT: usize = 1 << 30;

/// The schemas of `<repo_root>/protocol/schemas`, loaded once per process.
pub fn schemas(repo_root: &str) -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let dir = Path::new(repo_root).join("protocol/schemas");
        Schemas::load(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
    })
}

// === Hub messages (json_hub_message, msgpack_hub_message) ===

/// `json_hub_message` and `msgpack_hub_message`: the input is one message
/// as the protocol's framing hands it to the decoder (a JSON record without
/// its 0x1E, a MessagePack body without its length prefix).
///
/// Whatever decodes must encode to exactly one framed message, which decodes
/// to a message of the same type and encodes to the same bytes again (JSON
/// floats may move by an ULP, see [`same_json`]); the message type the input
/// asked for is the one the encoding carries.
pub fn hub_message(protocol: Protocol, input: &[u8]) {
    let message = match protocol.decode(input) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = message.is_sequenced();
    let body = unframe(protocol, &protocol.encode(&message));
    let again = protocol
        .decode(&body)
        .unwrap_or_else(|e| panic!("{message:?} encodes to {body:?}, which fails to decode: {e}"));
    assert_eq!(std::mem::discriminant(&message), std::mem::discriminant(&again), "{message:?} came back as {again:?}");
    let body_again = unframe(protocol, &protocol.encode(&again));
    assert!(
        body == body_again || (!protocol.is_binary() && same_json(&json(&body), &json(&body_again))),
        "encode(decode(encode(m))) != encode(m) for {message:?}: {body:?} vs {body_again:?}"
    );
    if let Some(asked) = message_type(protocol, input) {
        assert_eq!(Some(asked), message_type(protocol, &body), "{message:?}");
    }
}

/// The one message `encoded` holds, read back through the protocol's own
/// framing: a JSON record must end with its one and only 0x1E (one inside
/// would split it in two on the client), a MessagePack message is its body
/// behind a length prefix of at most 5 bytes.
fn unframe(protocol: Protocol, encoded: &[u8]) -> Vec<u8> {
    let mut bodies = Vec::new();
    protocol
        .framer(NO_LIMIT)
        .push::<codec::Error>(encoded, |b| {
            bodies.push(b.to_vec());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("the encoder's own output fails its framing: {e}: {encoded:?}"));
    assert_eq!(bodies.len(), 1, "one message must frame as one: {encoded:?}");
    let body = bodies.pop().expect("exactly one");
    if protocol.is_binary() {
        let prefix = encoded.len() - body.len();
        assert!(encoded.ends_with(&body) && (1..=5).contains(&prefix), "{encoded:?}");
    } else {
        assert_eq!([&body[..], &[RECORD_SEPARATOR]].concat(), encoded, "0x1E inside a record");
    }
    body
}

/// The message type an input asks for, read without the sidecar's decoder:
/// `type` of a JSON object, the first item of a MessagePack array.
fn message_type(protocol: Protocol, body: &[u8]) -> Option<i64> {
    if protocol.is_binary() {
        match rmpv::decode::read_value_with_max_depth(&mut &body[..], 1024).ok()? {
            rmpv::Value::Array(items) => items.first()?.as_i64(),
            _ => None,
        }
    } else {
        serde_json::from_slice::<Value>(body).ok()?.get("type")?.as_i64()
    }
}

fn json(text: &[u8]) -> Value {
    serde_json::from_slice(text).unwrap_or_else(|e| panic!("encoder wrote invalid JSON {:?}: {e}", lossy(text)))
}

/// JSON equality that lets a float move by a few ULPs: serde_json parses
/// floats best-effort (no `float_roundtrip` feature), so a float can change
/// in its last bit on a decode -> encode -> decode trip. Nothing in the
/// sidecar relies on float bits; everything else must be equal.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) if x.is_f64() || y.is_f64() => {
                        (p - q).abs() <= 4.0 * f64::EPSILON * p.abs().max(q.abs())
                    }
                    _ => false,
                }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

// === Framing (record_framing, length_framing) ===

/// Why the splitter stopped.
#[derive(Debug)]
enum Stop {
    Codec(codec::Error),
    Callback,
}

impl From<codec::Error> for Stop {
    fn from(e: codec::Error) -> Self {
        Stop::Codec(e)
    }
}

/// What splitting all the data at once gives: the messages, then either the
/// bytes left waiting for more (records only) or the error that ends it.
struct Expected<'a> {
    messages: Vec<&'a [u8]>,
    end: Result<Option<&'a [u8]>, codec::Error>,
}

/// The input of both framing targets says how to cut itself:
///
/// - byte 0: the message limit: below 0x80 it is the byte itself (so
///   `TooLarge` fires often), otherwise [`NO_LIMIT`];
/// - byte 1: low 3 bits = how many chunk lengths follow (0-7), high 4 bits =
///   after how many messages the callback returns an error (0 = never);
/// - then that many bytes, each a chunk length (0 = an empty push), used in
///   turn until the data runs out; no lengths = one chunk;
/// - the rest is the data.
struct Cut<'a> {
    limit: usize,
    stop_after: usize,
    chunks: Vec<&'a [u8]>,
    data: &'a [u8],
}

impl<'a> Cut<'a> {
    fn read(input: &'a [u8]) -> Cut<'a> {
        let (&limit_byte, rest) = input.split_first().unwrap_or((&0xff, &[]));
        let (&shape, rest) = rest.split_first().unwrap_or((&0, &[]));
        let limit = if limit_byte < 0x80 { usize::from(limit_byte) } else { NO_LIMIT };
        let cut_count = usize::from(shape & 0x07).min(rest.len());
        let (cuts, data) = rest.split_at(cut_count);
        Cut { limit, stop_after: usize::from(shape >> 4), chunks: chunks(data, cuts), data }
    }

    /// Feeds the chunks to `framer` until it stops; the messages it handed
    /// out and how it ended.
    fn feed(&self, framer: &mut Framer, each: impl Fn(&[u8])) -> (Vec<Vec<u8>>, Result<(), Stop>) {
        let mut got: Vec<Vec<u8>> = Vec::new();
        for chunk in &self.chunks {
            let outcome = framer.push(chunk, |message| {
                assert!(message.len() <= self.limit, "message of {} > limit {}", message.len(), self.limit);
                each(message);
                got.push(message.to_vec());
                if self.stop_after != 0 && got.len() == self.stop_after {
                    return Err(Stop::Callback);
                }
                Ok(())
            });
            if outcome.is_err() {
                return (got, outcome);
            }
        }
        (got, Ok(()))
    }

    /// The chunked run must match the one-shot split: the same messages in
    /// order and the same ending, or the callback's stop at its message.
    fn compare(&self, got: &[Vec<u8>], outcome: &Result<(), Stop>, want: &Expected<'_>) {
        let stops_first = self.stop_after != 0 && self.stop_after <= want.messages.len();
        match outcome {
            Err(Stop::Callback) => assert!(stops_first, "callback stop after {} of {}", self.stop_after, got.len()),
            _ => assert!(!stops_first, "the callback should have stopped it: {outcome:?}"),
        }
        let count = if stops_first { self.stop_after } else { want.messages.len() };
        assert_eq!(got, &want.messages[..count], "messages differ from a one-shot split");
        match (outcome, &want.end) {
            (Err(Stop::Callback), _) | (Ok(()), Ok(_)) => {}
            (Err(Stop::Codec(codec::Error::TooLarge { limit })), Err(codec::Error::TooLarge { .. })) => {
                assert_eq!(*limit, self.limit)
            }
            (Err(Stop::Codec(codec::Error::Malformed(_))), Err(codec::Error::Malformed(_))) => {}
            (got_end, want_end) => panic!(
                "chunked split ended {got_end:?}, one-shot split {want_end:?} (limit {}, {} messages)",
                self.limit,
                got.len()
            ),
        }
    }
}

/// `record_framing`: [`RecordBuffer`] on chunks (see [`Cut`]). No record
/// holds 0x1E or passes the limit; the records are those of splitting the
/// whole data on 0x1E at once; every byte is in a record, a separator or the
/// remainder; the first oversize record (or remainder) ends it with
/// `TooLarge`, after every record before it and none after.
pub fn record_framing(input: &[u8]) {
    let cut = Cut::read(input);
    let parts: Vec<&[u8]> = cut.data.split(|b| *b == RECORD_SEPARATOR).collect();
    let (trailing, complete) = parts.split_last().expect("split yields at least one part");
    let want = match parts.iter().position(|p| p.len() > cut.limit) {
        Some(big) => {
            Expected { messages: complete[..big].to_vec(), end: Err(codec::Error::TooLarge { limit: cut.limit }) }
        }
        None => Expected { messages: complete.to_vec(), end: Ok(Some(trailing)) },
    };
    let mut framer = Framer::Records(RecordBuffer::new(cut.limit));
    let (got, outcome) = cut.feed(&mut framer, |record| {
        assert!(!record.contains(&RECORD_SEPARATOR), "a record holds 0x1E: {:?}", lossy(record));
    });
    cut.compare(&got, &outcome, &want);
    let Framer::Records(buffer) = &mut framer else {
        unreachable!("built as Records");
    };
    if outcome.is_err() {
        return;
    }
    let remainder = buffer.take_remainder();
    assert_eq!(Ok(Some(&remainder[..])), want.end, "remainder");
    let total: usize = got.iter().map(|r| r.len() + 1).sum::<usize>() + remainder.len();
    assert_eq!(total, cut.data.len(), "bytes lost or invented");
    // Emptied by take_remainder, the buffer starts afresh.
    if cut.limit > 0 {
        let mut again = Vec::new();
        buffer
            .push::<codec::Error>(b"x\x1e", |r| {
                again.push(r.to_vec());
                Ok(())
            })
            .expect("one byte is within a limit above 0");
        assert_eq!(again, vec![b"x".to_vec()]);
    }
}

/// `length_framing`: [`LengthBuffer`] (MessagePack's VarInt length
/// prefixes) on chunks (see [`Cut`]). The messages are those of reading the
/// whole data at once; a length over the limit ends it with `TooLarge` as
/// soon as its prefix is complete; a prefix of 5 bytes that still says "more"
/// ends it as malformed.
pub fn length_framing(input: &[u8]) {
    let cut = Cut::read(input);
    let mut want = Expected { messages: Vec::new(), end: Ok(None) };
    let mut at = 0;
    while at < cut.data.len() {
        let rest = &cut.data[at..];
        let Some(prefix) = rest.iter().take(5).position(|b| b & 0x80 == 0).map(|i| i + 1) else {
            if rest.len() >= 5 {
                want.end = Err(codec::Error::Malformed("length prefix longer than 5 bytes".into()));
            }
            break;
        };
        let len = rest[..prefix].iter().rev().fold(0usize, |n, b| (n << 7) | usize::from(b & 0x7f));
        if len > cut.limit {
            want.end = Err(codec::Error::TooLarge { limit: cut.limit });
            break;
        }
        let Some(body) = rest.get(prefix..prefix + len) else {
            break;
        };
        want.messages.push(body);
        at += prefix + len;
    }
    let mut framer = Framer::Lengths(LengthBuffer::new(cut.limit));
    let (got, outcome) = cut.feed(&mut framer, |_| {});
    cut.compare(&got, &outcome, &want);
}

/// Cuts `data` into chunks of the given lengths, in turn.
fn chunks<'a>(data: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    if cuts.iter().all(|c| *c == 0) {
        // No usable lengths: one chunk, after an empty push if asked for one.
        return if cuts.is_empty() { vec![data] } else { vec![&data[..0], data] };
    }
    let mut out = Vec::new();
    let mut rest = data;
    for len in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(usize::from(*len).min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

// === Handshake ===

/// `handshake`: the input is what a new connection sends first. It is
/// parsed whole as a handshake record, then as the session reads it: up to
/// the first 0x1E is the handshake, the rest is messages in the framing of
/// the protocol it chose, each checked as in [`hub_message`].
pub fn handshake(data: &[u8]) {
    let _ = check_handshake(data);
    let Some(end) = data.iter().position(|b| *b == RECORD_SEPARATOR) else {
        return;
    };
    let (head, rest) = (&data[..end], &data[end + 1..]);
    let Ok(protocol) = check_handshake(head) else {
        return;
    };
    let _ = protocol.framer(MAX_MESSAGE_BYTES).push::<codec::Error>(rest, |message| {
        hub_message(protocol, message);
        Ok(())
    });
}

/// A handshake is accepted exactly when its JSON names a protocol the
/// sidecar speaks at that version; a refusal names what was asked.
fn check_handshake(record: &[u8]) -> Result<Protocol, codec::Error> {
    let result = HandshakeRequest::parse(record);
    let (asked_name, asked_version) = handshake_fields(record);
    match &result {
        Ok(p) => {
            let asked = asked_name
                .as_ref()
                .and_then(Value::as_str)
                .zip(asked_version.as_ref().and_then(Value::as_u64))
                .and_then(|(n, v)| Protocol::from_handshake(n, u32::try_from(v).ok()?).ok());
            assert_eq!(asked, Some(*p), "accepted {asked_name:?} {asked_version:?} as {p:?}");
        }
        Err(e @ codec::Error::UnknownProtocol { name }) => {
            assert!(Protocol::ALL.iter().all(|p| !p.name().eq_ignore_ascii_case(name)), "{e}");
            assert_eq!(asked_name, Some(Value::from(name.as_str())), "{e}");
        }
        Err(e @ codec::Error::UnsupportedVersion { name, version }) => {
            assert!(Protocol::from_handshake(name, *version).is_err());
            assert!(*version > 2, "{e}");
            assert_eq!(asked_name, Some(Value::from(name.as_str())), "{e}");
            assert_eq!(asked_version, Some(Value::from(*version)), "{e}");
        }
        Err(codec::Error::Malformed(_)) => {}
        Err(other) => panic!("a handshake cannot fail with {other:?}"),
    }
    if let Err(e) = &result {
        let _ = e.to_string();
    }
    result
}

/// The `protocol` and `version` the record asks for, read as plain JSON.
/// serde's derived `Deserialize` also takes a struct as an array of its
/// fields in order, so `["json",1]` is a handshake too (ASP.NET Core
/// accepts only an object; harmless, but noted in fuzz/README.md).
///
/// serde_json skips an unknown field's string without checking its UTF-8,
/// so a handshake with invalid UTF-8 in an extra field is accepted while a
/// `Value` refuses it (harmless: those bytes are never read); such records
/// are read lossily here.
fn handshake_fields(record: &[u8]) -> (Option<Value>, Option<Value>) {
    let value = serde_json::from_slice::<Value>(record)
        .or_else(|_| serde_json::from_str::<Value>(&String::from_utf8_lossy(record)));
    match value {
        Ok(Value::Object(mut o)) => (o.remove("protocol"), o.remove("version")),
        Ok(Value::Array(a)) => (a.first().cloned(), a.get(1).cloned()),
        _ => (None, None),
    }
}

// === Envelopes ===

/// `envelope_json`: the input is a POST /internal/events body, or the
/// `data` field of a stream entry.
pub fn envelope_json(data: &[u8], schemas: &Schemas) {
    match Envelope::from_json(data, schemas) {
        Ok(envelope) => republished(&envelope, schemas),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// `envelope_stream_fields`: the input is a stream entry, one field per
/// line as `name=value` (a line without `=` is a name with an empty value;
/// a name that is not UTF-8 is read lossily). The value is raw bytes up to
/// the end of the line, so it may be any byte but `\n`.
pub fn envelope_stream_fields(data: &[u8], schemas: &Schemas) {
    let fields: Vec<(String, &[u8])> = data
        .split(|b| *b == b'\n')
        .map(|line| {
            let (name, value) = match line.iter().position(|b| *b == b'=') {
                Some(eq) => (&line[..eq], &line[eq + 1..]),
                None => (line, &line[..0]),
            };
            (String::from_utf8_lossy(name).into_owned(), value)
        })
        .collect();
    let entry = fields.iter().map(|(n, v)| (n.as_str(), *v));
    match Envelope::from_stream_fields(entry, schemas) {
        Ok(envelope) => republished(&envelope, schemas),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// An accepted envelope is republished (the HTTP bridge XADDs it as flat
/// fields; an instance may forward it as JSON) and read again by the stream
/// reader: both must decode to the same event, or it ends up dead-lettered
/// after the publisher was told it was accepted.
fn republished(envelope: &Envelope, schemas: &Schemas) {
    let flat = envelope.to_stream_fields();
    let again = Envelope::from_stream_fields(flat.iter().map(|(k, v)| (*k, v.as_bytes())), schemas)
        .unwrap_or_else(|e| panic!("accepted, but its flat fields are refused: {e}; {flat:?}"));
    assert_same_event(envelope, &again);

    let json = envelope.to_json().to_string();
    let again = Envelope::from_stream_fields([("data", json.as_bytes())], schemas)
        .unwrap_or_else(|e| panic!("accepted, but its JSON is refused: {e}; {json}"));
    assert_same_event(envelope, &again);
}

/// The same event; the timestamp as it is written (microseconds).
fn assert_same_event(a: &Envelope, b: &Envelope) {
    assert_eq!((&a.event_id, &a.event_type, &a.room_id), (&b.event_id, &b.event_type, &b.room_id));
    assert_eq!(format_timestamp(&a.timestamp), format_timestamp(&b.timestamp));
    let (pa, pb) = (Value::Object(a.payload.object().clone()), Value::Object(b.payload.object().clone()));
    assert!(same_json(&pa, &pb), "payload {pa} came back as {pb}");
    let (ma, mb) = (a.metadata.clone().map(Value::Object), b.metadata.clone().map(Value::Object));
    assert!(
        match (&ma, &mb) {
            (Some(x), Some(y)) => same_json(x, y),
            (x, y) => x == y,
        },
        "metadata {ma:?} came back as {mb:?}"
    );
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}
