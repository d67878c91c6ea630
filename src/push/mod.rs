//! Browser push (FR-009, CONTRACT section 15): a notification for a user
//! with no live connection on any instance goes out by Web Push (RFC 8030)
//! to every subscription the user registered, encrypted for the browser
//! (RFC 8291) and signed with the server's VAPID key (RFC 8292). A
//! connected user gets it in the app only.
//!
//! - `subscription`: what a client registers, checked; `store`: where it is
//!   kept (Redis or in process), and the per-event claim between instances.
//! - `liveness`: whether a user is connected anywhere.
//! - `ece`, `vapid`, `message`: the push message, its encryption, its
//!   signature; the POST is the HTTP edge's ([`PushClient`], implemented
//!   in `http/`).
//! - `sender`: the task that turns queued notifications into pushes.

mod ece;
mod error;
mod liveness;
mod message;
mod sender;
mod store;
mod subscription;
mod vapid;

use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use error::Error;
pub(crate) use liveness::Liveness;
pub(crate) use store::Store;
pub(crate) use subscription::{EndpointPolicy, Subscription};
pub(crate) use vapid::{Vapid, VapidError};

use crate::config::{Action, HubId, PushConfig, RouteTable};
use crate::fanout::Registry;
use crate::ingest::RedisConn;
use crate::pipeline::PushTap;
use crate::telemetry::Metrics;

/// A boxed future, as [`PushClient`] returns.
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// How a push request leaves the process: one POST, answered with its
/// status, or why no answer came. The HTTP edge provides it, so this
/// module knows no HTTP stack.
pub(crate) trait PushClient: Send + Sync {
    /// POSTs `body` to `endpoint` with `headers`.
    fn post<'a>(
        &'a self,
        endpoint: &'a str,
        headers: &'a [(&'static str, String)],
        body: bytes::Bytes,
    ) -> BoxFuture<'a, Result<u16, String>>;
}

/// What the hub's push methods use: the store and the public key.
pub(crate) struct Registrar {
    store: Arc<Store>,
    vapid: Arc<Vapid>,
    policy: EndpointPolicy,
    max_per_user: usize,
}

impl Registrar {
    /// Runs a push server method for the caller (`user`, if authenticated).
    /// `RegisterPush(subscription)` returns null, `UnregisterPush(endpoint)`
    /// whether there was such a subscription, `PushPublicKey()` the VAPID
    /// public key (base64url) for `pushManager.subscribe`.
    pub(crate) async fn invoke(
        &self,
        action: Action,
        method: &str,
        user: Option<&str>,
        args: &[Value],
    ) -> Result<Value, Error> {
        match action {
            Action::PushPublicKey => match args {
                [] => Ok(Value::String(self.vapid.public_key().to_string())),
                _ => Err(Error::BadSubscription(format!("{method} takes no arguments"))),
            },
            Action::RegisterPush => {
                let [subscription] = args else {
                    return Err(Error::BadSubscription(format!(
                        "{method} expects one argument: the PushSubscription (subscription.toJSON())"
                    )));
                };
                let user = user.ok_or(Error::NoUser)?;
                let sub = Subscription::from_client(subscription, &self.policy)?;
                self.store.add(user, &sub, self.max_per_user).await?;
                Ok(Value::Null)
            }
            Action::UnregisterPush => {
                let [Value::String(endpoint)] = args else {
                    return Err(Error::BadSubscription(format!("{method} expects one argument: the endpoint")));
                };
                let user = user.ok_or(Error::NoUser)?;
                Ok(Value::Bool(self.store.remove(user, endpoint).await?))
            }
            _ => Err(Error::BadSubscription(format!("{method} is not a push method"))),
        }
    }
}

/// Browser push, started: the hub's handle and the pipeline's queue.
pub(crate) struct Started {
    /// For the hub's push methods.
    pub registrar: Arc<Registrar>,
    /// For the pipeline.
    pub tap: PushTap,
}

/// Starts browser push when a VAPID key is configured (`None` otherwise).
/// `redis` shares subscriptions and liveness between instances; `ttl` is
/// how long a crashed instance's users still count as connected; `routes`
/// name the hubs push routes deliver on (liveness is asked per hub). The
/// sender stops when the pipeline drops the queue; liveness at `stop`.
#[allow(clippy::too_many_arguments)] // the wiring of one feature, called once from app
pub(crate) fn start(
    config: &PushConfig,
    routes: &RouteTable,
    redis: Option<RedisConn>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    instance: &str,
    ttl: std::time::Duration,
    client: Arc<dyn PushClient>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> Result<Option<Started>, VapidError> {
    let Some(v) = &config.vapid else { return Ok(None) };
    let vapid = Arc::new(Vapid::load(&v.private_key_file, &v.subject)?);
    let mut hubs: Vec<(HubId, String)> = Vec::new();
    for route in routes.routes().filter(|r| r.push) {
        if !hubs.iter().any(|(h, _)| *h == route.hub) {
            hubs.push((route.hub, routes.hubs[route.hub].name.clone()));
        }
    }
    let (store, liveness) = match redis {
        Some(conn) => (Store::redis(conn.clone()), Liveness::redis(registry.clone(), hubs, conn, instance, ttl)),
        None => (Store::memory(), Liveness::local(registry.clone(), hubs)),
    };
    let (store, liveness) = (Arc::new(store), Arc::new(liveness));
    tasks.spawn(liveness.clone().run(stop));
    let (tap, rx) = crate::pipeline::push_channel(config.queue_capacity);
    let sender = Arc::new(sender::Sender {
        store: store.clone(),
        liveness,
        vapid: vapid.clone(),
        client,
        metrics,
        ttl: config.ttl,
    });
    tasks.spawn(sender.run(rx, tasks.clone()));
    tracing::info!(public_key = vapid.public_key(), "browser push on");
    let policy = EndpointPolicy { allow_loopback: config.allow_loopback, hosts: config.endpoint_hosts.clone() };
    let registrar = Registrar { store, vapid, policy, max_per_user: config.max_subscriptions_per_user };
    Ok(Some(Started { registrar: Arc::new(registrar), tap }))
}
