//! Stream entry ids (`<ms>-<seq>`) as ordered values: where a reader stands
//! in a stream, compared to what Redis still holds.

use std::fmt;
use std::str::FromStr;

/// One stream entry id. Ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`: before every entry.
    pub(crate) const ZERO: StreamId = StreamId { ms: 0, seq: 0 };
}

/// An id that is not `<ms>-<seq>` (or `<ms>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a stream entry id")]
pub(crate) struct BadStreamId(pub String);

impl FromStr for StreamId {
    type Err = BadStreamId;

    fn from_str(s: &str) -> Result<StreamId, BadStreamId> {
        let bytes = s.as_bytes();
        let id = match bytes.iter().position(|&b| b == b'-') {
            Some(dash) => StreamId::from_parts(&bytes[..dash], &bytes[dash + 1..]),
            None => StreamId::from_parts(bytes, b"0"),
        };
        id.ok_or_else(|| BadStreamId(s.to_string()))
    }
}

impl StreamId {
    /// An entry id as Redis writes every one, `<ms>-<seq>`, from a reply's
    /// bytes (no text check first).
    pub(crate) fn from_entry_id(text: &[u8]) -> Option<StreamId> {
        let dash = text.iter().position(|&b| b == b'-')?;
        StreamId::from_parts(&text[..dash], &text[dash + 1..])
    }

    /// Both parts from their decimal digits (nothing else, not even a sign).
    fn from_parts(ms: &[u8], seq: &[u8]) -> Option<StreamId> {
        fn number(digits: &[u8]) -> Option<u64> {
            if digits.is_empty() {
                return None;
            }
            digits.iter().try_fold(0u64, |n, &b| match b {
                b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
                _ => None,
            })
        }
        Some(StreamId { ms: number(ms)?, seq: number(seq)? })
    }

    /// The id as Redis writes it.
    pub(crate) fn to_text(self) -> String {
        self.text(&mut IdText::default()).to_owned()
    }

    /// The id as Redis writes it, in `buf`. Written digit by digit: the
    /// formatting machinery took about a thousand instructions per id, and
    /// every entry read is written out twice (its position and its XACK).
    pub(crate) fn text(self, buf: &mut IdText) -> &str {
        /// `n` in decimal at `out[at..]`; where it ends.
        fn digits(n: u64, out: &mut [u8; MAX_TEXT], at: usize) -> usize {
            let len = n.checked_ilog10().map_or(1, |l| l as usize + 1);
            let mut n = n;
            for slot in out[at..at + len].iter_mut().rev() {
                *slot = b'0' + (n % 10) as u8;
                n /= 10;
            }
            at + len
        }
        let at = digits(self.ms, &mut buf.0, 0);
        buf.0[at] = b'-';
        let end = digits(self.seq, &mut buf.0, at + 1);
        std::str::from_utf8(&buf.0[..end]).unwrap_or_default()
    }
}

/// Room for an id's text (see [`StreamId::text`]), on the stack.
pub(crate) struct IdText([u8; MAX_TEXT]);

impl Default for IdText {
    fn default() -> IdText {
        IdText([0; MAX_TEXT])
    }
}

/// The longest id's text: two 20-digit numbers and the dash.
const MAX_TEXT: usize = 41;

/// An id as a command argument (XACK), written without a string of its own.
impl redis::ToRedisArgs for StreamId {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        out.write_arg(self.text(&mut IdText::default()).as_bytes());
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut IdText::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_as_redis_orders_them() {
        let a: StreamId = "1700000000000-9".parse().expect("id");
        let b: StreamId = "1700000000001-0".parse().expect("id");
        assert!(a < b && StreamId::ZERO < a);
        assert_eq!("5".parse::<StreamId>(), Ok(StreamId { ms: 5, seq: 0 }));
        assert_eq!(a.to_string(), "1700000000000-9");
        assert!("x-1".parse::<StreamId>().is_err());
    }

    #[test]
    fn only_whole_ids_parse() {
        for bad in
            ["", "-", "1-", "-1", " 1-2", "1-2 ", "1-2-3", "1.5-0", "18446744073709551616-0", "1--1", "+1-0", "1-+0"]
        {
            assert_eq!(bad.parse::<StreamId>(), Err(BadStreamId(bad.to_string())), "{bad:?}");
        }
        let max: StreamId = "18446744073709551615-18446744073709551615".parse().expect("u64::MAX parts");
        assert_eq!(max, StreamId { ms: u64::MAX, seq: u64::MAX });
        assert_eq!(BadStreamId("x".into()).to_string(), "'x' is not a stream entry id");
    }

    #[test]
    fn the_sequence_orders_within_a_millisecond() {
        let a: StreamId = "5-2".parse().expect("id");
        let b: StreamId = "5-10".parse().expect("id");
        assert!(a < b, "numerically, not as text");
        assert_eq!(StreamId::default(), StreamId::ZERO);
        assert_eq!(StreamId::ZERO.to_string(), "0-0");
        let max = StreamId { ms: u64::MAX, seq: 10 };
        assert_eq!(max.to_text(), "18446744073709551615-10");
        let widest = StreamId { ms: u64::MAX, seq: u64::MAX };
        assert_eq!(widest.to_text(), "18446744073709551615-18446744073709551615");
        assert_eq!(StreamId { ms: 1700000000000, seq: 9 }.to_text(), "1700000000000-9");
    }
}
