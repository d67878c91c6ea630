//! `Config`: every setting of the sidecar in one typed struct, built from
//! per-module parts, loaded and validated before any port is bound.
//!
//! Each setting has one name: `SIDECAR_<NAME>` in the environment, `<name>`
//! in the TOML file named by `SIDECAR_CONFIG`. The environment wins. The
//! README's settings table lists them all with the defaults written here.

mod admin_token;
mod arguments;
mod hub_options;
mod log_filter;
mod push;
mod routes;
mod source;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use admin_token::{AdminToken, MIN_ADMIN_TOKEN_CHARS};
pub use arguments::{
    ArgumentError, ArgumentSource, Arguments, FieldPath, MissingField, PARTICIPANT_COUNT_PAYLOAD_FIELDS,
    PRESENCE_PAYLOAD_FIELDS, ROSTER_PAYLOAD_FIELDS, TYPING_PAYLOAD_FIELDS,
};
pub use hub_options::{HubOptions, DEFAULT_HISTORY};
pub use push::{PushConfig, VapidConfig};
pub use routes::{
    Action, Authorize, Delivery, EventRoute, HubDef, HubId, MethodDef, RouteError, RouteTable, PARTICIPANT_COUNT_EVENT,
};
pub use source::RawSettings;
use validate::Reader;

/// `*`, or `scheme://host[:port]` with no path: what a browser sends as
/// `Origin` (anything else would never match, silently).
fn valid_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', ','])
        && hyper::header::HeaderValue::from_str(origin).is_ok()
}

/// `url` as it may be shown (logs, errors): a password in it becomes `***`
/// (`redis://user:***@host:6379`); the user name and the rest stay, so the
/// operator still sees which server and user were meant.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// The default streams (CONTRACT section 5).
pub const DEFAULT_STREAMS: [&str; 4] = ["events:chat", "events:ticket", "events:notification", "events:remote"];

/// All settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// This instance's name: consumer and group names, logs. Default: the host name.
    pub instance_id: String,
    /// The routing file. Default `protocol/routes.toml`.
    pub routes_path: PathBuf,
    /// The directory of JSON Schemas. Default `protocol/schemas`.
    pub schemas_dir: PathBuf,
    /// Client and admin ports, limits on what a connection may do.
    pub server: ServerConfig,
    /// Redis Streams; `None` runs the in-process bus.
    pub redis: Option<RedisConfig>,
    /// Streams read, and published to; used by both buses for labels.
    /// Unset, every stream the routing file names (see [`Config::fit_streams`]).
    pub streams: Vec<String>,
    /// Whether `SIDECAR_STREAMS` was given (else `streams` follows the routes).
    pub streams_set: bool,
    /// Delivery rules of CONTRACT section 6.
    pub delivery: DeliveryConfig,
    /// Shutdown timing.
    pub shutdown: ShutdownConfig,
    /// Client authentication.
    pub auth: AuthConfig,
    /// Rate limits and connection limits (CONTRACT section 7).
    pub limits: LimitsConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// A crashed instance's users leave presence within this
    /// (`presence_ttl_seconds`). Default 30.
    pub presence_ttl: Duration,
    /// Browser push (FR-009): off unless a VAPID key is set.
    pub push: PushConfig,
    /// Unknown `SIDECAR_*` variables, to log once telemetry is up.
    pub warnings: Vec<String>,
}

