//! The checks of the shipped `envelope.json`, written as code: every event
//! passes them, so they run without building a JSON value or walking a
//! schema. They say only yes or no; when one fails, the schema itself names
//! the error (see `Envelope::from_wire`), so the texts in dead letters and
//! 400 bodies stay the JSON Schema's.

/// `event_id`: a UUID in the 8-4-4-4-12 hex form.
pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A string of `min..=max` characters (JSON Schema counts characters).
pub(crate) fn has_chars(s: &str, min: usize, max: usize) -> bool {
    // A character is 1 to 4 bytes: most strings are decided by their length.
    if s.len() < min {
        return false;
    }
    if s.len() <= max && s.len() >= min * 4 {
        return true;
    }
    (min..=max).contains(&s.chars().count())
}

/// `timestamp`: `YYYY-MM-DD[Tt ]hh:mm:ss(.f+)?([Zz]|[+-]hh:?mm)?`, the
/// pattern of `envelope.json` (whether it is a real instant is checked
/// when it is parsed).
pub(crate) fn is_timestamp_text(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| b.get(from..from + n).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(digits(0, 4)
        && at(4, b"-")
        && digits(5, 2)
        && at(7, b"-")
        && digits(8, 2)
        && at(10, b"Tt ")
        && digits(11, 2)
        && at(13, b":")
        && digits(14, 2)
        && at(16, b":")
        && digits(17, 2))
    {
        return false;
    }
    let mut i = 19;
    if at(i, b".") {
        let start = i + 1;
        i = start;
        while at(i, b"0123456789") {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        None => true,
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            let rest = &b[i + 1..];
            match rest.len() {
                4 => rest.iter().all(u8::is_ascii_digit),
                5 => rest[2] == b':' && digits(i + 1, 2) && digits(i + 4, 2),
                _ => false,
            }
        }
        Some(_) => false,
    }
}

/// `metadata`'s typed properties: the tracing fields strings (or null),
/// `coalesced_count` a count (or null). Stricter than the schema where it
/// is cheaper (a count written `1.0` is left to the schema).
pub(crate) fn metadata_fits(m: &serde_json::Map<String, serde_json::Value>) -> bool {
    let text = |k: &str| m.get(k).is_none_or(|v| v.is_string() || v.is_null());
    text("trace_id")
        && text("traceparent")
        && text("source_instance")
        && m.get("coalesced_count").is_none_or(|v| v.is_u64() || v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        assert!(is_uuid("6f1c2a8e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"));
        assert!(is_uuid("6F1C2A8E-1A2B-4C3D-8E9F-0A1B2C3D4E5F"));
        assert!(!is_uuid("6f1c2a8e-1a2b-4c3d-8e9f-0a1b2c3d4e5"));
        assert!(!is_uuid("6f1c2a8e11a2b-4c3d-8e9f-0a1b2c3d4e5f"));
        assert!(!is_uuid("not-a-uuid"));
        assert!(!is_uuid("6f1c2a8e-1a2b-4c3d-8e9f-0a1b2c3d4e5g"));
    }

    #[test]
    fn lengths_count_characters() {
        assert!(!has_chars("", 1, 3));
        assert!(has_chars("a", 1, 3));
        assert!(has_chars("ééé", 1, 3), "6 bytes, 3 characters");
        assert!(!has_chars("éééé", 1, 3));
        assert!(!has_chars("abcd", 1, 3));
        assert!(has_chars(&"x".repeat(128), 1, 128));
        assert!(!has_chars(&"x".repeat(129), 1, 128));
    }

    #[test]
    fn timestamps_follow_the_schema_pattern() {
        for ok in [
            "2026-01-16T10:00:00Z",
            "2026-01-16t10:00:00z",
            "2026-01-16 10:00:00",
            "2026-01-16T10:00:00.123456",
            "2026-01-16T10:00:00.1+02:00",
            "2026-01-16T10:00:00-0500",
        ] {
            assert!(is_timestamp_text(ok), "{ok}");
        }
        for bad in [
            "2026-01-16",
            "2026-01-16T10:00:00.",
            "2026-01-16T10:00:00+2:00",
            "2026-01-16T10:00:00+02:0",
            "2026-01-16T10:00:00ZZ",
            "2026-01-16T10:00:00 ",
            "2026/01/16T10:00:00Z",
            "yesterday",
        ] {
            assert!(!is_timestamp_text(bad), "{bad}");
        }
    }
}
