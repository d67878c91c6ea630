//! The routing file: hubs, the server methods clients may call, and which
//! event goes to which client method. Data, not code (CONTRACT section 3).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::arguments::{
    ArgumentSource, Arguments, FieldPath, PARTICIPANT_COUNT_PAYLOAD_FIELDS, PRESENCE_PAYLOAD_FIELDS,
    TYPING_PAYLOAD_FIELDS,
};
use super::hub_options::{self, HubFacts, HubKeys, HubOptions};

/// The event type of the participant counts the sidecar publishes on a
/// presence hub that routes it (CONTRACT section 15).
pub const PARTICIPANT_COUNT_EVENT: &str = "participant_count";

/// Index of a hub in [`RouteTable::hubs`]; cheap to copy into every connection.
pub type HubId = usize;

/// A routing file that cannot be used, with the line at fault.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape, or a rule is broken.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the offending item.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// What a server method does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Add the connection to the group named by the first argument.
    Join,
    /// Remove the connection from that group.
    Leave,
    /// Publish a typing event for the caller: `(room, isTyping)`.
    Typing,
    /// Return who is present in a room.
    GetPresence,
    /// Set the caller's presence state.
    SetPresence,
    /// Keep the caller's browser `PushSubscription` for Web Push (FR-009).
    RegisterPush,
    /// Forget one of the caller's push subscriptions, by endpoint.
    UnregisterPush,
    /// Return the VAPID public key browsers subscribe with.
    PushPublicKey,
}

/// Who may join a group through a `join` method (CONTRACT section 7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Authorize {
    /// Any connected (authenticated, when auth is on) user.
    #[default]
    Open,
    /// The token lists the rooms (`claim`), or holds one of `roles` in
    /// `roles_claim`, which may join any room.
    Claim {
        /// Claim listing allowed rooms (array, or space/comma-separated text).
        claim: String,
        /// Claim listing the user's roles.
        roles_claim: String,
        /// Roles that may join any room.
        roles: Vec<String>,
    },
    /// Ask the backend: POST `url` with the user and room; 2xx allows.
    Webhook {
        /// `http://host:port/path` (the backend beside the sidecar).
        url: String,
        /// How long an answer is reused for the same user and room.
        cache: std::time::Duration,
        /// No answer within this denies.
        timeout: std::time::Duration,
    },
}

/// `authorize = "open"`, or a table naming a policy.
#[derive(Deserialize)]
#[serde(untagged)]
enum FileAuthorize {
    Name(String),
    Table(FileAuthorizeTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuthorizeTable {
    policy: String,
    claim: Option<String>,
    roles_claim: Option<String>,
    roles: Option<Vec<String>>,
    url: Option<String>,
    cache_seconds: Option<u64>,
    timeout_ms: Option<u64>,
}

impl FileAuthorize {
    fn into_policy(self) -> Result<Authorize, String> {
        let t = match self {
            FileAuthorize::Name(n) if n == "open" => return Ok(Authorize::Open),
            FileAuthorize::Name(n) if n == "claim" => FileAuthorizeTable {
                policy: n,
                claim: None,
                roles_claim: None,
                roles: None,
                url: None,
                cache_seconds: None,
                timeout_ms: None,
            },
            FileAuthorize::Name(n) => {
                return Err(format!("authorize '{n}' must be open, claim, or a table with policy = \"webhook\""))
            }
            FileAuthorize::Table(t) => t,
        };
        match t.policy.as_str() {
            "open" => Ok(Authorize::Open),
            "claim" => Ok(Authorize::Claim {
                claim: t.claim.unwrap_or_else(|| "rooms".into()),
                roles_claim: t.roles_claim.unwrap_or_else(|| "roles".into()),
                roles: t.roles.unwrap_or_default(),
            }),
            "webhook" => {
                let url = t.url.ok_or("authorize webhook needs url")?;
                if !url.strip_prefix("http://").is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/')) {
                    return Err(format!(
                        "authorize webhook url '{url}' must be an http:// URL (the backend beside the sidecar)"
                    ));
                }
                Ok(Authorize::Webhook {
                    url,
                    cache: std::time::Duration::from_secs(t.cache_seconds.unwrap_or(60)),
                    timeout: std::time::Duration::from_millis(t.timeout_ms.unwrap_or(2000)),
                })
            }
            other => Err(format!("authorize policy '{other}' must be open, claim or webhook")),
        }
    }
}

/// How an event type is delivered (CONTRACT section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Never batched or delayed.
    Immediate,
    /// Coalesced per (room, user) in a short window.
    Coalesce,
    /// Bursts batched per room (seed 003 FR-005): the first event at once,
    /// the events of the next window as one invocation carrying a list.
    Batch,
    /// The route's events feed a per-room typing roster (seed 003 FR-019):
    /// clients get who is typing in the room, not each typing event.
    Roster,
}