/// The two listeners and per-connection limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Client port (`listen`). Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Admin port (`admin_listen`). Default `0.0.0.0:9090`.
    pub admin_listen: SocketAddr,
    /// Origins allowed by CORS on the client port (`cors_origins`, comma-separated;
    /// `*` for any). Default: none, so browsers only connect from the same origin.
    pub cors_origins: Vec<String>,
    /// A header in which a trusted proxy (the ingress) appends the client's
    /// address, e.g. `x-forwarded-for` (`client_ip_header`); the last address in
    /// it is used for per-address limits. Default: none, the TCP peer counts.
    pub client_ip_header: Option<String>,
    /// Largest hub message a client may send (`max_message_bytes`); a larger
    /// one closes the connection, as ASP.NET Core's
    /// `MaximumReceiveMessageSize` does. Default 32768.
    pub max_message_bytes: usize,
    /// Largest transport message a client may send: one WebSocket message,
    /// or one POST body on Server-Sent Events and Long Polling
    /// (`max_transport_message_bytes`). It may carry many hub messages,
    /// each held to `max_message_bytes` (the .NET and Java clients send all
    /// they have buffered at once; the .NET client's buffer is 1 MB by
    /// default); this bound only keeps the memory one read can take
    /// bounded. Default 2097152, or `max_message_bytes` when that is
    /// larger; never below it.
    pub max_transport_message_bytes: usize,
    /// Time a client has to complete the handshake (`handshake_timeout_seconds`). Default 15.
    pub handshake_timeout: Duration,
    /// Interval of server pings (`keepalive_seconds`). Default 15.
    pub keepalive: Duration,
    /// Silence after which a client is dropped (`client_timeout_seconds`). Default 30.
    pub client_timeout: Duration,
    /// Bytes one WebSocket read takes from the socket at most
    /// (`ws_read_buffer_bytes`). The buffer is made when the socket is
    /// readable and freed once its bytes are parsed, so idle connections
    /// hold none. Default 4096.
    pub ws_read_buffer_bytes: usize,
    /// Frames a connection's outbound queue holds (`outbox_max_frames`). Default 1024.
    pub outbox_max_frames: usize,
    /// Bytes a connection's outbound queue holds (`outbox_max_bytes`). Default 1048576.
    pub outbox_max_bytes: usize,
    /// Whether an event's sends to a room's sockets go to the kernel in one
    /// io_uring submission where it allows one (`io_uring`); off, or where
    /// io_uring is refused (the default seccomp profiles of container
    /// runtimes), each is a `send()` of its own. Default true.
    pub io_uring: bool,
    /// Negotiated connections not yet connected are forgotten after this
    /// (`negotiate_timeout_seconds`). Default 30.
    pub negotiate_timeout: Duration,
    /// A long poll with nothing to send is answered (empty) after this
    /// (`long_poll_timeout_seconds`); below the client timeout, since Long
    /// Polling clients send no pings. Default 20, or two thirds of a
    /// shorter client timeout.
    pub long_poll_timeout: Duration,
    /// Whether clients may negotiate stateful reconnect (`stateful_reconnect`). Default true.
    pub stateful_reconnect: bool,
    /// Unacknowledged bytes kept per stateful connection; past it a resume is
    /// refused and the client reconnects afresh (`stateful_reconnect_buffer_bytes`). Default 1048576.
    pub stateful_reconnect_buffer_bytes: usize,
    /// TLS on the client port (`tls_cert_file` and `tls_key_file`, both or
    /// neither). Default: none, plain HTTP. The admin port is always plain.
    pub tls: Option<TlsConfig>,
    /// Bearer token every `/admin/` request on the admin port must present
    /// (`admin_token`). Default: none, `/admin/` is open to whoever reaches
    /// the admin port.
    pub admin_token: Option<AdminToken>,
}

/// The certificate the client port serves: PEM files, re-read when they
/// change so a renewal (cert-manager) needs no restart.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Certificate chain, leaf first (`tls_cert_file`).
    pub cert_file: PathBuf,
    /// Private key of the leaf: PKCS#8, PKCS#1 or SEC1 (`tls_key_file`).
    pub key_file: PathBuf,
}

