"""signalr-sidecar-publisher: the backend's side of signalr-sidecar (CONTRACT section 12).

    from signalr_sidecar_publisher import EventPublisher, events

    async with EventPublisher.from_env() as publisher:
        await publisher.publish(events.chat_message(room_id, id=..., request_id=..., ...))

Modules: ``settings`` (EVENT_TRANSPORT_* and the per-room path), ``envelope``
(seed 004 envelope and its wire forms), ``events`` (typed builders per event
type), ``schema`` (JSON Schema checks), ``routing`` (event_type -> stream),
``publisher`` (Redis Streams and HTTP backends), ``telemetry`` (optional
Prometheus and OpenTelemetry), ``cli`` (``signalr-sidecar-publish``).
"""

from . import events
from .envelope import Envelope, new_event_id, utc_now
from .errors import (
    EventRejectedError,
    HttpPublishError,
    PublisherError,
    RedisPublishError,
    SettingsError,
    TransportError,
    UnknownEventTypeError,
    ValidationError,
)
from .publisher import EventPublisher, HttpBackend, PublishResult, RedisStreamsBackend
from .settings import Path, TransportSettings, room_bucket

__all__ = [
    "EventPublisher",
    "Envelope",
    "EventRejectedError",
    "HttpBackend",
    "HttpPublishError",
    "Path",
    "PublishResult",
    "PublisherError",
    "RedisPublishError",
    "RedisStreamsBackend",
    "SettingsError",
    "TransportError",
    "TransportSettings",
    "UnknownEventTypeError",
    "ValidationError",
    "events",
    "new_event_id",
    "room_bucket",
    "utc_now",
]

__version__ = "0.1.0"
