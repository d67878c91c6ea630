//! CONTRACT section 7 through the real binary and the official client:
//! JWT on negotiate and connect, `user:` targets, expiry, room policies
//! (claim and webhook), rate limits, and hostile input.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::http::request;
use support::raw::RawWs;
use support::*;

const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth").join(name)
}

fn unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn hs256(claims: Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"))
        .expect("sign")
}

fn signed(alg: Algorithm, key_file: &str, kid: Option<&str>, claims: Value) -> String {
    let pem = std::fs::read(fixture(key_file)).expect("key");
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        _ => EncodingKey::from_ec_pem(&pem),
    }
    .expect("pem");
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    encode(&header, &claims, &key).expect("sign")
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "name": format!("User {sub}"), "exp": unix() + 600, "aud": "support-center", "iss": "backend"})
}

fn jwt_env() -> Vec<(&'static str, String)> {
    vec![
        ("SIDECAR_AUTH", "jwt".into()),
        ("SIDECAR_JWT_SECRET", SECRET.into()),
        ("SIDECAR_JWT_PUBLIC_KEY_FILE", fixture("rsa_public.pem").display().to_string()),
        ("SIDECAR_JWT_AUDIENCE", "support-center".into()),
        ("SIDECAR_JWT_ISSUER", "backend".into()),
        ("SIDECAR_JWT_LEEWAY_SECONDS", "0".into()),
    ]
}

async fn negotiate_status(s: &Sidecar, token: Option<&str>, in_query: bool) -> u16 {
    let (path, header);
    match (token, in_query) {
        (Some(t), true) => {
            path = format!("/hubs/chat/negotiate?negotiateVersion=1&access_token={t}");
            header = None;
        }
        (Some(t), false) => {
            path = "/hubs/chat/negotiate?negotiateVersion=1".to_string();
            header = Some(format!("Bearer {t}"));
        }
        (None, _) => {
            path = "/hubs/chat/negotiate?negotiateVersion=1".to_string();
            header = None;
        }
    }
    let headers: Vec<(&str, &str)> = header.as_deref().map(|h| vec![("authorization", h)]).unwrap_or_default();
    request(s.port, "POST", &path, &headers, b"").await.expect("negotiate").0
}

#[tokio::test]
async fn bad_tokens_get_401_at_negotiate_and_at_connect() {
    let s = Sidecar::start(&jwt_env()).await;
    let mut expired = claims("u1");
    expired["exp"] = json!(unix() - 60);
    let mut early = claims("u1");
    early["nbf"] = json!(unix() + 600);
    let mut wrong_aud = claims("u1");
    wrong_aud["aud"] = json!("another-app");
    let none_alg = {
        use base64_helper::b64;
        format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims("u1").to_string().as_bytes()))
    };
    let wrong_sig = encode(
        &Header::new(Algorithm::HS256),
        &claims("u1"),
        &EncodingKey::from_secret(b"not-the-secret").expect("key"),
    )
    .expect("sign");
    let bad = [
        ("no token", None),
        ("wrong signature", Some(wrong_sig)),
        ("wrong audience", Some(hs256(wrong_aud))),
        ("expired", Some(hs256(expired))),
        ("not yet valid", Some(hs256(early))),
        ("alg none", Some(none_alg)),
        ("an ES256 key nobody configured", Some(signed(Algorithm::ES256, "ec_private.pem", None, claims("u1")))),
    ];
    for (what, token) in &bad {
        for in_query in [true, false] {
            assert_eq!(negotiate_status(&s, token.as_deref(), in_query).await, 401, "negotiate with {what}");
        }
        let path = match token {
            Some(t) => format!("/hubs/chat?access_token={t}"),
            None => "/hubs/chat".into(),
        };
        assert_eq!(RawWs::connect(s.port, &path).await.err(), Some(401), "connect with {what}");
    }
    for good in [hs256(claims("u1")), signed(Algorithm::RS256, "rsa_private.pem", None, claims("u1"))] {
        assert_eq!(negotiate_status(&s, Some(&good), true).await, 200);
        assert_eq!(negotiate_status(&s, Some(&good), false).await, 200);
    }
    let (_, metrics) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    assert!(metrics.contains("sidecar_auth_failures_total{reason=\"expired\"}"), "{metrics}");
}