/// Redis Streams ingest and publishing.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// One URL, or several comma-separated cluster node URLs (`redis_url`).
    pub urls: Vec<String>,
    /// Force cluster mode with a single seed URL (`redis_cluster`). Default false.
    pub cluster: bool,
    /// Consumer group prefix (`group_prefix`). Default `signalr-sidecar`.
    pub group_prefix: String,
    /// Entries per XREADGROUP (`read_count`). Default 100.
    pub read_count: usize,
    /// XREADGROUP BLOCK time (`read_block_ms`). Default 1000.
    pub read_block: Duration,
    /// After a read that returned entries (fewer than `read_count`), the
    /// least time from its sending to the next read's (`read_window_ms`), so
    /// entries arriving meanwhile come in one reply: fewer wake-ups and reads
    /// per event, each event delayed by up to the window. Default 0: at once.
    pub read_window: Duration,
    /// How often pending entries are claimed again (`claim_interval_seconds`). Default 10.
    pub claim_interval: Duration,
    /// Pending entries idle this long are claimed (`claim_min_idle_seconds`). Default 30.
    pub claim_min_idle: Duration,
    /// Cap of each `<stream>:dead` stream (`dead_letter_maxlen`). Default 10000.
    pub dead_letter_maxlen: usize,
    /// `MAXLEN ~` used when the sidecar itself appends (`stream_maxlen`). Default 10000.
    pub stream_maxlen: usize,
    /// Another instance's group is removed once all its consumers have been
    /// idle this long (`orphan_group_idle_seconds`). Default 3600.
    pub orphan_group_idle: Duration,
    /// The certificate authority (PEM) a `rediss://` Redis's certificate is
    /// checked against (`redis_ca_file`), for a Redis with a private CA;
    /// unset, the public web roots. Read at start.
    pub ca_pem: Option<std::sync::Arc<[u8]>>,
    /// Events `POST /internal/events` holds while Redis is unreachable, to
    /// append them once it answers (`spool_max_events`); past it the POST
    /// gets 503. 0 answers 503 at once. Default 10000 (memory: this many
    /// POSTed bodies, about 10 MiB for 1 KiB events).
    pub spool_max_events: usize,
}

impl RedisConfig {
    /// This instance's consumer group: `<group_prefix>:<instance_id>`.
    pub fn group_name(&self, instance_id: &str) -> String {
        format!("{}:{}", self.group_prefix, instance_id)
    }

    /// The sorted set of live instances (member: instance id, score: its
    /// last heartbeat by Redis's clock), beaten by introspection every
    /// second and pruned of instances silent for a few seconds; the orphan
    /// sweep keeps the groups of the instances it names.
    pub fn live_instances_key(&self) -> String {
        format!("{}:introspect:instances", self.group_prefix)
    }
}

/// Delivery rules.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Capacity of the queue from ingest to the pipeline (`ingest_queue_capacity`). Default 4096.
    pub ingest_queue_capacity: usize,
    /// Events older than this by `timestamp` are dropped (`max_event_age_seconds`). Default 300.
    pub max_event_age: Duration,
    /// A `timestamp` further in the future than this is treated as now
    /// (`max_clock_skew_seconds`). Default 5.
    pub max_clock_skew: Duration,
    /// An `event_id` seen within this window is delivered once (`dedupe_window_seconds`). Default 300.
    pub dedupe_window: Duration,
    /// Event ids the idempotency window is sized for: its table grows to
    /// twice this many 16-byte slots at most (`dedupe_max_entries`).
    /// Default 500000, 16 MiB at the most.
    pub dedupe_max_entries: usize,
    /// Groups one connection may join (`max_groups_per_connection`). Default 100.
    pub max_groups_per_connection: usize,
    /// Window of coalesced events per (room, user) (`coalesce_window_ms`). Default 100.
    pub coalesce_window: Duration,
    /// A typing indicator is cleared after this long without a typing event
    /// from that user in that room (`typing_timeout_seconds`). Default 5.
    pub typing_timeout: Duration,
    /// Window of a `delivery = "batch"` route per room: the first event goes
    /// at once, the next ones within it as one list (`batch_window_ms`). Default 500.
    pub batch_window: Duration,
    /// Least time between two typing rosters of one room
    /// (`roster_window_ms`). Default 500.
    pub roster_window: Duration,
}

/// `SIDECAR_AUTH`: how clients prove who they are.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// No authentication: connections have no user (`none`, the default).
    None,
    /// A JWT on negotiate and connect (`jwt`).
    Jwt(JwtConfig),
}

