"""Every error the publisher raises, so callers can catch one base class.

``PublisherError``
  ``SettingsError``        a bad ``EVENT_TRANSPORT_*`` variable (named in the message)
  ``ValidationError``      the envelope or payload does not match its JSON Schema
                           (the offending field is named, e.g. ``payload.sequence_number``)
  ``UnknownEventTypeError`` no stream is known for this event_type
  ``TransportError``       the event could not be handed to the sidecar
    ``RedisPublishError``  XADD failed and ``EVENT_TRANSPORT_FALLBACK_TO_HTTP`` is off
    ``HttpPublishError``   POST /internal/events failed (network or unexpected status;
                           503 when the sidecar's spool is full, with ``retry_after``)
      ``EventRejectedError`` the sidecar answered 400; ``reason`` is its body
"""

from __future__ import annotations


class PublisherError(Exception):
    """Base class of everything this package raises on purpose."""


class SettingsError(PublisherError, ValueError):
    """One or more settings are invalid. Each message starts with the variable's name."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


class ValidationError(PublisherError, ValueError):
    """The envelope (or its payload) does not match its schema.

    ``field`` is the dotted path of the first bad field (``payload.content``),
    ``errors`` every problem found, each as ``"<field>: <problem>"``.
    """

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = [f"{field}: {problem}" for field, problem in errors]
        self.field = errors[0][0] if errors else ""
        super().__init__("invalid event: " + "; ".join(self.errors))


class UnknownEventTypeError(ValidationError):
    """No stream is configured for this event_type (neither routes file nor built-in table)."""

    def __init__(self, event_type: str):
        self.event_type = event_type
        super().__init__(
            [("event_type", f"no stream is known for event_type {event_type!r} (add a [[route]] to the routes file)")]
        )


class TransportError(PublisherError):
    """The event could not be handed to the sidecar by the chosen path."""


class RedisPublishError(TransportError):
    """XADD failed and there is no HTTP fallback (``EVENT_TRANSPORT_FALLBACK_TO_HTTP=false``)."""


class HttpPublishError(TransportError):
    """POST /internal/events failed: connection error, timeout, or a status other than 202.

    ``status`` and ``body`` are the sidecar's answer (``None`` and ``""`` when there was
    none). A 503 means the sidecar could not take the event now: its Redis is unreachable
    and its spool is full, or it is shutting down; ``retry_after`` is then the seconds its
    ``Retry-After`` header asks to wait (``None`` without one). The event was not sent.
    """

    def __init__(self, message: str, status: int | None = None, body: str = "", retry_after: float | None = None):
        self.status = status
        self.body = body
        self.retry_after = retry_after
        super().__init__(message)


class EventRejectedError(HttpPublishError):
    """The sidecar answered 400: the event is not valid. ``reason`` is the sidecar's explanation."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"sidecar rejected the event (400): {reason}", status=400, body=reason)
