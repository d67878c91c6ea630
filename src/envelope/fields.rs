//! A stream entry's fields as Redis returned them: the names in one string, the values in one buffer.
//!
//! An entry the pipeline keeps (or one that came on its own: a claim, a
//! range) is copied out of its read into one of these and kept until it
//! settles (a dead letter carries every field); entries passed over are
//! only read in place (`block.rs`). As a string and a byte vector per field an
//! entry of the flat encoding cost twelve allocations to read and twelve
//! frees to drop (bench/gaps.md, section 1); here it is three of each: the
//! names (text), the values and where each one is. The values are checked
//! for UTF-8 once, all together, when the entry is read: the head and the
//! payload are then read as text without a check of their own each.

use std::fmt;

/// The fields of one entry, in order: names (made UTF-8, lossily, when
/// they are not) and values (bytes as stored).
#[derive(Clone, Default)]
pub struct EntryFields {
    names: String,
    values: Values,
    /// Per field: where its name ends in `names`, where its value ends in
    /// `values` (each starts where the previous field's ends).
    ends: Vec<(u32, u32)>,
}

/// Bytes checked for UTF-8 once, all together: text when they all are
/// (almost always), so a part of them is read as text with no check of its
/// own; bytes otherwise. Every value of an entry, one after the other, or
/// a whole read's reply ([`EntryBlock`](super::EntryBlock)).
#[derive(Clone, Debug)]
pub(super) enum Values {
    Text(String),
    Bytes(Vec<u8>),
}

impl Default for Values {
    fn default() -> Values {
        Values::Text(String::new())
    }
}

impl Values {
    /// `bytes`, checked once.
    pub(super) fn new(bytes: Vec<u8>) -> Values {
        match String::from_utf8(bytes) {
            Ok(text) => Values::Text(text),
            Err(e) => Values::Bytes(e.into_bytes()),
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Values::Text(text) => text.as_bytes(),
            Values::Bytes(bytes) => bytes,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.bytes().len()
    }

    /// The bytes at `at` as text, if they are UTF-8 (a span that starts or
    /// ends inside a character is not text by itself).
    pub(super) fn text(&self, at: std::ops::Range<usize>) -> Option<&str> {
        match self {
            Values::Text(text) => text.get(at),
            Values::Bytes(bytes) => std::str::from_utf8(bytes.get(at)?).ok(),
        }
    }

    /// Adds `bytes` at the end: text while they all are.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        match (&mut *self, std::str::from_utf8(bytes)) {
            (Values::Text(text), Ok(more)) => text.push_str(more),
            (Values::Text(text), Err(_)) => {
                let mut all = std::mem::take(text).into_bytes();
                all.extend_from_slice(bytes);
                *self = Values::Bytes(all);
            }
            (Values::Bytes(all), _) => all.extend_from_slice(bytes),
        }
    }
}

/// The same fields, however their values are kept.
impl PartialEq for EntryFields {
    fn eq(&self, other: &EntryFields) -> bool {
        self.names == other.names && self.ends == other.ends && self.values.bytes() == other.values.bytes()
    }
}

impl Eq for EntryFields {}

impl EntryFields {
    /// The fields of `parts`, in order, as a reply holds them: copied into
    /// buffers of their size, names and values each checked for UTF-8 once.
    pub fn from_parts(parts: &[(&[u8], &[u8])]) -> EntryFields {
        let name_bytes: usize = parts.iter().map(|(k, _)| k.len()).sum();
        let value_bytes: usize = parts.iter().map(|(_, v)| v.len()).sum();
        if u32::try_from(name_bytes.max(value_bytes)).is_err() {
            return EntryFields::from_pairs_lossy(parts);
        }
        let mut names = Vec::with_capacity(name_bytes);
        let mut values = Vec::with_capacity(value_bytes);
        let mut ends = Vec::with_capacity(parts.len());
        for (name, value) in parts {
            names.extend_from_slice(name);
            values.extend_from_slice(value);
            // Both fit in u32: checked above.
            ends.push((names.len() as u32, values.len() as u32));
        }
        // The names together are text, and no name ends inside a character
        // (so each one is text by itself); otherwise each is made text alone.
        let names = match String::from_utf8(names) {
            Ok(names) if ends.iter().all(|&(end, _)| names.is_char_boundary(end as usize)) => names,
            _ => return EntryFields::from_pairs_lossy(parts),
        };
        EntryFields { names, values: Values::new(values), ends }
    }

    /// The fields of `parts`, text already (read from a reply checked
    /// whole): copied, not checked again. An entry past 4 GiB keeps what
    /// fits.
    pub fn from_text_parts(parts: &[(&str, &str)]) -> EntryFields {
        let mut names = String::with_capacity(parts.iter().map(|(k, _)| k.len()).sum());
        let mut values = String::with_capacity(parts.iter().map(|(_, v)| v.len()).sum());
        let mut ends = Vec::with_capacity(parts.len());
        for (name, value) in parts {
            let (Ok(name_end), Ok(value_end)) =
                (u32::try_from(names.len() + name.len()), u32::try_from(values.len() + value.len()))
            else {
                break;
            };
            names.push_str(name);
            values.push_str(value);
            ends.push((name_end, value_end));
        }
        EntryFields { names, values: Values::Text(values), ends }
    }

