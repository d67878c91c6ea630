//! Stateful sessions that outlive their instance (CONTRACT section 14).
//!
//! When an instance drains (or another instance asks for a session whose
//! client resumed there after a network drop: `release.rs`), each stateful
//! session is taken out of fan-out
//! (which fixes, per stream, the last entry that reached its outbox),
//! written to a [`SessionStore`] with its unacknowledged frames, and its
//! socket dropped without a Close, so the client resumes at once. Whichever
//! instance the resume reaches takes the snapshot (once: the store hands
//! it out a single time), registers the session in its own fan-out, and
//! puts before the live frames the events the session missed in between,
//! read again from the streams by a [`CatchUp`]. The client then gets a
//! Sequence, the unacknowledged frames, the missed events and the live ones:
//! each owed event once, in order. Anything that cannot be proven whole is
//! refused (404), and the client reconnects afresh.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HubSession, Hubs, Identity};
use crate::codec::Protocol;
use crate::config::HubId;
use crate::fanout::Positions;
use crate::sync::Unpoisoned;
use crate::telemetry::labels::HandoffOutcome;
use crate::transport::Payload;

/// A boxed future, for the object-safe traits below.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything another instance needs to carry a stateful session on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionSnapshot {
    /// The hub's name (ids differ between routing files).
    pub hub: String,
    /// The public connection id, which the client keeps.
    pub connection_id: String,
    /// The hub protocol of the handshake (`json` or `messagepack`).
    pub protocol: String,
    /// The authenticated user, if any; a resume must present the same one.
    pub user_id: Option<String>,
    /// The groups the connection had joined.
    pub groups: Vec<String>,
    /// The sequence id the next outgoing frame gets.
    pub next_seq: u64,
    /// Unacknowledged frames with their sequence ids, oldest first.
    pub frames: Vec<(u64, Frame)>,
    /// The client's numbering: next id, highest processed, highest acked.
    pub incoming: (u64, u64, u64),
    /// Per stream, the last entry that reached this session's outbox.
    pub positions: Vec<(String, String)>,
}

/// One frame's bytes, kept as binary by serializers that can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frame(pub Vec<u8>);

impl Serialize for Frame {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Frame, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Frame;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Frame, E> {
                Ok(Frame(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Frame, E> {
                Ok(Frame(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Frame, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Frame(out))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// Why a handoff or a takeover failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandoffError {
    /// The store (Redis) failed.
    #[error("session store: {0}")]
    Store(String),
    /// A snapshot could not be read back.
    #[error("session snapshot unreadable: {0}")]
    Corrupt(String),
    /// The missed events cannot be replayed whole.
    #[error("missed events cannot be replayed: {0}")]
    Gap(String),
}

/// Where snapshots wait for the instance a client resumes on.
pub(crate) trait SessionStore: Send + Sync {
    /// Keeps `snapshot` for `token` until taken, or until it expires.
    fn save<'a>(&'a self, token: &'a str, snapshot: &'a SessionSnapshot) -> BoxFuture<'a, Result<(), HandoffError>>;
    /// Takes the snapshot for `token`, if any: each is handed out once.
    fn take<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<SessionSnapshot>, HandoffError>>;
    /// Asks whichever instance holds `token`'s session to save it here
    /// ([`crate::hub::release`]): its client's socket dropped and the
    /// reconnect reached another instance.
    fn ask_release<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), HandoffError>>;
    /// Notes, for the asking instance, that this one holds `token`'s
    /// session and is saving it (so the asker waits for it).
    fn mark_releasing<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), HandoffError>>;
    /// Whether some instance noted it is saving `token`'s session.
    fn is_releasing<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, HandoffError>>;
}

/// Who a taken-over session is, for choosing the events it missed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addressee<'a> {
    /// Its hub.
    pub hub: HubId,
    /// Its user.
    pub user: Option<&'a str>,
    /// Its groups.
    pub groups: &'a [Box<str>],
    /// Its protocol.
    pub protocol: Protocol,
}

/// Reads again the events a session missed between two sets of positions.
pub(crate) trait CatchUp: Send + Sync {
    /// Whether this instance's fan-out has passed every position of `from`
    /// (else its live path would deliver some of them a second time).
    fn covers(&self, from: &[(String, String)], local: &Positions) -> bool;
    /// The frames of the events addressed to `who` after `from` up to `to`,
    /// in stream order.
    fn missed<'a>(
        &'a self,
        from: &'a [(String, String)],
        to: &'a Positions,
        who: Addressee<'a>,
    ) -> BoxFuture<'a, Result<Vec<Payload>, HandoffError>>;
}

