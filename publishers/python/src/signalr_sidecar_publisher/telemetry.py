"""Optional telemetry: Prometheus metrics (``prometheus_client``) and the W3C trace
context of the current OpenTelemetry span (``opentelemetry-api``).

Neither is a dependency: without them the metrics are kept only in
``PublisherStats`` and no trace context is added.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

try:  # pragma: no branch
    import prometheus_client as _prom
except ImportError:  # pragma: no cover - exercised when the extra is not installed
    _prom = None

try:  # pragma: no branch
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover
    _otel_trace = None

#: Metric names (seed 002, T008/T010), plus the fallback, error and queued counters.
PUBLISH_DURATION = "event_publish_duration_seconds"
PUBLISHED_TOTAL = "events_published_total"
FALLBACKS_TOTAL = "event_publish_fallbacks_total"
ERRORS_TOTAL = "event_publish_errors_total"
QUEUED_TOTAL = "event_publish_queued_total"

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class PublisherStats:
    """In-process counts, always kept (also without prometheus_client)."""

    #: events handed over, by (transport, event_type)
    published: Counter = field(default_factory=Counter)
    #: Redis failures answered by the HTTP fallback, by event_type
    fallbacks: Counter = field(default_factory=Counter)
    #: failed attempts, by (transport, event_type)
    errors: Counter = field(default_factory=Counter)
    #: events the sidecar answered ``queued`` (its Redis was unreachable), by event_type
    queued: Counter = field(default_factory=Counter)

    def published_by(self, transport: str) -> int:
        return sum(n for (t, _), n in self.published.items() if t == transport)


class Metrics:
    """The Prometheus families, registered once per registry; no-ops without prometheus_client."""

    _families: dict[int, tuple[Any, Any, Any, Any, Any]] = {}

    def __init__(self, registry: Any = None):
        self.enabled = _prom is not None
        if not self.enabled:
            return
        registry = registry if registry is not None else _prom.REGISTRY
        key = id(registry)
        if key not in Metrics._families:
            Metrics._families[key] = (
                _prom.Histogram(
                    PUBLISH_DURATION,
                    "Time to hand one event to the sidecar, by transport (redis_streams, http) and event_type.",
                    ["transport", "event_type"],
                    buckets=_BUCKETS,
                    registry=registry,
                ),
                _prom.Counter(
                    PUBLISHED_TOTAL,
                    "Events handed to the sidecar, by transport (redis_streams, http) and event_type.",
                    ["transport", "event_type"],
                    registry=registry,
                ),
                _prom.Counter(
                    FALLBACKS_TOTAL,
                    "Events sent over HTTP because the Redis Streams publish failed, by event_type.",
                    ["event_type"],
                    registry=registry,
                ),
                _prom.Counter(
                    ERRORS_TOTAL,
                    "Failed publish attempts, by transport and event_type.",
                    ["transport", "event_type"],
                    registry=registry,
                ),
                _prom.Counter(
                    QUEUED_TOTAL,
                    "Events POSTed while the sidecar could not reach Redis: it holds them and appends "
                    "them once it can, by event_type.",
                    ["event_type"],
                    registry=registry,
                ),
            )
        self._duration, self._published, self._fallbacks, self._errors, self._queued = Metrics._families[key]

    def published(self, transport: str, event_type: str, seconds: float) -> None:
        if self.enabled:
            self._duration.labels(transport, event_type).observe(seconds)
            self._published.labels(transport, event_type).inc()

    def fallback(self, event_type: str) -> None:
        if self.enabled:
            self._fallbacks.labels(event_type).inc()

    def error(self, transport: str, event_type: str) -> None:
        if self.enabled:
            self._errors.labels(transport, event_type).inc()

    def queued(self, event_type: str) -> None:
        if self.enabled:
            self._queued.labels(event_type).inc()


def otel_available() -> bool:
    return _otel_trace is not None


@contextlib.contextmanager
def publish_span(
    event_type: str, room_id: str, event_id: str, tracer_provider: Any = None
) -> Iterator[dict[str, str]]:
    """A PRODUCER span around one publish, child of the caller's current span, when
    OpenTelemetry is installed. Yields the trace metadata to put in the envelope:
    that of the publish span, or of the caller's span when the publish span is not
    recorded (no SDK configured), or ``{}``."""
    if _otel_trace is None:
        yield {}
        return
    outer = trace_metadata()
    tracer = _otel_trace.get_tracer("signalr_sidecar_publisher", tracer_provider=tracer_provider)
    with tracer.start_as_current_span(
        f"publish {event_type}",
        kind=_otel_trace.SpanKind.PRODUCER,
        attributes={"messaging.system": "signalr-sidecar", "event.type": event_type,
                    "event.room_id": room_id, "event.id": event_id},
    ):
        yield trace_metadata() or outer


def trace_metadata() -> dict[str, str]:
    """``{"traceparent": ..., "trace_id": ...}`` of the current span, or ``{}`` when there
    is no valid span or OpenTelemetry is not installed."""
    if _otel_trace is None:
        return {}
    ctx = _otel_trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    trace_id = format(ctx.trace_id, "032x")
    traceparent = f"00-{trace_id}-{format(ctx.span_id, '016x')}-{int(ctx.trace_flags):02x}"
    return {"traceparent": traceparent, "trace_id": trace_id}
