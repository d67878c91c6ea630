//! What the hub's in-process tests share: a `Hubs` on the shipped routing
//! file with the in-process bus and presence, sessions on it, and the
//! frames an outbox queued, decoded.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{Addressee, BoxFuture, CatchUp, HandoffError, HubSession, HubSettings, Hubs, Identity};
use super::{SessionSnapshot, SessionStore};
use crate::codec::{HubMessage, Protocol, RECORD_SEPARATOR};
use crate::config::{Config, RawSettings, RouteTable};
use crate::envelope::Envelope;
use crate::fanout::{Positions, Registry};
use crate::ingest::Publisher;
use crate::presence::Presence;
use crate::sync::Unpoisoned;
use crate::telemetry::labels::Transport;
use crate::telemetry::Metrics;
use crate::transport::{Outbox, Session};

/// Hub ids in `protocol/routes.toml`.
pub(crate) const CHAT: usize = 0;
pub(crate) const TICKET: usize = 1;

/// The JSON handshake record.
pub(crate) const JSON_HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";

/// The JSON handshake of a client speaking stateful reconnect (version 2).
pub(crate) const JSON_HANDSHAKE_V2: &[u8] = b"{\"protocol\":\"json\",\"version\":2}\x1e";

/// The shipped routing file.
pub(crate) fn routes() -> Arc<RouteTable> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/routes.toml");
    Arc::new(RouteTable::load(&path).expect("the shipped routing file loads"))
}

/// Settings as the sidecar would read them from `env` (defaults otherwise).
pub(crate) fn config(env: &[(&str, &str)]) -> Config {
    let mut raw = RawSettings::default();
    raw.overlay_env(
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("SIDECAR_INSTANCE_ID".to_string(), "test-instance".to_string())]),
    );
    Config::from_raw(&raw).expect("valid test settings")
}

/// A `Hubs` and the receiving end of its in-process bus (what SendTyping
/// and presence publish).
pub(crate) struct Kit {
    pub hubs: Arc<Hubs>,
    /// Takes the next event on the bus (the hub may not name the
    /// pipeline, so the bus's receiver hides in a closure).
    next: Box<dyn FnMut() -> Option<Envelope> + Send>,
}

/// A kit with settings from `env`.
pub(crate) fn kit(env: &[(&str, &str)]) -> Kit {
    kit_where(env, |hubs| hubs)
}

/// A kit whose hubs keep stateful sessions through `handoff`.
pub(crate) fn kit_with_handoff(env: &[(&str, &str)], handoff: super::Handoff) -> Kit {
    kit_where(env, |hubs| hubs.with_handoff(handoff))
}

/// A kit whose hubs keep stateful sessions through `handoff` and take
/// their cuts through `cuts` (the test plays the pipeline).
pub(crate) fn kit_with_handoff_and_cuts(
    env: &[(&str, &str)],
    handoff: super::Handoff,
    cuts: crate::fanout::Cuts,
) -> Kit {
    kit_where(env, |hubs| hubs.with_handoff(handoff).with_cuts(cuts))
}

fn kit_where(env: &[(&str, &str)], finish: impl FnOnce(Hubs) -> Hubs) -> Kit {
    let c = config(env);
    let routes = routes();
    let registry = Arc::new(Registry::new(routes.hubs.len(), c.delivery.max_groups_per_connection));
    let (publisher, next) = Publisher::memory_bus(routes.clone(), 64);
    let settings = HubSettings::from_config(&c.server, &c.limits, &c.instance_id);
    let hubs = Hubs::new(routes, registry, publisher, Arc::new(Metrics::new()), settings, Presence::memory());
    Kit { hubs: Arc::new(finish(hubs)), next: Box::new(next) }
}

impl Kit {
    /// A session of `hub` on `transport`, before its handshake.
    pub(crate) fn session(&self, hub: usize, transport: Transport, stateful: bool) -> HubSession {
        self.session_as(hub, transport, stateful, Identity::default())
    }

    /// A session of a given identity.
    pub(crate) fn session_as(
        &self,
        hub: usize,
        transport: Transport,
        stateful: bool,
        identity: Identity,
    ) -> HubSession {
        let id = super::new_connection_id();
        HubSession::new(self.hubs.clone(), hub, id, None, identity, transport, stateful)
    }

