//! Which node a pub/sub subscriber connects to (CONTRACT section 11).
//!
//! A subscriber holds a plain connection to one node: in a Redis Cluster
//! PUBLISH reaches subscribers on every node, so any live one will do.
//! The configured URLs come first; when the node tried fails, the next is
//! tried, and in a cluster the list is first completed with every node the
//! cluster names now (`CLUSTER NODES`, asked through the cluster
//! connection, which follows failovers). Without that, a seed whose node
//! died (its replica serving its slots) left the subscriber retrying it for
//! ever while every command still worked: resume asks, user activity and
//! introspection went unheard, silently.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult};

use super::RedisConn;
use crate::config::RedisConfig;

/// The nodes a subscriber tries, in turn.
pub(crate) struct SubscribeNodes {
    redis: RedisConfig,
    /// Asked for the cluster's nodes (a cluster only).
    conn: RedisConn,
    /// The configured URLs', then the nodes the cluster named last.
    nodes: Vec<ConnectionInfo>,
    /// How many of `nodes` are the configured ones.
    configured: usize,
    /// The node to try now.
    at: usize,
}

impl SubscribeNodes {
    /// The configured nodes of `redis`; `conn` is asked for the others.
    pub(crate) fn new(redis: RedisConfig, conn: RedisConn) -> SubscribeNodes {
        let nodes: Vec<ConnectionInfo> =
            redis.urls.iter().filter_map(|u| u.as_str().into_connection_info().ok()).collect();
        let configured = nodes.len();
        SubscribeNodes { redis, conn, nodes, configured, at: 0 }
    }

    /// A client for the node to try now.
    pub(crate) fn client(&self) -> RedisResult<redis::Client> {
        let Some(info) = self.nodes.get(self.at % self.nodes.len().max(1)) else {
            return Err((redis::ErrorKind::InvalidClientConfig, "no Redis node to subscribe on").into());
        };
        super::redis_conn::client(&self.redis, info.clone())
    }

    /// The node tried now failed: the next one is tried next time, from
    /// the list completed with the cluster's nodes of the moment.
    pub(crate) async fn advance(&mut self) {
        if self.redis.cluster || self.redis.urls.len() > 1 {
            let listed: RedisResult<String> =
                redis::cmd("CLUSTER").arg("NODES").query_async(&mut self.conn.clone()).await;
            match listed {
                Ok(text) => self.learn(&text),
                Err(e) => tracing::debug!(error = %e, "pub/sub: the cluster's nodes are unknown for now"),
            }
        }
        self.at = (self.at + 1) % self.nodes.len().max(1);
    }

    /// Keeps the configured nodes and replaces the others with the live
    /// nodes of `cluster_nodes` (the text of `CLUSTER NODES`), reached the
    /// way the first configured URL is (scheme, credentials, TLS).
    fn learn(&mut self, cluster_nodes: &str) {
        let Some(template) = self.nodes.first().cloned() else { return };
        self.nodes.truncate(self.configured);
        for (host, port) in live_nodes(cluster_nodes) {
            let addr = match template.addr() {
                ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host, port),
                ConnectionAddr::TcpTls { insecure, tls_params, .. } => {
                    ConnectionAddr::TcpTls { host, port, insecure: *insecure, tls_params: tls_params.clone() }
                }
                _ => continue,
            };
            if !self.nodes.iter().any(|n| *n.addr() == addr) {
                self.nodes.push(template.clone().set_addr(addr));
            }
        }
    }
}

/// `(host, port)` of each node of a `CLUSTER NODES` reply that is neither
/// failing nor without an address, in the reply's order.
fn live_nodes(cluster_nodes: &str) -> Vec<(String, u16)> {
    cluster_nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_id, address, flags) = (fields.next()?, fields.next()?, fields.next()?);
            if flags.split(',').any(|f| matches!(f, "fail" | "fail?" | "noaddr" | "handshake")) {
                return None;
            }
            // `ip:port@cport[,hostname]`; an IPv6 ip has colons of its own.
            let (host, port) = address.split(['@', ',']).next()?.rsplit_once(':')?;
            let port = port.parse().ok().filter(|p| *p != 0)?;
            (!host.is_empty()).then(|| (host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_nodes_are_read_from_cluster_nodes_and_failing_ones_left_out() {
        let text = "\
a 127.0.0.1:7000@17000 master,fail - 1 1 1 disconnected
b 127.0.0.1:7001@17001 myself,master - 0 0 2 connected 5461-10922
c 127.0.0.1:7005@17005 slave b 0 1 2 connected
d :0@0 master,noaddr - 0 0 0 disconnected
e ::1:7003@17003,node-e.example master - 0 0 3 connected 10923-16383
f 127.0.0.1:7004@17004 master,fail? - 0 0 4 connected 0-5460
";
        assert_eq!(
            live_nodes(text),
            vec![("127.0.0.1".to_string(), 7001), ("127.0.0.1".to_string(), 7005), ("::1".to_string(), 7003)]
        );
    }
}
