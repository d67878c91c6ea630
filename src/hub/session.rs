//! One connection's protocol state machine: handshake, then hub messages,
//! then close. It does not care which transport carries it.

use std::sync::atomic::Ordering;

use std::sync::Arc;
use tracing::Instrument;

use super::Bucket;
use crate::codec::{
    CloseMessage, Completion, Framer, HandshakeRequest, HandshakeResponse, HubMessage, Protocol, RECORD_SEPARATOR,
};
use crate::config::{Action, HubId};
use crate::fanout::ConnEntry;
use crate::telemetry::events::{connection_event, Disconnected};
use crate::telemetry::labels::{Connection, DisconnectReason, Invocation, Limit, Transport};
use crate::transport::{Ended, Flow, Kick, Outbox, Payload, Session};
use prometheus_client::metrics::gauge::Gauge;

use super::caller::Caller;
use super::reconnect::Incoming;
use super::{close, Hubs};

/// Who is on the other end, once authentication (if any) has run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    /// The user id (`sub`), or `None` without authentication.
    pub user_id: Option<Arc<str>>,
    /// A display name (`name` claim), if known.
    pub name: Option<String>,
    /// Every claim of the token, for room policies.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// When the token expires (Unix milliseconds).
    pub expires_at_ms: Option<u64>,
}

/// A connection of a hub, from handshake to close.
pub(crate) struct HubSession {
    hubs: Arc<Hubs>,
    hub: HubId,
    conn: u64,
    transport: Transport,
    /// Its `sidecar_connections` series, resolved when it enters fan-out.
    connected: Option<Gauge>,
    outbox: Arc<Outbox>,
    /// Registered in fan-out once the handshake names the protocol.
    entry: Option<Arc<ConnEntry>>,
    /// The public SignalR connection id.
    pub connection_id: String,
    token: Option<String>,
    identity: Identity,
    protocol: Option<Protocol>,
    handshake: Vec<u8>,
    framer: Option<Framer>,
    /// Stateful reconnect was negotiated for this connection.
    stateful: bool,
    incoming: Incoming,
    /// Set when a parked session gets a new WebSocket: the first frames
    /// written are a Sequence and the unacknowledged messages.
    resuming: bool,
    /// The invocation budget of a connection without authentication (one
    /// with a user shares its user's, in the limiter).
    own_budget: Option<Bucket>,
}

impl HubSession {
    /// Whether frames travel as binary (the MessagePack protocol).
    #[cfg(test)]
    pub(crate) fn is_binary(&self) -> bool {
        self.protocol.is_some_and(Protocol::is_binary)
    }

    /// A new session for `hub`; `token` is released when it ends.
    pub(crate) fn new(
        hubs: Arc<Hubs>,
        hub: HubId,
        connection_id: String,
        token: Option<String>,
        identity: Identity,
        transport: Transport,
        stateful: bool,
    ) -> HubSession {
        HubSession {
            connected: None,
            stateful,
            incoming: Incoming::default(),
            resuming: false,
            own_budget: None,
            conn: hubs.next_conn_id(),
            outbox: Arc::new(Outbox::new(hubs.settings.outbox)),
            entry: None,
            hubs,
            hub,
            transport,
            connection_id,
            token,
            identity,
            protocol: None,
            handshake: Vec::new(),
            framer: None,
        }
    }

    /// Whether this session can wait for its client to reconnect (stateful
    /// reconnect negotiated, handshake done, still open, and every frame
    /// the client has not acknowledged still held: past the buffer's bound
    /// the resume is refused, 404, and the client reconnects afresh).
    pub(crate) fn can_resume(&self) -> bool {
        self.stateful && self.protocol.is_some() && !self.outbox.is_closed() && self.outbox.replay_intact()
    }

    /// Whether the session was told to go (its outbox kicked) for a reason
    /// that ends it: not a drain's handoff, nor a resume superseding its
    /// old transport, which it outlives.
    pub(crate) fn told_to_go(&self) -> bool {
        self.outbox.kicked().is_some_and(|k| !matches!(k, Kick::Handoff | Kick::Superseded))
    }

