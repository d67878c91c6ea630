//! Client authentication for `SIDECAR_AUTH=jwt` (CONTRACT section 7): where a
//! SignalR client puts its token, which keys may have signed it (an HS256
//! secret, an RS256/ES256 PEM key, a JWKS file that is re-read when it
//! changes), and the claims the hub and the room policies rely on.
//!
//! No I/O beyond reading the key files, and no other module of this crate.

mod error;
mod jwt;
mod keys;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::SystemTime;

pub use error::AuthError;
pub use jwt::Authenticator;

/// Settings of `SIDECAR_AUTH=jwt` (the config module fills it from the
/// `SIDECAR_JWT_*` variables), kept here so this module needs no `config`.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// `SIDECAR_JWT_SECRET`: the HS256 secret, plain text.
    pub secret: Option<String>,
    /// `SIDECAR_JWT_PUBLIC_KEY_FILE`: a PEM public key, RSA (RS256) or EC
    /// P-256 (ES256).
    pub public_key_file: Option<PathBuf>,
    /// `SIDECAR_JWKS_FILE`: a JWKS JSON file; its HS256, RS256 and ES256 keys
    /// are used, and it is read again (at most once a second) when its
    /// modification time changes, so keys rotate without a restart.
    pub jwks_file: Option<PathBuf>,
    /// `SIDECAR_JWT_ISSUER`: the required `iss`; not checked when unset.
    pub issuer: Option<String>,
    /// `SIDECAR_JWT_AUDIENCE`: a required `aud`; not checked when unset.
    pub audience: Option<String>,
    /// `SIDECAR_JWT_LEEWAY_SECONDS`: clock skew allowed on `exp` and `nbf`
    /// (at most a day).
    pub leeway_seconds: u64,
    /// The claim holding the user id; empty means `sub`.
    pub user_claim: String,
}

/// What a verified token says about its holder: the user id for `user:`
/// targets and presence, the display name for typing events, the expiry
/// that closes the connection, and every claim for room policies.
#[derive(Debug, Clone)]
pub struct Claims {
    /// The value of the user claim (`sub` by default); a number claim is
    /// converted to its text.
    pub user_id: String,
    /// The `name` claim, when it is a string.
    pub name: Option<String>,
    /// `exp`, when the token has one.
    pub expires_at: Option<SystemTime>,
    /// All claims, for room-authorization policies (a claim listing rooms,
    /// roles).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Extracts the token the way SignalR clients send it: the `access_token`
/// query parameter (browsers, WebSockets/SSE; pass it percent-decoded) or
/// `Authorization: Bearer <token>`. The query parameter wins when both are
/// there, as in ASP.NET Core's usual `OnMessageReceived` hook.
pub fn token_from(query_access_token: Option<&str>, authorization_header: Option<&str>) -> Option<String> {
    let from_query = query_access_token.map(str::trim).filter(|t| !t.is_empty());
    from_query.or_else(|| authorization_header.and_then(bearer)).map(str::to_owned)
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
