//! ISO 8601 timestamps as publishers write them.

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};

/// Parses RFC 3339 (`Z` or an offset, with or without a colon) and the naive
/// form Python's `datetime.utcnow().isoformat()` writes, read as UTC. The
/// instant must fall in the years 1 to 9999 in UTC, so that it can be
/// written back as ISO 8601 (the fuzzer found `9999-12-31T23:00:00-05:00`).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    parse_any(text).filter(|t| (1..=9999).contains(&t.year()))
}

fn parse_any(text: &str) -> Option<DateTime<Utc>> {
    // Nearly every publisher writes RFC 3339 with a `T`: no copy for those.
    let text = if text.contains(' ') { std::borrow::Cow::Owned(text.replacen(' ', "T", 1)) } else { text.into() };
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_forms_publishers_write() {
        let want = parse_timestamp("2026-01-16T10:00:00Z").expect("utc");
        for form in [
            "2026-01-16T10:00:00+00:00",
            "2026-01-16T10:00:00.000000",
            "2026-01-16 10:00:00",
            "2026-01-16T12:00:00+0200",
        ] {
            assert_eq!(parse_timestamp(form), Some(want), "{form}");
        }
        assert_eq!(parse_timestamp("2026-13-40T10:00:00Z"), None);
        assert_eq!(parse_timestamp("9999-12-31T23:00:00-05:00"), None, "year 10000 in UTC");
        assert_eq!(parse_timestamp("0000-01-01T00:30:00+01:00"), None, "year -1 in UTC");
    }
}
