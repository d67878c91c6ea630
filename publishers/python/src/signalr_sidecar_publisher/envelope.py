"""The event envelope of seed 004 and its two wire forms (JSON body, flat stream fields)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Mapping

from .errors import ValidationError
from .schema import SchemaSet, packaged_schemas

_FIELDS = ("event_id", "event_type", "timestamp", "room_id", "payload", "metadata")


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-01-16T10:00:00.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_event_id() -> str:
    """A fresh UUID v4: the idempotency key the sidecar dedupes on."""
    return str(uuid.uuid4())


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Envelope:
    """One event: ``event_id`` (UUID v4), ``event_type``, ``timestamp`` (ISO 8601 UTC),
    ``room_id`` (group, ``user:<id>`` or ``*``), ``payload`` and optional ``metadata``
    (``trace_id``, ``traceparent``, ``source_instance``, ``coalesced_count``)."""

    event_type: str
    room_id: str
    payload: dict[str, Any]
    event_id: str = field(default_factory=new_event_id)
    timestamp: str = field(default_factory=utc_now)
    metadata: dict[str, Any] | None = None

    # --- conversions --------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The envelope as a JSON object; ``metadata`` only when present."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "room_id": self.room_id,
            "payload": self.payload,
        }
        if self.metadata is not None:
            out["metadata"] = self.metadata
        return out

    def to_json(self) -> str:
        """The body of ``POST /internal/events``."""
        return _dumps(self.to_dict())

    def to_stream_fields(self) -> dict[str, str]:
        """The flat XADD fields of CONTRACT section 4: payload and metadata as JSON text,
        metadata only when present."""
        fields = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "room_id": self.room_id,
            "payload": _dumps(self.payload),
        }
        if self.metadata is not None:
            fields["metadata"] = _dumps(self.metadata)
        return fields

    def with_metadata(self, **values: Any) -> "Envelope":
        """A copy whose metadata has ``values`` added (existing keys are kept)."""
        merged = dict(values)
        merged.update(self.metadata or {})
        return replace(self, metadata=merged)

    # --- checks -------------------------------------------------------------

    def validate(self, schemas: SchemaSet | None = None) -> "Envelope":
        """Raise ``ValidationError`` naming the bad field unless the envelope and its
        payload match ``protocol/schemas``. Returns ``self`` for chaining."""
        errors = (schemas or packaged_schemas()).errors(self.to_dict())
        if errors:
            raise ValidationError(errors)
        try:
            self.to_json()
        except (TypeError, ValueError) as exc:
            raise ValidationError([("payload", f"not representable as JSON: {exc}")]) from None
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], schemas: SchemaSet | None = None) -> "Envelope":
        """Build from a parsed JSON object, validating it first (so a missing or bad
        field is named, not a ``KeyError``). Unknown top-level keys are refused."""
        if not isinstance(data, Mapping):
            raise ValidationError([("(root)", f"expected an object, got {type(data).__name__}")])
        unknown = sorted(set(data) - set(_FIELDS))
        errors = (schemas or packaged_schemas()).errors(dict(data))
        errors.extend((name, "unknown envelope field") for name in unknown)
        if errors:
            raise ValidationError(errors)
        return cls(
            event_id=data["event_id"],
            event_type=data["event_type"],
            timestamp=data["timestamp"],
            room_id=data["room_id"],
            payload=data["payload"],
            metadata=data.get("metadata"),
        )

    @classmethod
    def from_stream_fields(cls, fields: Mapping[Any, Any]) -> "Envelope":
        """Decode a flat stream entry (bytes or str keys), the reverse of ``to_stream_fields``."""

        def text(v: Any) -> str:
            return v.decode("utf-8") if isinstance(v, bytes) else v

        f = {text(k): text(v) for k, v in fields.items()}
        data: dict[str, Any] = {k: f[k] for k in ("event_id", "event_type", "timestamp", "room_id") if k in f}
        if "payload" in f:
            data["payload"] = json.loads(f["payload"])
        if "metadata" in f:
            data["metadata"] = json.loads(f["metadata"])
        return cls.from_dict(data)
