//! The introspection API (`/admin/api/` on the admin port): requests with
//! or without the admin token, and a deployment of several instances on
//! one Redis that all answer.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{jwt_env, Redis, Sidecar};

/// The `SIDECAR_ADMIN_TOKEN` of the tests' deployments.
pub const ADMIN_TOKEN: &str = "introspection-test-token-0123456789";

/// GET on the admin port with `Authorization: Bearer <token>` when given;
/// (status, body as JSON, or the text as a JSON string when it is not JSON).
pub async fn get(s: &Sidecar, path: &str, token: Option<&str>) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    let (status, body) =
        super::http::request(s.admin_port, "GET", path, &headers, b"").await.expect("admin port answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// GET with the tests' admin token, expecting 200.
pub async fn api(s: &Sidecar, path: &str) -> Value {
    let (status, body) = get(s, path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// `n` instances on `redis` with JWT users and the admin token, each
/// answering for all (every one heard every other's heartbeat).
pub async fn deployment(redis: &Redis, n: usize, extra: &[(&str, String)]) -> Vec<Sidecar> {
    let mut env = jwt_env();
    env.push(("SIDECAR_REDIS_URL", redis.url()));
    env.push(("SIDECAR_ADMIN_TOKEN", ADMIN_TOKEN.into()));
    env.extend(extra.iter().cloned());
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(Sidecar::start(&env).await);
    }
    for s in &all {
        wait_for_answers(s, n).await;
    }
    all
}

/// Waits until `n` instances answer a question asked of `s`.
pub async fn wait_for_answers(s: &Sidecar, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = api(s, "/admin/api/instances").await;
        if body["cluster"]["answered"].as_array().map(Vec::len) == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{n} instances never answered: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The instance id the harness gives a sidecar.
pub fn instance_id(s: &Sidecar) -> String {
    format!("test-{}", s.port)
}
