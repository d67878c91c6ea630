//! Real tokens, signed here with the test-only keys of `tests/fixtures/auth/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
/// The `k` of the `hs-1` key in `jwks.json`.
const JWKS_SECRET: &str = "jwks-oct-secret-for-tests-only-0123456789";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth").join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("test fixture")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("test fixture").as_secs()
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read("rsa_private.pem")).expect("test fixture")
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(&read("ec_private.pem")).expect("test fixture")
}

fn ec2() -> EncodingKey {
    EncodingKey::from_ec_pem(&read("ec2_private.pem")).expect("test fixture")
}

fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes()).expect("test fixture")
}

/// A valid claim set: `sub`, `name`, an `exp` an hour ahead, and a room list.
fn claims() -> Value {
    json!({"sub": "user-1", "name": "Ada", "exp": now() + 3600, "rooms": ["room-1"]})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("test fixture").remove(key);
    claims
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).expect("test fixture")
}

/// base64url without padding, for tokens crafted by hand.
fn b64(json: &Value) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = json.to_string().into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn settings() -> JwtSettings {
    JwtSettings { leeway_seconds: 30, user_claim: "sub".into(), ..JwtSettings::default() }
}

fn hs_auth() -> Authenticator {
    Authenticator::new(&JwtSettings { secret: Some(SECRET.into()), ..settings() }).expect("test fixture")
}

fn pem_auth(name: &str) -> Authenticator {
    let settings = JwtSettings { public_key_file: Some(fixture(name)), ..settings() };
    Authenticator::new(&settings).expect("test fixture")
}

fn reason(result: Result<Claims, AuthError>) -> &'static str {
    result.map(|c| c.user_id).unwrap_err().reason()
}

