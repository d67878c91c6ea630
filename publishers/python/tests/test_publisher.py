"""EventPublisher against a real redis-server and a real (small) HTTP server."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
import redis.asyncio as aioredis

from signalr_sidecar_publisher import (
    Envelope,
    EventPublisher,
    EventRejectedError,
    HttpPublishError,
    Path,
    RedisPublishError,
    TransportSettings,
    UnknownEventTypeError,
    ValidationError,
    events,
    room_bucket,
)

from conftest import free_port

NOW = "2026-01-16T10:00:00.123Z"


def run(coro):
    return asyncio.run(coro)


def chat(room: str, seq: int = 1, **kw) -> Envelope:
    return events.chat_message(room, id=f"m{seq}", request_id=room, content=f"message {seq}",
                               sequence_number=seq, created_at=NOW, sender_id="u1", **kw)


def settings(redis_url: str, sidecar_url: str, **kw) -> TransportSettings:
    base = dict(use_redis_streams=True, redis_percentage=100, fallback_to_http=True, dual_write=False,
                redis_url=redis_url, sidecar_url=sidecar_url)
    base.update(kw)
    return TransportSettings(**base)


async def stream_event_ids(url: str, stream: str) -> list[str]:
    client = aioredis.Redis.from_url(url)
    try:
        entries = await client.xrange(stream)
    finally:
        await client.aclose()
    return [fields[b"event_id"].decode() for _, fields in entries]


@pytest.fixture
def redis_db(redis_server):
    redis_server.command("FLUSHALL")
    return redis_server


# --- one path each ------------------------------------------------------------


def test_redis_path_xadds_flat_fields(redis_db, http_sidecar):
    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url)) as p:
            e = chat("room-a", metadata={"source_instance": "api-1"})
            result = await p.publish(e)
            client = aioredis.Redis.from_url(redis_db.url, decode_responses=True)
            entries = await client.xrange("events:chat")
            await client.aclose()
            return e, result, entries

    e, result, entries = run(go())
    assert result.transports == ("redis_streams",) and result.path is Path.REDIS and not result.fell_back
    assert result.stream == "events:chat"
    [(entry_id, fields)] = entries
    assert entry_id == result.redis_entry_id
    assert fields == e.to_stream_fields()
    assert set(fields) == {"event_id", "event_type", "timestamp", "room_id", "payload", "metadata"}
    assert json.loads(fields["payload"])["content"] == "message 1"
    assert http_sidecar.posts == []


def test_each_event_type_goes_to_its_stream(redis_db, http_sidecar):
    envs = [
        events.status_change("t1", request_id="t1", old_status="a", new_status="b", changed_by="u"),
        events.notification(id="n1", user_id="u9", title="t", message="m"),
        events.remote_session_end("user:u9", request_id="t1"),
        events.typing_start("r1", user_id="u1", username="Ann"),
    ]

    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url)) as p:
            return [await p.publish(e) for e in envs]

    results = run(go())
    assert [r.stream for r in results] == ["events:ticket", "events:notification", "events:remote", "events:chat"]
    for e, r in zip(envs, results):
        assert run(stream_event_ids(redis_db.url, r.stream)) == [e.event_id]


def test_streams_are_capped_with_approximate_maxlen(redis_db, http_sidecar):
    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url), maxlen={"events:remote": 10}) as p:
            for i in range(400):
                await p.publish(events.remote_session_start("user:u1", request_id=f"r{i}"))

    run(go())
    length = int(redis_db.command("XLEN", "events:remote")[1:])
    assert 10 <= length < 400  # "~": Redis trims whole nodes, so a little over 10 is fine


def test_http_path_posts_the_envelope(redis_db, http_sidecar):
    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url, use_redis_streams=False)) as p:
            e = chat("room-h")
            return e, await p.publish(e), p._redis

    e, result, redis_backend = run(go())
    assert result.transports == ("http",) and result.path is Path.HTTP
    assert result.sidecar_answer == "accepted" and not result.queued
    assert http_sidecar.posts == [{"path": "/internal/events", "json": e.to_dict()}]
    assert redis_backend is None, "HTTP-only settings must not even make a Redis client"
    assert run(stream_event_ids(redis_db.url, "events:chat")) == []


def test_a_queued_answer_is_reported_logged_and_counted(redis_db, http_sidecar, caplog):
    """The sidecar cannot reach Redis: it answers 202 ``queued``. That is a success (the
    event is held and appended later), and the result, the log and the counters say so."""
    caplog.set_level(logging.WARNING, logger="signalr_sidecar_publisher")
    from prometheus_client import CollectorRegistry

    http_sidecar.reply = '{"status":"queued"}'
    registry = CollectorRegistry()

    async def go():
        async with EventPublisher(
            settings(redis_db.url, http_sidecar.url, use_redis_streams=False), metrics_registry=registry
        ) as p:
            e = chat("room-q")
            return e, await p.publish(e), p.stats

    e, result, stats = run(go())
    assert result.sidecar_answer == "queued" and result.queued and result.transports == ("http",)
    assert stats.queued["chat_message"] == 1 and stats.published[("http", "chat_message")] == 1
    assert registry.get_sample_value("event_publish_queued_total", {"event_type": "chat_message"}) == 1
    [record] = [r for r in caplog.records if "sidecar queued the event" in r.getMessage()]
    assert e.event_id in record.getMessage()


def test_an_older_sidecars_plain_text_answer_means_accepted(redis_db, http_sidecar):
    http_sidecar.reply = "accepted\n"

    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url, use_redis_streams=False)) as p:
            return await p.publish(chat("room-old"))

    result = run(go())
    assert result.sidecar_answer == "accepted" and not result.queued


def test_a_full_spool_503_is_a_failure_with_the_reason_and_retry_after(redis_db, http_sidecar):
    http_sidecar.status = 503
    http_sidecar.reply = "Redis is unreachable and the spool of POSTed events is full (3 events): retry later"
    http_sidecar.headers = {"Retry-After": "2"}

    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url, use_redis_streams=False)) as p:
            await p.publish(chat("room-full"))

    with pytest.raises(HttpPublishError) as info:
        run(go())
    assert info.value.status == 503 and info.value.retry_after == 2.0
    assert "spool of POSTed events is full" in str(info.value) and "retry after 2 s" in str(info.value)


# --- rollout ------------------------------------------------------------------

ROOMS = [f"request-{i:03d}" for i in range(60)]


@pytest.mark.parametrize("pct", [0, 50, 100])
def test_percentage_picks_the_path_per_room(redis_db, http_sidecar, pct):
    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url, redis_percentage=pct)) as p:
            sent = {}
            for seq in range(3):  # several events per room: a room never splits
                for room in ROOMS:
                    e = chat(room, seq)
                    sent[e.event_id] = room
                    await p.publish(e)
            return sent

    sent = run(go())
    via_redis = {sent[i] for i in run(stream_event_ids(redis_db.url, "events:chat"))}
    via_http = {sent[i] for i in http_sidecar.event_ids()}
    expected_redis = {r for r in ROOMS if room_bucket(r) < pct}
    assert via_redis == expected_redis
    assert via_http == set(ROOMS) - expected_redis
    assert len(run(stream_event_ids(redis_db.url, "events:chat"))) + len(http_sidecar.posts) == len(sent)
    if pct == 50:
        assert 15 < len(expected_redis) < 45


def test_dual_write_sends_both_ways_with_the_same_event_id(redis_db, http_sidecar):
    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url, redis_percentage=0, dual_write=True)) as p:
            e = chat("room-d")
            return e, await p.publish(e)

    e, result = run(go())
    assert result.path is Path.DUAL and set(result.transports) == {"redis_streams", "http"}
    assert run(stream_event_ids(redis_db.url, "events:chat")) == [e.event_id]
    assert http_sidecar.event_ids() == [e.event_id]
    assert http_sidecar.posts[0]["json"] == e.to_dict()


def test_dual_write_survives_one_leg_failing(http_sidecar):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"

    async def go():
        async with EventPublisher(settings(dead_redis, http_sidecar.url, dual_write=True, fallback_to_http=False)) as p:
            return await p.publish(chat("room-d")), p.stats

    result, stats = run(go())
    assert result.transports == ("http",)
    assert stats.errors[("redis_streams", "chat_message")] == 1


def test_forced_path_overrides_settings(redis_db, http_sidecar):
    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url, use_redis_streams=False)) as p:
            return await p.publish(chat("room-f"), path="redis_streams")

    assert run(go()).transports == ("redis_streams",)
    assert http_sidecar.posts == []


# --- failures -----------------------------------------------------------------


def test_redis_stopped_mid_run_falls_back_to_http_losing_nothing(own_redis, http_sidecar, caplog):
    caplog.set_level(logging.WARNING, logger="signalr_sidecar_publisher")

    async def go():
        async with EventPublisher(settings(own_redis.url, http_sidecar.url)) as p:
            before = [chat("room-x", i) for i in range(20)]
            for e in before:
                assert (await p.publish(e)).transports == ("redis_streams",)
            in_stream = await stream_event_ids(own_redis.url, "events:chat")

            own_redis.stop()
            during = [chat("room-x", 100 + i) for i in range(20)]
            results = [await p.publish(e) for e in during]

            own_redis.start()  # same port, empty (no persistence): the publisher reconnects
            after = [chat("room-x", 200 + i) for i in range(5)]
            for e in after:
                assert (await p.publish(e)).transports == ("redis_streams",)
            in_stream_after = await stream_event_ids(own_redis.url, "events:chat")
            return before, in_stream, during, results, after, in_stream_after, p.stats

    before, in_stream, during, results, after, in_stream_after, stats = run(go())
    assert in_stream == [e.event_id for e in before]
    assert all(r.fell_back and r.transports == ("http",) and r.sidecar_answer == "accepted" for r in results)
    assert http_sidecar.event_ids() == [e.event_id for e in during], "every event during the outage went over HTTP, in order"
    assert in_stream_after == [e.event_id for e in after]
    assert stats.fallbacks["chat_message"] == 20
    fallback_logs = [r for r in caplog.records if "falling back to http" in r.getMessage()]
    assert len(fallback_logs) == 20 and during[0].event_id in fallback_logs[0].getMessage()


def test_fallback_off_raises_a_clear_error(own_redis, http_sidecar):
    async def go():
        async with EventPublisher(settings(own_redis.url, http_sidecar.url, fallback_to_http=False)) as p:
            await p.publish(chat("room-y", 1))
            own_redis.stop()
            e = chat("room-y", 2)
            with pytest.raises(RedisPublishError) as info:
                await p.publish(e)
            return e, info.value

    e, error = run(go())
    message = str(error)
    assert "EVENT_TRANSPORT_FALLBACK_TO_HTTP is false" in message
    assert e.event_id in message and "events:chat" in message and "was not sent" in message
    assert http_sidecar.posts == []


def test_http_400_carries_the_sidecars_reason(redis_db, http_sidecar):
    http_sidecar.status, http_sidecar.reply = 400, "payload.content: expected string"

    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url, use_redis_streams=False)) as p:
            await p.publish(chat("room-z"))

    with pytest.raises(EventRejectedError) as info:
        run(go())
    assert info.value.reason == "payload.content: expected string"
    assert info.value.status == 400


def test_http_other_status_and_unreachable_sidecar(redis_db, http_sidecar):
    http_sidecar.status, http_sidecar.reply = 503, "draining"

    async def go(url):
        async with EventPublisher(settings(redis_db.url, url, use_redis_streams=False)) as p:
            await p.publish(chat("room-z"))

    with pytest.raises(HttpPublishError) as info:
        run(go(http_sidecar.url))
    assert info.value.status == 503 and "503" in str(info.value) and "draining" in str(info.value)
    assert info.value.retry_after is None
    with pytest.raises(HttpPublishError, match="ConnectError"):
        run(go(f"http://127.0.0.1:{free_port()}"))


def test_invalid_payload_is_refused_before_sending(redis_db, http_sidecar):
    bad = Envelope(event_type="chat_message", room_id="room-v",
                   payload={"id": "m1", "request_id": "r", "content": "x", "sequence_number": "one",
                            "is_screenshot": False, "created_at": NOW})

    async def go(path):
        async with EventPublisher(settings(redis_db.url, http_sidecar.url, dual_write=True)) as p:
            await p.publish(bad, path=path)

    for path in ("redis_streams", "http", "dual_write"):
        with pytest.raises(ValidationError) as info:
            run(go(path))
        assert info.value.field == "payload.sequence_number"
    assert http_sidecar.posts == []
    assert run(stream_event_ids(redis_db.url, "events:chat")) == []


def test_unknown_event_type_is_refused_unless_routed(redis_db, http_sidecar):
    e = events.build("poll_closed", "discussion-1", {"text": "hi"})

    async def go(routes):
        async with EventPublisher(settings(redis_db.url, http_sidecar.url), routes=routes) as p:
            return await p.publish(e)

    with pytest.raises(UnknownEventTypeError, match="poll_closed"):
        run(go(None))
    assert run(go({"poll_closed": "events:discussion"})).stream == "events:discussion"
    assert run(stream_event_ids(redis_db.url, "events:discussion")) == [e.event_id]


def test_settings_come_from_the_environment(redis_db, http_sidecar, monkeypatch):
    monkeypatch.setenv("EVENT_TRANSPORT_USE_REDIS_STREAMS", "false")
    monkeypatch.setenv("EVENT_TRANSPORT_SIDECAR_URL", http_sidecar.url)

    async def go():
        async with EventPublisher.from_env() as p:
            return await p.publish(chat("room-env"))

    assert run(go()).transports == ("http",)
    assert len(http_sidecar.posts) == 1


# --- telemetry ----------------------------------------------------------------


def test_prometheus_metrics(redis_db, http_sidecar):
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"

    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url), metrics_registry=registry) as p:
            await p.publish(chat("r1"))
            await p.publish(chat("r1", 2), path="http")
        async with EventPublisher(settings(dead_redis, http_sidecar.url), metrics_registry=registry) as p:
            await p.publish(events.typing_start("r1", user_id="u1", username="Ann"))

    run(go())
    get = registry.get_sample_value
    assert get("events_published_total", {"transport": "redis_streams", "event_type": "chat_message"}) == 1
    assert get("events_published_total", {"transport": "http", "event_type": "chat_message"}) == 1
    assert get("events_published_total", {"transport": "http", "event_type": "typing_start"}) == 1
    assert get("event_publish_duration_seconds_count", {"transport": "redis_streams", "event_type": "chat_message"}) == 1
    assert get("event_publish_fallbacks_total", {"event_type": "typing_start"}) == 1
    assert get("event_publish_errors_total", {"transport": "redis_streams", "event_type": "typing_start"}) == 1
    text = generate_latest(registry).decode()
    assert "# TYPE event_publish_duration_seconds histogram" in text


def test_traceparent_of_the_current_span_goes_into_metadata(redis_db, http_sidecar):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("fastapi-request")

    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url, dual_write=True),
                                  tracer_provider=provider) as p:
            with tracer.start_as_current_span("POST /messages") as request_span:
                result = await p.publish(chat("room-t"))
            return request_span.get_span_context(), result

    request_ctx, result = run(go())
    client_meta = http_sidecar.posts[0]["json"]["metadata"]
    trace_id = format(request_ctx.trace_id, "032x")
    assert client_meta["trace_id"] == trace_id
    assert re.fullmatch(rf"00-{trace_id}-[0-9a-f]{{16}}-[0-9a-f]{{2}}", client_meta["traceparent"])
    assert int(client_meta["traceparent"][-2:], 16) & 1, "sampled flag"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    publish_span = spans["publish chat_message"]
    assert publish_span.parent.span_id == request_ctx.span_id
    assert client_meta["traceparent"].split("-")[2] == format(publish_span.context.span_id, "016x")

    async def stream_meta():
        client = aioredis.Redis.from_url(redis_db.url, decode_responses=True)
        [(_, fields)] = await client.xrange("events:chat")
        await client.aclose()
        return json.loads(fields["metadata"])

    assert run(stream_meta()) == client_meta  # dual-write: the same envelope both ways


def test_no_span_means_no_trace_metadata(redis_db, http_sidecar):
    async def go():
        async with EventPublisher(settings(redis_db.url, http_sidecar.url, use_redis_streams=False),
                                  source_instance="api-7") as p:
            await p.publish(chat("room-n"))

    run(go())
    assert http_sidecar.posts[0]["json"]["metadata"] == {"source_instance": "api-7"}
