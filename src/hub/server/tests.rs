//! Admission and negotiate on a `Hubs` built from settings.

use std::net::IpAddr;

use crate::codec::TransportKind;
use crate::hub::testkit::{handshake, kit, user, CHAT};
use crate::hub::{Error, Identity, TokenTransport};
use crate::telemetry::labels::Transport;

fn limited(r: Result<(), Error>) -> String {
    match r {
        Err(Error::Limited(m)) => m,
        other => panic!("expected a limit, got {other:?}"),
    }
}

#[tokio::test]
async fn new_connections_from_one_address_are_limited_by_their_burst() {
    let k = kit(&[("SIDECAR_CONNECTION_BURST_PER_IP", "2"), ("SIDECAR_CONNECTION_RATE_PER_IP", "1")]);
    let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
    let anyone = Identity::default();
    assert!(k.hubs.admit(&anyone, Some(a)).is_ok());
    assert!(k.hubs.admit(&anyone, Some(a)).is_ok());
    assert_eq!(limited(k.hubs.admit(&anyone, Some(a))), "Too many new connections from this address");
    assert!(k.hubs.admit(&anyone, Some(b)).is_ok(), "another address has its own budget");
    assert!(k.hubs.admit(&anyone, None).is_ok(), "no address, no per-address limit");
    let rendered = k.hubs.metrics.render();
    assert!(rendered.contains("limit=\"connections_per_ip\"} 1"), "{rendered}");
}

#[tokio::test]
async fn the_instance_and_each_user_have_a_connection_limit() {
    let k = kit(&[("SIDECAR_MAX_CONNECTIONS", "2"), ("SIDECAR_MAX_CONNECTIONS_PER_USER", "1")]);
    let mut ann = k.session_as(CHAT, Transport::WebSockets, false, user("ann", "Ann"));
    handshake(&mut ann).await;
    assert_eq!(limited(k.hubs.admit(&user("ann", "Ann"), None)), "At most 1 connections per user");
    assert!(k.hubs.admit(&user("bob", "Bob"), None).is_ok());
    let _other = k.open(false).await;
    assert_eq!(limited(k.hubs.admit(&user("bob", "Bob"), None)), "This server has no room for more connections");
}

#[test]
fn negotiate_lists_every_transport_and_issues_a_usable_token() {
    let k = kit(&[]);
    let n = k.hubs.negotiate(CHAT, 1, false);
    let kinds: Vec<TransportKind> = n.available_transports.iter().map(|t| t.transport).collect();
    assert_eq!(kinds, [TransportKind::WebSockets, TransportKind::ServerSentEvents, TransportKind::LongPolling]);
    let token = n.connection_token.clone().expect("version 1 has a token");
    assert_ne!(token, n.connection_id);
    assert!(k.hubs.tokens.is_fresh(&token, CHAT));
    let attached = k.hubs.tokens.attach(&token, CHAT, TokenTransport::LongPolling, || crate::hub::Attached::WebSocket);
    assert_eq!(attached.map(|a| a.connection_id).ok(), Some(n.connection_id));
}

#[test]
fn stateful_reconnect_needs_version_1_the_setting_and_the_request() {
    let k = kit(&[]);
    assert!(k.hubs.negotiate(CHAT, 1, true).use_stateful_reconnect);
    assert!(!k.hubs.negotiate(CHAT, 1, false).use_stateful_reconnect);
    assert!(!k.hubs.negotiate(CHAT, 0, true).use_stateful_reconnect, "version 0 has no such field");
    let off = kit(&[("SIDECAR_STATEFUL_RECONNECT", "false")]);
    assert!(!off.hubs.negotiate(CHAT, 1, true).use_stateful_reconnect);
}

#[test]
fn version_0_negotiate_uses_the_connection_id_as_the_token() {
    let k = kit(&[]);
    let n = k.hubs.negotiate(CHAT, 0, false);
    assert!(n.connection_token.is_none());
    assert!(k.hubs.tokens.is_fresh(&n.connection_id, CHAT));
}
