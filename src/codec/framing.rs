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
        RecordBuffer {
            pending: Vec::new(),
            limit,
        }
    }

    /// Appends `data` and calls `each` with every record it completes, in
    /// order, without the separator. A partial record stays for next time.
    /// Stops at the first error `each` returns.
    pub fn push<E>(
        &mut self,
        data: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E>
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
        assert_eq!(
            records(&[b"a\x1eb\x1e"]),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
    }

    #[test]
    fn joins_a_record_split_across_messages() {
        assert_eq!(
            records(&[b"{\"ty", b"pe\":6}\x1e{", b"}\x1e"]),
            vec![b"{\"type\":6}".to_vec(), b"{}".to_vec()]
        );
    }

    #[test]
    fn refuses_an_oversize_record_before_its_separator() {
        let mut buf = RecordBuffer::new(4);
        let err = buf.push::<Error>(b"12345", |_| Ok(())).unwrap_err();
        assert_eq!(err, Error::TooLarge { limit: 4 });
    }
}