/// One server method of a hub.
#[derive(Debug, Clone)]
pub struct MethodDef {
    /// The name clients invoke (matched without regard to case, as ASP.NET does).
    pub name: String,
    /// What it does.
    pub action: Action,
    /// Who may join, for `join`.
    pub authorize: Authorize,
    /// For `typing`: the event types published for true and false.
    pub typing_events: (String, String),
    /// For `join`: the call may name the last position seen,
    /// `(roomId, lastPosition)`, and gets the events it missed (CONTRACT 15).
    pub history: bool,
}

/// One hub.
#[derive(Debug, Clone)]
pub struct HubDef {
    /// Its index.
    pub id: HubId,
    /// A short name routes refer to.
    pub name: String,
    /// The URL path clients connect to, e.g. `/hubs/chat`.
    pub path: String,
    /// Whether joins on this hub are presence (CONTRACT section 11).
    pub presence: bool,
    /// History, inactivity and away settings (CONTRACT section 15).
    pub options: HubOptions,
    methods: HashMap<String, MethodDef>,
}

impl HubDef {
    /// The (start, stop) event types of this hub's `typing` methods.
    pub fn typing_events(&self) -> impl Iterator<Item = (&String, &String)> {
        self.methods.values().filter(|m| m.action == Action::Typing).map(|m| (&m.typing_events.0, &m.typing_events.1))
    }

    /// Every server method of this hub.
    pub fn methods(&self) -> impl Iterator<Item = &MethodDef> {
        self.methods.values()
    }

    /// The method a client invoked, looked up without regard to case.
    pub fn method(&self, name: &str) -> Option<&MethodDef> {
        self.methods.get(&name.to_ascii_lowercase())
    }
}

/// Where one event type goes.
#[derive(Debug, Clone)]
pub struct EventRoute {
    /// The event type.
    pub event_type: String,
    /// The hub whose connections receive it.
    pub hub: HubId,
    /// The client method invoked.
    pub method: String,
    /// The stream it is published to by the sidecar itself.
    pub stream: String,
    /// Immediate or coalesced.
    pub delivery: Delivery,
    /// What the client method receives, position by position (`[payload]` by default).
    pub arguments: Arguments,
    /// Events to `user:<id>` also go by Web Push to a user with no live
    /// connection on any instance (`push = true`, FR-009).
    pub push: bool,
    /// `ends_typing`: the payload field naming a user whose typing (indicator
    /// and roster) this event ends in its room, e.g. a posted response's author.
    pub ends_typing: Option<FieldPath>,
}

