//! On a timer of its own: claims entries that have stayed pending too long
//! (a crash between read and ack, or an earlier consumer of this group),
//! and refreshes the lag and pending gauges from XINFO GROUPS.

use std::sync::Arc;

use redis::{RedisResult, Value};
use tokio_util::sync::CancellationToken;

use super::intake::{hand_over, Shared};
use super::replies::{self, pairs, text};
use super::RedisConn;
use crate::telemetry::labels::Stream;

/// Runs until `stop`: the claims in a loop of their own, because a claim
/// hands entries to the pipeline and waits while its queue is full; the
/// lag and pending gauges, read in the other loop, must not stall exactly
/// when the pipeline is behind and an operator looks at them.
pub(super) async fn run(conn: RedisConn, shared: Arc<Shared>, streams: Vec<Arc<str>>, stop: CancellationToken) {
    tokio::join!(housekeeping(conn.clone(), &shared, &streams, &stop), claims(conn, &shared, &streams, &stop));
}

/// The gauges, the checker's election and the orphan sweep, every tick.
async fn housekeeping(mut conn: RedisConn, shared: &Shared, streams: &[Arc<str>], stop: &CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.claim_interval.min(std::time::Duration::from_secs(5)));
    let mut since_orphans = std::time::Duration::ZERO;
    let orphan_check = (shared.config.orphan_group_idle / 2)
        .clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        since_orphans += tick.period();
        if since_orphans >= orphan_check {
            since_orphans = std::time::Duration::ZERO;
            sweep_orphans(&mut conn, shared, streams).await;
        }
        elect_checker(&mut conn, shared, streams).await;
        for stream in streams {
            if let Err(e) = refresh_stats(&mut conn, shared, stream).await {
                tracing::debug!(stream = %stream, error = %e, "XINFO GROUPS failed");
            }
        }
    }
}

/// Entries pending longer than `claim_min_idle`, claimed again every
/// `claim_interval`.
async fn claims(mut conn: RedisConn, shared: &Shared, streams: &[Arc<str>], stop: &CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.claim_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is at once: the first claim one interval in
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        for stream in streams {
            match claim_stream(&mut conn, shared, stream, stop).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(stream = %stream, claimed = n, "claimed pending entries again")
                }
                // The reader recreates a lost group where delivery stopped.
                Err(e) if e.code() == Some("NOGROUP") => {}
                Err(e) => tracing::warn!(stream = %stream, error = %e, "XAUTOCLAIM failed"),
            }
        }
    }
}

async fn claim_stream(
    conn: &mut RedisConn,
    shared: &Shared,
    stream: &Arc<str>,
    stop: &CancellationToken,
) -> RedisResult<usize> {
    let mut start = "0-0".to_string();
    let mut total = 0;
    loop {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&**stream)
            .arg(&shared.group)
            .arg(&shared.consumer)
            .arg(shared.config.claim_min_idle.as_millis() as u64)
            .arg(&start)
            .arg("COUNT")
            .arg(shared.config.read_count)
            .query_async(conn)
            .await?;
        let (next, claimed) = replies::from_autoclaim_reply(reply);
        total += claimed.len();
        if stop.is_cancelled() || !hand_over(shared, stream, claimed).await {
            return Ok(total);
        }
        if next == "0-0" {
            return Ok(total);
        }
        start = next;
    }
}

async fn refresh_stats(conn: &mut RedisConn, shared: &Shared, stream: &str) -> RedisResult<()> {
    let groups: Vec<Value> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    for g in groups {
        let fields = pairs(g);
        if fields.iter().any(|(k, v)| k == "name" && text(v.clone()).as_deref() == Some(shared.group.as_str())) {
            let labels = Stream { stream: Arc::from(stream) };
            for (k, v) in &fields {
                let n = match v {
                    Value::Int(n) => *n,
                    _ => continue,
                };
                match k.as_str() {
                    "lag" => shared.metrics.stream_lag.get_or_create(&labels).set(n),
                    "pending" => shared.metrics.stream_pending.get_or_create(&labels).set(n),
                    _ => 0,
                };
            }
        }
    }
    Ok(())
}

/// Removes the groups of instances that are gone, on every stream.
async fn sweep_orphans(conn: &mut RedisConn, shared: &Shared, streams: &[Arc<str>]) {
    let live = match super::orphans::live_instances(conn, &shared.config.live_instances_key()).await {
        Ok(live) => live,
        Err(e) => return tracing::debug!(error = %e, "live instances unknown: no orphan check this time"),
    };
    let (prefix, idle_ms) = (&shared.config.group_prefix, shared.config.orphan_group_idle.as_millis() as u64);
    for stream in streams {
        match super::orphans::sweep(conn, stream, &shared.group, prefix, &live, idle_ms).await {
            Ok(removed) => {
                for name in removed {
                    tracing::info!(stream = %stream, group = %name, "removed the consumer group of an instance that is gone");
                }
            }
            Err(e) => tracing::debug!(stream = %stream, error = %e, "orphan group check failed"),
        }
    }
}

/// Decides, stream by stream, whether this instance checks the entries
/// every instance passes over (see [`crate::pipeline::ChecksAll`]): the
/// live instance with the smallest id among those with a group of this
/// prefix on the stream does (two deployments sharing a prefix may read
/// different streams), so one does while the set is steady (for a few
/// seconds after that one stops, until its heartbeat is gone and the next
/// takes over, nobody does). Unsure (Redis not answering), it checks.
async fn elect_checker(conn: &mut RedisConn, shared: &Shared, streams: &[Arc<str>]) {
    let live = super::orphans::live_instances(conn, &shared.config.live_instances_key()).await.ok();
    for stream in streams {
        let checks = match &live {
            Some(live) => match super::orphans::group_instances(conn, stream, &shared.config.group_prefix).await {
                Ok(readers) => !readers.iter().any(|other| *other < shared.consumer && live.contains(other)),
                Err(_) => true,
            },
            None => true,
        };
        shared.checks_all.set(stream, checks);
    }
}
