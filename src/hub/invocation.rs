//! Server methods named in the routing file: what each action does with a
//! client's invocation.

use serde_json::{Map, Value};

use crate::codec::Invocation;
use crate::config::Action;
use crate::envelope::Envelope;
use crate::fanout::JoinError;

use super::caller::Caller;
use super::{Error, Hubs};

/// Longest group name a client may join.
const MAX_GROUP_LEN: usize = 512;
/// What [`valid_group`] asks of a group name, for the Completion's error.
const GROUP_RULE: &str = "a non-empty group name of at most 512 characters, not \"*\" and not starting with \"user:\"";

impl Hubs {
    /// Runs one invocation of `caller`; the result becomes the Completion.
    pub(super) async fn invoke(&self, caller: &Caller<'_>, inv: &Invocation) -> Result<Value, Error> {
        let (hubs, Caller { hub, conn, identity, .. }) = (self, *caller);
        let method = hub.method(&inv.target).ok_or_else(|| Error::UnknownMethod(inv.target.clone()))?;
        if !inv.stream_ids.is_empty() {
            return Err(Error::StreamingUnsupported(inv.stream_ids.len()));
        }
        match method.action {
            Action::Join => {
                let (group, last) = match method.history {
                    true => super::missed::arguments(&method.name, &inv.arguments, valid_group, GROUP_RULE)?,
                    false => (group_arg(&method.name, &inv.arguments)?, None),
                };
                hubs.authorizer.check(&method.authorize, identity, &hub.name, group).await?;
                // A history join answers {recovered, position}; a plain one null.
                let joined = match method.history {
                    true => super::missed::join(hubs, hub, conn, group, last).await,
                    false => hubs.registry.join(conn, group).map(|j| (j, Value::Null)),
                };
                match joined {
                    Ok((true, answer)) if caller.in_presence() => {
                        let member = caller.member(group);
                        let username = identity.name.as_deref().unwrap_or(&member.user_id).to_string();
                        match hubs.presence.join(&member, &username).await {
                            Ok(t) => hubs.publish_presence(t).await,
                            Err(e) => tracing::warn!(error = %e, room = group, "presence not recorded"),
                        }
                        Ok(answer)
                    }
                    Ok((_, answer)) => Ok(answer),
                    Err(e @ JoinError::TooManyGroups(_)) => Err(Error::Denied(e.to_string())),
                    Err(JoinError::Closed) => Err(Error::Denied("the connection is closed".into())),
                }
            }
            Action::Leave => {
                let group = group_arg(&method.name, &inv.arguments)?;
                if hubs.registry.leave(conn, group) && caller.in_presence() {
                    match hubs.presence.leave(&caller.member(group)).await {
                        Ok(t) => hubs.publish_presence(t).await,
                        Err(e) => tracing::warn!(error = %e, room = group, "presence not updated"),
                    }
                }
                Ok(Value::Null)
            }
            Action::Typing => {
                let (room, typing) = match inv.arguments.as_slice() {
                    [Value::String(room), Value::Bool(typing)] if valid_group(room) => (room, *typing),
                    _ => {
                        return Err(Error::BadArguments(format!(
                            "{} expects (roomId: string, isTyping: boolean), roomId {GROUP_RULE}",
                            method.name
                        )))
                    }
                };
                hubs.may_use_room(caller, room).await?;
                let user_id = caller.user_or_connection();
                let username = identity.name.as_deref().unwrap_or(user_id);
                // These fields are config::TYPING_PAYLOAD_FIELDS: the routing
                // file's `arguments` for typing routes are checked against them.
                let mut payload = Map::new();
                payload.insert("user_id".into(), user_id.into());
                payload.insert("username".into(), username.into());
                payload.insert("is_typing".into(), typing.into());
                let mut metadata = Map::new();
                metadata.insert("source_instance".into(), hubs.settings.instance_id.clone().into());
                let (start, stop) = &method.typing_events;
                let envelope = Envelope {
                    event_id: uuid::Uuid::new_v4().to_string(),
                    event_type: if typing { start.clone() } else { stop.clone() },
                    timestamp: chrono::Utc::now(),
                    room_id: room.clone(),
                    payload: payload.into(),
                    metadata: Some(metadata),
                };
                hubs.publisher.publish(envelope).await?;
                Ok(Value::Null)
            }
            Action::GetPresence => {
                let room = group_arg(&method.name, &inv.arguments)?;
                hubs.may_use_room(caller, room).await?;
                let users = hubs.presence.users(hub.id, room).await?;
                Ok(serde_json::json!({"room_id": room, "count": users.len(), "users": users}))
            }
            Action::SetPresence => {
                let state = match inv.arguments.as_slice() {
                    [Value::String(s)] if s == "online" || s == "away" => s.as_str(),
                    _ => {
                        return Err(Error::BadArguments(format!(
                            "{} expects one argument: \"online\" or \"away\"",
                            method.name
                        )))
                    }
                };
                let user = caller.user_or_connection();
                if hubs.activity.tracks_away(hub.id) {
                    return super::activity::set_presence(hubs, hub.id, conn, user, state).await;
                }
                for room in hubs.registry.groups_of(conn) {
                    hubs.presence.set_state(hub.id, &room, user, state).await?;
                }
                Ok(Value::Null)
            }
            Action::RegisterPush | Action::UnregisterPush | Action::PushPublicKey => {
                let push = hubs.push.as_ref().ok_or(crate::push::Error::NotConfigured)?;
                Ok(push.invoke(method.action, &method.name, identity.user_id.as_deref(), &inv.arguments).await?)
            }
        }
    }
}

impl Hubs {
    /// Typing into a room and asking who is in it take what joining it
    /// takes (CONTRACT section 7: joining a group is authorized by a
    /// policy): being in it already, or a join method of the hub whose
    /// policy would let the caller in. Otherwise a refused join would still
    /// reach the room's members with typing, and list them.
    async fn may_use_room(&self, caller: &Caller<'_>, room: &str) -> Result<(), Error> {
        if self.registry.in_group(caller.conn, room) {
            return Ok(());
        }
        let mut refused = Error::Denied(format!("Not authorized for '{room}': the hub has no method to join it"));
        for join in caller.hub.methods().filter(|m| m.action == Action::Join) {
            match self.authorizer.check(&join.authorize, caller.identity, &caller.hub.name, room).await {
                Ok(()) => return Ok(()),
                Err(e) => refused = e,
            }
        }
        Err(refused)
    }
}

/// A group a client may name. `*` and `user:<id>` are not groups but the
/// other targets of an event's `room_id` (CONTRACT section 3): joining one
/// would add nothing live, but a history join would replay another user's
/// events (or every broadcast), and typing into one would reach that user's
/// (or every) connection.
fn valid_group(g: &str) -> bool {
    !g.is_empty() && g.len() <= MAX_GROUP_LEN && g != "*" && !g.starts_with("user:")
}

fn group_arg<'a>(method: &str, args: &'a [Value]) -> Result<&'a str, Error> {
    match args {
        [Value::String(g)] if valid_group(g) => Ok(g),
        _ => Err(Error::BadArguments(format!("{method} expects one argument: {GROUP_RULE}"))),
    }
}