/// ASP.NET Core's JwtBearer checks tokens with `RequireExpirationTime`
/// on by default: a token without `exp` is refused (401 with
/// `WWW-Authenticate: Bearer`) as an expired one is, at negotiate and at
/// the WebSocket upgrade alike. A token that never expires would outlive
/// any revocation, and its connection would never be closed at expiry.
#[tokio::test]
async fn a_token_without_exp_is_refused_as_an_expired_one_is() {
    let s = Sidecar::start(&jwt_env()).await;
    let mut no_exp = claims("u1");
    no_exp.as_object_mut().expect("an object").remove("exp");
    let token = hs256(no_exp);
    for in_query in [true, false] {
        assert_eq!(negotiate_status(&s, Some(&token), in_query).await, 401, "negotiate, in the query: {in_query}");
    }
    let bearer = format!("Bearer {token}");
    let (status, head, _) = support::http::request_with_head(
        s.port,
        "POST",
        "/hubs/chat/negotiate?negotiateVersion=1",
        &[("authorization", &bearer)],
        b"",
    )
    .await
    .expect("negotiate");
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let upgrade = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    let (status, head, _) =
        support::http::request_with_head(s.port, "GET", &format!("/hubs/chat?access_token={token}"), &upgrade, b"")
            .await
            .expect("upgrade");
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert_eq!(RawWs::connect(s.port, &format!("/hubs/chat?access_token={token}")).await.err(), Some(401));
    let (_, metrics) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    assert!(metrics.contains("sidecar_auth_failures_total{reason=\"no_expiry\"}"), "{metrics}");
}

mod base64_helper {
    /// base64url without padding, for hand-made tokens.
    pub fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test]
async fn user_targets_reach_only_that_user_across_transports_and_jwks_keys() {
    let jwks = fixture("jwks.json").display().to_string();
    let mut env = jwt_env();
    env.push(("SIDECAR_JWKS_FILE", jwks));
    let s = Sidecar::start(&env).await;
    let mut d = Driver::start().await;
    let alice = signed(Algorithm::ES256, "ec_private.pem", Some("ec-1"), claims("alice"));
    let bob = hs256(claims("bob"));
    d.connect("alice-ws", &s.hub("/hubs/notification"), &["ReceiveNotification"], json!({"accessToken": alice}))
        .await
        .expect("alice connects");
    d.connect(
        "alice-lp",
        &s.hub("/hubs/notification"),
        &["ReceiveNotification"],
        json!({"accessToken": alice, "transport": "LongPolling"}),
    )
    .await
    .expect("alice's second tab connects");
    d.connect("bob", &s.hub("/hubs/notification"), &["ReceiveNotification"], json!({"accessToken": bob}))
        .await
        .expect("bob connects");
    let note = json!({"id": "n1", "user_id": "alice", "title": "t", "message": "for alice", "created_at": now()});
    assert_eq!(s.post_event(envelope("notification", "user:alice", note.clone()).to_string().as_bytes()).await.0, 202);
    for tab in ["alice-ws", "alice-lp"] {
        assert_eq!(d.message(tab, "ReceiveNotification", WAIT).await.expect("alice receives")["args"][0], note);
    }
    assert!(d.message("bob", "ReceiveNotification", Duration::from_millis(500)).await.is_none(), "bob does not");

    // SendTyping carries the caller's id and name from the token.
    d.connect("alice-chat", &s.hub("/hubs/chat"), &["UserTyping"], json!({"accessToken": alice})).await.expect("chat");
    d.invoke("alice-chat", "JoinRoom", json!(["r"])).await.expect("joins");
    d.invoke("alice-chat", "SendTyping", json!(["r", true])).await.expect("typing");
    let t = d.message("alice-chat", "UserTyping", WAIT).await.expect("typing arrives");
    assert_eq!(t["args"][0], json!({"user_id": "alice", "username": "User alice", "is_typing": true}));
}