    /// Whether the client negotiated stateful reconnect.
    pub(crate) fn is_stateful(&self) -> bool {
        self.stateful
    }

    /// The hub this session belongs to.
    pub(crate) fn hub(&self) -> HubId {
        self.hub
    }

    /// The token this session was negotiated with.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Marks a parked session as taken up by a new transport, whose request
    /// carried `identity`. The same user's fresh token is the session's
    /// from now on, its expiry included, as ASP.NET Core takes the expiry
    /// of each request that carries a connection on (`UpdateExpiration`);
    /// another user's is only logged, as ASP.NET Core only logs it.
    pub(crate) fn resume(&mut self, identity: Identity) {
        if identity.user_id == self.identity.user_id {
            if let Some(entry) = &self.entry {
                let expires = identity.expires_at_ms.unwrap_or(crate::fanout::NEVER);
                entry.expires_at_ms.store(expires, Ordering::Relaxed);
            }
            self.identity = identity;
        } else {
            tracing::warn!(connection_id = %self.connection_id, "stateful reconnect with another user's token: the session keeps its user");
        }
        // A kick that superseded its old transport may have landed after
        // the session parked: it is not for the new one.
        self.outbox.forgive(Kick::Superseded);
        self.resuming = true;
        self.touch();
    }

    /// The connection's outbound queue.
    pub(crate) fn outbox(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    /// Removes the connection from every group and table. Call once, when
    /// the transport has ended.
    pub(crate) async fn finish(self, ended: Ended) {
        // A kicked connection often ends in a failed write; the kick is the cause.
        let ended = match (ended, self.outbox.kicked()) {
            (Ended::ByClient | Ended::WriteFailed, Some(k)) => Ended::Kicked(k),
            (e, _) => e,
        };
        if self.entry.is_some() {
            let groups = self.hubs.registry.remove(self.conn);
            let caller = self.caller();
            if caller.in_presence() {
                for group in groups {
                    let member = caller.member(&group);
                    match Box::pin(self.hubs.presence.leave(&member)).await {
                        Ok(t) => self.hubs.publish_presence(t).await,
                        Err(e) => tracing::warn!(error = %e, room = %group, "presence not updated on disconnect"),
                    }
                }
            }
        }
        if let Some(gauge) = &self.connected {
            gauge.dec();
        }
        if let Some(token) = &self.token {
            self.hubs.tokens.release(token);
        }
        self.disconnected(close::disconnect_reason(ended));
    }

    /// This connection as the caller of a server method.
    fn caller(&self) -> Caller<'_> {
        let hub = &self.hubs.routes.hubs[self.hub];
        Caller { hub, conn: self.conn, connection_id: &self.connection_id, identity: &self.identity }
    }

    /// Logs and counts the end of this connection.
    fn disconnected(&self, reason: DisconnectReason) {
        let (connection_id, hub, transport) = (self.connection_id.as_str(), &**self.hub_label(), self.transport);
        self.hubs.metrics.record(Disconnected { reason, connection_id, hub, transport });
    }

    /// The hub's name as a label value, shared by every session of the hub.
    fn hub_label(&self) -> &Arc<str> {
        self.hubs.labels.hub(self.hub)
    }

    /// Counts one invocation of `method` (its name in the routing file, or
    /// `unknown`) with `outcome`. The hub's shared labels make the lookup
    /// allocation-free; the session keeps no series of its own (a cache of
    /// them cost 160 B per connection after its first invocation).
    fn count_invocation(&self, method: &str, outcome: &'static str) {
        let labels = &self.hubs.labels;
        let labels =
            Invocation { hub: labels.hub(self.hub).clone(), method: labels.method(self.hub, method).clone(), outcome };
        self.hubs.metrics.invocations.get_or_create(&labels).inc();
    }

