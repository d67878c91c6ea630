//! MessagePack hub messages as raw frames carry them (HubProtocol.md,
//! "MessagePack Encoding"): each one a VarInt length, then its body.

use rmpv::Value as Mp;

/// One MessagePack hub message with its VarInt length prefix.
pub fn frame(value: &Mp) -> Vec<u8> {
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, value).expect("encode");
    let (mut out, mut len) = (Vec::new(), body.len());
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend(body);
    out
}

/// Every length-prefixed message of a binary body, each the items of its
/// array.
pub fn messages(mut bytes: &[u8]) -> Vec<Vec<Mp>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (mut len, mut shift, mut i) = (0usize, 0, 0);
        loop {
            let b = bytes[i];
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = &bytes[i..i + len];
        match rmpv::decode::read_value(&mut body).expect("a MessagePack value") {
            Mp::Array(items) => out.push(items),
            other => panic!("a hub message is an array, got {other}"),
        }
        bytes = &bytes[i + len..];
    }
    out
}