#[tokio::test]
async fn an_expired_token_closes_the_connection_with_reconnect_allowed() {
    let s = Sidecar::start(&jwt_env()).await;
    let mut short = claims("u1");
    short["exp"] = json!(unix() + 2);
    let mut ws =
        RawWs::connect(s.port, &format!("/hubs/chat?access_token={}", hs256(short))).await.expect("valid for now");
    ws.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    let close = ws.recv_type(7).await.expect("closed at expiry");
    // ASP.NET Core's CloseOnAuthenticationExpiration: no error, so clients
    // that treat any Close error as fatal still reconnect with a new token.
    assert_eq!(close, json!({"type": 7, "allowReconnect": true}));
}

/// A stateful session that resumes with a fresh token lives by that token,
/// as ASP.NET Core's dispatcher takes the expiry of every request that
/// carries the connection on (`UpdateExpiration`), and as the sidecar does
/// when the session resumes on another instance: it is not closed when the
/// token it first connected with expires.
#[tokio::test]
async fn a_stateful_session_resumed_with_a_fresh_token_lives_by_the_fresh_token() {
    let s = Sidecar::start(&jwt_env()).await;
    let mut short = claims("u1");
    short["exp"] = json!(unix() + 3);
    let (_, body) = request(
        s.port,
        "POST",
        &format!(
            "/hubs/chat/negotiate?negotiateVersion=1&useStatefulReconnect=true&access_token={}",
            hs256(short.clone())
        ),
        &[],
        b"",
    )
    .await
    .expect("negotiate");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let id = v["connectionToken"].as_str().expect("a token").to_string();
    let mut ws =
        RawWs::connect(s.port, &format!("/hubs/chat?id={id}&access_token={}", hs256(short))).await.expect("connects");
    ws.send("{\"protocol\":\"json\",\"version\":2}\u{1e}").await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    drop(ws); // the network drops, no Close: the session waits for its client

    let fresh = hs256(claims("u1")); // ten minutes
    let mut ws = RawWs::connect(s.port, &format!("/hubs/chat?id={id}&access_token={fresh}")).await.expect("resumes");
    assert_eq!(ws.recv_type(9).await.expect("a Sequence: resumed")["type"], 9);
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        match tokio::time::timeout_at(quiet_until, ws.recv()).await {
            Err(_) => break, // no Close past the first token's expiry
            Ok(Some(text)) => assert!(!text.contains("\"type\":7"), "closed at the first token's expiry: {text}"),
            Ok(None) => panic!("the socket ended at the first token's expiry"),
        }
    }
}

/// A backend that allows rooms starting with `ok-`, and counts its calls.
async fn webhook_backend() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let counter = calls.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let status = if text.contains("\"room_id\":\"ok-") { "200 OK" } else { "403 Forbidden" };
            let _ = sock
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                .await;
        }
    });
    (port, calls)
}