    /// Queues a sequenced message (a completion). A full queue kicks the
    /// connection; nothing more to do here.
    fn send(&self, bytes: Vec<u8>) {
        if let Some(p) = self.payload(bytes) {
            let _ = self.outbox.push_critical(p);
        }
    }

    fn send_close(&self, close: CloseMessage) -> Flow {
        if let Some(p) = self.protocol {
            self.send_unsequenced(p.encode(&HubMessage::Close(close)));
        }
        Flow::Stop
    }

    fn payload(&self, bytes: Vec<u8>) -> Option<Payload> {
        match self.protocol {
            Some(p) if p.is_binary() => Some(Payload::binary(&bytes)),
            _ => Payload::text_from_vec(bytes),
        }
    }

    fn send_unsequenced(&self, bytes: Vec<u8>) {
        if let Some(p) = self.payload(bytes) {
            let _ = self.outbox.push_unsequenced(p);
        }
    }

    /// The handshake: the first record, always JSON text ending in 0x1E.
    fn receive_handshake(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>, Flow> {
        self.handshake.extend_from_slice(data);
        let Some(end) = self.handshake.iter().position(|b| *b == RECORD_SEPARATOR) else {
            if self.handshake.len() > self.hubs.settings.max_message_bytes {
                return Err(self.refuse_handshake("too large", close::HANDSHAKE_CANCELED.into()));
            }
            return Ok(None);
        };
        let rest = self.handshake.split_off(end + 1);
        self.handshake.pop();
        let (protocol, version) = match HandshakeRequest::parse_versioned(&self.handshake) {
            // Server-Sent Events carry text only (ASP.NET Core checks the
            // transport's transfer formats the same way).
            Ok((p, _)) if p.is_binary() && self.transport == Transport::ServerSentEvents => {
                return Err(self.refuse_handshake("binary protocol on SSE", close::for_transfer_format(p)))
            }
            Ok(accepted) => accepted,
            Err(e) => return Err(self.refuse_handshake(&e.to_string(), close::for_handshake_error(&e))),
        };
        self.handshake = Vec::new();
        if self.stateful && version < 2 {
            // Negotiated stateful reconnect but speaks a protocol without
            // it: served as a plain connection (no Sequence, no Ack, no
            // resume), as ASP.NET Core disables the feature for it.
            tracing::debug!(connection_id = %self.connection_id, version, "stateful reconnect off: handshake version below 2");
            self.stateful = false;
        }
        self.protocol = Some(protocol);
        self.framer = Some(protocol.framer(self.hubs.settings.max_message_bytes));
        if self.stateful {
            self.outbox.enable_replay(self.hubs.settings.replay_max_bytes);
        }
        self.send_unsequenced(HandshakeResponse::default().to_record());
        if self.register(protocol, &[]).after_drain {
            // Accepted before the drain began, not in the list of those it
            // tells to go: told here (CONTRACT section 8), or it would be
            // served, unclosed, until the shutdown deadline and then cut off.
            // A new stateful session has nothing owed yet: it reconnects afresh.
            self.outbox.kick(Kick::ServerShutdown);
        }
        let detail = if protocol.is_binary() { "messagepack" } else { "json" };
        connection_event("connection open", &self.connection_id, self.hub_label(), self.transport, detail);
        Ok(Some(rest))
    }

    /// Enters fan-out with `groups`; returns the positions at that instant
    /// and whether the drain had listed its connections already.
    fn register(&mut self, protocol: Protocol, groups: &[Box<str>]) -> crate::fanout::Added {
        let entry = Arc::new(ConnEntry {
            id: self.conn,
            hub: self.hub,
            user: self.identity.user_id.clone(),
            slot: protocol.slot(),
            transport: self.transport.as_str(),
            outbox: self.outbox.clone(),
            last_seen_ms: self.hubs.now_ms().into(),
            timeout_armed: (self.transport == Transport::LongPolling).into(),
            expires_at_ms: self.identity.expires_at_ms.unwrap_or(crate::fanout::NEVER).into(),
            connection_id: uuid::Uuid::try_parse(&self.connection_id).unwrap_or_default(),
            since_ms: crate::fanout::unix_ms(),
            activity: crate::fanout::Activity {
                last_invoked_ms: self.hubs.now_ms().into(),
                idle: false.into(),
                user_invoked_ms: self.hubs.now_ms().into(),
            },
        });
        let added = self.hubs.registry.add_open(entry.clone(), groups);
        self.entry = Some(entry);
        let labels = Connection { hub: self.hub_label().clone(), transport: self.transport };
        let gauge = self.hubs.metrics.connections.get_or_create_owned(&labels);
        gauge.inc();
        self.connected = Some(gauge);
        added
    }

    /// Takes the session out of fan-out: its groups and the positions at
    /// that instant (see [`crate::fanout::Positions`]).
    pub(crate) fn detach(&self) -> (Vec<Box<str>>, crate::fanout::Positions) {
        self.hubs.registry.detach(self.conn)
    }

    /// Its number in fan-out.
    pub(crate) fn conn(&self) -> u64 {
        self.conn
    }

    /// The hub protocol, once the handshake named it.
    pub(crate) fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// What another instance needs to carry this session on, taken out of
    /// fan-out with `groups` at `positions`. `None` when it cannot be
    /// resumed (no handshake, not stateful, or frames were lost).
    pub(crate) fn snapshot(
        &self,
        groups: &[Box<str>],
        positions: &crate::fanout::Positions,
    ) -> Option<super::handoff::SessionSnapshot> {
        let protocol = self.protocol.filter(|_| self.stateful)?;
        let (next_seq, frames) = self.outbox.handoff()?;
        Some(super::handoff::SessionSnapshot {
            hub: self.hubs.routes.hubs[self.hub].name.clone(),
            connection_id: self.connection_id.clone(),
            protocol: if protocol.is_binary() { "messagepack" } else { "json" }.to_string(),
            user_id: self.identity.user_id.as_deref().map(str::to_string),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            next_seq,
            frames: frames.into_iter().map(|(n, p)| (n, super::handoff::Frame(p.as_bytes().to_vec()))).collect(),
            incoming: self.incoming.export(),
            positions: positions.iter().map(|(s, id)| (s.to_string(), id.clone())).collect(),
        })
    }

    /// A session handed over by another instance, registered here with its
    /// groups; also returns the groups, the positions it entered at and
    /// whether it entered after the drain listed its connections.
    pub(crate) fn restore(
        hubs: Arc<Hubs>,
        hub: HubId,
        token: String,
        identity: Identity,
        snapshot: &super::handoff::SessionSnapshot,
    ) -> Option<(HubSession, Vec<Box<str>>, crate::fanout::Added)> {
        let protocol = Protocol::from_handshake(&snapshot.protocol, 2).ok()?;
        let mut session = HubSession::new(
            hubs.clone(),
            hub,
            snapshot.connection_id.clone(),
            Some(token.clone()),
            identity,
            Transport::WebSockets,
            true,
        );
        let frames = snapshot
            .frames
            .iter()
            .map(|(n, f)| {
                let payload = if protocol.is_binary() {
                    Some(Payload::binary(&f.0))
                } else {
                    Payload::text_from_vec(f.0.clone())
                };
                payload.map(|p| (*n, p))
            })
            .collect::<Option<Vec<_>>>()?;
        session.outbox.restore_replay(hubs.settings.replay_max_bytes, snapshot.next_seq, frames);
        session.incoming = Incoming::import(snapshot.incoming);
        session.protocol = Some(protocol);
        session.framer = Some(protocol.framer(hubs.settings.max_message_bytes));
        session.resuming = true;
        hubs.tokens.adopt(&token, hub, &snapshot.connection_id);
        let groups: Vec<Box<str>> = snapshot.groups.iter().map(|g| Box::from(g.as_str())).collect();
        let added = session.register(protocol, &groups);
        Some((session, groups, added))
    }

    /// Ends a session whose client carries on elsewhere, taken out of
    /// fan-out with `groups`; the token is free. Its presence entries stay
    /// but are no longer refreshed: they expire a presence TTL later.
    /// Meanwhile the instance the client resumes on adds its own
    /// ([`HubSession::rejoin_presence`]), so the user never looks gone, not
    /// even for the moment between the two (no `user_left`, no participant
    /// count without them); a client that never resumes leaves, with
    /// `user_left`, when they expire. Refreshed on, they would outlive the
    /// session for as long as this instance runs (a session released to
    /// another instance while this one lives on): the user would never
    /// leave, and this instance would remember them forever.
    pub(crate) async fn finish_handed_off(self, groups: &[Box<str>]) {
        self.hubs.registry.remove(self.conn);
        let caller = self.caller();
        if caller.in_presence() {
            for group in groups {
                self.hubs.presence.forget(&caller.member(group));
            }
        }
        if let Some(gauge) = &self.connected {
            gauge.dec();
        }
        if let Some(token) = &self.token {
            self.hubs.tokens.release(token);
        }
        self.disconnected(DisconnectReason::Handoff);
    }

    /// Puts a session taken over from another instance in the presence of
    /// its `groups` here, as its joins did there. The draining instance's
    /// entries are still there, so the user is usually present already and
    /// nothing is published; only a resume that came after they expired
    /// makes the user join again (`user_joined`).
    pub(crate) async fn rejoin_presence(&self, groups: &[Box<str>]) {
        let caller = self.caller();
        if !caller.in_presence() {
            return;
        }
        for group in groups {
            let member = caller.member(group);
            let username = self.identity.name.as_deref().unwrap_or(&member.user_id).to_string();
            match Box::pin(self.hubs.presence.join(&member, &username)).await {
                Ok(t) => self.hubs.publish_presence(t).await,
                Err(e) => tracing::warn!(error = %e, room = %group, "presence not recorded for a taken-over session"),
            }
        }
    }

    /// Answers the handshake with `error` and ends; `detail` goes to the log.
    fn refuse_handshake(&self, detail: &str, error: String) -> Flow {
        tracing::debug!(connection_id = %self.connection_id, detail, error = %error, "handshake refused");
        if let Some(p) = Payload::text_from_vec(HandshakeResponse { error: Some(error) }.to_record()) {
            let _ = self.outbox.push_unsequenced(p);
        }
        Flow::Stop
    }

    /// Takes one invocation from the caller's budget (its user's, or its
    /// own without authentication).
    fn within_rate(&mut self) -> bool {
        let ok = match &self.identity.user_id {
            Some(user) => self.hubs.invocation_limiter.allow(user),
            None => self.hubs.invocation_limiter.allow_own(&mut self.own_budget),
        };
        if !ok {
            self.hubs.metrics.limited.get(Limit::Invocations).inc();
        }
        ok
    }

    /// Answers an invocation whose arguments could not be bound (ASP.NET
    /// Core's `InvocationBindingFailureMessage`): a Completion error when
    /// it is blocking, nothing otherwise; the connection goes on.
    fn binding_failed(&self, protocol: Protocol, invocation_id: Option<String>, target: &str, reason: &str) {
        tracing::debug!(connection_id = %self.connection_id, target, reason, "invocation arguments cannot be bound");
        let method = self.hubs.routes.hubs[self.hub].method(target).map(|m| m.name.clone());
        let outcome = if method.is_some() { "bad_arguments" } else { "unknown_method" };
        self.count_invocation(method.as_deref().unwrap_or("unknown"), outcome);
        if let Some(id) = invocation_id {
            let error = close::for_binding_failure(target, method.is_some());
            let completion = Completion { invocation_id: id, outcome: Err(error) };
            self.send(protocol.encode(&HubMessage::Completion(completion)));
        }
    }

    async fn dispatch(&mut self, message: HubMessage) -> Flow {
        if let (HubMessage::Invocation(inv) | HubMessage::StreamInvocation(inv), Some(entry)) = (&message, &self.entry)
        {
            // Asked only where activity is shared at all (hubs that track away).
            let share = self.hubs.activity.tracks_away(self.hub)
                && self.hubs.routes.hubs[self.hub].method(&inv.target).is_none_or(|m| m.action != Action::SetPresence);
            self.hubs.activity.invoked(entry, self.hubs.now_ms(), &self.hubs.registry, share);
        }
        match message {
            HubMessage::Invocation(inv) => {
                let hubs = self.hubs.clone();
                let hub = &hubs.routes.hubs[self.hub];
                let result = if self.within_rate() {
                    let caller = self.caller();
                    let call = hubs.invoke(&caller, &inv);
                    if crate::telemetry::tracing_enabled() {
                        let span = tracing::info_span!(
                            "sidecar.invocation",
                            otel.name = %format!("invoke {}", inv.target),
                            otel.kind = "server",
                            hub = %hub.name,
                            method = %inv.target,
                            connection_id = %self.connection_id,
                            outcome = tracing::field::Empty,
                        );
                        let result = call.instrument(span.clone()).await;
                        span.record(
                            "outcome",
                            result.as_ref().map(|_| "ok").unwrap_or_else(crate::fault::Blame::reason),
                        );
                        result
                    } else {
                        call.await
                    }
                } else {
                    Err(super::Error::Limited(format!(
                        "Too many invocations: the limit is {} per minute",
                        self.hubs.settings.limits.invocations_per_minute
                    )))
                };
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(e) => {
                        use crate::fault::Blame;
                        e.fault().log(e, &format!("invocation {} of {} failed", inv.target, self.connection_id));
                        e.reason()
                    }
                };
                let method = hub.method(&inv.target).map_or("unknown", |m| m.name.as_str());
                self.count_invocation(method, outcome);
                if let (Some(id), Some(p)) = (inv.invocation_id, self.protocol) {
                    let outcome = result.map_err(|e| close::for_invocation_error(&inv.target, &e));
                    let completion = Completion { invocation_id: id, outcome };
                    self.send(p.encode(&HubMessage::Completion(completion)));
                }
                Flow::Continue
            }
            HubMessage::StreamInvocation(inv) => {
                if let (Some(id), Some(p)) = (inv.invocation_id, self.protocol) {
                    let known = self.hubs.routes.hubs[self.hub].method(&inv.target).is_some();
                    let completion = Completion {
                        invocation_id: id,
                        outcome: Err(close::for_stream_invocation(&inv.target, known)),
                    };
                    self.send(p.encode(&HubMessage::Completion(completion)));
                }
                Flow::Continue
            }
            HubMessage::Close(_) => Flow::Stop,
            // The first Ping starts the client timeout, as in ASP.NET Core.
            HubMessage::Ping => {
                if let Some(entry) = &self.entry {
                    entry.timeout_armed.store(true, Ordering::Relaxed);
                }
                Flow::Continue
            }
            // No server-side meaning here (client results and client streams
            // are not offered).
            HubMessage::Completion(_)
            | HubMessage::StreamItem { .. }
            | HubMessage::CancelInvocation { .. }
            | HubMessage::Ack { .. }
            | HubMessage::Sequence { .. } => Flow::Continue,
        }
    }
}

