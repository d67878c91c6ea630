//! Client authentication for `SIDECAR_AUTH=jwt` (CONTRACT section 7): where a
//! SignalR client puts its token, which keys may have signed it (an HS256
//! secret, an RS256/ES256 PEM key, a JWKS file that is re-read when it
//! changes), and the claims the hub and the room policies rely on.
//!
//! No I/O beyond reading the key files; of this crate it uses only `config`.

mod error;
mod jwt;
mod keys;
#[cfg(test)]
mod tests;

use std::time::SystemTime;

pub(crate) use error::AuthError;
pub(crate) use jwt::Authenticator;

/// Settings of `SIDECAR_AUTH=jwt`: the `SIDECAR_JWT_*` group of the
/// configuration, used as it is (an empty `user_claim` means `sub`).
pub(crate) type JwtSettings = crate::config::JwtConfig;

/// What a verified token says about its holder: the user id for `user:`
/// targets and presence, the display name for typing events, the expiry
/// that closes the connection, and every claim for room policies.
#[derive(Debug, Clone)]
pub(crate) struct Claims {
    /// The value of the user claim (`sub` by default); a number claim is
    /// converted to its text.
    pub user_id: String,
    /// The `name` claim, when it is a string.
    pub name: Option<String>,
    /// `exp`: every accepted token has one; `None` only when it lies
    /// beyond what a `SystemTime` can hold (it never expires in practice).
    pub expires_at: Option<SystemTime>,
    /// All claims, for room-authorization policies (a claim listing rooms,
    /// roles).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Extracts the token the way SignalR clients send it: the `access_token`
/// query parameter (browsers, WebSockets/SSE; pass it percent-decoded) or
/// `Authorization: Bearer <token>`. The query parameter wins when both are
/// there, as in ASP.NET Core's usual `OnMessageReceived` hook.
pub(crate) fn token_from(query_access_token: Option<&str>, authorization_header: Option<&str>) -> Option<String> {
    let from_query = query_access_token.map(str::trim).filter(|t| !t.is_empty());
    from_query.or_else(|| authorization_header.and_then(bearer)).map(str::to_owned)
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any
/// case, as RFC 9110 section 11.1 has it); shared by the client port and the
/// admin port's `/admin/` token check.
pub(crate) fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