#[tokio::test]
async fn room_policies_allow_and_deny_as_configured() {
    let (backend, calls) = webhook_backend().await;
    let dead = free_port();
    let routes = std::fs::read_to_string(fixture("../../../protocol/routes.toml")).expect("routes")
        .replace(
            "  name = \"JoinRoom\"\n  action = \"join\"\n  authorize = \"open\"",
            "  name = \"JoinRoom\"\n  action = \"join\"\n  authorize = { policy = \"claim\", claim = \"rooms\", roles = [\"supervisor\"] }",
        )
        .replace(
            "  name = \"SubscribeTicket\"\n  action = \"join\"\n  authorize = \"open\"",
            &format!("  name = \"SubscribeTicket\"\n  action = \"join\"\n  authorize = {{ policy = \"webhook\", url = \"http://127.0.0.1:{backend}/authorize\", cache_seconds = 60, timeout_ms = 500 }}\n\n  [[hub.method]]\n  name = \"SubscribeViaDeadBackend\"\n  action = \"join\"\n  authorize = {{ policy = \"webhook\", url = \"http://127.0.0.1:{dead}/authorize\" }}"),
        );
    assert!(routes.contains("policy = \"claim\"") && routes.contains("policy = \"webhook\""));
    let path = std::env::temp_dir().join(format!("routes-{}.toml", free_port()));
    std::fs::write(&path, routes).expect("write routes");
    let mut env = jwt_env();
    env.push(("SIDECAR_ROUTES", path.display().to_string()));
    let s = Sidecar::start(&env).await;
    let mut d = Driver::start().await;

    let mut agent = claims("agent");
    agent["rooms"] = json!(["req-1", "req-2"]);
    let mut boss = claims("boss");
    boss["roles"] = json!(["supervisor"]);
    d.connect("agent", &s.hub("/hubs/chat"), &[], json!({"accessToken": hs256(agent.clone())}))
        .await
        .expect("connects");
    d.connect("boss", &s.hub("/hubs/chat"), &[], json!({"accessToken": hs256(boss)})).await.expect("connects");
    assert_eq!(d.invoke("agent", "JoinRoom", json!(["req-1"])).await, Ok(Value::Null));
    let err = d.invoke("agent", "JoinRoom", json!(["req-9"])).await.expect_err("not in the claim");
    assert!(err.contains("Not authorized to join 'req-9'"), "{err}");
    assert_eq!(d.invoke("boss", "JoinRoom", json!(["req-9"])).await, Ok(Value::Null), "a role may join any room");
    // Typing takes what joining takes: in the room, or allowed into it.
    let err = d.invoke("agent", "SendTyping", json!(["req-9", true])).await.expect_err("typing into a denied room");
    assert!(err.contains("Not authorized to join 'req-9'"), "{err}");
    assert_eq!(d.invoke("agent", "SendTyping", json!(["req-1", true])).await, Ok(Value::Null), "its own room");
    assert_eq!(d.invoke("agent", "SendTyping", json!(["req-2", true])).await, Ok(Value::Null), "one it may join");
    let err = d.invoke("agent", "GetPresence", json!(["req-9"])).await.expect_err("members of a denied room");
    assert!(err.contains("Not authorized to join 'req-9'"), "{err}");
    assert!(d.invoke("agent", "GetPresence", json!(["req-1"])).await.is_ok(), "its own room's members");

    d.connect("t", &s.hub("/hubs/ticket"), &["TicketStatusChanged"], json!({"accessToken": hs256(agent)}))
        .await
        .expect("connects");
    assert_eq!(d.invoke("t", "SubscribeTicket", json!(["ok-1"])).await, Ok(Value::Null));
    assert!(d.invoke("t", "SubscribeTicket", json!(["no-1"])).await.is_err());
    assert_eq!(d.invoke("t", "SubscribeTicket", json!(["ok-1"])).await, Ok(Value::Null));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2, "the second ok-1 came from the cache");
    let err = d.invoke("t", "SubscribeViaDeadBackend", json!(["ok-2"])).await.expect_err("backend down");
    assert!(err.contains("Not authorized"), "{err}");
    let status =
        json!({"request_id": "no-1", "old_status": "a", "new_status": "b", "changed_by": "x", "changed_at": now()});
    s.post_event(envelope("status_change", "no-1", status).to_string().as_bytes()).await;
    assert!(
        d.message("t", "TicketStatusChanged", Duration::from_millis(400)).await.is_none(),
        "a denied join joined nothing"
    );
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_flooding_client_is_limited_and_its_room_is_not_slowed() {
    let s = Sidecar::start(&[]).await;
    let mut d = Driver::start().await;
    d.connect("calm", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({})).await.expect("connects");
    d.invoke("calm", "JoinRoom", json!(["r"])).await.expect("joins");
    let mut flood = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    flood.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    flood.recv().await;
    let one = "{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}";
    for _ in 0..100 {
        flood.send(&one.repeat(100)).await; // 10,000 invocations
    }
    let mut limited = 0;
    let mut seen = 0;
    while seen < 10_000 {
        let Some(text) = flood.recv().await else { break };
        for record in text.split('\u{1e}').filter(|r| !r.is_empty()) {
            let v: Value = serde_json::from_str(record).expect("json");
            if v["type"] == 3 {
                seen += 1;
                if v["error"].as_str().is_some_and(|e| e.contains("Too many invocations")) {
                    limited += 1;
                }
            }
        }
    }
    assert_eq!(seen, 10_000, "every blocking invocation got its Completion");
    assert!(limited >= 9_800, "only the burst passed: {limited} limited");
    let e = envelope("chat_message", "r", chat_payload("r", 1));
    let sent = std::time::Instant::now();
    s.post_event(e.to_string().as_bytes()).await;
    d.message("calm", "ReceiveMessage", WAIT).await.expect("the calm client receives");
    assert!(sent.elapsed() < Duration::from_millis(200), "{:?}", sent.elapsed());
    let (_, metrics) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    // The series is there from the start at zero: counted, not just present.
    assert!(metrics.contains("sidecar_limited_total{limit=\"invocations\"}"), "{metrics}");
    assert!(!metrics.contains("sidecar_limited_total{limit=\"invocations\"} 0\n"), "{metrics}");
}