/// The loaded, validated routing table.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Every hub, indexed by [`HubId`].
    pub hubs: Vec<HubDef>,
    routes: HashMap<String, EventRoute, ahash::RandomState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    hub: Vec<Spanned<FileHub>>,
    #[serde(default)]
    route: Vec<Spanned<FileRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHub {
    name: String,
    path: String,
    #[serde(default)]
    presence: bool,
    history_seconds: Option<u64>,
    inactivity_timeout_seconds: Option<u64>,
    away_after_seconds: Option<u64>,
    #[serde(default)]
    method: Vec<Spanned<FileMethod>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMethod {
    name: String,
    action: Action,
    authorize: Option<FileAuthorize>,
    start_event: Option<String>,
    stop_event: Option<String>,
    #[serde(default)]
    history: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    event_type: String,
    hub: String,
    method: String,
    stream: String,
    delivery: Delivery,
    arguments: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    push: bool,
    ends_typing: Option<Spanned<String>>,
}

impl RouteTable {
    /// Reads and validates a routing file.
    pub fn load(path: &Path) -> Result<RouteTable, RouteError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| RouteError::Read { path: path.display().to_string(), source })?;
        RouteTable::parse(&path.display().to_string(), &text)
    }

    /// Parses routing TOML; `path` only names the file in errors.
    pub fn parse(path: &str, text: &str) -> Result<RouteTable, RouteError> {
        let invalid = |offset: usize, message: String| RouteError::Invalid {
            path: path.to_string(),
            line: text[..offset.min(text.len())].matches('\n').count() + 1,
            message,
        };
        let doc: FileDoc = toml::from_str(text)
            .map_err(|e| invalid(e.span().map(|s| s.start).unwrap_or(0), e.message().to_string()))?;

        let mut hubs: Vec<HubDef> = Vec::new();
        let mut hub_keys = Vec::new();
        for spanned in doc.hub {
            let at = spanned.span().start;
            let h = spanned.into_inner();
            if !h.path.starts_with('/') || h.path.ends_with('/') || h.path.contains(['?', '#']) {
                return Err(invalid(
                    at,
                    format!("hub '{}': path '{}' must start with / and not end with /", h.name, h.path),
                ));
            }
            if hubs.iter().any(|o| o.name == h.name || o.path.eq_ignore_ascii_case(&h.path)) {
                return Err(invalid(at, format!("hub '{}' ({}) is defined twice", h.name, h.path)));
            }
            let mut methods = HashMap::new();
            for m in h.method {
                let at = m.span().start;
                let m = m.into_inner();
                let key = m.name.to_ascii_lowercase();
                if m.action != Action::Typing && (m.start_event.is_some() || m.stop_event.is_some()) {
                    return Err(invalid(
                        at,
                        format!("method '{}': start_event and stop_event belong to action \"typing\"", m.name),
                    ));
                }
                if m.action != Action::Join && m.authorize.is_some() {
                    return Err(invalid(at, format!("method '{}': authorize belongs to action \"join\"", m.name)));
                }
                let authorize = match m.authorize {
                    Some(a) => a.into_policy().map_err(|e| invalid(at, format!("method '{}': {e}", m.name)))?,
                    None => Authorize::Open,
                };
                let def = MethodDef {
                    typing_events: (
                        m.start_event.unwrap_or_else(|| "typing_start".into()),
                        m.stop_event.unwrap_or_else(|| "typing_stop".into()),
                    ),
                    name: m.name,
                    action: m.action,
                    authorize,
                    history: m.history,
                };
                if methods.insert(key, def).is_some() {
                    return Err(invalid(at, format!("hub '{}': a method is defined twice", h.name)));
                }
            }
            hub_keys.push((
                at,
                HubKeys {
                    history_seconds: h.history_seconds,
                    inactivity_timeout_seconds: h.inactivity_timeout_seconds,
                    away_after_seconds: h.away_after_seconds,
                },
            ));
            hubs.push(HubDef {
                id: hubs.len(),
                name: h.name,
                path: h.path,
                presence: h.presence,
                options: HubOptions::default(),
                methods,
            });
        }
        if hubs.is_empty() {
            return Err(invalid(0, "the file defines no [[hub]]".into()));
        }

        let mut routes = HashMap::default();
        let mut route_at = HashMap::new();
        for spanned in doc.route {
            let at = spanned.span().start;
            let r = spanned.into_inner();
            let hub = hubs
                .iter()
                .find(|h| h.name == r.hub)
                .ok_or_else(|| invalid(at, format!("route '{}': no hub named '{}'", r.event_type, r.hub)))?
                .id;
            if r.method.is_empty() || r.stream.is_empty() {
                return Err(invalid(at, format!("route '{}': method and stream must not be empty", r.event_type)));
            }
            let arguments = match r.arguments {
                None => Arguments::default(),
                Some(list) => Arguments::new(
                    list.into_iter()
                        .enumerate()
                        .map(|(i, a)| {
                            let at = a.span().start;
                            ArgumentSource::parse(a.get_ref())
                                .map_err(|e| invalid(at, format!("route '{}': argument {}: {e}", r.event_type, i + 1)))
                        })
                        .collect::<Result<_, _>>()?,
                ),
            };
            let ends_typing = match r.ends_typing {
                None => None,
                Some(f) => Some(
                    rules::ends_typing(f.get_ref())
                        .map_err(|e| invalid(f.span().start, format!("route '{}': {e}", r.event_type)))?,
                ),
            };
            route_at.insert(r.event_type.clone(), at);
            let route = EventRoute {
                hub,
                event_type: r.event_type.clone(),
                method: r.method,
                stream: r.stream,
                delivery: r.delivery,
                arguments,
                push: r.push,
                ends_typing,
            };
            if routes.insert(r.event_type.clone(), route).is_some() {
                return Err(invalid(at, format!("route '{}' is defined twice", r.event_type)));
            }
        }
        // The events the sidecar makes itself must fit their route's
        // arguments too, or their client method would change signature
        // with the producer (or they would never be delivered).
        // A roster route's client method receives the roster, whatever the event.
        let own_payload = |ev: &str, fields: &[&str]| match routes.get(ev) {
            // (checked against the roster's fields by `rules::check`).
            Some(r) if r.delivery == Delivery::Roster => Ok(()),
            Some(r) => r
                .arguments
                .fit_own_payload(fields)
                .map_err(|e| invalid(route_at.get(ev).copied().unwrap_or(0), format!("route '{ev}': {e}"))),
            None => Ok(()),
        };
        for hub in &hubs {
            for m in hub.methods.values().filter(|m| m.action == Action::Typing) {
                for ev in [&m.typing_events.0, &m.typing_events.1] {
                    if routes.get(ev).map(|r: &EventRoute| r.hub) != Some(hub.id) {
                        return Err(invalid(
                            0,
                            format!(
                                "hub '{}': method '{}' publishes '{ev}', which has no route to this hub",
                                hub.name, m.name
                            ),
                        ));
                    }
                    own_payload(ev, &TYPING_PAYLOAD_FIELDS)?;
                }
            }
            for ev in ["user_joined", "user_left"] {
                if hub.presence && routes.get(ev).is_some_and(|r| r.hub == hub.id) {
                    own_payload(ev, &PRESENCE_PAYLOAD_FIELDS)?;
                }
            }
            if hub.presence && routes.get(PARTICIPANT_COUNT_EVENT).is_some_and(|r| r.hub == hub.id) {
                own_payload(PARTICIPANT_COUNT_EVENT, &PARTICIPANT_COUNT_PAYLOAD_FIELDS)?;
            }
        }
        for (hub, (at, keys)) in hubs.iter_mut().zip(hub_keys) {
            let facts = HubFacts {
                name: &hub.name,
                presence: hub.presence,
                position_routes: routes
                    .values()
                    .filter(|r| r.hub == hub.id && r.arguments.has_position())
                    .map(|r| {
                        let kept = matches!(r.delivery, Delivery::Immediate | Delivery::Batch);
                        (r.event_type.as_str(), kept, r.stream.as_str())
                    })
                    .collect(),
                history_methods: hub
                    .methods
                    .values()
                    .filter(|m| m.history)
                    .map(|m| (m.name.as_str(), m.action == Action::Join))
                    .collect(),
            };
            let options = hub_options::resolve(&facts, keys).map_err(|e| invalid(at, e))?;
            hub.options = options;
        }
        rules::check(&routes, |ev| route_at.get(ev).copied().unwrap_or(0)).map_err(|(at, e)| invalid(at, e))?;
        Ok(RouteTable { hubs, routes })
    }

    /// The route of an event type.
    pub fn route(&self, event_type: &str) -> Option<&EventRoute> {
        self.routes.get(event_type)
    }

    /// The routes whose events the sidecar itself appends to `stream` (so
    /// the hubs that stream feeds).
    pub fn routes_from_stream<'a>(&'a self, stream: &'a str) -> impl Iterator<Item = &'a EventRoute> + 'a {
        self.routes.values().filter(move |r| r.stream == stream)
    }

    /// The hub served at a URL path. As ASP.NET Core's endpoint routing
    /// matches it: ignoring one trailing `/` (a client built with
    /// `withUrl(".../hubs/chat/")` connects to `/hubs/chat/?id=`) and the
    /// case of the letters.
    pub fn hub_by_path(&self, path: &str) -> Option<&HubDef> {
        let path = path.strip_suffix('/').unwrap_or(path);
        self.hubs.iter().find(|h| h.path.eq_ignore_ascii_case(path))
    }

    /// Every route.
    pub fn routes(&self) -> impl Iterator<Item = &EventRoute> {
        self.routes.values()
    }
}

mod rules;
#[cfg(test)]
mod tests;
