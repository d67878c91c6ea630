//! A browser's `PushSubscription` (`{endpoint, keys: {p256dh, auth}}`),
//! checked before it is kept: where the sidecar will POST, and the keys it
//! will encrypt for.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::PublicKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ece::ReceiverKeys;
use super::Error;

/// Longest endpoint accepted (push services hand out a few hundred octets).
const MAX_ENDPOINT_LEN: usize = 2048;

/// Which endpoints the sidecar may POST to.
#[derive(Debug, Clone, Default)]
pub(crate) struct EndpointPolicy {
    /// Also accept `http://127.0.0.1:<port>/...`: a local push service in tests.
    pub allow_loopback: bool,
    /// When not empty, the endpoint's host must be one of these or end
    /// with `.` and one of them (e.g. `googleapis.com`).
    pub hosts: Vec<String>,
}

/// A checked subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// The push resource the sidecar POSTs to.
    pub endpoint: String,
    /// The keys its messages are encrypted for.
    pub keys: ReceiverKeys,
}

/// The stored (and browser) form.
#[derive(Serialize, Deserialize)]
struct Wire {
    endpoint: String,
    keys: WireKeys,
}

#[derive(Serialize, Deserialize)]
struct WireKeys {
    p256dh: String,
    auth: String,
}

impl Subscription {
    /// Checks what a client sent (`subscription.toJSON()`): unknown fields,
    /// such as `expirationTime`, are ignored.
    pub(crate) fn from_client(value: &Value, policy: &EndpointPolicy) -> Result<Subscription, Error> {
        let wire: Wire = serde_json::from_value(value.clone())
            .map_err(|e| Error::BadSubscription(format!("expected {{endpoint, keys: {{p256dh, auth}}}} ({e})")))?;
        check_endpoint(&wire.endpoint, policy)?;
        let keys = decode_keys(&wire.keys).map_err(Error::BadSubscription)?;
        Ok(Subscription { endpoint: wire.endpoint, keys })
    }

    /// The stored form (the browser's JSON, keys in base64url).
    pub(crate) fn to_stored(&self) -> String {
        use p256::elliptic_curve::sec1::ToSec1Point;
        let wire = Wire {
            endpoint: self.endpoint.clone(),
            keys: WireKeys {
                p256dh: URL_SAFE_NO_PAD.encode(self.keys.public.to_sec1_point(false).as_bytes()),
                auth: URL_SAFE_NO_PAD.encode(self.keys.auth),
            },
        };
        serde_json::to_string(&wire).expect("a struct of strings serializes")
    }

    /// Reads the stored form back; `None` for an entry this version cannot read.
    pub(crate) fn from_stored(text: &str) -> Option<Subscription> {
        let wire: Wire = serde_json::from_str(text).ok()?;
        let keys = decode_keys(&wire.keys).ok()?;
        Some(Subscription { endpoint: wire.endpoint, keys })
    }
}

/// `scheme://host[:port]` of an endpoint: the audience of its VAPID token.
pub(super) fn origin(endpoint: &str) -> Option<String> {
    let uri: http::Uri = endpoint.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?.as_str()))
}

fn check_endpoint(endpoint: &str, policy: &EndpointPolicy) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::BadSubscription(format!("endpoint {why}")));
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return bad(&format!("is longer than {MAX_ENDPOINT_LEN} characters"));
    }
    let Ok(uri) = endpoint.parse::<http::Uri>() else { return bad("is not a URL") };
    let Some(authority) = uri.authority() else { return bad("has no host") };
    if authority.as_str().contains('@') {
        return bad("must not carry credentials");
    }
    let host = authority.host();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => {}
        Some("http") if policy.allow_loopback && host == "127.0.0.1" => return Ok(()),
        _ => return bad("must be an https:// URL"),
    }
    let host = host.to_ascii_lowercase();
    if !policy.hosts.is_empty()
        && !policy.hosts.iter().any(|h| host == *h || host.strip_suffix(h.as_str()).is_some_and(|p| p.ends_with('.')))
    {
        return bad(&format!("host '{host}' is not a push service this server sends to"));
    }
    Ok(())
}

/// Base64url with or without padding (browsers omit it; some libraries add it).
fn b64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).or_else(|_| URL_SAFE.decode(text)).ok()
}