impl Session for HubSession {
    async fn receive(&mut self, data: &[u8]) -> Flow {
        if let Some(entry) = &self.entry {
            entry.last_seen_ms.store(self.hubs.now_ms(), Ordering::Relaxed);
        }
        let owned;
        let data = match self.protocol {
            Some(_) => data,
            None => match self.receive_handshake(data) {
                Ok(Some(rest)) => {
                    owned = rest;
                    &owned[..]
                }
                Ok(None) => return Flow::Continue,
                Err(flow) => return flow,
            },
        };
        let (Some(protocol), Some(framer)) = (self.protocol, self.framer.as_mut()) else {
            return Flow::Continue;
        };
        let mut messages = Vec::new();
        let framing = framer.push(data, |record| {
            messages.push(protocol.decode(record));
            Ok::<(), crate::codec::Error>(())
        });
        for message in messages {
            match message {
                Ok(HubMessage::Ack { sequence_id }) => {
                    if !self.outbox.ack(sequence_id) {
                        tracing::debug!(connection_id = %self.connection_id, sequence_id, "Ack of a message never sent");
                        return self.send_close(close::for_ack_error(sequence_id));
                    }
                }
                Ok(HubMessage::Sequence { sequence_id }) if self.stateful => {
                    if let Err(e) = self.incoming.reset(sequence_id) {
                        tracing::debug!(connection_id = %self.connection_id, error = %e, "protocol error");
                        return self.send_close(close::for_sequence_error(&e));
                    }
                }
                Ok(m) if m.is_sequenced() && self.stateful && !self.incoming.accept() => {} // resent, done already
                Ok(m) => {
                    if self.dispatch(m).await == Flow::Stop {
                        return self.send_close(CloseMessage::default());
                    }
                }
                // Counted in the sequence as the invocation it stands for.
                Err(crate::codec::Error::Binding { .. }) if self.stateful && !self.incoming.accept() => {}
                Err(crate::codec::Error::Binding { invocation_id, target, reason }) => {
                    self.binding_failed(protocol, invocation_id, &target, &reason);
                }
                // A message type of a later protocol: ignored, as ASP.NET
                // Core's parsers do ("old clients can ignore them").
                Err(crate::codec::Error::UnknownType(kind)) => {
                    tracing::debug!(connection_id = %self.connection_id, kind, "unknown message type ignored");
                }
                Err(e) => {
                    tracing::debug!(connection_id = %self.connection_id, error = %e, "protocol error");
                    return self.send_close(close::for_protocol_error(&e));
                }
            }
        }
        if let (true, Some(id)) = (self.stateful, self.incoming.ack_due()) {
            self.send_unsequenced(protocol.encode(&HubMessage::Ack { sequence_id: id }));
        }
        match framing {
            Ok(()) => Flow::Continue,
            // Closed as a frame over the limit is: the same Close, counted
            // as `message_too_large`, with the cause in the log.
            Err(crate::codec::Error::TooLarge { limit }) => {
                tracing::info!(connection_id = %self.connection_id, limit,
                    "a hub message over SIDECAR_MAX_MESSAGE_BYTES: connection closed");
                self.outbox.kick(Kick::MessageTooLarge);
                Flow::Stop
            }
            Err(e) => {
                tracing::debug!(connection_id = %self.connection_id, error = %e, "framing error: connection closed");
                self.send_close(close::for_protocol_error(&e))
            }
        }
    }