/// The `SIDECAR_JWT_*` settings.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// HS256 secret, plain text (`jwt_secret`).
    pub secret: Option<String>,
    /// PEM public key, RSA or EC P-256 (`jwt_public_key_file`).
    pub public_key_file: Option<PathBuf>,
    /// JWKS file, re-read when it changes (`jwks_file`).
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`, checked only when set (`jwt_issuer`).
    pub issuer: Option<String>,
    /// Required `aud`, checked only when set (`jwt_audience`).
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (`jwt_leeway_seconds`). Default 30.
    pub leeway_seconds: u64,
    /// Claim holding the user id (`jwt_user_claim`). Default `sub`.
    pub user_claim: String,
}

/// Limits that keep one client from hurting the others.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Client invocations per user per minute; per connection without auth
    /// (`rate_limit_per_minute`). Default 100.
    pub invocations_per_minute: u32,
    /// Invocations allowed at once (`rate_limit_burst`): a page that joins many rooms on load must not be limited. Default 100.
    pub invocation_burst: u32,
    /// New connections per source address per second (`connection_rate_per_ip`). Default 20.
    pub connections_per_ip_per_second: u32,
    /// New connections from one address at once above that rate (`connection_burst_per_ip`). Default 100.
    pub connection_burst_per_ip: u32,
    /// Open SignalR connections on this instance (`max_connections`). Default 200000.
    pub max_connections: usize,
    /// Open connections of one user (`max_connections_per_user`). Default 100.
    pub max_connections_per_user: usize,
    /// Time a client has to send its HTTP request headers (`http_header_timeout_seconds`). Default 10.
    pub http_header_timeout: Duration,
}

/// Shutdown timing (CONTRACT section 8).
#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    /// Close messages are spread over this window (`drain_window_seconds`). Default 10.
    pub drain_window: Duration,
    /// Hard deadline for the whole shutdown (`shutdown_timeout_seconds`). Default 25.
    pub timeout: Duration,
}

/// Logs and traces.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `text` or `json` (`log_format`). Default `text`.
    pub log_json: bool,
    /// An EnvFilter directive (`log`, or `RUST_LOG`). Default `info`.
    pub log_filter: String,
}

impl Config {
    /// Fits the streams read to the routing file: unset, `SIDECAR_STREAMS`
    /// becomes every stream the routes name (the default file's are the
    /// four of CONTRACT section 5; the discussion file's are its own), so no
    /// route reads a stream nobody reads. Set, a route's stream it leaves
    /// out gets a warning: its events would never be delivered here.
    pub fn fit_streams(&mut self, routes: &RouteTable) {
        let mut named: Vec<String> = Vec::new();
        for route in routes.routes() {
            if !named.contains(&route.stream) {
                named.push(route.stream.clone());
            }
        }
        // The four of CONTRACT section 5 in their order, then the others.
        named.sort_by_key(|s| (DEFAULT_STREAMS.iter().position(|d| d == s).unwrap_or(usize::MAX), s.clone()));
        if !self.streams_set {
            if !named.is_empty() {
                self.streams = named;
            }
            return;
        }
        if self.redis.is_none() {
            return; // the in-process bus reads no stream
        }
        for stream in named.iter().filter(|s| !self.streams.contains(s)) {
            let events: Vec<&str> =
                routes.routes().filter(|r| &r.stream == stream).map(|r| r.event_type.as_str()).collect();
            self.warnings.push(format!(
                "SIDECAR_STREAMS does not name {stream}, which SIDECAR_ROUTES routes {} from: those events are never \
                 delivered by this instance (add the stream, or leave SIDECAR_STREAMS unset to read every stream the \
                 routes name)",
                events.join(", ")
            ));
        }
    }

    /// Loads settings from the process: `SIDECAR_CONFIG` (a TOML file) if
    /// set, then `SIDECAR_*` variables. Returns every error at once.
    pub fn from_env() -> Result<Config, Vec<String>> {
        let mut raw = match std::env::var("SIDECAR_CONFIG") {
            Ok(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| vec![format!("SIDECAR_CONFIG: cannot read {path}: {e}")])?;
                RawSettings::from_toml(&text).map_err(|e| vec![format!("SIDECAR_CONFIG: {path}: {e}")])?
            }
            Err(_) => RawSettings::default(),
        };
        raw.overlay_env(std::env::vars());
        Config::from_raw(&raw)
    }

    /// Builds and validates a `Config` from settings text.
    pub fn from_raw(raw: &RawSettings) -> Result<Config, Vec<String>> {
        let mut r = Reader::new(raw);
        let mut server = ServerConfig {
            listen: r.get("listen", SocketAddr::from(([0, 0, 0, 0], 8080))),
            admin_listen: r.get("admin_listen", SocketAddr::from(([0, 0, 0, 0], 9090))),
            cors_origins: r.list("cors_origins", &[]),
            client_ip_header: r.opt::<String>("client_ip_header").map(|h| h.to_ascii_lowercase()),
            max_message_bytes: r.count("max_message_bytes", 32 * 1024, 256, 16 << 20),
            max_transport_message_bytes: 0,
            handshake_timeout: r.seconds("handshake_timeout_seconds", 15, 1),
            keepalive: r.seconds("keepalive_seconds", 15, 1),
            client_timeout: r.seconds("client_timeout_seconds", 30, 2),
            ws_read_buffer_bytes: r.count("ws_read_buffer_bytes", 4096, 128, 1 << 20),
            outbox_max_frames: r.count("outbox_max_frames", 1024, 4, 1 << 20),
            outbox_max_bytes: r.count("outbox_max_bytes", 1 << 20, 4096, 1 << 30),
            io_uring: r.get("io_uring", true),
            negotiate_timeout: r.seconds("negotiate_timeout_seconds", 30, 1),
            long_poll_timeout: Duration::ZERO,
            stateful_reconnect: r.get("stateful_reconnect", true),
            stateful_reconnect_buffer_bytes: r.count("stateful_reconnect_buffer_bytes", 1 << 20, 1024, 1 << 30),
            tls: None,
            admin_token: None,
        };
        for origin in &server.cors_origins {
            if !valid_origin(origin) {
                r.error(
                    "cors_origins",
                    format!("'{origin}' must be * or an origin like https://app.example.com[:port]"),
                );
            }
        }
        if let Some(h) = &server.client_ip_header {
            if hyper::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                r.error("client_ip_header", format!("'{h}' is not an HTTP header name"));
            }
        }
        server.admin_token = r.opt::<String>("admin_token").and_then(|t| match AdminToken::parse(&t) {
            Ok(t) => Some(t),
            Err(why) => {
                r.error("admin_token", why);
                None
            }
        });
        let tls_cert_file: Option<PathBuf> = r.opt("tls_cert_file");
        let tls_key_file: Option<PathBuf> = r.opt("tls_key_file");
        server.tls = match (tls_cert_file, tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(TlsConfig { cert_file, key_file }),
            (None, None) => None,
            (Some(_), None) => {
                r.error("tls_key_file", "must be set with SIDECAR_TLS_CERT_FILE (the certificate's private key)");
                None
            }
            (None, Some(_)) => {
                r.error("tls_cert_file", "must be set with SIDECAR_TLS_KEY_FILE (the key's certificate)");
                None
            }
        };
        // Default: 2 MiB (a .NET client's full 1 MB send buffer and the
        // message that filled it, with room to spare), or one hub message
        // when the limit on those is larger.
        let one_message = server.max_message_bytes;
        server.max_transport_message_bytes =
            r.count("max_transport_message_bytes", (2 << 20).max(one_message), 256, 1 << 30);
        if server.max_transport_message_bytes < one_message {
            r.error(
                "max_transport_message_bytes",
                "must be at least SIDECAR_MAX_MESSAGE_BYTES: a transport message carries whole hub messages",
            );
        }
        // Default: 20 s, or two thirds of a shorter client timeout.
        let derived = (server.client_timeout.as_secs() * 2 / 3).clamp(1, 20);
        server.long_poll_timeout = r.seconds("long_poll_timeout_seconds", derived, 1);
        if server.long_poll_timeout >= server.client_timeout {
            r.error("long_poll_timeout_seconds", "must be shorter than SIDECAR_CLIENT_TIMEOUT_SECONDS");
        }
        if server.listen == server.admin_listen {
            r.error(
                "admin_listen",
                "must differ from SIDECAR_LISTEN: the admin port is never served on the client port",
            );
        }
        if server.client_timeout <= server.keepalive {
            r.error("client_timeout_seconds", "must be longer than SIDECAR_KEEPALIVE_SECONDS");
        }
        let redis_urls = r.list("redis_url", &[]);
        let redis_cluster: bool = r.get("redis_cluster", false);
        let redis_ca_file: Option<PathBuf> = r.opt("redis_ca_file");
        let ca_pem = match redis_ca_file.map(|p| (std::fs::read(&p), p)) {
            None => None,
            Some((Ok(pem), _)) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem.into()),
            Some((Ok(_), p)) => {
                r.error("redis_ca_file", format!("'{}' holds no PEM certificate", p.display()));
                None
            }
            Some((Err(e), p)) => {
                r.error("redis_ca_file", format!("cannot read '{}': {e}", p.display()));
                None
            }
        };
        let redis = RedisConfig {
            urls: redis_urls,
            cluster: redis_cluster,
            group_prefix: r.get("group_prefix", "signalr-sidecar".to_string()),
            read_count: r.count("read_count", 100, 1, 10_000),
            read_block: r.millis("read_block_ms", 1000, 1),
            read_window: Duration::from_millis(r.count("read_window_ms", 0, 0, 1000) as u64),
            claim_interval: r.seconds("claim_interval_seconds", 10, 1),
            claim_min_idle: r.seconds("claim_min_idle_seconds", 30, 1),
            dead_letter_maxlen: r.count("dead_letter_maxlen", 10_000, 1, usize::MAX),
            stream_maxlen: r.count("stream_maxlen", 10_000, 1, usize::MAX),
            orphan_group_idle: r.seconds("orphan_group_idle_seconds", 3600, 1),
            spool_max_events: r.count("spool_max_events", 10_000, 0, 1_000_000),
            ca_pem,
        };
        for url in &redis.urls {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                r.error("redis_url", format!("'{}' must start with redis:// or rediss://", redact_url(url)));
            }
        }
        let streams_set = raw.get("streams").is_some();
        let streams = r.list("streams", &DEFAULT_STREAMS);
        if streams.is_empty() {
            r.error("streams", "names no stream");
        }
        let auth_mode: String = r.get("auth", "none".to_string());
        let jwt = JwtConfig {
            secret: r.opt("jwt_secret"),
            public_key_file: r.opt("jwt_public_key_file"),
            jwks_file: r.opt("jwks_file"),
            issuer: r.opt("jwt_issuer"),
            audience: r.opt("jwt_audience"),
            leeway_seconds: r.get("jwt_leeway_seconds", 30),
            user_claim: r.get("jwt_user_claim", "sub".to_string()),
        };
        // Token keys given while no token is checked: said at start, since
        // the operator most likely meant `jwt` and every client is let in.
        let unused_keys: Vec<&str> = [
            ("SIDECAR_JWT_SECRET", jwt.secret.is_some()),
            ("SIDECAR_JWT_PUBLIC_KEY_FILE", jwt.public_key_file.is_some()),
            ("SIDECAR_JWKS_FILE", jwt.jwks_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect();
        let auth = match auth_mode.as_str() {
            "none" => AuthConfig::None,
            "jwt" => {
                if jwt.secret.is_none() && jwt.public_key_file.is_none() && jwt.jwks_file.is_none() {
                    r.error("auth", "jwt needs SIDECAR_JWT_SECRET, SIDECAR_JWT_PUBLIC_KEY_FILE or SIDECAR_JWKS_FILE");
                }
                AuthConfig::Jwt(jwt)
            }
            other => {
                r.error("auth", format!("'{other}' must be none or jwt"));
                AuthConfig::None
            }
        };
        let limits = LimitsConfig {
            // A rate of 0 never refills: every client locked out for good.
            invocations_per_minute: r.count("rate_limit_per_minute", 100, 1, u32::MAX as usize) as u32,
            invocation_burst: r.count("rate_limit_burst", 100, 1, u32::MAX as usize) as u32,
            connections_per_ip_per_second: r.count("connection_rate_per_ip", 20, 1, u32::MAX as usize) as u32,
            connection_burst_per_ip: r.count("connection_burst_per_ip", 100, 1, u32::MAX as usize) as u32,
            max_connections: r.count("max_connections", 200_000, 1, 10_000_000),
            max_connections_per_user: r.count("max_connections_per_user", 100, 1, 1_000_000),
            http_header_timeout: r.seconds("http_header_timeout_seconds", 10, 1),
        };
        let delivery = DeliveryConfig {
            ingest_queue_capacity: r.count("ingest_queue_capacity", 4096, 1, 1 << 20),
            max_event_age: r.seconds("max_event_age_seconds", 300, 1),
            max_clock_skew: r.seconds("max_clock_skew_seconds", 5, 0),
            dedupe_window: r.seconds("dedupe_window_seconds", 300, 1),
            dedupe_max_entries: r.count("dedupe_max_entries", 500_000, 1, 100_000_000),
            max_groups_per_connection: r.count("max_groups_per_connection", 100, 1, 1_000_000),
            coalesce_window: r.millis("coalesce_window_ms", 100, 1),
            typing_timeout: r.seconds("typing_timeout_seconds", 5, 1),
            batch_window: r.millis("batch_window_ms", 500, 1),
            roster_window: r.millis("roster_window_ms", 500, 1),
        };
        let shutdown = ShutdownConfig {
            drain_window: r.seconds("drain_window_seconds", 10, 0),
            timeout: r.seconds("shutdown_timeout_seconds", 25, 1),
        };
        if shutdown.timeout <= shutdown.drain_window {
            r.error("shutdown_timeout_seconds", "must be longer than SIDECAR_DRAIN_WINDOW_SECONDS");
        }
        let log_format: String = r.get("log_format", "text".to_string());
        if log_format != "text" && log_format != "json" {
            r.error("log_format", format!("'{log_format}' must be text or json"));
        }
        let telemetry = TelemetryConfig {
            log_json: log_format == "json",
            log_filter: r.opt("log").or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".to_string()),
        };
        if let Some(why) = log_filter::misspelt_level(&telemetry.log_filter) {
            r.error("log", why);
        }
        let instance_id = r.opt("instance_id").unwrap_or_else(host_name);
        if instance_id.is_empty() || instance_id.contains(|c: char| c.is_whitespace() || c == ':') {
            // ':' separates the group prefix from the instance id in group
            // names; one inside an id would make another prefix's groups
            // look like this deployment's.
            r.error("instance_id", format!("'{instance_id}' must be non-empty without spaces or ':'"));
        }
        let config = Config {
            instance_id,
            routes_path: r.get("routes", PathBuf::from("protocol/routes.toml")),
            schemas_dir: r.get("schemas_dir", PathBuf::from("protocol/schemas")),
            redis: (!redis.urls.is_empty()).then_some(redis),
            streams,
            streams_set,
            server,
            delivery,
            shutdown,
            telemetry,
            auth,
            limits,
            presence_ttl: r.seconds("presence_ttl_seconds", 30, 1),
            push: push::read(&mut r),
            warnings: Vec::new(),
        };
        let (errors, mut warnings) = r.finish();
        if auth_mode == "none" && !unused_keys.is_empty() {
            warnings.push(format!(
                "SIDECAR_AUTH: none, so no token is checked and clients connect without one: {} unused (set \
                 SIDECAR_AUTH=jwt to require a token)",
                unused_keys.join(", ")
            ));
        }
        if errors.is_empty() {
            Ok(Config { warnings, ..config })
        } else {
            Err(errors)
        }
    }
}

/// The host name, as Kubernetes sets it to the pod name.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "signalr-sidecar".to_string())
}

#[cfg(test)]
mod tests;
