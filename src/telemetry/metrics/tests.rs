//! The exposition, line for line: the names, label names and label values
//! that CONTRACT section 8, the tests and operators' dashboards depend on.
//! The expected text was rendered by the untyped registry this one replaced.

use std::sync::Arc;

use super::Metrics;
use crate::telemetry::events::{ContinuityClosed, DeadLettered, Disconnected, Dropped};
use crate::telemetry::labels::*;

/// Every family with one series, sorted line by line (a family's series
/// come out in hash order).
const GOLDEN: &str = r##"# EOF
# HELP sidecar_auth_failures Failed token checks, by reason.
# HELP sidecar_broadcast_seconds Time to fan one event out to its connections.
# HELP sidecar_connections Open client connections by hub and transport.
# HELP sidecar_continuity_closes Connections closed (allowReconnect) because events owed to them may be gone, by cause.
# HELP sidecar_dead_letters Invalid entries copied to a dead-letter stream.
# HELP sidecar_disconnects Client connections closed, by reason.
# HELP sidecar_event_delivery_seconds Event timestamp to frames queued for the sockets.
# HELP sidecar_events_batched Events sent in one invocation with others by a batch route.
# HELP sidecar_events_coalesced Events merged into a later one by coalescing.
# HELP sidecar_events_consumed Events read from the bus by stream and event_type.
# HELP sidecar_events_delivered Frames queued to client connections.
# HELP sidecar_events_dropped Events or frames dropped, by reason.
# HELP sidecar_events_skipped Stream entries passed over undecoded: no connection of this instance was in their room or was their user.
# HELP sidecar_history_events Events kept in the rooms' history for missed updates, by outcome.
# HELP sidecar_history_joins Joins naming a last position (missed updates), by outcome.
# HELP sidecar_ingest_wait_seconds Time an ingest source waited for room in the pipeline queue.
# HELP sidecar_invocations Client invocations by hub, method and outcome.
# HELP sidecar_limited Requests or invocations refused by a limit.
# HELP sidecar_push_notifications Notifications through browser push (Web Push), by outcome.
# HELP sidecar_redis_up 1 while Redis answers, 0 while it does not.
# HELP sidecar_session_handoffs Stateful sessions saved for, resumed on, or refused by another instance.
# HELP sidecar_slow_consumer_disconnects Connections closed because their outbound queue overflowed.
# HELP sidecar_spool_depth POSTed events waiting for Redis in the spool.
# HELP sidecar_spool_events POSTed events through the spool, by outcome (spooled, flushed, refused).
# HELP sidecar_stream_lag Entries of a stream not yet read by this instance's group.
# HELP sidecar_stream_pending Entries read by this instance's group and not acknowledged.
# TYPE sidecar_auth_failures counter
# TYPE sidecar_broadcast_seconds histogram
# TYPE sidecar_connections gauge
# TYPE sidecar_continuity_closes counter
# TYPE sidecar_dead_letters counter
# TYPE sidecar_disconnects counter
# TYPE sidecar_event_delivery_seconds histogram
# TYPE sidecar_events_batched counter
# TYPE sidecar_events_coalesced counter
# TYPE sidecar_events_consumed counter
# TYPE sidecar_events_delivered counter
# TYPE sidecar_events_dropped counter
# TYPE sidecar_events_skipped counter
# TYPE sidecar_history_events counter
# TYPE sidecar_history_joins counter
# TYPE sidecar_ingest_wait_seconds histogram
# TYPE sidecar_invocations counter
# TYPE sidecar_limited counter
# TYPE sidecar_push_notifications counter
# TYPE sidecar_redis_up gauge
# TYPE sidecar_session_handoffs counter
# TYPE sidecar_slow_consumer_disconnects counter
# TYPE sidecar_spool_depth gauge
# TYPE sidecar_spool_events counter
# TYPE sidecar_stream_lag gauge
# TYPE sidecar_stream_pending gauge
sidecar_auth_failures_total{reason="expired"} 1
sidecar_broadcast_seconds_bucket{le="+Inf"} 1
sidecar_broadcast_seconds_bucket{le="0.0001"} 1
sidecar_broadcast_seconds_bucket{le="0.00025"} 1
sidecar_broadcast_seconds_bucket{le="0.0005"} 1
sidecar_broadcast_seconds_bucket{le="0.001"} 1
sidecar_broadcast_seconds_bucket{le="0.002"} 1
sidecar_broadcast_seconds_bucket{le="0.003"} 1
sidecar_broadcast_seconds_bucket{le="0.005"} 1
sidecar_broadcast_seconds_bucket{le="0.01"} 1
sidecar_broadcast_seconds_bucket{le="0.025"} 1
sidecar_broadcast_seconds_bucket{le="0.05"} 1
sidecar_broadcast_seconds_bucket{le="0.1"} 1
sidecar_broadcast_seconds_bucket{le="0.25"} 1
sidecar_broadcast_seconds_bucket{le="0.5"} 1
sidecar_broadcast_seconds_bucket{le="1.0"} 1
sidecar_broadcast_seconds_bucket{le="2.5"} 1
sidecar_broadcast_seconds_bucket{le="5.0"} 1
sidecar_broadcast_seconds_count 1
sidecar_broadcast_seconds_sum 0.0001
sidecar_connections{hub="chat",transport="websockets"} 1
sidecar_continuity_closes_total{cause="instance_lagged"} 0
sidecar_continuity_closes_total{cause="stream_lost"} 0
sidecar_continuity_closes_total{cause="stream_trimmed"} 2
sidecar_dead_letters_total{stream="events:chat"} 1
sidecar_disconnects_total{reason="client"} 0
sidecar_disconnects_total{reason="client_timeout"} 0
sidecar_disconnects_total{reason="continuity"} 0
sidecar_disconnects_total{reason="handoff"} 0
sidecar_disconnects_total{reason="handshake_timeout"} 0
sidecar_disconnects_total{reason="inactivity"} 0
sidecar_disconnects_total{reason="message_too_large"} 0
sidecar_disconnects_total{reason="session"} 0
sidecar_disconnects_total{reason="shutdown"} 0
sidecar_disconnects_total{reason="slow_consumer"} 1
sidecar_disconnects_total{reason="token_expired"} 0
sidecar_disconnects_total{reason="write_failed"} 0
sidecar_event_delivery_seconds_bucket{le="+Inf"} 1
sidecar_event_delivery_seconds_bucket{le="0.0001"} 0
sidecar_event_delivery_seconds_bucket{le="0.00025"} 0
sidecar_event_delivery_seconds_bucket{le="0.0005"} 0
sidecar_event_delivery_seconds_bucket{le="0.001"} 0
sidecar_event_delivery_seconds_bucket{le="0.002"} 1
sidecar_event_delivery_seconds_bucket{le="0.003"} 1
sidecar_event_delivery_seconds_bucket{le="0.005"} 1
sidecar_event_delivery_seconds_bucket{le="0.01"} 1
sidecar_event_delivery_seconds_bucket{le="0.025"} 1
sidecar_event_delivery_seconds_bucket{le="0.05"} 1
sidecar_event_delivery_seconds_bucket{le="0.1"} 1
sidecar_event_delivery_seconds_bucket{le="0.25"} 1
sidecar_event_delivery_seconds_bucket{le="0.5"} 1
sidecar_event_delivery_seconds_bucket{le="1.0"} 1
sidecar_event_delivery_seconds_bucket{le="2.5"} 1
sidecar_event_delivery_seconds_bucket{le="5.0"} 1
sidecar_event_delivery_seconds_count 1
sidecar_event_delivery_seconds_sum 0.002
sidecar_events_batched_total 2
sidecar_events_coalesced_total 1
sidecar_events_consumed_total{stream="events:chat",event_type="chat_message"} 1
sidecar_events_delivered_total 3
sidecar_events_dropped_total{reason="outbox_full"} 2
sidecar_events_dropped_total{reason="stale"} 1
sidecar_events_skipped_total 0
sidecar_history_events_total{outcome="dropped"} 0
sidecar_history_events_total{outcome="failed"} 0
sidecar_history_events_total{outcome="written"} 5
sidecar_history_joins_total{outcome="already_joined"} 0
sidecar_history_joins_total{outcome="behind"} 0
sidecar_history_joins_total{outcome="no_position"} 0
sidecar_history_joins_total{outcome="not_covered"} 0
sidecar_history_joins_total{outcome="recovered"} 1
sidecar_history_joins_total{outcome="too_long"} 0
sidecar_history_joins_total{outcome="too_old"} 0
sidecar_history_joins_total{outcome="unavailable"} 0
sidecar_ingest_wait_seconds_bucket{le="+Inf"} 1
sidecar_ingest_wait_seconds_bucket{le="0.0001"} 0
sidecar_ingest_wait_seconds_bucket{le="0.00025"} 0
sidecar_ingest_wait_seconds_bucket{le="0.0005"} 0
sidecar_ingest_wait_seconds_bucket{le="0.001"} 0
sidecar_ingest_wait_seconds_bucket{le="0.002"} 0
sidecar_ingest_wait_seconds_bucket{le="0.003"} 0
sidecar_ingest_wait_seconds_bucket{le="0.005"} 0
sidecar_ingest_wait_seconds_bucket{le="0.01"} 1
sidecar_ingest_wait_seconds_bucket{le="0.025"} 1
sidecar_ingest_wait_seconds_bucket{le="0.05"} 1
sidecar_ingest_wait_seconds_bucket{le="0.1"} 1
sidecar_ingest_wait_seconds_bucket{le="0.25"} 1
sidecar_ingest_wait_seconds_bucket{le="0.5"} 1
sidecar_ingest_wait_seconds_bucket{le="1.0"} 1
sidecar_ingest_wait_seconds_bucket{le="2.5"} 1
sidecar_ingest_wait_seconds_bucket{le="5.0"} 1
sidecar_ingest_wait_seconds_count 1
sidecar_ingest_wait_seconds_sum 0.01
sidecar_invocations_total{hub="chat",method="JoinRoom",outcome="ok"} 1
sidecar_limited_total{limit="connections_per_ip"} 0
sidecar_limited_total{limit="connections_per_user"} 0
sidecar_limited_total{limit="invocations"} 1
sidecar_limited_total{limit="max_connections"} 0
sidecar_push_notifications_total{outcome="error"} 0
sidecar_push_notifications_total{outcome="expired"} 0
sidecar_push_notifications_total{outcome="failed"} 0
sidecar_push_notifications_total{outcome="no_subscription"} 0
sidecar_push_notifications_total{outcome="online"} 0
sidecar_push_notifications_total{outcome="queue_full"} 0
sidecar_push_notifications_total{outcome="rejected"} 0
sidecar_push_notifications_total{outcome="retried"} 0
sidecar_push_notifications_total{outcome="sent"} 1
sidecar_push_notifications_total{outcome="taken"} 0
sidecar_redis_up 1
sidecar_session_handoffs_total{outcome="refused"} 0
sidecar_session_handoffs_total{outcome="resumed"} 1
sidecar_session_handoffs_total{outcome="save_failed"} 0
sidecar_session_handoffs_total{outcome="saved"} 0
sidecar_session_handoffs_total{outcome="unresumable"} 0
sidecar_slow_consumer_disconnects_total 1
sidecar_spool_depth 2
sidecar_spool_events_total{outcome="flushed"} 1
sidecar_spool_events_total{outcome="refused"} 0
sidecar_spool_events_total{outcome="spooled"} 0
sidecar_stream_lag{stream="events:chat"} 4
sidecar_stream_pending{stream="events:chat"} 1"##;

