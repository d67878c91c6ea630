//! A stream entry's fields as Redis returned them: the names in one string, the values in one buffer.
//!
//! Every entry is read, possibly decoded, and kept until it settles (a dead
//! letter carries every field). As a string and a byte vector per field an
//! entry of the flat encoding cost twelve allocations to read and twelve
//! frees to drop (bench/gaps.md, section 1); here it is three of each: the
//! names (text, checked once), the values (bytes) and where each one is.

use std::fmt;

/// The fields of one entry, in order: names (made UTF-8, lossily, when
/// they are not) and values (bytes as stored).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EntryFields {
    names: String,
    values: Vec<u8>,
    /// Per field: where its name ends in `names`, where its value ends in
    /// `values` (each starts where the previous field's ends).
    ends: Vec<(u32, u32)>,
}

impl EntryFields {
    /// Room for `fields` fields whose names take `names` bytes and whose
    /// values take `values`.
    pub fn with_capacity(fields: usize, names: usize, values: usize) -> EntryFields {
        EntryFields {
            names: String::with_capacity(names),
            values: Vec::with_capacity(values),
            ends: Vec::with_capacity(fields),
        }
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
        self.values.extend_from_slice(value);
        self.ends.push((name_end, value_end));
    }

    /// The fields in order, as (name, value).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> + Clone + '_ {
        (0..self.ends.len()).filter_map(|i| self.get(i))
    }

    /// The `i`th field, as (name, value).
    pub fn get(&self, i: usize) -> Option<(&str, &[u8])> {
        let (name_start, value_start) = if i == 0 { (0, 0) } else { *self.ends.get(i - 1)? };
        let (name_end, value_end) = *self.ends.get(i)?;
        Some((
            self.names.get(name_start as usize..name_end as usize).unwrap_or_default(),
            self.values.get(value_start as usize..value_end as usize).unwrap_or_default(),
        ))
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
        let mut f = EntryFields::with_capacity(3, 16, 32);
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
