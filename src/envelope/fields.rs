//! A stream entry's fields as Redis returned them: the names in one string, the values in one buffer.
//!
//! Every entry is read, possibly decoded, and kept until it settles (a dead
//! letter carries every field). As a string and a byte vector per field an
//! entry of the flat encoding cost twelve allocations to read and twelve
//! frees to drop (bench/gaps.md, section 1); here it is three of each: the
//! names (text), the values and where each one is. The values are checked
//! for UTF-8 once, all together, when the entry is read: the head and the
//! payload are then read as text without a check of their own each.

use std::fmt;

/// The fields of one entry, in order: names (made UTF-8, lossily, when
/// they are not) and values (bytes as stored).
#[derive(Clone)]
pub struct EntryFields {
    names: String,
    values: Values,
    /// Per field: where its name ends in `names`, where its value ends in
    /// `values` (each starts where the previous field's ends).
    ends: Vec<(u32, u32)>,
}

/// Every value of an entry, one after the other: text when they all are
/// (almost always), bytes otherwise.
#[derive(Clone)]
enum Values {
    Text(String),
    Bytes(Vec<u8>),
}

impl Values {
    fn bytes(&self) -> &[u8] {
        match self {
            Values::Text(text) => text.as_bytes(),
            Values::Bytes(bytes) => bytes,
        }
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }
}

/// The same fields, however their values are kept.
impl PartialEq for EntryFields {
    fn eq(&self, other: &EntryFields) -> bool {
        self.names == other.names && self.ends == other.ends && self.values.bytes() == other.values.bytes()
    }
}

impl Eq for EntryFields {}

impl Default for EntryFields {
    fn default() -> EntryFields {
        EntryFields { names: String::new(), values: Values::Text(String::new()), ends: Vec::new() }
    }
}

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
        let values = match String::from_utf8(values) {
            Ok(text) => Values::Text(text),
            Err(e) => Values::Bytes(e.into_bytes()),
        };
        EntryFields { names, values, ends }
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
        match (&mut self.values, std::str::from_utf8(value)) {
            (Values::Text(text), Ok(value)) => text.push_str(value),
            (Values::Text(text), Err(_)) => {
                let mut bytes = std::mem::take(text).into_bytes();
                bytes.extend_from_slice(value);
                self.values = Values::Bytes(bytes);
            }
            (Values::Bytes(bytes), _) => bytes.extend_from_slice(value),
        }
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
        match &self.values {
            // A span that starts or ends inside a character is not text by itself.
            Values::Text(text) => text.get(values),
            Values::Bytes(bytes) => std::str::from_utf8(bytes.get(values)?).ok(),
        }
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