/// A file under the system temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("sidecar-auth-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("test fixture");
        TempFile(path)
    }

    /// Replaces the contents and moves the mtime clearly past the last one.
    fn rewrite(&self, contents: &[u8], mtime_offset_seconds: u64) {
        std::fs::write(&self.0, contents).expect("test fixture");
        let file = std::fs::File::options().write(true).open(&self.0).expect("test fixture");
        file.set_modified(SystemTime::now() + Duration::from_secs(mtime_offset_seconds)).expect("test fixture");
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn hs256_valid_token_gives_its_claims() {
    let exp = now() + 3600;
    let token = sign(Algorithm::HS256, &hs(SECRET), None, &with(claims(), "exp", json!(exp)));
    let claims = hs_auth().verify(&token).expect("test fixture");
    assert_eq!(claims.user_id, "user-1");
    assert_eq!(claims.name.as_deref(), Some("Ada"));
    assert_eq!(claims.expires_at, Some(UNIX_EPOCH + Duration::from_secs(exp)));
    assert_eq!(claims.claims["rooms"], json!(["room-1"]));
}

#[test]
fn rs256_and_es256_valid_from_pem() {
    let token = sign(Algorithm::RS256, &rsa(), None, &claims());
    assert_eq!(pem_auth("rsa_public.pem").verify(&token).expect("test fixture").user_id, "user-1");
    let token = sign(Algorithm::ES256, &ec(), None, &claims());
    assert_eq!(pem_auth("ec_public.pem").verify(&token).expect("test fixture").user_id, "user-1");
}

#[test]
fn wrong_signature_is_refused() {
    let token = sign(Algorithm::HS256, &hs("another-secret-of-at-least-32-bytes"), None, &claims());
    assert_eq!(reason(hs_auth().verify(&token)), "signature");

    let token = sign(Algorithm::ES256, &ec2(), None, &claims());
    assert_eq!(reason(pem_auth("ec_public.pem").verify(&token)), "signature");

    // A genuine RS256 signature over another payload.
    let token = sign(Algorithm::RS256, &rsa(), None, &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(&with(claims(), "sub", json!("admin"))), parts[2]);
    assert_eq!(reason(pem_auth("rsa_public.pem").verify(&forged)), "signature");
}

#[test]
fn audience_and_issuer_are_checked_only_when_configured() {
    let strict = Authenticator::new(&JwtSettings {
        secret: Some(SECRET.into()),
        issuer: Some("https://issuer.test".into()),
        audience: Some("sidecar".into()),
        ..settings()
    })
    .expect("test fixture");
    let good = with(with(claims(), "iss", json!("https://issuer.test")), "aud", json!("sidecar"));
    let verify = |claims: &Value| strict.verify(&sign(Algorithm::HS256, &hs(SECRET), None, claims));

    assert!(verify(&good).is_ok());
    assert!(verify(&with(good.clone(), "aud", json!(["other", "sidecar"]))).is_ok());
    assert_eq!(reason(verify(&with(good.clone(), "aud", json!("other")))), "audience");
    assert_eq!(reason(verify(&with(good.clone(), "iss", json!("https://evil.test")))), "issuer");
    assert_eq!(reason(verify(&without(good.clone(), "aud"))), "claims");
    assert_eq!(reason(verify(&without(good.clone(), "iss"))), "claims");

    // Unconfigured: any iss and aud pass.
    let token = sign(Algorithm::HS256, &hs(SECRET), None, &good);
    assert!(hs_auth().verify(&token).is_ok());
}

#[test]
fn exp_and_nbf_are_checked_with_the_leeway() {
    let verify = |claims: &Value| hs_auth().verify(&sign(Algorithm::HS256, &hs(SECRET), None, claims));
    assert!(matches!(verify(&with(claims(), "exp", json!(now() - 120))), Err(AuthError::Expired)));
    assert!(verify(&with(claims(), "exp", json!(now() - 10))).is_ok());
    let future = with(claims(), "nbf", json!(now() + 120));
    assert!(matches!(verify(&future), Err(AuthError::NotYetValid)));
    assert!(verify(&with(claims(), "nbf", json!(now() + 10))).is_ok());
    // exp is required (ASP.NET Core's RequireExpirationTime) and must be a number.
    let no_exp = verify(&without(claims(), "exp"));
    assert!(matches!(no_exp, Err(AuthError::NoExpiry)), "{no_exp:?}");
    assert_eq!(reason(no_exp), "no_expiry");
    assert_eq!(reason(verify(&with(claims(), "exp", Value::Null))), "claims", "refused as malformed");
    assert_eq!(reason(verify(&with(claims(), "exp", json!("tomorrow")))), "claims");
    let float_exp = (now() + 60) as f64 + 0.4;
    assert!(verify(&with(claims(), "exp", json!(float_exp))).expect("test fixture").expires_at.is_some());
}

#[test]
fn unsigned_alg_none_tokens_are_refused() {
    let hs = hs_auth();
    let rs = pem_auth("rsa_public.pem");
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = format!("{}.{}.", b64(&json!({"alg": alg, "typ": "JWT"})), b64(&claims()));
        assert!(matches!(hs.verify(&token), Err(AuthError::Invalid(_))), "{alg}");
        assert!(matches!(rs.verify(&token), Err(AuthError::Invalid(_))), "{alg}");
    }
}

#[test]
fn algorithms_without_a_configured_key_are_refused() {
    let rs = pem_auth("rsa_public.pem");
    // Algorithm confusion: HS256 "signed" with the RSA public key as secret.
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&read("rsa_public.pem")).expect("test fixture"),
        None,
        &claims(),
    );
    assert_eq!(reason(rs.verify(&token)), "no_key");
    assert_eq!(reason(rs.verify(&sign(Algorithm::ES256, &ec(), None, &claims()))), "no_key");
    assert_eq!(reason(hs_auth().verify(&sign(Algorithm::RS256, &rsa(), None, &claims()))), "no_key");
    let hs384 = sign(Algorithm::HS384, &hs(SECRET), None, &claims());
    assert_eq!(reason(hs_auth().verify(&hs384)), "algorithm");
}