#[tokio::test]
async fn behind_a_proxy_the_per_address_limit_uses_the_forwarded_address() {
    use support::http::request;
    let s = Sidecar::start(&[
        ("SIDECAR_CLIENT_IP_HEADER", "X-Forwarded-For".into()),
        ("SIDECAR_CONNECTION_RATE_PER_IP", "1".into()),
        ("SIDECAR_CONNECTION_BURST_PER_IP", "2".into()),
    ])
    .await;
    // A first long poll starts a connection: that is what the limit counts.
    let start = |forwarded: &'static str| {
        let port = s.port;
        async move {
            let (_, body) =
                request(port, "POST", "/hubs/chat/negotiate?negotiateVersion=1", &[], b"").await.expect("negotiate");
            let token = serde_json::from_str::<Value>(&body).expect("json")["connectionToken"]
                .as_str()
                .expect("token")
                .to_string();
            request(port, "GET", &format!("/hubs/chat?id={token}"), &[("x-forwarded-for", forwarded)], b"")
                .await
                .expect("poll")
                .0
        }
    };
    // The client's own claim (first entry) is ignored; the proxy's last entry counts.
    assert_eq!(start("1.1.1.1, 10.0.0.1").await, 200);
    assert_eq!(start("2.2.2.2, 10.0.0.1").await, 200);
    assert_eq!(start("3.3.3.3, 10.0.0.1").await, 429, "10.0.0.1 is over its burst");
    assert_eq!(start("1.1.1.1, 10.0.0.2").await, 200, "another client behind the same proxy is not limited");
}

#[tokio::test]
async fn any_origin_allowed_means_any_but_null_which_lends_no_credentials() {
    // `*` echoes the page's origin with credentials (SignalR sends them);
    // `null` (a sandboxed frame, a file) gets no CORS answer at all.
    let s = Sidecar::start(&[("SIDECAR_CORS_ORIGINS", "*".into())]).await;
    let port = s.port;
    let preflight = |origin: &'static str| {
        let headers = [("Origin", origin), ("Access-Control-Request-Method", "POST")];
        async move { support::http::request_with_head(port, "OPTIONS", "/hubs/chat/negotiate", &headers, b"").await }
    };
    let (_, head, _) = preflight("https://app.example.com").await.expect("preflight");
    assert!(head.contains("access-control-allow-origin: https://app.example.com"), "{head}");
    assert!(head.contains("access-control-allow-credentials: true"), "{head}");
    let (_, head, _) = preflight("null").await.expect("preflight");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}
