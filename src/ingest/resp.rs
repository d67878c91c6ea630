//! RESP2 for the stream reader's own connection (`read_conn`): the one
//! command it sends, encoded once, and the replies it gets, parsed straight
//! from the socket's bytes into entries.
//!
//! Why not the `redis` crate here: its parser builds a `Value` tree for
//! every reply (a vector per entry, one per field list, a value per field)
//! and hands it over from the connection's own task, about 25,000
//! instructions and a task switch per event (bench/gaps.md, section 1);
//! an XREADGROUP reply is a few nested arrays of bulk strings, read here
//! in one pass. Knows bytes only: no socket, no Redis client.

use std::ops::Range;

use super::replies::Read;
use super::StreamId;
use crate::envelope::{EntryBlock, Spans};

/// Why a reply could not be taken from the buffer.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(super) enum ParseError {
    /// The reply goes on past the bytes read so far: read more, parse again.
    #[error("the reply is not complete yet")]
    Incomplete,
    /// Redis answered with an error (`-NOGROUP ...`): the whole line.
    #[error("{0}")]
    Server(String),
    /// Bytes that are not the reply this reader expects.
    #[error("unexpected reply from redis: {0}")]
    Invalid(&'static str),
}

/// A command as RESP: an array of bulk strings.
pub(super) fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A status reply (`+OK`, for AUTH and SELECT): the bytes it took.
pub(super) fn status(buf: &[u8]) -> Result<usize, ParseError> {
    let mut c = Cursor { buf, at: 0 };
    match c.byte()? {
        b'+' => {
            c.line()?;
            Ok(c.at)
        }
        b'-' => Err(server_error(c.line()?)),
        _ => Err(ParseError::Invalid("expected a status reply")),
    }
}

/// An integer reply (`CLIENT ID`): the number and the bytes it took.
pub(super) fn integer(buf: &[u8]) -> Result<(i64, usize), ParseError> {
    let mut c = Cursor { buf, at: 0 };
    match c.byte()? {
        b':' => {
            let line = c.line()?;
            let n = std::str::from_utf8(line).ok().and_then(|n| n.parse().ok());
            Ok((n.ok_or(ParseError::Invalid("an integer reply that is not a number"))?, c.at))
        }
        b'-' => Err(server_error(c.line()?)),
        _ => Err(ParseError::Invalid("expected an integer reply")),
    }
}

/// The reply to the BLPOP that holds a read window in Redis: nil when the
/// wait ran out (or was cut short by CLIENT UNBLOCK), a popped `[key,
/// value]` should anything have pushed to the key, or an error line, given
/// as a value (`Err(line)`) because the read queued behind it still has
/// its own reply to take.
pub(super) fn hold_reply(buf: &[u8]) -> Result<(Result<(), String>, usize), ParseError> {
    let mut c = Cursor { buf, at: 0 };
    if buf.first() == Some(&b'-') {
        c.at = 1;
        let line = c.line()?;
        return Ok((Err(String::from_utf8_lossy(line).into_owned()), c.at));
    }
    if let Some(n) = c.array()? {
        for _ in 0..n {
            c.bulk()?;
        }
    }
    Ok((Ok(()), c.at))
}

