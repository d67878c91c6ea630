//! `Authenticator`: checks a JWT against the configured keys and claims.

use std::time::{Duration, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::{self, JwksFile, Key};
use super::{AuthError, Claims, JwtSettings};

/// Tokens longer than this are refused unread (ASP.NET Core's default limit).
const MAX_TOKEN_BYTES: usize = 250 * 1024;

/// The largest leeway accepted; more would make `exp` meaningless.
const MAX_LEEWAY_SECONDS: u64 = 24 * 60 * 60;

/// The JWT check of `SIDECAR_AUTH=jwt`, built once at start and shared in an
/// `Arc` by negotiate, connect and the hub (it is `Send + Sync`).
#[derive(Debug)]
pub(crate) struct Authenticator {
    /// The secret's and the PEM file's keys; they never change.
    static_keys: Vec<Key>,
    pub(super) jwks: Option<JwksFile>,
    /// Everything but the algorithm, which is set per token.
    validation: Validation,
    user_claim: String,
}

// === impl Authenticator ===

impl Authenticator {
    /// Loads keys; an error names the setting (e.g.
    /// "SIDECAR_JWT_PUBLIC_KEY_FILE: /x.pem: not a PEM public key ..."), so a
    /// bad configuration stops the start instead of refusing every client.
    pub(crate) fn new(settings: &JwtSettings) -> Result<Authenticator, AuthError> {
        let mut static_keys = Vec::new();
        if let Some(secret) = &settings.secret {
            static_keys.push(keys::from_secret(secret)?);
        }
        if let Some(path) = &settings.public_key_file {
            static_keys.push(keys::from_pem_file(path)?);
        }
        let jwks = settings.jwks_file.as_deref().map(JwksFile::load).transpose()?;
        if static_keys.is_empty() && jwks.is_none() {
            return Err(AuthError::BadSettings(
                "SIDECAR_JWT_SECRET, SIDECAR_JWT_PUBLIC_KEY_FILE or SIDECAR_JWKS_FILE: \
                 SIDECAR_AUTH=jwt needs at least one of them"
                    .into(),
            ));
        }
        if settings.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(AuthError::BadSettings(format!(
                "SIDECAR_JWT_LEEWAY_SECONDS: {} is more than {MAX_LEEWAY_SECONDS}",
                settings.leeway_seconds
            )));
        }
        let user_claim = match settings.user_claim.as_str() {
            "" => "sub".to_owned(),
            claim => claim.to_owned(),
        };
        Ok(Authenticator { static_keys, jwks, validation: validation(settings), user_claim })
    }

    /// Verifies a token; never panics on any input. The signature is checked
    /// before any claim, so a forged token learns nothing about its claims.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("malformed"));
        }
        // `alg: none` and unknown algorithms already fail to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed"))?;
        if !matches!(header.alg, Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Invalid("algorithm"));
        }
        let jwks = self.jwks.as_ref().map(JwksFile::keys);
        let from_jwks = jwks
            .iter()
            .flat_map(|keys| keys.iter())
            .filter(|key| header.kid.as_deref().is_none_or(|kid| key.kid.as_deref() == Some(kid)));
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];

        let mut outcome = AuthError::Invalid("no_key");
        for key in self.static_keys.iter().chain(from_jwks).filter(|k| k.alg == header.alg) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation) {
                Ok(data) => return self.claims(data.claims),
                Err(e) if is_other_key(e.kind()) => outcome = AuthError::Invalid("signature"),
                Err(e) => return Err(e.into()),
            }
        }
        Err(outcome)
    }

    /// The claims of a token whose signature and time claims passed (a
    /// malformed `exp`, `null` included, failed there). A token without
    /// `exp` is refused, as ASP.NET Core's
    /// JwtBearer refuses it by default (`RequireExpirationTime`): it would
    /// outlive any revocation, and its connection would never be closed at
    /// expiry.
    fn claims(&self, claims: Map<String, Value>) -> Result<Claims, AuthError> {
        if !claims.contains_key("exp") {
            return Err(AuthError::NoExpiry);
        }
        let user_id = match claims.get(&self.user_claim) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::Number(id)) => id.to_string(),
            _ => return Err(AuthError::Invalid("user_claim")),
        };
        let name = claims.get("name").and_then(Value::as_str).map(str::to_owned);
        let expires_at =
            claims.get("exp").and_then(seconds).and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
        Ok(Claims { user_id, name, expires_at, claims })
    }
}

/// exp and nbf always (with the leeway); iss and aud only when configured,
/// and then the token must carry them. That a token carries `exp` at all is
/// checked in [`Authenticator::claims`], not with `required_spec_claims`:
/// jsonwebtoken reports a malformed `exp` as missing there, and a malformed
/// one is a bad claim, not a token that never expires.
fn validation(settings: &JwtSettings) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.leeway = settings.leeway_seconds;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    match settings.issuer.as_deref().filter(|s| !s.is_empty()) {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        None => validation.iss = None,
    }
    match settings.audience.as_deref().filter(|s| !s.is_empty()) {
        Some(audience) => {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }
    validation
}

/// Errors that mean "not this key", so the next candidate key is tried.
fn is_other_key(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
    )
}

/// A NumericDate as whole seconds; `exp` has passed validation already.
fn seconds(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let f = value.as_f64().filter(|f| f.is_finite() && *f >= 0.0)?;
        Some(f.round() as u64)
    })
}

/// Compile-time proof that one `Authenticator` can be shared across tasks.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Authenticator>();
};