#[test]
fn the_user_claim_is_required_and_configurable() {
    let verify = |auth: &Authenticator, claims: &Value| auth.verify(&sign(Algorithm::HS256, &hs(SECRET), None, claims));
    let auth = hs_auth();
    assert_eq!(reason(verify(&auth, &without(claims(), "sub"))), "user_claim");
    assert_eq!(reason(verify(&auth, &with(claims(), "sub", json!("")))), "user_claim");
    // jsonwebtoken itself cannot read an object `sub`; refused either way.
    let object_sub = with(claims(), "sub", json!({"id": 1}));
    assert!(matches!(verify(&auth, &object_sub), Err(AuthError::Invalid(_))));
    assert_eq!(reason(verify(&auth, &with(claims(), "sub", json!(true)))), "user_claim");
    assert_eq!(verify(&auth, &with(claims(), "sub", json!(42))).expect("test fixture").user_id, "42");

    let by_uid = JwtSettings { secret: Some(SECRET.into()), user_claim: "uid".into(), ..settings() };
    let auth = Authenticator::new(&by_uid).expect("test fixture");
    assert_eq!(verify(&auth, &with(claims(), "uid", json!("u-9"))).expect("test fixture").user_id, "u-9");
    assert_eq!(reason(verify(&auth, &claims())), "user_claim");
}

#[test]
fn jwks_keys_are_selected_by_kid_or_tried_in_turn() {
    let settings = JwtSettings { jwks_file: Some(fixture("jwks.json")), ..settings() };
    let auth = Authenticator::new(&settings).expect("test fixture");
    let ok = |token: String| auth.verify(&token).map(|c| c.user_id).expect("test fixture");

    assert_eq!(ok(sign(Algorithm::RS256, &rsa(), Some("rsa-1"), &claims())), "user-1");
    assert_eq!(ok(sign(Algorithm::ES256, &ec(), Some("ec-1"), &claims())), "user-1");
    assert_eq!(ok(sign(Algorithm::HS256, &hs(JWKS_SECRET), Some("hs-1"), &claims())), "user-1");
    // No kid: every key of the token's algorithm is tried.
    assert_eq!(ok(sign(Algorithm::ES256, &ec(), None, &claims())), "user-1");

    let refused = |token: String| reason(auth.verify(&token));
    assert_eq!(refused(sign(Algorithm::ES256, &ec(), Some("nope"), &claims())), "no_key");
    // The kid exists, but for another algorithm.
    assert_eq!(refused(sign(Algorithm::ES256, &ec(), Some("rsa-1"), &claims())), "no_key");
    assert_eq!(refused(sign(Algorithm::ES256, &ec2(), Some("ec-1"), &claims())), "signature");
}

#[test]
fn the_jwks_file_is_reloaded_when_it_changes() {
    let file = TempFile::new("reload-jwks.json", &read("jwks.json"));
    let settings = JwtSettings { jwks_file: Some(file.0.clone()), ..settings() };
    let mut auth = Authenticator::new(&settings).expect("test fixture");
    auth.jwks.as_mut().expect("test fixture").check_every = Duration::ZERO;
    let old = sign(Algorithm::ES256, &ec(), Some("ec-1"), &claims());
    let new = sign(Algorithm::ES256, &ec2(), Some("ec-2"), &claims());
    assert!(auth.verify(&old).is_ok());
    assert_eq!(reason(auth.verify(&new)), "no_key");

    file.rewrite(&read("jwks_rotated.json"), 10);
    assert!(auth.verify(&new).is_ok());
    assert_eq!(reason(auth.verify(&old)), "no_key");

    // A broken file keeps the previous keys.
    file.rewrite(b"{\"keys\": [", 20);
    assert!(auth.verify(&new).is_ok());
    file.rewrite(b"{\"keys\": []}", 30);
    assert!(auth.verify(&new).is_ok());
}

#[test]
fn the_jwks_file_is_looked_at_no_more_than_once_per_interval() {
    let file = TempFile::new("throttle-jwks.json", &read("jwks.json"));
    let settings = JwtSettings { jwks_file: Some(file.0.clone()), ..settings() };
    let mut auth = Authenticator::new(&settings).expect("test fixture");
    auth.jwks.as_mut().expect("test fixture").check_every = Duration::from_secs(3600);
    file.rewrite(&read("jwks_rotated.json"), 10);
    let old = sign(Algorithm::ES256, &ec(), Some("ec-1"), &claims());
    assert!(auth.verify(&old).is_ok());
}