fn decode_keys(keys: &WireKeys) -> Result<ReceiverKeys, String> {
    let public = b64url(&keys.p256dh).ok_or("keys.p256dh is not base64url")?;
    if public.len() != 65 || public[0] != 4 {
        return Err(format!(
            "keys.p256dh must be an uncompressed P-256 point (65 octets), got {} octets",
            public.len()
        ));
    }
    let public = PublicKey::from_sec1_bytes(&public).map_err(|_| "keys.p256dh is not a point on P-256")?;
    let auth = b64url(&keys.auth).ok_or("keys.auth is not base64url")?;
    let auth: [u8; 16] =
        auth.try_into().map_err(|a: Vec<u8>| format!("keys.auth must be 16 octets, got {}", a.len()))?;
    Ok(ReceiverKeys { public, auth })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn sub(endpoint: &str, p256dh: &str, auth: &str) -> Value {
        json!({"endpoint": endpoint, "expirationTime": null, "keys": {"p256dh": p256dh, "auth": auth}})
    }

    fn check(v: Value, policy: &EndpointPolicy) -> Result<Subscription, String> {
        Subscription::from_client(&v, policy).map_err(|e| e.to_string())
    }

    #[test]
    fn a_browser_subscription_is_kept_and_reads_back() {
        let s = check(sub("https://fcm.googleapis.com/fcm/send/abc", P256DH, AUTH), &EndpointPolicy::default())
            .expect("valid");
        assert_eq!(Subscription::from_stored(&s.to_stored()), Some(s.clone()));
        assert_eq!(origin(&s.endpoint).as_deref(), Some("https://fcm.googleapis.com"));
        // Padded base64url is the same key.
        let padded = check(sub(&s.endpoint, &format!("{P256DH}="), &format!("{AUTH}==")), &EndpointPolicy::default());
        assert_eq!(padded.expect("padded"), s);
    }

    #[test]
    fn endpoints_must_be_https_or_loopback_when_allowed() {
        let open = EndpointPolicy::default();
        let tests = EndpointPolicy { allow_loopback: true, hosts: vec![] };
        for bad in
            ["http://push.example/x", "ftp://push.example/x", "not a url", "https:///x", "https://u:p@push.example/x"]
        {
            assert!(check(sub(bad, P256DH, AUTH), &tests).is_err(), "{bad} accepted");
        }
        assert!(check(sub("http://127.0.0.1:9/push", P256DH, AUTH), &open).is_err());
        assert!(check(sub("http://127.0.0.1:9/push", P256DH, AUTH), &tests).is_ok());
        assert!(check(sub("http://10.0.0.1:9/push", P256DH, AUTH), &tests).is_err());
        assert!(check(sub(&format!("https://p.example/{}", "x".repeat(2100)), P256DH, AUTH), &open).is_err());
    }

    #[test]
    fn a_host_list_limits_where_the_server_posts() {
        let policy = EndpointPolicy { allow_loopback: false, hosts: vec!["googleapis.com".into()] };
        assert!(check(sub("https://fcm.googleapis.com/x", P256DH, AUTH), &policy).is_ok());
        assert!(check(sub("https://googleapis.com/x", P256DH, AUTH), &policy).is_ok());
        assert!(check(sub("https://evilgoogleapis.com/x", P256DH, AUTH), &policy).is_err());
        assert!(check(sub("https://internal.svc/x", P256DH, AUTH), &policy).is_err());
    }

    #[test]
    fn keys_of_the_wrong_length_or_off_the_curve_are_refused() {
        let ok = "https://push.example/x";
        let short = URL_SAFE_NO_PAD.encode([4u8; 33]);
        let off_curve = URL_SAFE_NO_PAD.encode([4u8; 65]);
        let compressed = URL_SAFE_NO_PAD.encode([2u8; 65]);
        for (p256dh, auth, why) in [
            (short.as_str(), AUTH, "65 octets"),
            (off_curve.as_str(), AUTH, "not a point"),
            (compressed.as_str(), AUTH, "uncompressed"),
            ("***", AUTH, "not base64url"),
            (P256DH, "AAAA", "16 octets"),
        ] {
            let err = check(sub(ok, p256dh, auth), &EndpointPolicy::default()).expect_err(why);
            assert!(err.contains(why), "{err} should say {why}");
        }
        assert!(check(json!({"endpoint": ok}), &EndpointPolicy::default()).is_err());
        assert!(check(json!("https://push.example/x"), &EndpointPolicy::default()).is_err());
    }
}
