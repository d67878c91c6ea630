//! The label sets of the metric families (CONTRACT section 8). A label whose
//! values are a closed set (a reason, an outcome, a cause, a transport) is an
//! enum, so nothing but a documented value can reach the exposition and a
//! typo does not compile; labels whose values come from the routing file or
//! the settings (hub, stream, event type, method) are shared strings.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// A closed set of label values, numbered so a family's handles can be kept
/// in a slice (see [`super::PerValue`]).
pub trait Closed: Copy + 'static {
    /// How many values there are.
    const COUNT: usize;
    /// This value's number, below [`Closed::COUNT`].
    fn index(self) -> usize;
}

/// A label set of one closed label, built from its value.
pub trait OneLabel: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// The label's value type.
    type Value: Closed;
    /// The label set holding `value`.
    fn of(value: Self::Value) -> Self;
}

/// Declares a closed set of label values: the enum, the text each value has
/// in the exposition and the logs (written once, here), its numbering, and
/// its encoding. Variants keep Rust's names; the derive of
/// `EncodeLabelValue` would print them as they are spelled.
macro_rules! closed_values {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value as the exposition and the logs write it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl Closed for $name {
            const COUNT: usize = $name::ALL.len();
            fn index(self) -> usize {
                self as usize
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    };
}

/// Declares a label set of one closed label: `Name { label: Value }`.
macro_rules! one_label {
    ($(#[$meta:meta])* $name:ident { $label:ident: $value:ty }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
        pub struct $name {
            /// The label's one value.
            pub $label: $value,
        }

        impl OneLabel for $name {
            type Value = $value;
            fn of($label: $value) -> Self {
                $name { $label }
            }
        }
    };
}

closed_values! {
    /// The transport a connection uses, as ASP.NET Core names it in negotiate.
    Transport {
        /// WebSockets.
        WebSockets = "websockets",
        /// Server-Sent Events.
        ServerSentEvents = "serversentevents",
        /// Long Polling.
        LongPolling = "longpolling",
    }
}

closed_values! {
    /// Why events or frames were dropped (`sidecar_events_dropped_total`).
    DropReason {
        /// No route for the event's `event_type` (dead-lettered).
        NoRoute = "no_route",
        /// The payload lacks a field a route's argument names (dead-lettered).
        MissingArgument = "missing_argument",
        /// Older than the maximum event age.
        Stale = "stale",
        /// Its `event_id` was seen within the idempotency window.
        Duplicate = "duplicate",
        /// Frames a full outbox could not take (typing states, coalesced events).
        OutboxFull = "outbox_full",
        /// A spooled POST went stale while Redis was away.
        SpoolStale = "spool_stale",
        /// Redis refused a spooled POST once it answered again.
        SpoolRefused = "spool_refused",
        /// Spooled POSTs still waiting at exit.
        SpoolShutdown = "spool_shutdown",
        /// The consumer group was lost with entries not yet read.
        GroupLost = "group_lost",
    }
}

closed_values! {
    /// Why a connection closed (`sidecar_disconnects_total`).
    DisconnectReason {
        /// The client closed it, or its socket went away.
        Client = "client",
        /// The session ended it (a Close from the hub).
        Session = "session",
        /// A write did not finish in time, or failed.
        WriteFailed = "write_failed",
        /// Its outbound queue overflowed.
        SlowConsumer = "slow_consumer",
        /// The client sent nothing for the client timeout.
        ClientTimeout = "client_timeout",
        /// The server is shutting down.
        Shutdown = "shutdown",
        /// Its token expired.
        TokenExpired = "token_expired",
        /// A message grew past the limit.
        MessageTooLarge = "message_too_large",
        /// The handshake did not arrive in time.
        HandshakeTimeout = "handshake_timeout",
        /// Events owed to it may be gone.
        Continuity = "continuity",
        /// Its stateful session was handed to another instance.
        Handoff = "handoff",
        /// No invocation for the hub's inactivity timeout.
        Inactivity = "inactivity",
    }
}

closed_values! {
    /// Why connections were closed for continuity (`sidecar_continuity_closes_total`).
    ContinuityCause {
        /// The stream or its consumer group was lost.
        StreamLost = "stream_lost",
        /// Entries were trimmed before this instance read them.
        StreamTrimmed = "stream_trimmed",
        /// This instance read an entry only after it had gone stale (it
        /// was stopped, cut off or behind): dropped as stale, and lost to
        /// the connections it was for.
        InstanceLagged = "instance_lagged",
    }
}

closed_values! {
    /// Which limit refused a request or an invocation (`sidecar_limited_total`).
    Limit {
        /// New connections per source address.
        ConnectionsPerIp = "connections_per_ip",
        /// Connections on this instance.
        MaxConnections = "max_connections",
        /// Connections per user.
        ConnectionsPerUser = "connections_per_user",
        /// Invocations per minute.
        Invocations = "invocations",
    }
}

closed_values! {
    /// What became of a stateful session handed between instances
    /// (`sidecar_session_handoffs_total`).
    HandoffOutcome {
        /// Saved for another instance.
        Saved = "saved",
        /// Not resumable (no handshake, not stateful, frames lost).
        Unresumable = "unresumable",
        /// The session store refused it.
        SaveFailed = "save_failed",
        /// Taken over here.
        Resumed = "resumed",
        /// A resume refused here.
        Refused = "refused",
    }
}

closed_values! {
    /// What became of a join naming a last position (`sidecar_history_joins_total`).
    HistoryJoinOutcome {
        /// The missed events were replayed.
        Recovered = "recovered",
        /// The join named no position.
        NoPosition = "no_position",
        /// The position is older than the history keeps.
        TooOld = "too_old",
        /// The history does not cover the position.
        NotCovered = "not_covered",
        /// Too many events were missed to replay.
        TooLong = "too_long",
        /// This instance had not reached the position in time.
        Behind = "behind",
        /// The connection was in the room already, and events came since.
        AlreadyJoined = "already_joined",
        /// No history (or it failed).
        Unavailable = "unavailable",
    }
}

closed_values! {
    /// What became of an event kept for missed updates (`sidecar_history_events_total`).
    HistoryEventOutcome {
        /// Written to the room's history.
        Written = "written",
        /// Redis refused it.
        Failed = "failed",
        /// The writer's queue was full.
        Dropped = "dropped",
    }
}

closed_values! {
    /// How a POSTed event went through the spool (`sidecar_spool_events_total`).
    SpoolOutcome {
        /// Kept while Redis was away.
        Spooled = "spooled",
        /// Appended to its stream once Redis answered.
        Flushed = "flushed",
        /// The spool was full (503).
        Refused = "refused",
    }
}

closed_values! {
    /// What became of a browser push (`sidecar_push_notifications_total`):
    /// per notification `online`, `no_subscription`, `queue_full`; per
    /// subscription the rest.
    PushOutcome {
        /// A live connection somewhere: shown in the app only.
        Online = "online",
        /// The user has no subscription.
        NoSubscription = "no_subscription",
        /// Dropped before the sender (its queue was full).
        QueueFull = "queue_full",
        /// Another instance sends it.
        Taken = "taken",
        /// The push service accepted it.
        Sent = "sent",
        /// One per retry.
        Retried = "retried",
        /// 404/410: the subscription was removed.
        Expired = "expired",
        /// Another 4xx, not retried.
        Rejected = "rejected",
        /// Retries exhausted.
        Failed = "failed",
        /// Redis or encryption failed.
        Error = "error",
    }
}

one_label! {
    /// `sidecar_events_dropped_total{reason}`.
    Dropped { reason: DropReason }
}

one_label! {
    /// `sidecar_disconnects_total{reason}`.
    Disconnect { reason: DisconnectReason }
}

one_label! {
    /// `sidecar_continuity_closes_total{cause}`.
    Continuity { cause: ContinuityCause }
}

one_label! {
    /// `sidecar_limited_total{limit}`.
    Limited { limit: Limit }
}

one_label! {
    /// `sidecar_session_handoffs_total{outcome}`.
    Handoff { outcome: HandoffOutcome }
}

one_label! {
    /// `sidecar_history_joins_total{outcome}`.
    HistoryJoin { outcome: HistoryJoinOutcome }
}

one_label! {
    /// `sidecar_history_events_total{outcome}`.
    HistoryEvent { outcome: HistoryEventOutcome }
}

one_label! {
    /// `sidecar_spool_events_total{outcome}`.
    Spool { outcome: SpoolOutcome }
}

one_label! {
    /// `sidecar_push_notifications_total{outcome}`.
    Push { outcome: PushOutcome }
}

/// `sidecar_connections{hub,transport}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct Connection {
    /// The hub's name in the routing file.
    pub hub: Arc<str>,
    /// Its transport.
    pub transport: Transport,
}

/// `sidecar_events_consumed_total{stream,event_type}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct Consumed {
    /// The stream (or the in-process bus's source name).
    pub stream: Arc<str>,
    /// A routed `event_type`, or `unrouted`: never a publisher's free text.
    pub event_type: Arc<str>,
}

/// The label set of the per-stream families (`sidecar_stream_lag`,
/// `sidecar_stream_pending`, `sidecar_dead_letters_total`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct Stream {
    /// The stream's key.
    pub stream: Arc<str>,
}

/// `sidecar_invocations_total{hub,method,outcome}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct Invocation {
    /// The hub's name in the routing file.
    pub hub: Arc<str>,
    /// The server method's name in the routing file, or `unknown`.
    pub method: Arc<str>,
    /// `ok`, or the failure's reason: the error types own that closed set
    /// (each module's `Blame::reason`), which telemetry cannot name.
    pub outcome: &'static str,
}

/// `sidecar_auth_failures_total{reason}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthFailure {
    /// The auth error's fixed reason (`missing`, `expired`, `signature`, ...):
    /// the auth module owns that closed set.
    pub reason: &'static str,
}
