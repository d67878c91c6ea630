//! One Redis connection type for a single server and for a cluster, so
//! every caller works the same in both modes (CONTRACT section 11).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, TlsCertificates, Value,
};

use crate::config::RedisConfig;

/// A reconnecting connection to a Redis server or cluster. Clones share
/// the underlying multiplexed connection.
#[derive(Clone)]
pub(crate) enum RedisConn {
    /// One server (`redis://` or `rediss://`).
    Single(ConnectionManager),
    /// A Redis Cluster: commands are routed by key slot, MOVED/ASK followed.
    Cluster(ClusterConnection),
}

/// A client for one server at `info`: a `rediss://` one is checked
/// against `SIDECAR_REDIS_CA_FILE` when set (a Redis with a private CA),
/// else against the public web roots.
pub(super) fn client(config: &RedisConfig, info: ConnectionInfo) -> RedisResult<redis::Client> {
    match &config.ca_pem {
        Some(ca) if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) => {
            redis::Client::build_with_tls(info, certificates(ca))
        }
        _ => redis::Client::open(info),
    }
}

/// Whether `e` is a `rediss://` server certificate the sidecar could not
/// verify (an unknown issuer, a wrong name, expired): waiting never mends
/// it, a setting does (`SIDECAR_REDIS_CA_FILE`, the URL's host).
pub(crate) fn untrusted_certificate(e: &redis::RedisError) -> bool {
    // The rustls error sits inside an io::Error inside an Arc the crate
    // does not expose (and io::Error's `source` skips it): its text is what
    // reaches us. rustls words every certificate failure this way.
    e.kind() == redis::ErrorKind::Io && e.to_string().contains("invalid peer certificate")
}

/// Trust `ca` (PEM), no client certificate.
fn certificates(ca: &[u8]) -> TlsCertificates {
    TlsCertificates { client_tls: None, root_cert: Some(ca.to_vec()) }
}

/// Connects with the given response timeout (`None` for connections that
/// issue blocking reads).
pub(crate) async fn connect(config: &RedisConfig, response_timeout: Option<Duration>) -> RedisResult<RedisConn> {
    if config.cluster || config.urls.len() > 1 {
        let mut builder = ClusterClientBuilder::new(config.urls.clone()).connection_timeout(Duration::from_secs(5));
        if let Some(ca) = config.ca_pem.as_deref().filter(|_| config.urls.iter().any(|u| u.starts_with("rediss://"))) {
            builder = builder.certs(certificates(ca));
        }
        if let Some(t) = response_timeout {
            builder = builder.response_timeout(t);
        }
        let client = builder.build()?;
        Ok(RedisConn::Cluster(client.get_async_connection().await?))
    } else {
        let client = client(config, config.urls[0].as_str().into_connection_info()?)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(response_timeout)
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        Ok(RedisConn::Single(ConnectionManager::new_with_config(client, cfg).await?))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}
