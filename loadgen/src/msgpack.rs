//! Just enough MessagePack to read what the sidecar sends: array and map
//! headers, integers, strings, booleans, and skipping anything else. The
//! hot path reads two fields of one map per delivery, so it walks the bytes
//! in place instead of building a value tree.

/// Nesting followed when skipping a value; deeper input is refused.
const MAX_DEPTH: usize = 32;

/// A cursor over MessagePack bytes.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// The bytes from the cursor on.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or(&[])
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }

    /// An array header: its length.
    pub fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x90..=0x9f => Some(usize::from(b & 0x0f)),
            0xdc => self.be(2).map(|n| n as usize),
            0xdd => self.be(4).map(|n| n as usize),
            _ => None,
        }
    }

    /// A map header: its number of pairs.
    pub fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x80..=0x8f => Some(usize::from(b & 0x0f)),
            0xde => self.be(2).map(|n| n as usize),
            0xdf => self.be(4).map(|n| n as usize),
            _ => None,
        }
    }

    /// A non-negative integer of any width.
    pub fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => self.be(1).filter(|v| *v < 0x80),
            0xd1 => self.be(2).filter(|v| *v < 0x8000),
            0xd2 => self.be(4).filter(|v| *v < 0x8000_0000),
            0xd3 => self.be(8).filter(|v| *v < 0x8000_0000_0000_0000),
            _ => None,
        }
    }

    /// A string's bytes.
    pub fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        self.take(n)
    }

    /// A string or nil (None for nil, and for anything else).
    pub fn str_or_nil(&mut self) -> Option<&'a [u8]> {
        if self.bytes.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            return None;
        }
        self.str()
    }

    pub fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// Steps over one value of any type.
    pub fn skip(&mut self) -> Option<()> {
        self.skip_depth(0)
    }

    fn skip_depth(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let b = self.byte()?;
        let (fixed, items) = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * usize::from(b & 0x0f)),
            0x90..=0x9f => (0, usize::from(b & 0x0f)),
            0xa0..=0xbf => (usize::from(b & 0x1f), 0),
            0xc4 | 0xd9 => (self.be(1)? as usize, 0),
            0xc5 | 0xda => (self.be(2)? as usize, 0),
            0xc6 | 0xdb => (self.be(4)? as usize, 0),
            0xc7 => (self.be(1)? as usize + 1, 0),
            0xc8 => (self.be(2)? as usize + 1, 0),
            0xc9 => (self.be(4)? as usize + 1, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, self.be(2)? as usize),
            0xdd => (0, self.be(4)? as usize),
            0xde => (0, 2 * self.be(2)? as usize),
            0xdf => (0, 2 * self.be(4)? as usize),
            0xc1 => return None,
        };
        self.take(fixed)?;
        for _ in 0..items {
            self.skip_depth(depth + 1)?;
        }
        Some(())
    }

    /// In a map at the cursor, the reader positioned on the value of `key`.
    pub fn field(mut self, key: &[u8]) -> Option<Reader<'a>> {
        let pairs = self.map_len()?;
        for _ in 0..pairs {
            let matches = self.str().is_some_and(|k| k == key);
            if matches {
                return Some(self);
            }
            self.skip()?;
        }
        None
    }
}

/// Appends a string (fixstr or str8; the generator's strings are short).
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else {
        out.push(0xd9);
        out.push(n.min(255) as u8);
    }
    out.extend_from_slice(&s.as_bytes()[..n.min(255)]);
}

/// Appends a non-negative integer in its shortest form (an Ack's id).
pub fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Prefixes `body` with its VarInt length (the MessagePack hub framing).
pub fn framed(body: &[u8]) -> Vec<u8> {
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
    out.extend_from_slice(body);
    out
}

/// Reads a VarInt length prefix: (length, prefix bytes), or None while
/// more bytes are needed. Err when the prefix is longer than 5 bytes.
pub fn varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    let mut len = 0usize;
    for (i, b) in bytes.iter().enumerate().take(5) {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((len, i + 1)));
        }
    }
    if bytes.len() >= 5 {
        Err(())
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_map_field_after_skipping_others() {
        // {"a": [1, {"x": nil}], "b": 1.5, "sent_ns": uint64, "ok": true}
        let mut m = vec![0x84, 0xa1, b'a', 0x92, 0x01, 0x81, 0xa1, b'x', 0xc0, 0xa1, b'b', 0xcb];
        m.extend_from_slice(&1.5f64.to_be_bytes());
        m.extend_from_slice(&[0xa7]);
        m.extend_from_slice(b"sent_ns");
        m.push(0xcf);
        m.extend_from_slice(&1_795_000_000_000_000_123u64.to_be_bytes());
        m.extend_from_slice(&[0xa2, b'o', b'k', 0xc3]);
        let r = Reader::new(&m);
        assert_eq!(r.field(b"sent_ns").and_then(|mut v| v.uint()), Some(1_795_000_000_000_000_123));
        assert_eq!(r.field(b"ok").and_then(|mut v| v.bool()), Some(true));
        assert!(r.field(b"missing").is_none());
    }

    #[test]
    fn uints_read_back_at_every_width() {
        for v in [0u64, 127, 128, 255, 256, 65_535, 65_536, u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX] {
            let mut out = Vec::new();
            put_uint(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.uint(), Some(v));
            assert!(r.rest().is_empty(), "{v}: nothing after the integer");
        }
        let mut out = Vec::new();
        put_uint(&mut out, 300);
        assert_eq!(out, [0xcd, 0x01, 0x2c], "the shortest form");
    }

    #[test]
    fn varint_round_trip() {
        for n in [0usize, 1, 127, 128, 300, 70_000] {
            let f = framed(&vec![0u8; n]);
            assert_eq!(varint(&f), Ok(Some((n, f.len() - n))));
        }
        assert_eq!(varint(&[0x80]), Ok(None));
        assert_eq!(varint(&[0x80; 5]), Err(()));
    }

    #[test]
    fn refuses_truncated_and_reserved_input() {
        assert!(Reader::new(&[0xcf, 1, 2]).uint().is_none());
        assert!(Reader::new(&[0xc1]).skip().is_none());
        assert!(Reader::new(&[0x92, 0x01]).skip().is_none());
        assert_eq!(Reader::new(&[0xd0, 0x05]).uint(), Some(5));
        assert!(Reader::new(&[0xd0, 0xff]).uint().is_none(), "int8 -1 is not a uint");
    }
}
