"""``EventPublisher``: hands events to signalr-sidecar by Redis Streams, by its HTTP
bridge, or both, as ``TransportSettings`` say.

Per event:

1. validate the envelope and its payload against ``protocol/schemas`` (nothing is
   sent when that fails; the error names the field);
2. find its stream from the routing table (``events:chat`` ...);
3. pick the path for its room (``TransportSettings.path_for_room``);
4. add the current OpenTelemetry trace context to ``metadata``;
5. send: XADD with ``MAXLEN ~`` (flat fields), or POST ``/internal/events`` (expects
   202), or both with the same ``event_id`` (dual-write; the sidecar delivers an id
   once). A Redis failure falls back to HTTP when ``fallback_to_http`` is on
   (counted in ``event_publish_fallbacks_total`` and logged), and raises
   ``RedisPublishError`` when it is off.

The sidecar's 202 says what it did with a POSTed event: ``{"status": "accepted"}``
(on its bus: appended to the stream, or its in-process bus) or ``{"status":
"queued"}`` (it cannot reach Redis either: it holds the event and appends it once
Redis answers; nobody receives it before, every instance then does). The result's
``sidecar_answer`` carries that word; ``queued`` ones are logged and counted in
``event_publish_queued_total``. A 503 (the sidecar's spool is full) raises
``HttpPublishError`` with the sidecar's reason and ``retry_after``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import httpx
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .envelope import Envelope
from .errors import (
    EventRejectedError,
    HttpPublishError,
    RedisPublishError,
    TransportError,
    UnknownEventTypeError,
)
from .routing import maxlen_for, resolve_routes
from .schema import SchemaSet, packaged_schemas
from .settings import Path, TransportSettings
from .telemetry import Metrics, PublisherStats, publish_span

log = logging.getLogger("signalr_sidecar_publisher")

REDIS = "redis_streams"
HTTP = "http"

#: The sidecar's answers to a POSTed event (the ``status`` of its 202 body).
ACCEPTED = "accepted"
QUEUED = "queued"

#: What counts as "Redis failed" (and so triggers the HTTP fallback).
_REDIS_FAILURES = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class PublishResult:
    """What happened to one event."""

    event_id: str
    event_type: str
    stream: str
    #: the path the settings chose for the room
    path: Path
    #: the transports that accepted the event ("redis_streams", "http")
    transports: tuple[str, ...]
    #: True when Redis failed and the event went over HTTP instead
    fell_back: bool = False
    #: the stream entry id when XADD succeeded
    redis_entry_id: str | None = None
    #: what the sidecar answered when the event went over HTTP: "accepted" (on its bus)
    #: or "queued" (its Redis is unreachable: it appends the event once Redis answers,
    #: and nobody receives it before); None when HTTP was not used
    sidecar_answer: str | None = None

    @property
    def queued(self) -> bool:
        """True when the sidecar holds the event until it can reach Redis (delivery is late,
        not lost)."""
        return self.sidecar_answer == QUEUED


# === backends ===============================================================


class RedisStreamsBackend:
    """XADD of the flat envelope fields, capped with ``MAXLEN ~`` per stream."""

    def __init__(
        self,
        url: str,
        *,
        client: Any = None,
        maxlen: Mapping[str, int] | None = None,
        connect_timeout_seconds: float = 1.0,
        timeout_seconds: float = 2.0,
    ):
        self._owned = client is None
        # One quick retry (a pooled connection may be stale after a Redis restart),
        # no backoff: when Redis is down the caller falls back to HTTP at once.
        self.client = client or aioredis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_seconds,
            socket_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )
        self.maxlen = dict(maxlen or {})

    async def send(self, stream: str, envelope: Envelope) -> str:
        """Append one entry; returns its stream id."""
        entry_id = await self.client.xadd(
            stream, envelope.to_stream_fields(), maxlen=maxlen_for(stream, self.maxlen), approximate=True
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def aclose(self) -> None:
        if self._owned:
            closer = getattr(self.client, "aclose", None) or self.client.close
            await closer()


class HttpBackend:
    """POST the envelope JSON to ``<sidecar>/internal/events``; 202 is success (its body
    says ``accepted`` or ``queued``), 400 carries the sidecar's reason, 503 its reason and
    ``Retry-After``."""

    def __init__(self, events_url: str, *, client: httpx.AsyncClient | None = None, timeout_seconds: float = 5.0):
        self.events_url = events_url
        self._owned = client is None
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_seconds, connect=min(2.0, timeout_seconds)))

    async def send(self, envelope: Envelope) -> str:
        """POST one envelope; returns the sidecar's answer, ``"accepted"`` or ``"queued"``."""
        try:
            response = await self.client.post(
                self.events_url, content=envelope.to_json(), headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise HttpPublishError(f"POST {self.events_url} failed: {type(exc).__name__}: {exc}") from exc
        body = response.text.strip()
        if response.status_code == 202:
            return _answer_of(body)
        if response.status_code == 400:
            raise EventRejectedError(body or "(no reason given)")
        retry_after = _seconds(response.headers.get("retry-after"))
        wait = f" (retry after {retry_after:g} s)" if retry_after is not None else ""
        raise HttpPublishError(
            f"POST {self.events_url} answered {response.status_code} (expected 202): {body[:500]}{wait}",
            status=response.status_code,
            body=body,
            retry_after=retry_after,
        )

    async def aclose(self) -> None:
        if self._owned:
            await self.client.aclose()


def _answer_of(body: str) -> str:
    """The ``status`` of a 202 body. Sidecars before the spool answered the plain text
    ``accepted``; an empty or unreadable body is taken as that too."""
    try:
        status = json.loads(body).get("status") if body.startswith("{") else None
    except (ValueError, AttributeError):
        status = None
    return status if isinstance(status, str) and status else ACCEPTED


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is not used by the sidecar)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# === the publisher ==========================================================


