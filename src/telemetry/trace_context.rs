//! W3C trace context from an envelope's metadata, so the sidecar's span for
//! an event continues the publisher's trace: `metadata.traceparent`
//! (`00-<trace id>-<parent span id>-<flags>`), or a bare `metadata.trace_id`.

/// A remote parent: trace id, span id, sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteParent {
    /// 128-bit trace id.
    pub trace_id: u128,
    /// 64-bit span id of the publisher's span (made up when only a trace id was given).
    pub span_id: u64,
    /// Whether the publisher sampled it.
    pub sampled: bool,
}

/// Parses `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid.
pub fn parse_traceparent(text: &str) -> Option<RemoteParent> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(RemoteParent { trace_id, span_id, sampled: flags & 1 == 1 })
}

/// The parent an envelope's metadata names: `traceparent` first, else a
/// 32-hex `trace_id` with a span id derived from `salt` (the event id).
pub fn from_metadata(
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
    salt: &str,
) -> Option<RemoteParent> {
    let m = metadata?;
    if let Some(p) = m.get("traceparent").and_then(|v| v.as_str()).and_then(parse_traceparent) {
        return Some(p);
    }
    let trace = m.get("trace_id")?.as_str()?.trim().trim_start_matches("0x");
    let trace_id = (trace.len() == 32).then(|| u128::from_str_radix(trace, 16).ok()).flatten().filter(|t| *t != 0)?;
    let span_id =
        salt.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)).max(1);
    Some(RemoteParent { trace_id, span_id, sampled: true })
}

/// Formats a trace id as 32 lower-case hex digits, as Jaeger shows it.
pub fn format_trace_id(trace_id: u128) -> String {
    format!("{trace_id:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_w3c_traceparent() {
        let p = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(format_trace_id(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!((p.span_id, p.sampled), (0x00f067aa0ba902b7, true));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_bare_trace_id_gets_a_stable_span_id() {
        let m = serde_json::json!({"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"});
        let a = from_metadata(m.as_object(), "event-1").expect("trace id");
        assert_eq!(a, from_metadata(m.as_object(), "event-1").expect("same"));
        assert_ne!(a.span_id, 0);
    }
}
