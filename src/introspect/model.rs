//! What instances ask each other and answer (JSON over Redis pub/sub), and
//! the responses of the API. The response shapes are described, field by
//! field, in `protocol/admin-openapi.yaml`; change both together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A question every instance answers from its own memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Query {
    /// Only the instance's own summary.
    Instance,
    /// A page of a hub's rooms.
    Rooms {
        /// Hub name.
        hub: String,
        /// Only rooms whose names start with this.
        prefix: String,
        /// Only rooms whose names sort after this.
        after: Option<String>,
        /// At most this many.
        limit: usize,
    },
    /// A page of one room's members.
    Members {
        /// Hub name.
        hub: String,
        /// Room (group) name.
        room: String,
        /// Only connections whose ids (32 hex digits) sort after this.
        after: Option<String>,
        /// At most this many.
        limit: usize,
    },
    /// Every connection of one user.
    User {
        /// The user id (`sub`).
        user: String,
    },
}

/// Where an instance is in its life, as `/readyz` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum InstanceState {
    /// Binding, ensuring consumer groups.
    Starting,
    /// Serving: `/readyz` answers 200.
    Ready,
    /// Running but Redis is unreachable: `/readyz` answers 503.
    Unready,
    /// Shutting down: telling clients to reconnect elsewhere.
    Draining,
}

/// How far one instance's reader is behind in one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamLag {
    /// Stream name.
    pub stream: String,
    /// Entries in the stream not yet read by this instance's group
    /// (`XINFO GROUPS` lag); null until first read, or when Redis cannot tell.
    pub lag: Option<i64>,
    /// Entries read but not yet acknowledged.
    pub pending: Option<i64>,
}

/// One instance's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstanceInfo {
    /// `SIDECAR_INSTANCE_ID`.
    pub instance: String,
    /// The sidecar's version.
    pub version: String,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// Seconds since it started.
    pub uptime_seconds: u64,
    /// Ready, starting, unready or draining.
    pub state: InstanceState,
    /// Open connections.
    pub connections: usize,
    /// Open connections per hub name.
    pub hubs: BTreeMap<String, usize>,
    /// Reader lag per stream (empty on the in-process bus).
    pub streams: Vec<StreamLag>,
}

/// A room and how many connections are in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RoomCount {
    /// Room (group) name.
    pub name: String,
    /// Connections in it.
    pub connections: usize,
}

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    /// The SignalR connection id.
    pub connection_id: String,
    /// The user (`sub`), null without authentication.
    pub user: Option<String>,
    /// The instance holding it.
    pub instance: String,
    /// `websockets`, `serversentevents` or `longpolling`.
    pub transport: String,
    /// When it connected to that instance (RFC 3339, UTC).
    pub since: String,
}

/// One connection of a user, with its rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserConnection {
    /// The SignalR connection id.
    pub connection_id: String,
    /// Hub name.
    pub hub: String,
    /// The instance holding it.
    pub instance: String,
    /// `websockets`, `serversentevents` or `longpolling`.
    pub transport: String,
    /// When it connected to that instance (RFC 3339, UTC).
    pub since: String,
    /// The rooms it is in, sorted.
    pub rooms: Vec<String>,
}

/// What one instance answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Answer {
    /// Its summary (every answer carries it: a user's connections come
    /// with how far behind their instances are).
    pub instance: InstanceInfo,
    /// The answer to the question.
    pub body: AnswerBody,
}

/// The part of an [`Answer`] that depends on the question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum AnswerBody {
    /// For [`Query::Instance`].
    Instance,
    /// For [`Query::Rooms`].
    Rooms {
        /// In name order.
        rooms: Vec<RoomCount>,
        /// More rooms after the last one on this instance.
        more: bool,
    },
    /// For [`Query::Members`].
    Members {
        /// Connections in the room on this instance.
        total: usize,
        /// In connection-id order.
        members: Vec<Member>,
        /// More members after the last one on this instance.
        more: bool,
    },
    /// For [`Query::User`].
    User {
        /// In connection-id order.
        connections: Vec<UserConnection>,
    },
}

/// A question on the wire: the asker's id, so no instance answers itself
/// twice, and where to answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QueryMessage {
    /// Matches the replies to the question.
    pub id: String,
    /// The asking instance.
    pub from: String,
    /// Channel to PUBLISH the answer on.
    pub reply_to: String,
    /// The question.
    pub query: Query,
}

/// An answer on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReplyMessage {
    /// The question's id.
    pub id: String,
    /// The answer.
    pub answer: Answer,
}

/// Who answered a question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cluster {
    /// The instance that was asked.
    pub asked: String,
    /// Instances whose answers are in the response, sorted.
    pub answered: Vec<String>,
    /// Live instances (heartbeat within the last seconds) that did not
    /// answer before the deadline: the response lacks their part.
    pub missing: Vec<String>,
    /// Why other instances could not be asked (Redis unreachable), if so.
    pub error: Option<String>,
    /// Time from the question to the response, milliseconds.
    pub elapsed_ms: f64,
}

/// `GET /admin/api/instances`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InstancesResponse {
    /// Every instance that answered, sorted by id.
    pub instances: Vec<InstanceInfo>,
    /// Who answered.
    pub cluster: Cluster,
}

/// One hub across the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HubSummary {
    /// Hub name (used in the API's paths).
    pub name: String,
    /// Its URL path on the client port.
    pub path: String,
    /// Open connections on every instance that answered.
    pub connections: usize,
}

/// `GET /admin/api/hubs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HubsResponse {
    /// Hubs of the routing file, in its order.
    pub hubs: Vec<HubSummary>,
    /// Who answered.
    pub cluster: Cluster,
}

/// `GET /admin/api/hubs/{hub}/rooms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RoomsResponse {
    /// Hub name.
    pub hub: String,
    /// The prefix asked for.
    pub prefix: String,
    /// Rooms in name order, with connections summed over instances.
    pub rooms: Vec<RoomCount>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Who answered.
    pub cluster: Cluster,
}

/// `GET /admin/api/hubs/{hub}/rooms/{room}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MembersResponse {
    /// Hub name.
    pub hub: String,
    /// Room name.
    pub room: String,
    /// Connections in the room, on every instance that answered.
    pub connections: usize,
    /// Members in connection-id order (one page).
    pub members: Vec<Member>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Who answered.
    pub cluster: Cluster,
}

/// `GET /admin/api/users/{user}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UserResponse {
    /// The user id.
    pub user: String,
    /// Every connection of the user, in connection-id order.
    pub connections: Vec<UserConnection>,
    /// The rooms any of them is in, sorted.
    pub rooms: Vec<String>,
    /// The instances holding them: state and stream lag ("is it behind?").
    pub instances: Vec<InstanceInfo>,
    /// Who answered.
    pub cluster: Cluster,
}