#[test]
fn every_family_renders_as_before() {
    let m = Metrics::new();
    let chat: Arc<str> = Arc::from("chat");
    let stream: Arc<str> = Arc::from("events:chat");
    m.connections.get_or_create(&Connection { hub: chat.clone(), transport: Transport::WebSockets }).inc();
    m.events_consumed.get_or_create(&Consumed { stream: stream.clone(), event_type: Arc::from("chat_message") }).inc();
    m.events_delivered.inc_by(3);
    m.event_delivery_seconds.observe(0.002);
    m.broadcast_seconds.observe(0.0001);
    m.events_coalesced.inc();
    m.events_batched.inc_by(2);
    m.record(Dropped::event(DropReason::Stale, "e-1"));
    m.record(Dropped::many(DropReason::OutboxFull, 2));
    m.record(Dropped::many(DropReason::Duplicate, 0));
    m.stream_lag.get_or_create(&Stream { stream: stream.clone() }).set(4);
    m.stream_pending.get_or_create(&Stream { stream: stream.clone() }).set(1);
    m.slow_consumer_disconnects.inc();
    m.redis_up.set(1);
    m.record(DeadLettered { stream: &stream, entry_id: "1-0", reason: "no route" });
    m.invocations.get_or_create(&Invocation { hub: chat.clone(), method: Arc::from("JoinRoom"), outcome: "ok" }).inc();
    m.ingest_wait_seconds.observe(0.01);
    m.record(Disconnected {
        reason: DisconnectReason::SlowConsumer,
        connection_id: "c",
        hub: "chat",
        transport: Transport::WebSockets,
    });
    m.limited.get(Limit::Invocations).inc();
    m.auth_failures.get_or_create(&AuthFailure { reason: "expired" }).inc();
    m.record(ContinuityClosed { cause: ContinuityCause::StreamTrimmed, connections: 2 });
    m.session_handoffs.get(HandoffOutcome::Resumed).inc();
    m.spool_depth.set(2);
    m.spool(SpoolOutcome::Flushed, 1);
    m.push(PushOutcome::Sent);
    m.history_joins.get(HistoryJoinOutcome::Recovered).inc();
    m.history_events.get(HistoryEventOutcome::Written).inc_by(5);
    let rendered = m.render();
    let mut lines: Vec<&str> = rendered.lines().collect();
    lines.sort_unstable();
    let expected: Vec<&str> = GOLDEN.lines().collect();
    assert_eq!(lines, expected);
}

#[test]
fn every_closed_value_reads_as_its_label() {
    assert_eq!(DisconnectReason::ALL.len(), 12);
    let texts: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        texts,
        [
            "no_route",
            "missing_argument",
            "stale",
            "duplicate",
            "outbox_full",
            "spool_stale",
            "spool_refused",
            "spool_shutdown",
            "group_lost"
        ]
    );
    // A handle is resolved once: the second count adds to the same series.
    // (Drop reasons are made at start by `precreate_known`, not by `new`.)
    let m = Metrics::new();
    m.events_dropped.get(DropReason::Stale).inc();
    m.events_dropped.get(DropReason::Stale).inc();
    assert!(m.render().contains("sidecar_events_dropped_total{reason=\"stale\"} 2"));
    assert!(!m.render().contains("reason=\"duplicate\""), "only used series appear");
}
