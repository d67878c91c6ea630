//! Verification keys: the HS256 secret, the PEM public key, and the JWKS file
//! that is read again when it changes, so keys rotate without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::AuthError;

/// How often `verify` may look at the JWKS file's modification time.
const JWKS_CHECK_EVERY: Duration = Duration::from_secs(1);

/// One verification key and the one algorithm it may verify, so a key can
/// never be used with another algorithm (no RS256/HS256 confusion).
#[derive(Debug, Clone)]
pub(super) struct Key {
    pub(super) alg: Algorithm,
    /// The JWKS `kid`; `None` for the secret and the PEM key.
    pub(super) kid: Option<String>,
    pub(super) decoding: DecodingKey,
}

/// The HS256 key of `SIDECAR_JWT_SECRET`.
pub(super) fn from_secret(secret: &str) -> Result<Key, AuthError> {
    if secret.len() < 32 {
        tracing::warn!(
            setting = "SIDECAR_JWT_SECRET",
            bytes = secret.len(),
            "HS256 secret shorter than 32 bytes is easy to guess"
        );
    }
    let decoding = DecodingKey::from_secret(secret.as_bytes())
        .map_err(|_| AuthError::BadSettings("SIDECAR_JWT_SECRET: is empty".into()))?;
    Ok(Key { alg: Algorithm::HS256, kid: None, decoding })
}

/// The RS256 or ES256 key of `SIDECAR_JWT_PUBLIC_KEY_FILE`.
pub(super) fn from_pem_file(path: &Path) -> Result<Key, AuthError> {
    let bad =
        |reason: &str| AuthError::BadSettings(format!("SIDECAR_JWT_PUBLIC_KEY_FILE: {}: {reason}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(&e.to_string()))?;
    parse_pem(&pem).ok_or_else(|| bad("not a PEM public key (RSA, or EC on P-256)"))
}

/// Only public keys are accepted: the PEM decoder would also take a private
/// key and fail on every token later. `Jwk::from_decoding_key` parses the key
/// material, so a damaged key is refused at start, not at the first token.
fn parse_pem(pem: &[u8]) -> Option<Key> {
    let text = std::str::from_utf8(pem).ok()?;
    if !text.contains("-----BEGIN PUBLIC KEY-----") && !text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        return None;
    }
    if let Ok(decoding) = DecodingKey::from_rsa_pem(pem) {
        Jwk::from_decoding_key(&decoding, None).ok()?;
        return Some(Key { alg: Algorithm::RS256, kid: None, decoding });
    }
    let decoding = DecodingKey::from_ec_pem(pem).ok()?;
    match Jwk::from_decoding_key(&decoding, None).ok()?.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Some(Key { alg: Algorithm::ES256, kid: None, decoding })
        }
        _ => None,
    }
}

/// The keys of a JWKS document that this server can use (HS256, RS256, ES256
/// signature keys); the others are skipped. An error when none is left.
pub(super) fn parse_jwks(text: &str) -> Result<Vec<Key>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let set: RawSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let keys: Vec<Key> = set
        .keys
        .into_iter()
        .filter_map(|raw| serde_json::from_value::<Jwk>(raw).ok())
        .filter_map(|jwk| jwk_key(&jwk))
        .collect();
    if keys.is_empty() {
        return Err("no HS256, RS256 or ES256 signing key".into());
    }
    Ok(keys)
}

/// The algorithm follows from the key type; a declared `alg` must agree.
fn jwk_key(jwk: &Jwk) -> Option<Key> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    let (alg, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::OctetKey(_) => (Algorithm::HS256, KeyAlgorithm::HS256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != declared) {
        return None;
    }
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key { alg, kid: jwk.common.key_id.clone(), decoding })
}

/// `SIDECAR_JWKS_FILE`, with the keys of its last good version. There is no
/// background task: `keys()` looks at the modification time at most once per
/// `check_every` and re-reads the file when it changed.
#[derive(Debug)]
pub(super) struct JwksFile {
    path: PathBuf,
    pub(super) check_every: Duration,
    state: Mutex<JwksState>,
}

#[derive(Debug)]
struct JwksState {
    keys: Arc<[Key]>,
    /// Modification time of the version last read, good or not.
    mtime: Option<SystemTime>,
    checked_at: Instant,
}

// === impl JwksFile ===

impl JwksFile {
    /// Reads the file at start; unlike a later reload, a bad file is an error.
    pub(super) fn load(path: &Path) -> Result<JwksFile, AuthError> {
        let mtime = modified(path);
        let keys = read_jwks(path)
            .map_err(|reason| AuthError::BadSettings(format!("SIDECAR_JWKS_FILE: {}: {reason}", path.display())))?;
        let state = JwksState { keys: keys.into(), mtime, checked_at: Instant::now() };
        Ok(JwksFile { path: path.to_owned(), check_every: JWKS_CHECK_EVERY, state: Mutex::new(state) })
    }

    /// The current keys, re-read first if the file changed since last look.
    /// The lock is never held during file I/O or signature checks.
    pub(super) fn keys(&self) -> Arc<[Key]> {
        let (keys, seen) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.checked_at.elapsed() < self.check_every {
                return state.keys.clone();
            }
            state.checked_at = Instant::now();
            (state.keys.clone(), state.mtime)
        };
        let mtime = modified(&self.path);
        if mtime == seen {
            return keys;
        }
        let fresh = read_jwks(&self.path);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.mtime = mtime;
        match fresh {
            Ok(fresh) => {
                tracing::info!(path = %self.path.display(), keys = fresh.len(), "JWKS file reloaded");
                state.keys = fresh.into();
            }
            Err(error) => tracing::warn!(
                path = %self.path.display(),
                %error,
                "JWKS file changed but cannot be used; keeping the previous keys"
            ),
        }
        state.keys.clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_jwks(path: &Path) -> Result<Vec<Key>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    parse_jwks(&text)
}