    fn first_frames(&mut self) -> Vec<Payload> {
        if !std::mem::take(&mut self.resuming) {
            return Vec::new();
        }
        let (Some(protocol), Some((first, frames))) = (self.protocol, self.outbox.resume()) else {
            return Vec::new();
        };
        let mut out: Vec<Payload> =
            self.payload(protocol.encode(&HubMessage::Sequence { sequence_id: first })).into_iter().collect();
        out.extend(frames);
        out
    }

    fn close_frame(&self, why: Kick) -> Option<Payload> {
        let Some(protocol) = self.protocol else {
            // Before the handshake only a handshake answer may be sent.
            let timed_out = HandshakeResponse { error: Some(close::HANDSHAKE_CANCELED.into()) };
            return (why == Kick::HandshakeTimeout).then(|| Payload::text_from_vec(timed_out.to_record())).flatten();
        };
        let close = close::for_kick(why)?;
        let bytes = protocol.encode(&HubMessage::Close(close));
        if protocol.is_binary() {
            Some(Payload::binary(&bytes))
        } else {
            Payload::text_from_vec(bytes)
        }
    }

    fn is_open(&self) -> bool {
        self.protocol.is_some()
    }

    fn touch(&self) {
        if let Some(entry) = &self.entry {
            entry.last_seen_ms.store(self.hubs.now_ms(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
