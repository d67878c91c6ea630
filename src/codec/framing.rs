//! Records separated by 0x1E (the text protocols and the handshake).
//!
//! A transport message may hold several records, or part of one: the
//! separator can fall anywhere, so bytes are kept until it arrives.

use super::Error;

/// The ASCII record separator that ends every JSON record and the handshake.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Accumulates bytes across transport messages and hands out whole records.
#[derive(Debug)]
pub struct RecordBuffer {
    pending: Vec<u8>,
    limit: usize,
}

impl RecordBuffer {
    /// A buffer that refuses records longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        RecordBuffer { pending: Vec::new(), limit }
    }

    /// Appends `data` and calls `each` with every record it completes, in
    /// order, without the separator. A partial record stays for next time.
    /// Stops at the first error `each` returns.
    pub fn push<E>(&mut self, data: &[u8], mut each: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E>
    where
        E: From<Error>,
    {
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|b| *b == RECORD_SEPARATOR) {
            let (head, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if self.pending.is_empty() {
                self.check(head.len())?;
                each(head)?;
            } else {
                self.check(self.pending.len() + head.len())?;
                self.pending.extend_from_slice(head);
                let record = std::mem::take(&mut self.pending);
                each(&record)?;
            }
        }
        if !rest.is_empty() {
            self.check(self.pending.len() + rest.len())?;
            self.pending.extend_from_slice(rest);
        }
        Ok(())
    }

    /// Takes what is left after the handshake record so another framing can
    /// continue from it.
    pub fn take_remainder(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    fn check(&self, len: usize) -> Result<(), Error> {
        if len > self.limit {
            Err(Error::TooLarge { limit: self.limit })
        } else {
            Ok(())
        }
    }
}

/// Accumulates bytes and hands out messages framed by a VarInt length
/// prefix (the binary protocols), across transport messages.
#[derive(Debug)]
pub struct LengthBuffer {
    pending: Vec<u8>,
    limit: usize,
}

impl LengthBuffer {
    /// A buffer that refuses messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        LengthBuffer { pending: Vec::new(), limit }
    }

    /// Appends `data` and calls `each` with every complete message body.
    pub fn push<E>(&mut self, data: &[u8], mut each: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E>
    where
        E: From<Error>,
    {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while let Some((len, header)) = varint(&self.pending[at..])? {
            if len > self.limit {
                return Err(Error::TooLarge { limit: self.limit }.into());
            }
            let start = at + header;
            if self.pending.len() < start + len {
                break;
            }
            each(&self.pending[start..start + len])?;
            at = start + len;
        }
        self.pending.drain(..at);
        if self.pending.len() > self.limit + 5 {
            return Err(Error::TooLarge { limit: self.limit }.into());
        }
        Ok(())
    }
}

/// Reads a VarInt length: `Ok(None)` when more bytes are needed.
fn varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut len = 0usize;
    for (i, b) in bytes.iter().enumerate().take(5) {
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((len, i + 1)));
        }
    }
    if bytes.len() >= 5 {
        return Err(Error::Malformed("length prefix longer than 5 bytes".into()));
    }
    Ok(None)
}

/// The framing of a protocol: 0x1E records (text) or length prefixes (binary).
#[derive(Debug)]
pub enum Framer {
    /// JSON.
    Records(RecordBuffer),
    /// MessagePack.
    Lengths(LengthBuffer),
}

impl Framer {
    /// Appends `data` and calls `each` with every complete message.
    pub fn push<E>(&mut self, data: &[u8], each: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E>
    where
        E: From<Error>,
    {
        match self {
            Framer::Records(b) => b.push(data, each),
            Framer::Lengths(b) => b.push(data, each),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut buf = RecordBuffer::new(64);
        let mut out = Vec::new();
        for chunk in chunks {
            buf.push::<Error>(chunk, |r| {
                out.push(r.to_vec());
                Ok(())
            })
            .expect("within the limit");
        }
        out
    }

    #[test]
    fn splits_several_records_in_one_message() {
        assert_eq!(records(&[b"a\x1eb\x1e"]), vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn joins_a_record_split_across_messages() {
        assert_eq!(records(&[b"{\"ty", b"pe\":6}\x1e{", b"}\x1e"]), vec![b"{\"type\":6}".to_vec(), b"{}".to_vec()]);
    }

    #[test]
    fn length_prefixed_messages_split_anywhere() {
        let mut all = Vec::new();
        for body in [&b"abc"[..], &[7u8; 200][..]] {
            let mut n = body.len();
            while n >= 0x80 {
                all.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            all.push(n as u8);
            all.extend_from_slice(body);
        }
        let mut buf = LengthBuffer::new(1024);
        let mut got = Vec::new();
        for chunk in all.chunks(2) {
            buf.push::<Error>(chunk, |m| {
                got.push(m.len());
                Ok(())
            })
            .expect("within the limit");
        }
        assert_eq!(got, [3, 200]);
    }

    #[test]
    fn refuses_an_oversize_record_before_its_separator() {
        let mut buf = RecordBuffer::new(4);
        let err = buf.push::<Error>(b"12345", |_| Ok(())).unwrap_err();
        assert_eq!(err, Error::TooLarge { limit: 4 });
    }
}