    /// A JSON WebSocket session of the chat hub on a negotiated token, with
    /// its handshake done (the answer taken): the token and the session.
    pub(crate) async fn negotiated(&self, stateful: bool, identity: Identity) -> (String, HubSession) {
        let (id, token) = self.hubs.tokens.issue(CHAT, stateful, 1);
        let mut s = HubSession::new(
            self.hubs.clone(),
            CHAT,
            id,
            Some(token.clone()),
            identity,
            Transport::WebSockets,
            stateful,
        );
        handshake(&mut s).await;
        (token, s)
    }

    /// A JSON WebSocket session of the chat hub with its handshake done
    /// (the handshake answer taken).
    pub(crate) async fn open(&self, stateful: bool) -> HubSession {
        let mut s = self.session(CHAT, Transport::WebSockets, stateful);
        handshake(&mut s).await;
        s
    }

    /// Whatever the bus holds now.
    pub(crate) fn published(&mut self) -> Vec<Envelope> {
        std::iter::from_fn(|| (self.next)()).collect()
    }
}

/// An authenticated user.
pub(crate) fn user(id: &str, name: &str) -> Identity {
    Identity { user_id: Some(id.into()), name: Some(name.into()), ..Identity::default() }
}

/// Sends the JSON handshake and takes the answer, which must be `{}`: of
/// version 2 for a session that negotiated stateful reconnect, as the
/// clients that offer it send.
pub(crate) async fn handshake(s: &mut HubSession) {
    let record = if s.is_stateful() { JSON_HANDSHAKE_V2 } else { JSON_HANDSHAKE };
    assert_eq!(s.receive(record).await, crate::transport::Flow::Continue);
    assert_eq!(texts(&s.outbox()), ["{}"]);
}

/// Every queued frame as text, split into records (separators dropped).
pub(crate) fn texts(outbox: &Outbox) -> Vec<String> {
    let batch = outbox.take(usize::MAX);
    batch
        .frames
        .iter()
        .flat_map(|p| p.as_bytes().split(|b| *b == RECORD_SEPARATOR).filter(|r| !r.is_empty()))
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

/// Every queued JSON frame, decoded as hub messages.
pub(crate) fn messages(outbox: &Outbox) -> Vec<HubMessage> {
    texts(outbox).iter().map(|t| Protocol::Json.decode(t.as_bytes()).expect("the server sends valid JSON")).collect()
}

/// A JSON record for `value`.
pub(crate) fn record(value: Value) -> Vec<u8> {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(RECORD_SEPARATOR);
    bytes
}

/// A blocking invocation record.
pub(crate) fn invoke(id: &str, target: &str, arguments: Value) -> Vec<u8> {
    record(serde_json::json!({"type": 1, "invocationId": id, "target": target, "arguments": arguments}))
}

/// A session store in memory: keeps the tokens of the snapshots saved, and
/// hands out `snapshot`, if any, once (whatever the token).
#[derive(Default)]
pub(crate) struct MemoryStore {
    /// The tokens saved, in order.
    pub saved: std::sync::Mutex<Vec<String>>,
    /// What the next take hands out.
    pub snapshot: std::sync::Mutex<Option<SessionSnapshot>>,
}

impl SessionStore for MemoryStore {
    fn save<'a>(&'a self, token: &'a str, _: &'a SessionSnapshot) -> BoxFuture<'a, Result<(), HandoffError>> {
        Box::pin(async move {
            self.saved.locked().push(token.to_string());
            Ok(())
        })
    }
    fn take<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<SessionSnapshot>, HandoffError>> {
        Box::pin(async { Ok(self.snapshot.locked().take()) })
    }
    fn ask_release<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), HandoffError>> {
        Box::pin(async { Ok(()) })
    }
    fn mark_releasing<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), HandoffError>> {
        Box::pin(async { Ok(()) })
    }
    fn is_releasing<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool, HandoffError>> {
        Box::pin(async { Ok(false) })
    }
}

/// Covers every position and replays nothing; with `held`, the replay
/// waits until that is told (as a slow Redis would keep it).
#[derive(Default)]
pub(crate) struct NoReplay {
    /// What a replay waits for, if anything.
    pub held: Option<Arc<tokio::sync::Notify>>,
}

impl CatchUp for NoReplay {
    fn covers(&self, _: &[(String, String)], _: &Positions) -> bool {
        true
    }
    fn missed<'a>(
        &'a self,
        _: &'a [(String, String)],
        _: &'a Positions,
        _: Addressee<'a>,
    ) -> BoxFuture<'a, Result<Vec<crate::transport::Payload>, HandoffError>> {
        Box::pin(async {
            if let Some(held) = &self.held {
                held.notified().await;
            }
            Ok(Vec::new())
        })
    }
}
