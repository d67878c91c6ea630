//! A local push service for the browser-push tests: plain HTTP on
//! 127.0.0.1, every request recorded, and the browser's side of Web Push
//! (a P-256 key pair and an auth secret per subscription) to decrypt what
//! arrives (RFC 8291) and check who signed it (RFC 8292).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::Aes128Gcm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use hkdf::Hkdf;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use p256::ecdsa::signature::Verifier;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::elliptic_curve::Generate;
use p256::{PublicKey, SecretKey};
use serde_json::{json, Value};
use sha2::Sha256;

/// One request the push service received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `/push/<name>`.
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

/// The push service: records requests, answers 201 unless told otherwise.
pub struct PushService {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<HashMap<String, u16>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for PushService {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl PushService {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> PushService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answers: Arc<Mutex<HashMap<String, u16>>> = Arc::default();
        let (rec, ans) = (received.clone(), answers.clone());
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (rec, ans) = (rec.clone(), ans.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (rec, ans) = (rec.clone(), ans.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            let body =
                                req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let status = ans.lock().expect("lock").get(&path).copied().unwrap_or(201);
                            rec.lock().expect("lock").push(Received { path, headers, body });
                            let answer = hyper::Response::builder().status(status).body(Full::new(Bytes::new()));
                            Ok::<_, Infallible>(answer.expect("response"))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        PushService { port, received, answers, server }
    }

    /// The endpoint of subscription `name`.
    pub fn endpoint(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/push/{name}", self.port)
    }

    /// The origin a VAPID token for these endpoints names.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answers `status` to every later request for subscription `name`.
    pub fn answer(&self, name: &str, status: u16) {
        self.answers.lock().expect("lock").insert(format!("/push/{name}"), status);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits up to `within` for at least `n` requests; returns all received.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let all = self.received();
            if all.len() >= n || tokio::time::Instant::now() >= deadline {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A browser's subscription: what it hands the app, and what it keeps.
pub struct Browser {
    pub endpoint: String,
    key: SecretKey,
    auth: [u8; 16],
}

impl Browser {
    /// A fresh key pair and auth secret for `endpoint`, as `pushManager.subscribe` makes.
    pub fn subscribe(endpoint: String) -> Browser {
        let key = SecretKey::try_generate().expect("random");
        let mut auth = [0u8; 16];
        getrandom::fill(&mut auth).expect("random");
        Browser { endpoint, key, auth }
    }

    /// `subscription.toJSON()`.
    pub fn subscription(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(self.key.public_key().to_sec1_point(false).as_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
    }

    /// Decrypts a push message body (RFC 8291) the way the browser does;
    /// panics on anything a browser would reject.
    pub fn decrypt(&self, body: &[u8]) -> Vec<u8> {
        assert!(body.len() > 86 + 16, "body too short for aes128gcm: {} octets", body.len());
        let salt = &body[..16];
        assert_eq!(u32::from_be_bytes(body[16..20].try_into().expect("rs")), 4096, "record size");
        assert_eq!(body[20], 65, "key id is an uncompressed P-256 point");
        let sender = PublicKey::from_sec1_bytes(&body[21..86]).expect("the sender key is a P-256 point");
        let shared = p256::ecdh::diffie_hellman(self.key.to_nonzero_scalar(), sender.as_affine());
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend_from_slice(self.key.public_key().to_sec1_point(false).as_bytes());
        key_info.extend_from_slice(&body[21..86]);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes()).expand(&key_info, &mut ikm).expect("ikm");
        let content = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        content.expand(b"Content-Encoding: aes128gcm\0", &mut cek).expect("cek");
        content.expand(b"Content-Encoding: nonce\0", &mut nonce).expect("nonce");
        let mut record = Aes128Gcm::new_from_slice(&cek)
            .expect("key")
            .decrypt(&nonce.into(), &body[86..])
            .expect("the record decrypts and authenticates with this browser's keys");
        assert_eq!(record.pop(), Some(2), "a single, last record ends with the delimiter 0x02");
        record
    }
}

/// Checks `Authorization: vapid t=<JWT>, k=<key>`: the token is ES256,
/// signed by `k`, for `origin`, expiring within 24 hours, with a contact.
/// Returns its claims.
pub fn check_vapid(authorization: &str, public_key: &str, origin: &str) -> Value {
    let rest = authorization.strip_prefix("vapid t=").unwrap_or_else(|| panic!("not vapid: {authorization}"));
    let (token, k) = rest.split_once(", k=").unwrap_or_else(|| panic!("no k=: {authorization}"));
    assert_eq!(k, public_key, "k= is the key browsers subscribed with");
    let k = URL_SAFE_NO_PAD.decode(k).expect("k is base64url");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact token");
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).expect("base64url part");
    let header: Value = serde_json::from_slice(&decode(parts[0])).expect("header");
    assert_eq!(header["alg"], "ES256");
    let signature = p256::ecdsa::Signature::from_slice(&decode(parts[2])).expect("r || s");
    let verifier = p256::ecdsa::VerifyingKey::from_sec1_bytes(&k).expect("k is a P-256 point");
    verifier
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the token is signed by the key in k=");
    let claims: Value = serde_json::from_slice(&decode(parts[1])).expect("claims");
    assert_eq!(claims["aud"], origin);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp > now && exp <= now + 24 * 3600, "exp within 24 h: {exp} (now {now})");
    let sub = claims["sub"].as_str().expect("sub");
    assert!(sub.starts_with("mailto:") || sub.starts_with("https:"), "{sub}");
    claims
}

/// A fresh VAPID key: the PEM file for the sidecar and its public key.
pub fn vapid_key(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let key = SecretKey::try_generate().expect("random");
    let path = dir.join(format!("vapid-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&path, key.to_sec1_pem(Default::default()).expect("pem").as_bytes()).expect("write the key");
    (path, URL_SAFE_NO_PAD.encode(key.public_key().to_sec1_point(false).as_bytes()))
}