class EventPublisher:
    """Publishes envelopes as ``settings`` say. Use as ``async with EventPublisher.from_env() as p``.

    ``redis_client`` / ``http_client`` replace the clients the publisher would make
    (it then leaves closing them to you). ``routes`` is ``{event_type: stream}``;
    by default it comes from the routing file (see ``routing.resolve_routes``).
    ``maxlen`` overrides seed 004's per-stream MAXLEN. ``source_instance`` goes into
    every event's metadata when given. ``metrics_registry`` is the Prometheus
    registry (default: the global one); ``tracer_provider`` the OpenTelemetry one
    (default: the global one).
    """

    def __init__(
        self,
        settings: TransportSettings | None = None,
        *,
        routes: Mapping[str, str] | None = None,
        redis_client: Any = None,
        http_client: httpx.AsyncClient | None = None,
        maxlen: Mapping[str, int] | None = None,
        schemas: SchemaSet | None = None,
        source_instance: str | None = None,
        metrics_registry: Any = None,
        tracer_provider: Any = None,
        redis_timeout_seconds: float = 2.0,
        http_timeout_seconds: float = 5.0,
    ):
        self.settings = settings or TransportSettings.from_env()
        if routes is None:
            routes, self.routes_source = resolve_routes(self.settings.routes_file)
        else:
            self.routes_source = "argument"
        self.routes = dict(routes)
        self.schemas = schemas or packaged_schemas()
        self.source_instance = source_instance
        self.stats = PublisherStats()
        self.metrics = Metrics(metrics_registry)
        self.tracer_provider = tracer_provider
        self._redis_args = dict(
            client=redis_client,
            maxlen=maxlen,
            connect_timeout_seconds=min(1.0, redis_timeout_seconds),
            timeout_seconds=redis_timeout_seconds,
        )
        self._redis: RedisStreamsBackend | None = None
        self.http = HttpBackend(self.settings.events_url, client=http_client, timeout_seconds=http_timeout_seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> "EventPublisher":
        """Settings from ``EVENT_TRANSPORT_*`` (raises ``SettingsError`` naming each bad one)."""
        return cls(TransportSettings.from_env(env), **kwargs)

    async def __aenter__(self) -> "EventPublisher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the clients this publisher made."""
        if self._redis is not None:
            await self._redis.aclose()
        await self.http.aclose()

    @property
    def redis(self) -> RedisStreamsBackend:
        """The Redis Streams backend, made on first use (so HTTP-only settings never connect)."""
        if self._redis is None:
            self._redis = RedisStreamsBackend(self.settings.redis_url, **self._redis_args)
        return self._redis

    def stream_for(self, event_type: str) -> str:
        """The stream of ``event_type`` (``UnknownEventTypeError`` if it has none)."""
        try:
            return self.routes[event_type]
        except KeyError:
            raise UnknownEventTypeError(event_type) from None

    def path_for(self, room_id: str) -> Path:
        return self.settings.path_for_room(room_id)

    async def publish(self, envelope: Envelope, *, path: Path | str | None = None) -> PublishResult:
        """Validate, then send one event. ``path`` forces a path (``"http"``,
        ``"redis_streams"``, ``"dual_write"``) instead of the settings' choice."""
        envelope.validate(self.schemas)
        stream = self.stream_for(envelope.event_type)
        chosen = Path(path) if path is not None else self.path_for(envelope.room_id)
        with publish_span(
            envelope.event_type, envelope.room_id, envelope.event_id, self.tracer_provider
        ) as trace_meta:
            extra = dict(trace_meta)
            if self.source_instance:
                extra["source_instance"] = self.source_instance
            if extra:
                envelope = envelope.with_metadata(**extra)
            if chosen is Path.HTTP:
                answer = await self._send_http(envelope)
                return PublishResult(
                    envelope.event_id, envelope.event_type, stream, chosen, (HTTP,), sidecar_answer=answer
                )
            if chosen is Path.REDIS:
                return await self._publish_redis(envelope, stream)
            return await self._publish_dual(envelope, stream)

    async def publish_event(
        self, event_type: str, room_id: str, payload: dict[str, Any], *, metadata: dict[str, Any] | None = None
    ) -> PublishResult:
        """Build an envelope (new event_id, now) around ``payload`` and publish it."""
        return await self.publish(Envelope(event_type=event_type, room_id=room_id, payload=payload, metadata=metadata))

    # --- paths --------------------------------------------------------------

    async def _publish_redis(self, envelope: Envelope, stream: str) -> PublishResult:
        try:
            entry_id = await self._send_redis(stream, envelope)
        except _REDIS_FAILURES as exc:
            if not self.settings.fallback_to_http:
                raise RedisPublishError(
                    f"XADD to {stream} failed ({type(exc).__name__}: {exc}) and "
                    f"EVENT_TRANSPORT_FALLBACK_TO_HTTP is false: event {envelope.event_id} "
                    f"({envelope.event_type}, room {envelope.room_id}) was not sent"
                ) from exc
            self.stats.fallbacks[envelope.event_type] += 1
            self.metrics.fallback(envelope.event_type)
            log.warning(
                "redis publish failed, falling back to http: event_id=%s event_type=%s stream=%s error=%s: %s",
                envelope.event_id, envelope.event_type, stream, type(exc).__name__, exc,
            )
            answer = await self._send_http(envelope)
            return PublishResult(
                envelope.event_id, envelope.event_type, stream, Path.REDIS, (HTTP,), fell_back=True,
                sidecar_answer=answer,
            )
        return PublishResult(
            envelope.event_id, envelope.event_type, stream, Path.REDIS, (REDIS,), redis_entry_id=entry_id
        )

    async def _publish_dual(self, envelope: Envelope, stream: str) -> PublishResult:
        redis_out, http_out = await asyncio.gather(
            self._send_redis(stream, envelope), self._send_http(envelope), return_exceptions=True
        )
        if isinstance(http_out, EventRejectedError):
            raise http_out  # the event itself is bad: say so, whatever Redis did
        for name, out in ((REDIS, redis_out), (HTTP, http_out)):
            if isinstance(out, BaseException):
                if not isinstance(out, (*_REDIS_FAILURES, TransportError)):
                    raise out
                log.warning(
                    "dual-write: %s leg failed: event_id=%s event_type=%s error=%s: %s",
                    name, envelope.event_id, envelope.event_type, type(out).__name__, out,
                )
        ok = tuple(name for name, out in ((REDIS, redis_out), (HTTP, http_out)) if not isinstance(out, BaseException))
        if not ok:
            raise TransportError(
                f"dual-write of event {envelope.event_id} failed both ways: "
                f"redis: {type(redis_out).__name__}: {redis_out}; http: {http_out}"
            )
        entry = redis_out if isinstance(redis_out, str) else None
        answer = http_out if isinstance(http_out, str) else None
        return PublishResult(
            envelope.event_id, envelope.event_type, stream, Path.DUAL, ok, redis_entry_id=entry, sidecar_answer=answer
        )

    async def _send_redis(self, stream: str, envelope: Envelope) -> str:
        start = time.perf_counter()
        try:
            entry_id = await self.redis.send(stream, envelope)
        except Exception:
            self.stats.errors[(REDIS, envelope.event_type)] += 1
            self.metrics.error(REDIS, envelope.event_type)
            raise
        self._count(REDIS, envelope.event_type, time.perf_counter() - start)
        return entry_id

    async def _send_http(self, envelope: Envelope) -> str:
        start = time.perf_counter()
        try:
            answer = await self.http.send(envelope)
        except Exception:
            self.stats.errors[(HTTP, envelope.event_type)] += 1
            self.metrics.error(HTTP, envelope.event_type)
            raise
        self._count(HTTP, envelope.event_type, time.perf_counter() - start)
        if answer == QUEUED:
            self.stats.queued[envelope.event_type] += 1
            self.metrics.queued(envelope.event_type)
            log.warning(
                "sidecar queued the event: it cannot reach Redis and will append it once it can "
                "(delivery is delayed until then): event_id=%s event_type=%s",
                envelope.event_id, envelope.event_type,
            )
        return answer

    def _count(self, transport: str, event_type: str, seconds: float) -> None:
        self.stats.published[(transport, event_type)] += 1
        self.metrics.published(transport, event_type, seconds)