/// An XREADGROUP reply for one stream: its entries (none when the block
/// timed out) and the bytes it took. `[[stream, [[id, [field, value, ...]],
/// ...]]]`; an entry deleted while pending comes as `[id, nil]` and keeps
/// its id with no fields (the caller dead-letters it). The entries are
/// read in place: the reply's bytes are copied once, whole, and each
/// entry is where its id and fields are in them.
pub(super) fn read_reply(buf: &[u8]) -> Result<(Read, usize), ParseError> {
    let mut c = Cursor { buf, at: 0 };
    let mut read = Read::default();
    match c.byte()? {
        b'-' => return Err(server_error(c.line()?)),
        b'_' => {
            c.line()?; // RESP3 null, should the server speak it.
            return Ok((read, c.at));
        }
        b'*' => {}
        _ => return Err(ParseError::Invalid("expected an array")),
    }
    let Some(streams) = c.length()? else { return Ok((read, c.at)) };
    let mut spans = Spans::default();
    for _ in 0..streams {
        if c.array()? != Some(2) {
            return Err(ParseError::Invalid("expected [stream, entries]"));
        }
        c.bulk()?; // the stream's name: the reader reads one stream.
        let Some(entries) = c.array()? else { continue };
        spans.reserve(entries);
        read.ids.reserve(entries);
        for _ in 0..entries {
            if c.array()? != Some(2) {
                return Err(ParseError::Invalid("expected [id, fields]"));
            }
            let at = c.bulk_span()?.ok_or(ParseError::Invalid("an entry without an id"))?;
            let id = buf.get(at.clone()).and_then(StreamId::from_entry_id);
            let id = id.ok_or(ParseError::Invalid("an entry id that is not <ms>-<seq>"))?;
            if let Some(n) = c.array()? {
                for _ in 0..n / 2 {
                    // A nil name or value reads as empty.
                    let name = c.bulk_span()?.unwrap_or_default();
                    spans.field(name, c.bulk_span()?.unwrap_or_default());
                }
                if n % 2 == 1 {
                    c.bulk()?;
                }
            }
            spans.entry(at);
            read.ids.push(id);
        }
    }
    read.block = EntryBlock::new(buf.get(..c.at).unwrap_or_default().to_vec(), spans);
    Ok((read, c.at))
}

fn server_error(line: &[u8]) -> ParseError {
    ParseError::Server(String::from_utf8_lossy(line).into_owned())
}

