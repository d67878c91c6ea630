//! `AuthError`: why a token was refused, or why the JWT settings cannot work.

/// Why authentication failed. Everything but [`AuthError::BadSettings`] is the
/// client's fault (401); `BadSettings` is the operator's and stops the start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// The request carried no token at all.
    #[error("no access token")]
    Missing,
    /// The token is malformed, signed with the wrong key or algorithm, or a
    /// claim does not match. The text is a fixed, low-cardinality label
    /// (see [`AuthError::reason`]), never anything taken from the token.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// `exp` is in the past by more than the leeway.
    #[error("token expired")]
    Expired,
    /// The token has no `exp`: it would never expire, so it is refused as
    /// ASP.NET Core's JwtBearer refuses it (`RequireExpirationTime`, on by
    /// default).
    #[error("token has no expiration time")]
    NoExpiry,
    /// `nbf` is in the future by more than the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// A JWT setting is missing or unusable; the text starts with its name.
    #[error("{0}")]
    BadSettings(String),
}

impl AuthError {
    /// True when the operator is at fault (bad settings, exit 64), false when
    /// the client is (401, logged at debug).
    #[cfg(test)]
    pub(crate) fn is_settings_error(&self) -> bool {
        matches!(self, AuthError::BadSettings(_))
    }

    /// A short, low-cardinality label for metrics: `missing`, `expired`,
    /// `no_expiry`, `not_yet_valid`, `settings`, or for an invalid token one of
    /// `malformed`, `algorithm`, `no_key`, `signature`, `issuer`, `audience`,
    /// `claims`, `user_claim`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid(reason) => reason,
            AuthError::Expired => "expired",
            AuthError::NoExpiry => "no_expiry",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSettings(_) => "settings",
        }
    }
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    /// Maps a failed `jsonwebtoken::decode` to the label the client's 401 and
    /// the metric carry.
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::ExpiredSignature => AuthError::Expired,
            K::ImmatureSignature => AuthError::NotYetValid,
            K::InvalidIssuer => AuthError::Invalid("issuer"),
            K::InvalidAudience => AuthError::Invalid("audience"),
            K::InvalidSignature => AuthError::Invalid("signature"),
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => AuthError::Invalid("algorithm"),
            K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) | K::InvalidSubject => AuthError::Invalid("claims"),
            _ => AuthError::Invalid("malformed"),
        }
    }
}
