//! `SIDECAR_ADMIN_TOKEN`: the bearer token of `/admin/` on the admin port.

/// Shortest token accepted: a guessable token protects nothing.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// The bearer token every `/admin/` request must present when set. Its
/// `Debug` hides it, so a logged `Config` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Checks a configured token: at least [`MIN_ADMIN_TOKEN_CHARS`]
    /// characters, all visible ASCII (it travels in an HTTP header).
    pub fn parse(text: &str) -> Result<AdminToken, String> {
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters without spaces (it is sent in a header)".into());
        }
        if text.len() < MIN_ADMIN_TOKEN_CHARS {
            return Err(format!("must be at least {MIN_ADMIN_TOKEN_CHARS} characters, got {}", text.len()));
        }
        Ok(AdminToken(text.to_string()))
    }

    /// The token's bytes, for the constant-time comparison at the HTTP edge.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<hidden>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_unprintable_tokens_are_refused_and_debug_hides_it() {
        assert!(AdminToken::parse("short").is_err());
        assert!(AdminToken::parse("sixteen chars xx").is_err(), "spaces");
        assert!(AdminToken::parse("0123456789abcdé-").is_err(), "non-ASCII");
        let t = AdminToken::parse("0123456789abcdef").expect("valid");
        assert_eq!(t.as_bytes(), b"0123456789abcdef");
        assert!(!format!("{t:?}").contains("0123"));
    }
}
