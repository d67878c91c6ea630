//! A stream entry's fields as Redis returned them, in one buffer.
//!
//! Every entry is read, possibly decoded, and kept until it settles (a dead
//! letter carries every field). As a string and a byte vector per field an
//! entry of the flat encoding cost twelve allocations to read and twelve
//! frees to drop (bench/gaps.md, section 1); here it is two of each.

use std::fmt;

/// The fields of one entry, in order: names (made UTF-8, lossily, when
/// they are not) and values (bytes as stored).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EntryFields {
    bytes: Vec<u8>,
    /// Per field: where its name starts, where its value starts (the end of
    /// the name), where its value ends.
    spans: Vec<[u32; 3]>,
}

impl EntryFields {
    /// Room for `fields` fields of `bytes` bytes in all.
    pub fn with_capacity(fields: usize, bytes: usize) -> EntryFields {
        EntryFields { bytes: Vec::with_capacity(bytes), spans: Vec::with_capacity(fields) }
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
        let name = String::from_utf8_lossy(name);
        let (Ok(start), Ok(value_start), Ok(end)) = (
            u32::try_from(self.bytes.len()),
            u32::try_from(self.bytes.len() + name.len()),
            u32::try_from(self.bytes.len() + name.len() + value.len()),
        ) else {
            return;
        };
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.extend_from_slice(value);
        self.spans.push([start, value_start, end]);
    }

    /// The fields in order, as (name, value).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> + Clone + '_ {
        self.spans.iter().map(|&[start, value, end]| {
            let (start, value, end) = (start as usize, value as usize, end as usize);
            // Names were made UTF-8 by `push`.
            (std::str::from_utf8(&self.bytes[start..value]).unwrap_or_default(), &self.bytes[value..end])
        })
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// No fields (an entry deleted while it was pending).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
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
        let mut f = EntryFields::with_capacity(3, 32);
        f.push(b"event_type", b"chat_message");
        f.push(b"\xffname", b"\xff\x00bytes");
        f.push(b"", b"");
        let got: Vec<(&str, &[u8])> = f.iter().collect();
        assert_eq!(got, [("event_type", &b"chat_message"[..]), ("\u{fffd}name", b"\xff\x00bytes"), ("", b"")]);
        assert_eq!((f.len(), f.iter().next_back().map(|(k, _)| k)), (3, Some("")));
        assert_eq!(f, EntryFields::from_pairs(got.iter().copied()));
        assert!(EntryFields::default().is_empty());
    }
}
