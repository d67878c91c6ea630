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
        let bad = || BadStreamId(s.to_string());
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Ok(StreamId { ms: ms.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
    }
}

impl StreamId {
    /// The id as Redis writes it.
    pub(crate) fn to_text(self) -> String {
        self.text(&mut IdText::default()).to_owned()
    }

    /// The id as Redis writes it, in `buf`. Written digit by digit: the
    /// formatting machinery took about a thousand instructions per id, and
    /// every entry read is written out twice (its position and its XACK).
    pub(crate) fn text(self, buf: &mut IdText) -> &str {
        let n = self.write_text(&mut buf.0);
        std::str::from_utf8(&buf.0[..n]).unwrap_or_default()
    }

    /// Writes the id's text at the start of `out`; its length.
    fn write_text(self, out: &mut [u8; MAX_TEXT]) -> usize {
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
        let at = digits(self.ms, out, 0);
        out[at] = b'-';
        digits(self.seq, out, at + 1)
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
        let mut buf = [0u8; MAX_TEXT];
        let n = self.write_text(&mut buf);
        out.write_arg(&buf[..n]);
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
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
        for bad in ["", "-", "1-", "-1", " 1-2", "1-2 ", "1-2-3", "1.5-0", "18446744073709551616-0", "1--1"] {
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
