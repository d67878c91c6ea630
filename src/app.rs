//! The only place that wires modules together. It owns every task (one
//! `TaskTracker`) and runs the shutdown sequence of CONTRACT sections 8 and
//! 14: unready, stop listening, close clients over the drain window while
//! events still reach those not yet closed, then stop ingest, drain the
//! pipeline and finish the acknowledgements, wait, exit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::{AuthConfig, Config, RouteTable};
use crate::continuity::{RedisSessionStore, StreamCatchUp};
use crate::envelope::Schemas;
use crate::fanout::Registry;
use crate::history::History;
use crate::http::{self, AdminState, ClientState, Cors, Phase, Readiness};
use crate::hub::{self, HubSettings, Hubs};
use crate::ingest::{self, Publisher, RedisIngest};
use crate::introspect::{self, InstanceState, Introspect};
use crate::pipeline::{self, Pipeline};
use crate::presence::{Presence, RedisPresence};
use crate::telemetry::Metrics;

mod lane;

/// How long a drained instance's stateful session waits in Redis for its
/// client (who resumes at once) before it is forgotten.
const SESSION_HANDOFF_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Most entries per stream a taken-over session may have missed; beyond
/// that its client reconnects afresh and refetches.
const CATCH_UP_MAX: usize = 10_000;

/// A setting that names something unusable (a schemas directory, a key, a
/// certificate, a Redis password), found when the app opens it: the binary
/// reports it as it reports the settings checked before the start (exit
/// code 64), not as a failure of the running service.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSetting(pub String);

/// Where the two listeners were bound: with port 0 in the settings (tests),
/// only the bound socket knows the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The client port.
    pub client: SocketAddr,
    /// The admin port.
    pub admin: SocketAddr,
}

/// Runs the sidecar until `shutdown` resolves, then drains and returns.
/// `routes` is the routing file `config.routes_path` names, loaded (and
/// validated) by the caller with the other settings, before anything starts.
pub async fn run(config: Config, routes: RouteTable, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(config, routes, shutdown, |_| {}).await
}