    fn from_pairs_lossy(parts: &[(&[u8], &[u8])]) -> EntryFields {
        let mut fields = EntryFields::default();
        for (name, value) in parts {
            fields.push(name, value);
        }
        fields
    }

    /// The fields of `pairs`, in order.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> EntryFields {
        let mut fields = EntryFields::default();
        for (name, value) in pairs {
            fields.push(name.as_bytes(), value);
        }
        fields
    }

    /// Adds a field. A name that is not UTF-8 matches no field the envelope
    /// knows; it is kept, lossily, for the dead letter. An entry past 4 GiB
    /// (far beyond Redis's 512 MiB per value) keeps what fits.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        // `from_utf8` first: the lossy conversion's checker is slower.
        let name = match std::str::from_utf8(name) {
            Ok(name) => std::borrow::Cow::Borrowed(name),
            Err(_) => String::from_utf8_lossy(name),
        };
        let (Ok(name_end), Ok(value_end)) =
            (u32::try_from(self.names.len() + name.len()), u32::try_from(self.values.len() + value.len()))
        else {
            return;
        };
        self.names.push_str(&name);
        self.values.push(value);
        self.ends.push((name_end, value_end));
    }

    /// The fields in order, as (name, value).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> + Clone + '_ {
        (0..self.ends.len()).filter_map(|i| self.get(i))
    }

    /// The `i`th field, as (name, value).
    pub fn get(&self, i: usize) -> Option<(&str, &[u8])> {
        let (names, values) = self.spans(i)?;
        Some((self.names.get(names).unwrap_or_default(), self.values.bytes().get(values).unwrap_or_default()))
    }

    /// The `i`th value as text, if it is UTF-8 (no check of its own when
    /// every value of the entry is).
    pub fn text(&self, i: usize) -> Option<&str> {
        let (_, values) = self.spans(i)?;
        self.values.text(values)
    }

    /// Where the `i`th field's name and value are.
    fn spans(&self, i: usize) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
        let (name_start, value_start) = if i == 0 { (0, 0) } else { *self.ends.get(i - 1)? };
        let (name_end, value_end) = *self.ends.get(i)?;
        Some((name_start as usize..name_end as usize, value_start as usize..value_end as usize))
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No fields (an entry deleted while it was pending).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Read access to an entry's fields however they are held: copied out
/// ([`EntryFields`]) or in place in their read
/// ([`FieldsRef`](super::FieldsRef)), so the head is read the same way
/// from either.
pub trait FieldList {
    /// How many fields.
    fn count(&self) -> usize;
    /// The `i`th field's name ("" past the end).
    fn name(&self, i: usize) -> &[u8];
    /// The `i`th value's bytes.
    fn value(&self, i: usize) -> Option<&[u8]>;
    /// The `i`th value as text, if it is UTF-8.
    fn text(&self, i: usize) -> Option<&str>;
}

impl FieldList for EntryFields {
    fn count(&self) -> usize {
        self.len()
    }

    fn name(&self, i: usize) -> &[u8] {
        self.get(i).map(|(name, _)| name.as_bytes()).unwrap_or_default()
    }

    fn value(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(|(_, value)| value)
    }

    fn text(&self, i: usize) -> Option<&str> {
        EntryFields::text(self, i)
    }
}

impl fmt::Debug for EntryFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|(k, v)| (k, String::from_utf8_lossy(v)))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_back_in_order_with_names_made_text() {
        let mut f = EntryFields::default();
        f.push(b"event_type", b"chat_message");
        f.push(b"\xffname", b"\xff\x00bytes");
        f.push(b"", b"");
        let got: Vec<(&str, &[u8])> = f.iter().collect();
        assert_eq!(got, [("event_type", &b"chat_message"[..]), ("\u{fffd}name", b"\xff\x00bytes"), ("", b"")]);
        assert_eq!((f.len(), f.iter().next_back().map(|(k, _)| k)), (3, Some("")));
        assert_eq!(f, EntryFields::from_pairs(got.iter().copied()));
        assert!(EntryFields::default().is_empty());
        assert_eq!((f.text(0), f.text(1), f.text(2), f.text(3)), (Some("chat_message"), None, Some(""), None));
    }

    #[test]
    fn read_at_once_the_fields_are_what_pushing_them_gives() {
        let cases: [&[(&[u8], &[u8])]; 5] = [
            &[(b"event_type", b"chat_message"), (b"payload", "{\"a\":\"\u{e9}\"}".as_bytes())],
            &[(b"a", b"\xff"), (b"b", b"text")],
            &[(b"\xffname", b"v"), (b"ok", b"w")],
            // Together they are text; each alone is not: a character split between two.
            &[(b"x", b"\xc3"), (b"y", b"\xa9")],
            &[(b"\xc3", b"1"), (b"\xa9", b"2")],
        ];
        for (i, parts) in cases.into_iter().enumerate() {
            let mut pushed = EntryFields::default();
            for (k, v) in parts {
                pushed.push(k, v);
            }
            let read = EntryFields::from_parts(parts);
            assert_eq!(read.iter().collect::<Vec<_>>(), pushed.iter().collect::<Vec<_>>(), "case {i}");
            for (f, (_, value)) in parts.iter().enumerate() {
                assert_eq!(read.text(f), std::str::from_utf8(value).ok(), "case {i}, field {f}");
            }
        }
    }
}
