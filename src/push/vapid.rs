//! VAPID (RFC 8292): the application server's P-256 key, and the
//! `Authorization: vapid t=<JWT>, k=<public key>` header that proves to a
//! push service which server sends (the key the browser subscribed with).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use p256::SecretKey;

/// How long a token is valid: RFC 8292 allows at most 24 hours; 12 leaves
/// room for a clock ahead of the push service's.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Why the VAPID key could not be loaded; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VapidError {
    /// The file could not be read.
    #[error("SIDECAR_VAPID_PRIVATE_KEY_FILE: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no P-256 private key in a known form.
    #[error("SIDECAR_VAPID_PRIVATE_KEY_FILE: {path}: {why}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// The key and contact the sidecar signs its push requests with.
pub(crate) struct Vapid {
    signing: jsonwebtoken::EncodingKey,
    /// The uncompressed public key, base64url: `k=`, and the browser's
    /// `applicationServerKey`.
    public: String,
    subject: String,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid").field("public", &self.public).field("subject", &self.subject).finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl Vapid {
    /// Reads the private key: PEM (SEC 1 `EC PRIVATE KEY` or PKCS #8
    /// `PRIVATE KEY`), or the 32-octet scalar in base64url as the
    /// `web-push generate-vapid-keys` tools print it.
    pub(crate) fn load(path: &Path, subject: &str) -> Result<Vapid, VapidError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| VapidError::Read { path: path.display().to_string(), source })?;
        let key = parse_key(&text).map_err(|why| VapidError::Key { path: path.display().to_string(), why })?;
        Vapid::from_key(&key, subject).map_err(|why| VapidError::Key { path: path.display().to_string(), why })
    }

    /// From a key in hand.
    pub(crate) fn from_key(key: &SecretKey, subject: &str) -> Result<Vapid, String> {
        let der = key.to_pkcs8_der().map_err(|e| format!("cannot encode the key: {e}"))?;
        Ok(Vapid {
            signing: jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
            public: URL_SAFE_NO_PAD.encode(key.public_key().to_sec1_point(false).as_bytes()),
            subject: subject.to_string(),
        })
    }

    /// The public key, base64url (uncompressed point).
    pub(crate) fn public_key(&self) -> &str {
        &self.public
    }

    /// The `Authorization` header value for a request to `origin`
    /// (`https://host[:port]` of the endpoint).
    pub(crate) fn authorization(&self, origin: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims = Claims { aud: origin, exp: (now + TOKEN_LIFETIME).as_secs(), sub: &self.subject };
        let token =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &self.signing)?;
        Ok(format!("vapid t={token}, k={}", self.public))
    }
}

fn parse_key(text: &str) -> Result<SecretKey, String> {
    let text = text.trim();
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        return SecretKey::from_sec1_pem(text).map_err(|e| format!("not a P-256 SEC 1 key: {e}"));
    }
    if text.contains("-----BEGIN PRIVATE KEY-----") {
        return SecretKey::from_pkcs8_pem(text).map_err(|e| format!("not a P-256 PKCS #8 key: {e}"));
    }
    if text.contains("-----BEGIN") {
        return Err("a PEM file must hold an EC PRIVATE KEY or a PRIVATE KEY (P-256)".into());
    }
    let raw = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| "neither PEM nor a base64url private key".to_string())?;
    if raw.len() != 32 {
        return Err(format!("a base64url private key is 32 octets, this one is {}", raw.len()));
    }
    SecretKey::from_slice(&raw).map_err(|_| "not a valid P-256 private key".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;
    use p256::elliptic_curve::Generate;

    fn part(token: &str, i: usize) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(token.split('.').nth(i).expect("three parts")).expect("base64url")
    }

    #[test]
    fn the_header_is_a_signed_token_for_the_origin_and_the_public_key() {
        let key = SecretKey::try_generate().expect("random");
        let vapid = Vapid::from_key(&key, "mailto:ops@example.com").expect("key");
        let value = vapid.authorization("https://push.example.net").expect("sign");
        let rest = value.strip_prefix("vapid t=").expect("vapid scheme");
        let (token, k) = rest.split_once(", k=").expect("t and k");
        assert_eq!(k, vapid.public_key());
        let public = URL_SAFE_NO_PAD.decode(k).expect("k is base64url");
        assert_eq!(public.len(), 65);
        assert_eq!(public[0], 4, "uncompressed point");
        assert_eq!(p256::PublicKey::from_sec1_bytes(&public).expect("point"), key.public_key());

        let header: serde_json::Value = serde_json::from_slice(&part(token, 0)).expect("header");
        assert_eq!(header["alg"], "ES256");
        let claims: serde_json::Value = serde_json::from_slice(&part(token, 1)).expect("claims");
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let exp = claims["exp"].as_u64().expect("exp");
        assert!(exp > now && exp <= now + 24 * 3600, "exp within 24 h");

        // ES256 is r || s, 64 octets, over "header.claims".
        let signature = p256::ecdsa::Signature::from_slice(&part(token, 2)).expect("64-octet signature");
        let signed = &token[..token.rfind('.').expect("dot")];
        let verifier = p256::ecdsa::VerifyingKey::from_sec1_bytes(&public).expect("verifying key");
        verifier.verify(signed.as_bytes(), &signature).expect("the signature verifies with k");
        let other = p256::ecdsa::VerifyingKey::from(&p256::ecdsa::SigningKey::try_generate().expect("random"));
        assert!(other.verify(signed.as_bytes(), &signature).is_err());
    }

    #[test]
    fn keys_load_from_pem_and_base64url() {
        let key = SecretKey::try_generate().expect("random");
        let sec1 = key.to_sec1_pem(Default::default()).expect("pem");
        let pkcs8 = key.to_pkcs8_pem(Default::default()).expect("pem");
        let raw = URL_SAFE_NO_PAD.encode(key.to_bytes());
        for text in [sec1.as_str(), pkcs8.as_str(), raw.as_str(), &format!("{raw}\n")] {
            assert_eq!(parse_key(text).expect("parses").to_bytes(), key.to_bytes());
        }
        assert!(parse_key("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----").is_err());
        assert!(parse_key(&URL_SAFE_NO_PAD.encode([1u8; 31])).expect_err("short").contains("32 octets"));
        assert!(parse_key("hello world").is_err());
    }

    #[test]
    fn a_missing_file_names_the_setting() {
        let err = Vapid::load(Path::new("/nonexistent/vapid.pem"), "mailto:a@b").expect_err("missing");
        assert!(err.to_string().starts_with("SIDECAR_VAPID_PRIVATE_KEY_FILE"), "{err}");
    }
}
