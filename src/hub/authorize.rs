//! Room authorization for `join` methods: the policy the routing file names
//! (open, a claim, or a backend webhook with a cache). A denied join gets a
//! Completion error and joins nothing.

use crate::sync::Unpoisoned;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use super::handoff::BoxFuture;
use serde_json::Value;

use crate::config::Authorize;

use super::{Error, Identity};

type CacheKey = (String, String, String);

/// Evaluates join policies; remembers webhook answers.
#[derive(Default)]
pub(crate) struct Authorizer {
    cache: Mutex<HashMap<CacheKey, (bool, Instant)>>,
    webhook: Option<Arc<dyn Webhook>>,
}

/// The HTTP client the webhook policy asks (the HTTP edge provides it, so
/// the hub speaks no HTTP itself).
pub(crate) trait Webhook: Send + Sync {
    /// POSTs `body` (JSON) to `url`; the answer's status code.
    fn post<'a>(&'a self, url: &'a str, body: String) -> BoxFuture<'a, Result<u16, String>>;
}

impl Authorizer {
    /// An authorizer whose webhook policies ask through `webhook`.
    pub(crate) fn with_webhook(webhook: Arc<dyn Webhook>) -> Authorizer {
        Authorizer { cache: Mutex::default(), webhook: Some(webhook) }
    }

    /// `Ok` when `identity` may join `room` under `policy`.
    pub(crate) async fn check(
        &self,
        policy: &Authorize,
        identity: &Identity,
        hub: &str,
        room: &str,
    ) -> Result<(), Error> {
        let denied = || Err(Error::Denied(format!("Not authorized to join '{room}'")));
        match policy {
            Authorize::Open => Ok(()),
            Authorize::Claim { claim, roles_claim, roles } => {
                let Some(claims) = &identity.claims else { return denied() };
                let listed = |name: &str, want: &dyn Fn(&str) -> bool| match claims.get(name) {
                    Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(want),
                    Some(Value::String(s)) => s.split([' ', ',']).any(want),
                    _ => false,
                };
                if listed(claim, &|r| r == room) || listed(roles_claim, &|r| roles.iter().any(|x| x == r)) {
                    Ok(())
                } else {
                    denied()
                }
            }
            Authorize::Webhook { url, cache, timeout } => {
                let user = identity.user_id.as_deref().unwrap_or("").to_string();
                let key = (url.clone(), user.clone(), room.to_string());
                if let Some(allowed) = self.cached(&key, *cache) {
                    return if allowed { Ok(()) } else { denied() };
                }
                let body = serde_json::json!({"user_id": identity.user_id.as_deref(), "room_id": room, "hub": hub});
                let Some(webhook) = &self.webhook else {
                    tracing::warn!(url = %url, "no HTTP client for the authorization webhook: join denied");
                    return denied();
                };
                match tokio::time::timeout(*timeout, webhook.post(url, body.to_string())).await {
                    Ok(Ok(status)) if (200..300).contains(&status) => {
                        self.remember(key, true);
                        Ok(())
                    }
                    Ok(Ok(401 | 403)) => {
                        self.remember(key, false);
                        denied()
                    }
                    Ok(Ok(status)) => {
                        tracing::warn!(url = %url, status, "authorization webhook answered an error: join denied");
                        denied()
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(url = %url, error = %e, "authorization webhook unreachable: join denied");
                        denied()
                    }
                    Err(_) => {
                        tracing::warn!(url = %url, timeout_ms = timeout.as_millis() as u64, "authorization webhook timed out: join denied");
                        denied()
                    }
                }
            }
        }
    }

    fn cached(&self, key: &CacheKey, ttl: Duration) -> Option<bool> {
        let cache = self.lock();
        cache.get(key).filter(|(_, at)| at.elapsed() < ttl).map(|(allowed, _)| *allowed)
    }

    fn remember(&self, key: CacheKey, allowed: bool) {
        let mut cache = self.lock();
        if cache.len() > 100_000 {
            cache.clear(); // a bound, not an LRU: answers are cheap to fetch again
        }
        cache.insert(key, (allowed, Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, (bool, Instant)>> {
        self.cache.locked()
    }
}