/// A position in a buffer that may end mid-reply.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, ParseError> {
        let b = *self.buf.get(self.at).ok_or(ParseError::Incomplete)?;
        self.at += 1;
        Ok(b)
    }

    /// The rest of the line, without its CRLF (a line of a status, an
    /// error or a length holds no CR of its own).
    fn line(&mut self) -> Result<&'a [u8], ParseError> {
        let rest = &self.buf[self.at..];
        let end = rest.iter().position(|&b| b == b'\r').ok_or(ParseError::Incomplete)?;
        match rest.get(end + 1) {
            None => return Err(ParseError::Incomplete),
            Some(b'\n') => {}
            Some(_) => return Err(ParseError::Invalid("a CR without its LF")),
        }
        self.at += end + 2;
        Ok(&rest[..end])
    }

    /// A length line: `None` for -1 (nil). Read digit by digit up to its
    /// CR (a dozen lengths an entry: finding the line first and reading it
    /// again was a tenth of a skipped entry's parse).
    fn length(&mut self) -> Result<Option<usize>, ParseError> {
        const NOT_A_LENGTH: ParseError = ParseError::Invalid("a length that is not a number");
        let rest = self.buf.get(self.at..).unwrap_or_default();
        if rest.first() == Some(&b'-') {
            return if self.line()? == b"-1" { Ok(None) } else { Err(NOT_A_LENGTH) };
        }
        let mut n = 0usize;
        for (i, &b) in rest.iter().enumerate() {
            match b {
                b'0'..=b'9' if i < 18 => n = n * 10 + usize::from(b - b'0'),
                b'\r' if i > 0 => {
                    return match rest.get(i + 1) {
                        None => Err(ParseError::Incomplete),
                        Some(b'\n') => {
                            self.at += i + 2;
                            Ok(Some(n))
                        }
                        Some(_) => Err(ParseError::Invalid("a CR without its LF")),
                    };
                }
                _ => return Err(NOT_A_LENGTH),
            }
        }
        Err(ParseError::Incomplete)
    }

    /// An array's length (`None` for a nil array or a RESP3 null).
    fn array(&mut self) -> Result<Option<usize>, ParseError> {
        match self.byte()? {
            b'*' => self.length(),
            b'_' => self.line().map(|_| None),
            _ => Err(ParseError::Invalid("expected an array")),
        }
    }

    /// A bulk string's bytes (`None` for nil); a simple string is taken too.
    fn bulk(&mut self) -> Result<Option<&'a [u8]>, ParseError> {
        let buf = self.buf;
        Ok(self.bulk_span()?.and_then(|at| buf.get(at)))
    }

    /// Where a bulk string's bytes are in the buffer (`None` for nil).
    fn bulk_span(&mut self) -> Result<Option<Range<usize>>, ParseError> {
        match self.byte()? {
            b'$' => {
                let Some(len) = self.length()? else { return Ok(None) };
                let end = self.at.checked_add(len).ok_or(ParseError::Invalid("a bulk string too long"))?;
                if self.buf.len() < end + 2 {
                    return Err(ParseError::Incomplete);
                }
                if &self.buf[end..end + 2] != b"\r\n" {
                    return Err(ParseError::Invalid("a bulk string without its CRLF"));
                }
                let start = self.at;
                self.at = end + 2;
                Ok(Some(start..end))
            }
            b'+' => {
                let start = self.at;
                let line = self.line()?;
                Ok(Some(start..start + line.len()))
            }
            b'_' => self.line().map(|_| None),
            _ => Err(ParseError::Invalid("expected a bulk string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EntryFields;
    use crate::ingest::replies::Entry;

    /// A reply's entries, each copied out of the read.
    fn parse(buf: &[u8]) -> Result<(Vec<Entry>, usize), ParseError> {
        read_reply(buf).map(|(read, used)| (read.entries(), used))
    }

    #[test]
    fn a_hold_reply_is_taken_whole_whatever_it_is_and_an_error_is_a_value() {
        let after = b"*-1\r\n";
        for (reply, expect) in [
            (&b"*-1\r\n"[..], Ok(())),
            (&b"_\r\n"[..], Ok(())),
            (&b"*2\r\n$1\r\nk\r\n$1\r\nv\r\n"[..], Ok(())),
            (&b"-WRONGTYPE Operation against a key\r\n"[..], Err("WRONGTYPE Operation against a key".to_string())),
        ] {
            let mut buf = reply.to_vec();
            buf.extend_from_slice(after);
            assert_eq!(hold_reply(&buf), Ok((expect, reply.len())), "{}", String::from_utf8_lossy(reply));
            assert_eq!(hold_reply(&reply[..reply.len() - 1]), Err(ParseError::Incomplete));
        }
    }

    #[test]
    fn an_integer_reply_is_its_number() {
        assert_eq!(integer(b":42\r\n*-1\r\n"), Ok((42, 5)));
        assert_eq!(integer(b":4"), Err(ParseError::Incomplete));
        assert_eq!(integer(b"-NOPERM no\r\n"), Err(ParseError::Server("NOPERM no".into())));
        assert!(matches!(integer(b"+OK\r\n"), Err(ParseError::Invalid(_))));
    }

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    fn reply(entries: &[(&str, &[&str])]) -> Vec<u8> {
        let mut out = format!("*1\r\n*2\r\n{}*{}\r\n", bulk("events:chat"), entries.len());
        for (id, kv) in entries {
            out += &format!("*2\r\n{}*{}\r\n", bulk(id), kv.len());
            for s in *kv {
                out += &bulk(s);
            }
        }
        out.into_bytes()
    }

    fn entry(id: &str, kv: &[(&str, &str)]) -> Entry {
        Entry {
            id: id.parse().expect("id"),
            fields: EntryFields::from_pairs(kv.iter().map(|(k, v)| (*k, v.as_bytes()))),
        }
    }

    #[test]
    fn encodes_a_command_as_an_array_of_bulk_strings() {
        assert_eq!(command(&[b"XACK", b"s", b"1-0"]), b"*3\r\n$4\r\nXACK\r\n$1\r\ns\r\n$3\r\n1-0\r\n".to_vec());
    }

    #[test]
    fn reads_entries_with_their_fields_in_order() {
        let bytes = reply(&[("1-0", &["data", "{\"a\":\"x\\r\\n\"}"]), ("2-0", &["event_type", "x", "room_id", "r"])]);
        let (entries, used) = parse(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            entries,
            vec![
                entry("1-0", &[("data", "{\"a\":\"x\\r\\n\"}")]),
                entry("2-0", &[("event_type", "x"), ("room_id", "r")])
            ]
        );
    }

    #[test]
    fn a_field_name_that_is_not_text_is_kept_made_text() {
        let bytes =
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$2\r\nk\xff\r\n$1\r\nv\r\n$1\r\nx\r\n$0\r\n\r\n";
        let (entries, _) = parse(bytes).unwrap();
        assert_eq!(entries, vec![entry("1-0", &[("k\u{fffd}", "v"), ("x", "")])]);
    }

    #[test]
    fn a_value_may_hold_crlf_and_binary_bytes() {
        let mut bytes = b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$4\r\ndata\r\n$4\r\n".to_vec();
        bytes.extend_from_slice(b"\r\n\xff\x00\r\n");
        let (entries, _) = parse(&bytes).unwrap();
        assert_eq!(entries[0].fields.iter().next(), Some(("data", &b"\r\n\xff\x00"[..])));
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete() {
        let bytes = reply(&[("1-0", &["data", "{}"]), ("2-0", &["k", "v"])]);
        for end in 0..bytes.len() {
            assert_eq!(parse(&bytes[..end]), Err(ParseError::Incomplete), "prefix of {end} bytes");
        }
    }

    #[test]
    fn a_timed_out_block_is_no_entries_and_two_replies_are_taken_one_at_a_time() {
        let mut bytes = b"*-1\r\n".to_vec();
        let second = reply(&[("3-0", &["k", "v"])]);
        bytes.extend_from_slice(&second);
        let (entries, used) = parse(&bytes).unwrap();
        assert!(entries.is_empty());
        assert_eq!(used, 5);
        let (entries, used) = parse(&bytes[used..]).unwrap();
        assert_eq!((entries.len(), used), (1, second.len()));
    }

    #[test]
    fn entries_of_every_stream_in_a_reply_are_kept_in_order() {
        // A reader reads one stream, but a reply of two must not lose the
        // first's entries: the ids settled are the block's, index by index.
        let one = reply(&[("1-0", &["k", "a"])]);
        let two = reply(&[("2-0", &["k", "b"]), ("3-0", &["k", "c"])]);
        let mut bytes = b"*2\r\n".to_vec();
        bytes.extend_from_slice(&one[4..]);
        bytes.extend_from_slice(&two[4..]);
        let (entries, used) = parse(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            entries,
            vec![entry("1-0", &[("k", "a")]), entry("2-0", &[("k", "b")]), entry("3-0", &[("k", "c")])]
        );
    }

    #[test]
    fn a_deleted_pending_entry_keeps_its_id() {
        let bytes = b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n4-0\r\n*-1\r\n";
        assert_eq!(parse(bytes).unwrap().0, vec![entry("4-0", &[])]);
    }

    #[test]
    fn errors_are_the_servers_line_and_garbage_is_named() {
        let nogroup = b"-NOGROUP No such key 's' or consumer group 'g'\r\n";
        assert_eq!(parse(nogroup), Err(ParseError::Server("NOGROUP No such key 's' or consumer group 'g'".into())));
        assert!(matches!(parse(b":12\r\n"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse(b"*1\r\n*2\r\n$1\r\nsXX"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse(b"*x\r\n"), Err(ParseError::Invalid(_))));
        // Lengths: empty, negative other than -1, a digit after a sign, 19 digits, a CR without its LF.
        for bad in [&b"*\r\n"[..], b"*-2\r\n", b"*1-\r\n", b"*1234567890123456789\r\n", b"*1\rx"] {
            assert!(matches!(parse(bad), Err(ParseError::Invalid(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"*0\r\n"), Ok((Vec::new(), 4)));
        assert_eq!(parse(b"*12"), Err(ParseError::Incomplete));
        for id in ["x-0", "1", "-1", "1-", "18446744073709551616-0"] {
            let bytes = format!("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n{}*-1\r\n", bulk(id));
            assert!(matches!(parse(bytes.as_bytes()), Err(ParseError::Invalid(_))), "{id}");
        }
        assert!(matches!(status(b"+O\rK\r\n"), Err(ParseError::Invalid(_))));
        assert_eq!(status(b"+OK\r\n"), Ok(5));
        assert_eq!(status(b"-WRONGPASS invalid\r\n"), Err(ParseError::Server("WRONGPASS invalid".into())));
    }
}