#[test]
fn bad_settings_name_the_setting() {
    let message = |settings: JwtSettings| {
        let error = Authenticator::new(&settings).unwrap_err();
        assert!(error.is_settings_error());
        assert_eq!(error.reason(), "settings");
        error.to_string()
    };
    assert!(message(settings()).starts_with("SIDECAR_JWT_SECRET, SIDECAR_JWT_PUBLIC_KEY_FILE"));
    assert!(message(JwtSettings { secret: Some(String::new()), ..settings() }).starts_with("SIDECAR_JWT_SECRET: "));

    let missing = fixture("missing.pem");
    let text = message(JwtSettings { public_key_file: Some(missing.clone()), ..settings() });
    assert!(text.starts_with(&format!("SIDECAR_JWT_PUBLIC_KEY_FILE: {}: ", missing.display())));
    for wrong in ["rsa_private.pem", "ec_private.pem", "jwks.json"] {
        let text = message(JwtSettings { public_key_file: Some(fixture(wrong)), ..settings() });
        assert!(text.ends_with("not a PEM public key (RSA, or EC on P-256)"), "{text}");
    }

    let text = message(JwtSettings { jwks_file: Some(fixture("rsa_public.pem")), ..settings() });
    assert!(text.starts_with("SIDECAR_JWKS_FILE: "), "{text}");
    let empty = TempFile::new("empty-jwks.json", b"{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-384\"}]}");
    let text = message(JwtSettings { jwks_file: Some(empty.0.clone()), ..settings() });
    assert!(text.ends_with("no HS256, RS256 or ES256 signing key"), "{text}");

    let text = message(JwtSettings { secret: Some(SECRET.into()), leeway_seconds: u64::MAX, ..settings() });
    assert!(text.starts_with("SIDECAR_JWT_LEEWAY_SECONDS: "));
}

#[test]
fn hostile_tokens_never_panic() {
    let header = b64(&json!({"alg": "HS256", "typ": "JWT"}));
    let mut inputs: Vec<String> = ["", " ", ".", "..", "...", "a.b", "a.b.c", "a.b.c.d", "\u{0}", "é.é.é", "Bearer x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for payload in [
        json!(null),
        json!([1]),
        json!("x"),
        json!({"exp": 1e300}),
        json!({"exp": -1}),
        json!({"nbf": u64::MAX, "exp": u64::MAX}),
        json!({"sub": null}),
        json!({"aud": {"a": 1}}),
    ] {
        inputs.push(format!("{header}.{}.", b64(&payload)));
        inputs.push(sign(Algorithm::HS256, &hs(SECRET), None, &payload));
    }
    inputs.push(format!("{header}.{}.c", "A".repeat(300 * 1024)));
    inputs.push(format!("{}.e30.AAAA", b64(&json!({"alg": "RS256", "kid": 7}))));
    inputs.push(format!("{}.e30.AAAA", b64(&json!({"alg": "ES256", "crit": ["x"]}))));
    // A small deterministic fuzz over the token alphabet.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..500 {
        let len = (seed % 200) as usize;
        let token: String = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                alphabet[(seed >> 33) as usize % alphabet.len()] as char
            })
            .collect();
        inputs.push(format!("{header}.{token}"));
        inputs.push(token);
    }
    let jwks = JwtSettings {
        secret: Some(SECRET.into()),
        public_key_file: Some(fixture("ec_public.pem")),
        jwks_file: Some(fixture("jwks.json")),
        ..settings()
    };
    let auth = Authenticator::new(&jwks).expect("test fixture");
    for input in &inputs {
        let _ = auth.verify(input);
    }
}

#[test]
fn token_from_reads_the_query_then_the_bearer_header() {
    assert_eq!(token_from(Some("q.t.s"), None).as_deref(), Some("q.t.s"));
    assert_eq!(token_from(None, Some("Bearer h.t.s")).as_deref(), Some("h.t.s"));
    assert_eq!(token_from(None, Some("  bearer   h.t.s ")).as_deref(), Some("h.t.s"));
    assert_eq!(token_from(Some("q.t.s"), Some("Bearer h.t.s")).as_deref(), Some("q.t.s"));
    assert_eq!(token_from(Some(""), Some("Bearer h.t.s")).as_deref(), Some("h.t.s"));
    assert_eq!(token_from(None, Some("Basic dXNlcjpwYXNz")), None);
    assert_eq!(token_from(None, Some("Bearer ")), None);
    assert_eq!(token_from(None, Some("Bearer")), None);
    assert_eq!(token_from(None, None), None);
    assert!(matches!(hs_auth().verify(""), Err(AuthError::Missing)));
}