/// The store and the reader a deployment with Redis has.
#[derive(Clone)]
pub(crate) struct Handoff {
    /// Where snapshots wait.
    pub store: Arc<dyn SessionStore>,
    /// Where missed events come from.
    pub catch_up: Arc<dyn CatchUp>,
}

/// How long a takeover waits for this instance's fan-out to pass the
/// snapshot's positions before refusing.
const COVER_WAIT: Duration = Duration::from_secs(2);

/// How long a resume with no snapshot waits for an instance to say it
/// holds the session: nobody saying so (the instance crashed, or the token
/// is unknown) answers the client at once, which then reconnects afresh, so
/// a stateful client is not left deaf while it looks Connected.
const RELEASE_ACK_WAIT: Duration = Duration::from_millis(200);
/// How long it waits for the snapshot once an instance said it holds the
/// session, and how often it looks.
const RELEASE_WAIT: Duration = Duration::from_secs(2);
const RELEASE_POLL: Duration = Duration::from_millis(20);

/// The snapshot for `token`: saved already (a drain), or asked for from
/// the instance still holding the session (a network drop whose reconnect
/// reached this instance) and waited for.
async fn take_or_ask(store: &dyn SessionStore, token: &str) -> Result<Option<SessionSnapshot>, HandoffError> {
    if let Some(snapshot) = store.take(token).await? {
        return Ok(Some(snapshot));
    }
    store.ask_release(token).await?;
    let asked = tokio::time::Instant::now();
    let mut held_elsewhere = false;
    while asked.elapsed() < RELEASE_WAIT {
        tokio::time::sleep(RELEASE_POLL).await;
        if let Some(snapshot) = store.take(token).await? {
            return Ok(Some(snapshot));
        }
        if !held_elsewhere && asked.elapsed() >= RELEASE_ACK_WAIT {
            held_elsewhere = store.is_releasing(token).await?;
            if !held_elsewhere {
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// Saves a stateful session taken out of fan-out with `groups` at
/// `positions`, and ends it here without telling anyone it left.
pub(super) async fn hand_off(hubs: &Hubs, session: HubSession, groups: Vec<Box<str>>, positions: Positions) {
    let Some(handoff) = &hubs.handoff else { return };
    let saved = match (session.token(), session.snapshot(&groups, &positions)) {
        (Some(token), Some(snapshot)) => handoff.store.save(token, &snapshot).await.map(|()| HandoffOutcome::Saved),
        _ => Ok(HandoffOutcome::Unresumable),
    };
    let outcome = match saved {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::warn!(connection_id = %session.connection_id, error = %e, "stateful session not handed off: its client reconnects afresh");
            HandoffOutcome::SaveFailed
        }
    };
    hubs.metrics.session_handoffs.get(outcome).inc();
    session.finish_handed_off(&groups).await;
}

/// Takes over the session saved for `token` on `hub` for a client that
/// resumed here, with the events it missed queued before the live ones.
/// `None` (the caller answers 404) when there is none, or it cannot be
/// carried on whole.
///
/// The takeover runs in a task of `tasks`, not in the caller's future: it
/// puts the session in the registry and then awaits Redis, and the caller
/// is an HTTP request that hyper drops when its client goes away. Dropped
/// there, the session stayed registered with nobody to end it (its groups,
/// its token and a connection counted for the life of the process). A
/// session nobody is left to take is kept as a dropped socket's session is
/// ([`abandoned`]), whether the request went away before the session was
/// sent or after ([`Awaiting`]).
pub(crate) async fn take_over(
    hubs: &Arc<Hubs>,
    tasks: &tokio_util::task::TaskTracker,
    token: &str,
    hub: HubId,
    identity: &Identity,
) -> Option<HubSession> {
    hubs.handoff.as_ref()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut waiting = Awaiting { rx: Some(rx), hubs: hubs.clone(), tasks: tasks.clone(), token: token.to_string() };
    let (hubs, token, identity) = (hubs.clone(), token.to_string(), identity.clone());
    tasks.spawn(async move {
        let Some(session) = take_over_here(&hubs, &token, hub, &identity).await else { return };
        if let Err(session) = tx.send(session) {
            abandoned(&hubs, session, token).await;
        }
    });
    let session = waiting.rx.as_mut()?.await.ok();
    waiting.rx = None;
    session
}

/// The resume's end of a takeover, until it has the session. A request
/// dropped after the takeover's task sent the session but before the
/// request was polled again (its client's EOF and the send in the same
/// instant) would drop the session with the channel: registered, in its
/// groups, its token adopted, with nobody to end it. Dropped, this closes
/// the channel (a later send fails, and the task keeps the session) and
/// gives a session already sent to [`abandoned`], on a task of `tasks`.
struct Awaiting {
    /// Taken once the session (or the takeover's failure) was received.
    rx: Option<tokio::sync::oneshot::Receiver<HubSession>>,
    hubs: Arc<Hubs>,
    tasks: tokio_util::task::TaskTracker,
    token: String,
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        rx.close();
        let Ok(session) = rx.try_recv() else { return };
        // Outside a runtime the process is exiting: nothing is left to keep.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (hubs, token) = (self.hubs.clone(), std::mem::take(&mut self.token));
        self.tasks.spawn(async move { abandoned(&hubs, session, token).await });
    }
}

/// A session taken for a resume (from this instance's parked sessions or
/// over from another instance) whose request went away before its
/// transport ran: during the takeover, or in the upgrade after the 101.
/// Handed off if the drain told it to go, else parked for its client's
/// next resume as a session whose socket dropped is, else ended.
pub(crate) async fn abandoned(hubs: &Arc<Hubs>, session: HubSession, token: String) {
    tracing::debug!(connection_id = %session.connection_id, "the resume went away during its takeover: the session waits for the next");
    if session.outbox().kicked() == Some(crate::transport::Kick::Handoff) {
        hand_off_at_cut(hubs, session).await;
    } else if session.can_resume() {
        hubs.parked.park(token, session);
    } else {
        session.finish(crate::transport::Ended::ByClient).await;
    }
}

/// [`take_over`] in the task that runs it.
async fn take_over_here(hubs: &Arc<Hubs>, token: &str, hub: HubId, identity: &Identity) -> Option<HubSession> {
    let handoff = hubs.handoff.clone()?;
    let _under_way = hubs.takeovers.begin();
    let count = |outcome: HandoffOutcome| hubs.metrics.session_handoffs.get(outcome).inc();
    let snapshot = match take_or_ask(&*handoff.store, token).await {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "session store unavailable: resume refused");
            return None;
        }
    };
    if snapshot.hub != hubs.routes.hubs[hub].name || snapshot.user_id.as_deref() != identity.user_id.as_deref() {
        tracing::debug!(connection_id = %snapshot.connection_id, "resume refused: another hub or user");
        count(HandoffOutcome::Refused);
        // Put back for its own client: a wrong hub path or another user's
        // token must not cost the session (on one instance it stays parked).
        if let Err(e) = handoff.store.save(token, &snapshot).await {
            tracing::warn!(error = %e, connection_id = %snapshot.connection_id, "a refused resume's session could not be put back");
        }
        return None;
    }
    let waited = tokio::time::Instant::now();
    while !handoff.catch_up.covers(&snapshot.positions, &hubs.registry.positions()) {
        if waited.elapsed() > COVER_WAIT {
            tracing::warn!(connection_id = %snapshot.connection_id, "resume refused: this instance's reader is behind the session's");
            count(HandoffOutcome::Refused);
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (session, groups, added) = restore_at_cut(hubs, hub, token, identity, Arc::new(snapshot.clone()))
        .await
        .or_else(|| HubSession::restore(hubs.clone(), hub, token.to_string(), identity.clone(), &snapshot))?;
    let who = Addressee { hub, user: identity.user_id.as_deref(), groups: &groups, protocol: session.protocol()? };
    match handoff.catch_up.missed(&snapshot.positions, &added.positions, who).await {
        Ok(frames) => {
            tracing::debug!(connection_id = %snapshot.connection_id, missed = frames.len(), "stateful session taken over");
            session.outbox().prepend(frames);
            session.rejoin_presence(&groups).await;
            count(HandoffOutcome::Resumed);
            if added.after_drain {
                hand_on(hubs, &session).await;
            }
            Some(session)
        }
        Err(e) => {
            tracing::info!(connection_id = %snapshot.connection_id, error = %e, "resume refused: the client reconnects afresh");
            count(HandoffOutcome::Refused);
            session.finish_handed_off(&groups).await;
            None
        }
    }
}

/// Hands off a session kicked for a handoff at the cut that took it out
/// of fan-out (taken out now if none was recorded).
pub(super) async fn hand_off_at_cut(hubs: &Hubs, session: HubSession) {
    let (groups, positions) = hubs.take_handing_off(session.conn()).unwrap_or_else(|| session.detach());
    hand_off(hubs, session, groups, positions).await;
}

/// Hands off the parked sessions a drain told to go: their socket dropped
/// (they parked) after the drain began and before their turn came, so no
/// transport was left to see the kick and hand them off. They waited,
/// out of fan-out at the kick's cut, for a client that resumes elsewhere
/// and was refused there (404: told, but the session lost), and kept the
/// drain waiting until its deadline.
pub(super) async fn hand_off_parked_kicked(hubs: &Hubs) {
    for session in hubs.parked.take_kicked(crate::transport::Kick::Handoff) {
        hand_off_at_cut(hubs, session).await;
    }
}

/// A session taken over while this instance drains, after the drain
/// listed the connections it hands off: handed off again as the drain does
/// (out of fan-out at a cut, then its transport ends without a Close and
/// saves it), so the client resumes once more on another instance with
/// everything owed, instead of being served here, unclosed, until the
/// shutdown deadline and then cut off.
async fn hand_on(hubs: &Arc<Hubs>, session: &HubSession) {
    tracing::debug!(connection_id = %session.connection_id, "stateful session taken over during the drain: handed on");
    let conn = session.conn();
    if let Some(cut) = detach_at_cut(hubs, vec![conn]).await.pop() {
        hubs.handing_off.locked().insert(conn, cut);
    }
    session.outbox().kick(crate::transport::Kick::Handoff);
}

/// Registers a taken-over session in the pipeline's task, after this
/// instance's held batches that would reach it (its groups, its user, the
/// hub's `*`) went out to the others: the draining instance flushed those
/// events into the snapshot already, so they must not reach it live again.
/// `None` when there is no pipeline to ask (unit tests) or it has stopped,
/// or the snapshot cannot be restored.
async fn restore_at_cut(
    hubs: &Arc<Hubs>,
    hub: HubId,
    token: &str,
    identity: &Identity,
    snapshot: Arc<SessionSnapshot>,
) -> Option<(HubSession, Vec<Box<str>>, crate::fanout::Added)> {
    let cuts = hubs.cuts.clone()?;
    let mut rooms: Vec<(usize, String)> = snapshot.groups.iter().map(|g| (hub, g.clone())).collect();
    rooms.push((hub, "*".to_string()));
    if let Some(user) = &identity.user_id {
        rooms.push((hub, format!("user:{user}")));
    }
    let (hubs, token, identity) = (hubs.clone(), token.to_string(), identity.clone());
    cuts.at_cut_of(rooms, move || HubSession::restore(hubs, hub, token, identity, &snapshot)).await.flatten()
}

impl crate::fault::Blame for HandoffError {
    fn fault(&self) -> crate::fault::Fault {
        match self {
            HandoffError::Store(_) | HandoffError::Gap(_) => crate::fault::Fault::Redis,
            HandoffError::Corrupt(_) => crate::fault::Fault::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            HandoffError::Store(_) => "store",
            HandoffError::Gap(_) => "gap",
            HandoffError::Corrupt(_) => "corrupt",
        }
    }
}

/// Takes the connections `ids` out of fan-out in the pipeline's task, after
/// every batch held back went out (to them among others): their cut then
/// passes no event they did not get. Directly when there is no pipeline
/// (unit tests) or it has stopped.
pub(super) async fn detach_at_cut(hubs: &Hubs, ids: Vec<u64>) -> Vec<super::server::Cut> {
    let detach = {
        let registry = hubs.registry.clone();
        let ids = ids.clone();
        move || ids.iter().map(|id| registry.detach(*id)).collect::<Vec<_>>()
    };
    if let Some(cuts) = &hubs.cuts {
        if let Some(done) = cuts.at_cut_of_everything(detach).await {
            return done;
        }
    }
    ids.iter().map(|id| hubs.registry.detach(*id)).collect()
}

#[cfg(test)]
mod tests;