/// [`run`], telling `ready` where the listeners are once the sidecar is
/// ready, so a caller that asked for port 0 can reach it.
pub async fn run_with(
    config: Config,
    routes: RouteTable,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Listening),
) -> anyhow::Result<()> {
    let routes = Arc::new(routes);
    let schemas =
        Arc::new(Schemas::load(&config.schemas_dir).map_err(|e| InvalidSetting(format!("SIDECAR_SCHEMAS_DIR: {e}")))?);
    let metrics = Arc::new(Metrics::new());
    let read_here = |stream: &str| config.redis.is_none() || config.streams.iter().any(|s| s == stream);
    let dead_letter_streams = if config.redis.is_some() { config.streams.as_slice() } else { &[] };
    metrics.precreate_known(
        routes.hubs.iter().map(|h| h.name.as_str()),
        routes.routes().filter(|r| read_here(&r.stream)).map(|r| (r.stream.as_str(), r.event_type.as_str())),
        dead_letter_streams.iter().map(String::as_str),
        routes.hubs.iter().flat_map(|h| h.methods().map(move |m| (h.name.as_str(), m.name.as_str()))),
    );
    let auth = match &config.auth {
        AuthConfig::None => None,
        AuthConfig::Jwt(j) => Some(Arc::new(Authenticator::new(j).map_err(|e| InvalidSetting(e.to_string()))?)),
    };
    let registry = Arc::new(Registry::new(routes.hubs.len(), config.delivery.max_groups_per_connection));
    let readiness = Arc::new(Readiness::default());
    let tasks = TaskTracker::new();
    // Runs the tasks every event goes through (lane.rs); stopped when this
    // function returns, after every task it owns has finished.
    let lane = lane::Lane::start().context("starting the event lane's thread")?;
    crate::transport::send_batch::set_enabled(config.server.io_uring);

    let (input, input_rx) = pipeline::channel(config.delivery.ingest_queue_capacity);
    let mut shutdown = std::pin::pin!(shutdown);

    // A bad certificate stops the start, before any port is bound.
    let tls = config.server.tls.as_ref().map(http::Tls::load).transpose().map_err(|e| InvalidSetting(e.to_string()))?;
    let admin_listener =
        TcpListener::bind(config.server.admin_listen).await.context("SIDECAR_ADMIN_LISTEN: cannot bind")?;
    let admin_addr = admin_listener.local_addr()?;

    let header_timeout = config.limits.http_header_timeout;
    let publisher = match &config.redis {
        Some(redis) => {
            let waiting =
                FirstRedis { admin: &admin_listener, readiness: &readiness, metrics: &metrics, header_timeout };
            let Some(conn) = waiting.connect(redis, shutdown.as_mut()).await? else {
                tracing::info!("stopped before Redis answered");
                return Ok(());
            };
            let spool = ingest::Spool::new(redis.spool_max_events, config.delivery.max_event_age, metrics.clone());
            Publisher::redis(routes.clone(), conn, redis.stream_maxlen, input.clone(), spool)
        }
        None => Publisher::memory(routes.clone(), input.clone()),
    };

    // The client port closes when the drain starts; the admin port (probes
    // answering 503, the last metrics, the HTTP bridge) at the very end.
    let client_stop = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let ingest_stop = CancellationToken::new();
    let pipeline_stop = CancellationToken::new();
    let keepalive_stop = CancellationToken::new();
    // POSTed events spooled while Redis is away: appended until the drain
    // starts (the spool then takes no more), then tried until just before
    // the shutdown deadline.
    if let Some(flusher) = publisher.spool_flusher() {
        let last_attempts = config.shutdown.timeout.saturating_sub(Duration::from_secs(1));
        tasks.spawn(flusher.run(client_stop.clone(), last_attempts));
    }

    let pipeline = Pipeline::new(routes.clone(), registry.clone(), metrics.clone(), &config.delivery);
    // What the live path drops as duplicates, for a handoff's catch-up.
    let duplicates = pipeline.duplicates();
    // One instance checks the entries all of them pass over (skip.rs).
    let checks_all = pipeline.checks_all();
    // Browser push (FR-009): its sender ends when the pipeline lets go of
    // its queue; its liveness record when the connections are gone.
    let push_redis = match &config.redis {
        Some(redis) => {
            Some(ingest::connect(redis, Some(std::time::Duration::from_secs(5))).await.context("SIDECAR_REDIS_URL")?)
        }
        None => None,
    };
    let push = crate::push::start(
        &config.push,
        &routes,
        push_redis,
        registry.clone(),
        metrics.clone(),
        &config.instance_id,
        config.presence_ttl,
        Arc::new(http::HyperPushClient::new()),
        &tasks,
        keepalive_stop.clone(),
    )?;
    if push.is_none() && routes.routes().any(|r| r.push) {
        tracing::warn!(
            "routes ask for push = true but SIDECAR_VAPID_PRIVATE_KEY_FILE is not set: in-app delivery only"
        );
    }
    let (mut pipeline, push_registrar) = match push {
        Some(p) => (pipeline.with_push(p.tap), Some(p.registrar)),
        None => (pipeline, None),
    };
    // The rooms' history for missed updates (CONTRACT 15): only with Redis,
    // and only when some route carries `position`.
    let history = match &config.redis {
        Some(redis) => {
            let conn =
                ingest::connect(redis, Some(std::time::Duration::from_secs(5))).await.context("SIDECAR_REDIS_URL")?;
            History::new(
                conn,
                routes.clone(),
                &redis.group_prefix,
                &config.instance_id,
                registry.clone(),
                schemas.clone(),
                metrics.clone(),
            )
        }
        None => None,
    };
    let (cuts, cut_queue) = pipeline::cut_channel();
    pipeline = pipeline.with_cuts(cut_queue);
    // Connections that may have missed an event read too late (this
    // instance lagged), closed over the drain window once the hub exists.
    let (lost, lost_rx) = pipeline::lost_channel();
    pipeline = pipeline.with_lost(lost);
    let history = match history {
        Some((history, sink)) => {
            pipeline = pipeline.with_history(sink);
            Some(Arc::new(history))
        }
        None => None,
    };
    if let Some(history) = &history {
        let history = history.clone();
        tasks.spawn(async move { history.run_writer().await });
    }
    // The pipeline runs on the lane; the wake-ups of its large fan-outs
    // run here, on the connections' runtime (fanout/wakes.rs).
    let (wakes, wakes_rx) = tokio::sync::mpsc::unbounded_channel();
    registry.wake_through(wakes);
    tasks.spawn(crate::fanout::run_wakes(wakes_rx, keepalive_stop.clone()));
    let pipeline_task = lane.handle().spawn(pipeline.run(input_rx, pipeline_stop.clone()));

    let presence = match &config.redis {
        Some(redis) => {
            let conn =
                ingest::connect(redis, Some(std::time::Duration::from_secs(5))).await.context("SIDECAR_REDIS_URL")?;
            let hub_names = routes.hubs.iter().map(|h| h.name.clone()).collect();
            Presence::redis(RedisPresence::new(conn, &config.instance_id, config.presence_ttl, hub_names))
        }
        None => Presence::memory(),
    };
    let mut hubs = Hubs::new(
        routes.clone(),
        registry.clone(),
        publisher.clone(),
        metrics.clone(),
        HubSettings::from_config(&config.server, &config.limits, &config.instance_id),
        presence,
    )
    .with_webhook(Arc::new(http::HyperWebhook));
    // The handoff's connection also finds a node for the resume asks' subscriber.
    let mut handoff_conn = None;
    if let Some(redis) = &config.redis {
        let conn =
            ingest::connect(redis, Some(std::time::Duration::from_secs(5))).await.context("SIDECAR_REDIS_URL")?;
        handoff_conn = Some(conn.clone());
        let freshness =
            pipeline::Freshness { max_age: config.delivery.max_event_age, max_skew: config.delivery.max_clock_skew };
        hubs = hubs.with_handoff(hub::Handoff {
            store: Arc::new(RedisSessionStore::new(conn.clone(), &redis.group_prefix, SESSION_HANDOFF_TTL)),
            catch_up: Arc::new(StreamCatchUp::new(
                conn,
                routes.clone(),
                schemas.clone(),
                freshness,
                duplicates,
                CATCH_UP_MAX,
            )),
        });
    }
    if let Some(registrar) = push_registrar {
        hubs = hubs.with_push(registrar);
    }
    if let Some(history) = &history {
        hubs = hubs.with_history(history.reader(cuts.clone()));
    }
    hubs = hubs.with_cuts(cuts);
    let hubs = Arc::new(hubs);
    // A client whose socket dropped may resume on another instance: that
    // one asks for the session, and this one hands it over if it holds it.
    if let (Some(redis), Some(conn)) = (&config.redis, handoff_conn) {
        let (hubs, spawner) = (hubs.clone(), tasks.clone());
        let on_token = move |token: String| {
            let hubs = hubs.clone();
            spawner.spawn(async move { hub::release(&hubs, &token).await });
        };
        let channel = crate::continuity::release_channel(&redis.group_prefix);
        let nodes = ingest::SubscribeNodes::new(redis.clone(), conn);
        tasks.spawn(ingest::listen(nodes, channel, on_token, keepalive_stop.clone()));
    }
    if let Some(redis) = &config.redis {
        share_activity(&hubs, redis, &config.instance_id, &tasks, &keepalive_stop).await?;
    }
    tasks.spawn(hub::close_lost(metrics.clone(), lost_rx, config.shutdown.drain_window));
    tasks.spawn(hub::run_presence(hubs.clone(), keepalive_stop.clone()));
    tasks.spawn(hub::run_keepalive(hubs.clone(), keepalive_stop.clone()));
    tasks.spawn(hub::run_participants(hubs.clone(), keepalive_stop.clone()));

    let introspect_stop = CancellationToken::new();
    let introspect = Arc::new(introspection(&config, &routes, &registry, &metrics, &readiness).await?);
    tasks.spawn({
        let (introspect, stop) = (introspect.clone(), introspect_stop.clone());
        async move { introspect.run(stop).await }
    });
    let admin = Arc::new(AdminState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        schemas: schemas.clone(),
        publisher,
        introspect,
        admin_token: config.server.admin_token.clone(),
    });
    let admin_service = hyper::service::service_fn(move |req| http::admin_handle(admin.clone(), req));
    tasks.spawn(http::serve(
        admin_listener,
        admin_service,
        admin_stop.clone(),
        tasks.clone(),
        "admin",
        header_timeout,
        // Pod-internal (probes, metrics, the HTTP bridge): always plain HTTP.
        None,
    ));

    if let Some(redis) = &config.redis {
        // Connected on the lane, so the connections' own tasks run there too.
        let on_hole =
            on_hole(hubs.clone(), routes.clone(), history.clone(), tasks.clone(), config.shutdown.drain_window);
        let (redis, instance_id, streams) = (redis.clone(), config.instance_id.clone(), config.streams.clone());
        let (schemas, input, metrics, tasks, stop) =
            (schemas.clone(), input.clone(), metrics.clone(), tasks.clone(), ingest_stop.clone());
        let checks_all = checks_all.clone();
        let recent =
            ingest::Recent { window: config.delivery.dedupe_window, max_entries: config.delivery.dedupe_max_entries };
        let start = async move {
            let conn =
                ingest::connect(&redis, Some(std::time::Duration::from_secs(5))).await.context("SIDECAR_REDIS_URL")?;
            let reader = RedisIngest::new(
                redis,
                &instance_id,
                &streams,
                conn,
                schemas,
                input,
                metrics,
                on_hole,
                checks_all,
                recent,
            );
            reader.start(&tasks, stop).await.context("ensuring the consumer groups")
        };
        let handles = lane.handle().spawn(start).await.context("the event lane stopped")??;
        // Fan-out's positions start where the groups start: a session taken
        // over from another instance replays what came before from there.
        for (stream, at) in &handles.positions {
            registry.advance(stream, &at.to_text());
            if let Some(history) = &history {
                history.begin(stream, *at);
            }
        }
        readiness.watch_redis(handles.redis_up);
    }
    // Clients connect once the consumer groups exist: a client let in
    // before would miss the events published until the groups were made
    // at the stream's end (a restart that still gets traffic). Until then
    // the port is not bound, so a client is refused at once and retries.
    let client_listener = TcpListener::bind(config.server.listen).await.context("SIDECAR_LISTEN: cannot bind")?;
    let listening = Listening { client: client_listener.local_addr()?, admin: admin_addr };
    tracing::info!(client = %listening.client, admin = %listening.admin, instance = %config.instance_id,
        bus = if config.redis.is_some() { "redis" } else { "in-process" }, tls = tls.is_some(), "listening");
    let client_ip_header = config.server.client_ip_header.clone();
    let client = Arc::new(ClientState { hubs: hubs.clone(), tasks: tasks.clone(), auth, client_ip_header });
    let cors = Cors { origins: config.server.cors_origins.clone() };
    let client_service = http::client_service(client, cors);
    tasks.spawn(http::serve(
        client_listener,
        client_service,
        client_stop.clone(),
        tasks.clone(),
        "client",
        header_timeout,
        tls,
    ));

    drop(input);
    readiness.set(Phase::Running);
    tracing::info!("ready");
    ready(listening);

    shutdown.await;
    let deadline = tokio::time::Instant::now() + config.shutdown.timeout;
    readiness.set(Phase::Draining);
    client_stop.cancel();
    // Connections not yet told to go are still owed every event: ingest and
    // the pipeline run until the last one has been closed, and the last
    // takeover under way has its session (handed on, or refused).
    hub::drain(&hubs, config.shutdown.drain_window).await;
    wait_for_connections(&hubs, deadline).await;
    ingest_stop.cancel();
    pipeline_stop.cancel();
    if tokio::time::timeout_at(deadline, pipeline_task).await.is_err() {
        tracing::warn!("the pipeline did not drain before the deadline");
    }
    keepalive_stop.cancel();
    // Answered questions (as draining) until here; now leaves the set.
    introspect_stop.cancel();
    admin_stop.cancel();
    tasks.close();
    if tokio::time::timeout_at(deadline, tasks.wait()).await.is_err() {
        tracing::warn!(
            tasks = tasks.len(),
            connections = registry.len(),
            "shutdown deadline passed with tasks still running"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// What waiting for Redis at start needs: the admin port keeps answering
/// meanwhile.
struct FirstRedis<'a> {
    admin: &'a TcpListener,
    readiness: &'a Arc<Readiness>,
    metrics: &'a Arc<Metrics>,
    header_timeout: Duration,
}

/// Longest pause between two attempts to reach Redis at start.
const FIRST_REDIS_RETRY_MAX: Duration = Duration::from_secs(5);

impl FirstRedis<'_> {
    /// The first connection to Redis, waited for while Redis does not
    /// answer (a pod starting beside it, an outage): meanwhile the admin
    /// port answers `/healthz` 200 and `/readyz` 503 (CONTRACT section 8),
    /// so an orchestrator keeps the pod unready instead of restarting it in
    /// a loop. A refusal waiting cannot mend (a wrong password) stops the
    /// start. `None`: told to shut down first.
    async fn connect(
        self,
        redis: &crate::config::RedisConfig,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> anyhow::Result<Option<ingest::RedisConn>> {
        let fatal = |e: redis::RedisError| {
            let hint = if ingest::untrusted_certificate(&e) {
                " (a Redis with a private certificate authority: set SIDECAR_REDIS_CA_FILE to its certificate)"
            } else if e.code() == Some("NOAUTH") {
                " (Redis wants a password: redis://[user]:password@host:port)"
            } else {
                ""
            };
            anyhow::Error::new(InvalidSetting(format!(
                "SIDECAR_REDIS_URL: cannot connect to {}: {e}{hint}",
                redis.urls.iter().map(|u| crate::config::redact_url(u)).collect::<Vec<_>>().join(",")
            )))
        };
        // The redis crate would reconnect after a refused password (it may
        // be a failover's stale node) or a certificate it cannot trust, but
        // at start nothing mends either.
        let mendable = |e: &redis::RedisError| {
            ingest::is_unavailable(e)
                && e.kind() != redis::ErrorKind::AuthenticationFailed
                && !ingest::untrusted_certificate(e)
        };
        let error = match connect_and_ping(redis).await {
            Ok(conn) => return Ok(Some(conn)),
            Err(e) if mendable(&e) => e,
            Err(e) => return Err(fatal(e)),
        };
        tracing::warn!(error = %error, "Redis does not answer: waiting for it (/readyz answers 503 meanwhile)");
        self.readiness.waiting_for_redis(true);
        let stop = CancellationToken::new();
        let interim = TaskTracker::new();
        // A second handle on the admin socket, served until Redis answers.
        let listener = std::net::TcpListener::from(std::os::fd::AsFd::as_fd(self.admin).try_clone_to_owned()?);
        listener.set_nonblocking(true)?;
        let (readiness, metrics) = (self.readiness.clone(), self.metrics.clone());
        let service =
            hyper::service::service_fn(move |req| http::admin_handle_starting(readiness.clone(), metrics.clone(), req));
        let listener = TcpListener::from_std(listener)?;
        interim.spawn(http::serve(
            listener,
            service,
            stop.clone(),
            interim.clone(),
            "admin",
            self.header_timeout,
            None,
        ));
        let mut pause = Duration::from_millis(500);
        let outcome = loop {
            tokio::select! {
                () = shutdown.as_mut() => break Ok(None),
                () = tokio::time::sleep(pause) => {}
            }
            match connect_and_ping(redis).await {
                Ok(conn) => {
                    tracing::info!("Redis answers: starting");
                    break Ok(Some(conn));
                }
                Err(e) if mendable(&e) => {
                    tracing::warn!(error = %e, "Redis still does not answer: waiting");
                    pause = (pause * 2).min(FIRST_REDIS_RETRY_MAX);
                }
                Err(e) => break Err(fatal(e)),
            }
        };
        stop.cancel();
        interim.close();
        if tokio::time::timeout(Duration::from_secs(1), interim.wait()).await.is_err() {
            tracing::debug!("an admin request of the wait for Redis was still open");
        }
        self.readiness.waiting_for_redis(false);
        outcome
    }
}

/// Connects to Redis and has it answer a PING: a Redis that wants a
/// password the URL does not give accepts the connection and then answers
/// every command NOAUTH, which no wait mends (a setting does).
async fn connect_and_ping(redis: &crate::config::RedisConfig) -> redis::RedisResult<ingest::RedisConn> {
    let mut conn = ingest::connect(redis, Some(Duration::from_secs(5))).await?;
    redis::cmd("PING").query_async::<()>(&mut conn).await?;
    Ok(conn)
}

/// The introspection API's view of this instance, and the Redis bus that
/// lets it ask (and answer) the others.
async fn introspection(
    config: &Config,
    routes: &RouteTable,
    registry: &Arc<Registry>,
    metrics: &Arc<Metrics>,
    readiness: &Arc<Readiness>,
) -> anyhow::Result<Introspect> {
    let hubs = routes.hubs.iter().map(|h| (h.name.clone(), h.path.clone())).collect();
    let streams = if config.redis.is_some() { config.streams.clone() } else { Vec::new() };
    let readiness = readiness.clone();
    let state: introspect::StateFn = Arc::new(move || match readiness.phase() {
        Phase::Starting => InstanceState::Starting,
        Phase::Draining => InstanceState::Draining,
        Phase::Running if readiness.check().is_ok() => InstanceState::Ready,
        Phase::Running => InstanceState::Unready,
    });
    let local =
        introspect::Local::new(config.instance_id.clone(), hubs, streams, registry.clone(), metrics.clone(), state);
    let bus = match &config.redis {
        Some(redis) => {
            let conn =
                ingest::connect(redis, Some(std::time::Duration::from_secs(5))).await.context("SIDECAR_REDIS_URL")?;
            Some(introspect::Bus::new(conn, redis, &config.instance_id))
        }
        None => None,
    };
    Ok(Introspect::new(local, bus))
}

/// Waits (until `deadline`) for the connections told to go to finish
/// writing their Close, and for takeovers under way to end (one restored
/// during the drain is handed on, so it is among those connections).
async fn wait_for_connections(hubs: &Hubs, deadline: tokio::time::Instant) {
    while (!hubs.registry.is_empty() || hubs.takeovers.any()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// What happens on a hole in a stream: the connections of the hubs that
/// stream feeds are closed over the drain window, by a task `tasks` owns.
fn on_hole(
    hubs: Arc<Hubs>,
    routes: Arc<RouteTable>,
    history: Option<Arc<History>>,
    tasks: TaskTracker,
    window: std::time::Duration,
) -> ingest::OnHole {
    Arc::new(move |hole: ingest::Hole| {
        if let Some(history) = &history {
            history.lost(&hole.stream);
        }
        let mut fed: Vec<_> = routes.routes_from_stream(&hole.stream).map(|r| r.hub).collect();
        fed.sort_unstable();
        fed.dedup();
        let hubs = hubs.clone();
        tasks.spawn(async move { hub::close_for_hole(&hubs, &fed, hole.cause.cause(), window).await });
    })
}

#[cfg(test)]
mod tests;

/// Away is the user's on every instance (CONTRACT section 15): users'
/// invocations here are shared with the other instances, and theirs applied
/// here, over one pub/sub channel; nothing when no hub tracks away.
async fn share_activity(
    hubs: &Arc<hub::Hubs>,
    redis: &crate::config::RedisConfig,
    instance: &str,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    if !hubs.routes.hubs.iter().any(|h| hubs.activity.tracks_away(h.id)) {
        return Ok(());
    }
    let Some(queue) = hubs.activity.share_through() else { return Ok(()) };
    let conn = ingest::connect(redis, Some(std::time::Duration::from_secs(5))).await.context("SIDECAR_REDIS_URL")?;
    let channel = crate::presence::activity_channel(&redis.group_prefix);
    let (out, own) = (hubs.clone(), instance.to_string());
    let to_message = move |a: hub::ActiveUser| {
        let hub = out.routes.hubs.get(a.hub)?.path.clone();
        Some(crate::presence::SharedActivity { instance: own.clone(), hub, user: a.user.to_string() })
    };
    let nodes = ingest::SubscribeNodes::new(redis.clone(), conn.clone());
    tasks.spawn(crate::presence::publish_activity(queue, conn, channel.clone(), to_message, stop.clone()));
    let (hubs, own) = (hubs.clone(), instance.to_string());
    let on_message = move |text: String| {
        let Some(a) = crate::presence::SharedActivity::parse(&text) else { return };
        if a.instance == own {
            return;
        }
        if let Some(hub) = hubs.routes.hubs.iter().find(|h| h.path == a.hub) {
            hubs.activity.remote(hub.id, &a.user, hubs.now_ms(), &hubs.registry);
        }
    };
    tasks.spawn(ingest::listen(nodes, channel, on_message, stop.clone()));
    Ok(())
}
