"""Transport settings, read from ``EVENT_TRANSPORT_*`` environment variables (CONTRACT section 12).

Rollout and rollback are configuration only (seed 000, SC-006): each knob is a
variable, and ``EVENT_TRANSPORT_USE_REDIS_STREAMS=false`` sends everything back
to the HTTP bridge whatever the other variables say.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping
from urllib.parse import urlparse

from .errors import SettingsError

#: The environment variables, by settings field.
ENV_VARS = {
    "use_redis_streams": "EVENT_TRANSPORT_USE_REDIS_STREAMS",
    "redis_percentage": "EVENT_TRANSPORT_REDIS_PERCENTAGE",
    "fallback_to_http": "EVENT_TRANSPORT_FALLBACK_TO_HTTP",
    "dual_write": "EVENT_TRANSPORT_DUAL_WRITE",
    "redis_url": "EVENT_TRANSPORT_REDIS_URL",
    "sidecar_url": "EVENT_TRANSPORT_SIDECAR_URL",
    "routes_file": "EVENT_TRANSPORT_ROUTES_FILE",
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class Path(str, Enum):
    """Which way one event goes."""

    HTTP = "http"
    REDIS = "redis_streams"
    DUAL = "dual_write"


@dataclass(frozen=True)
class TransportSettings:
    """How events leave the backend. Defaults are seed 001's: everything over HTTP."""

    #: ``EVENT_TRANSPORT_USE_REDIS_STREAMS`` (default false): the feature flag and the
    #: rollback switch. False sends every event over HTTP, whatever the other settings say.
    use_redis_streams: bool = False
    #: ``EVENT_TRANSPORT_REDIS_PERCENTAGE`` (0-100, default 0): share of rooms whose events
    #: go through Redis Streams. Chosen per room (``room_bucket``) so a room never splits.
    redis_percentage: int = 0
    #: ``EVENT_TRANSPORT_FALLBACK_TO_HTTP`` (default true): when XADD fails, POST the event
    #: to the sidecar instead (counted and logged). False: raise ``RedisPublishError``.
    fallback_to_http: bool = True
    #: ``EVENT_TRANSPORT_DUAL_WRITE`` (default false): send every event both ways with the
    #: same event_id; the sidecar delivers an event_id once. Overrides the percentage.
    dual_write: bool = False
    #: ``EVENT_TRANSPORT_REDIS_URL`` (default redis://localhost:6379/0): redis://, rediss:// or unix://.
    redis_url: str = "redis://localhost:6379/0"
    #: ``EVENT_TRANSPORT_SIDECAR_URL`` (default http://localhost:9090): the sidecar's admin port;
    #: events are POSTed to ``<sidecar_url>/internal/events``.
    sidecar_url: str = "http://localhost:9090"
    #: ``EVENT_TRANSPORT_ROUTES_FILE`` (optional): routing TOML giving each event_type's stream.
    #: Unset: ``./protocol/routes.toml`` if present, else the built-in seed-004 topology.
    routes_file: str | None = field(default=None)

    def __post_init__(self) -> None:
        errors = _check(self)
        if errors:
            raise SettingsError(errors)

    # --- construction -------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TransportSettings":
        """Read the settings from ``env`` (default ``os.environ``).

        Every bad variable is reported at once, each message starting with its name.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        errors: list[str] = []

        def get(name: str) -> str | None:
            raw = env.get(ENV_VARS[name])
            if raw is None or raw.strip() == "":
                return None
            return raw.strip()

        for name in ("use_redis_streams", "fallback_to_http", "dual_write"):
            raw = get(name)
            if raw is None:
                continue
            if raw.lower() in _TRUE:
                values[name] = True
            elif raw.lower() in _FALSE:
                values[name] = False
            else:
                errors.append(f"{ENV_VARS[name]}: expected true or false, got {raw!r}")

        raw = get("redis_percentage")
        if raw is not None:
            try:
                values["redis_percentage"] = int(raw)
            except ValueError:
                errors.append(f"{ENV_VARS['redis_percentage']}: expected a whole number from 0 to 100, got {raw!r}")

        for name in ("redis_url", "sidecar_url", "routes_file"):
            raw = get(name)
            if raw is not None:
                values[name] = raw

        if errors:
            # Check the rest as well, so the operator sees every problem in one go.
            candidate = {k: v for k, v in values.items()}
            errors.extend(_check_values(candidate))
            raise SettingsError(errors)
        return cls(**values)  # type: ignore[arg-type]

    # --- decisions ----------------------------------------------------------

    def path_for_room(self, room_id: str) -> Path:
        """The path of every event of ``room_id`` under these settings.

        1. ``use_redis_streams`` false: HTTP (rollback switch wins);
        2. ``dual_write`` true: both;
        3. otherwise Redis Streams when ``room_bucket(room_id) < redis_percentage``, else HTTP.
        """
        if not self.use_redis_streams:
            return Path.HTTP
        if self.dual_write:
            return Path.DUAL
        if room_bucket(room_id) < self.redis_percentage:
            return Path.REDIS
        return Path.HTTP

    @property
    def events_url(self) -> str:
        """``<sidecar_url>/internal/events``."""
        return self.sidecar_url.rstrip("/") + "/internal/events"


def room_bucket(room_id: str) -> int:
    """A stable bucket 0-99 for a room: the first 8 bytes of SHA-256(room_id, UTF-8),
    big-endian, modulo 100. Same on every process and every language, so a room
    stays on one path while the percentage does not change, and raising the
    percentage only ever moves rooms from HTTP to Redis."""
    digest = hashlib.sha256(room_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


def _check(s: TransportSettings) -> list[str]:
    return _check_values({k: getattr(s, k) for k in ENV_VARS})


def _check_values(v: Mapping[str, object]) -> list[str]:
    errors: list[str] = []
    for name in ("use_redis_streams", "fallback_to_http", "dual_write"):
        if name in v and not isinstance(v[name], bool):
            errors.append(f"{ENV_VARS[name]}: expected true or false, got {v[name]!r}")
    pct = v.get("redis_percentage", 0)
    if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
        errors.append(f"{ENV_VARS['redis_percentage']}: expected a whole number from 0 to 100, got {pct!r}")
    redis_url = v.get("redis_url", "redis://localhost:6379/0")
    if not isinstance(redis_url, str) or urlparse(redis_url).scheme not in ("redis", "rediss", "unix"):
        errors.append(f"{ENV_VARS['redis_url']}: expected a redis://, rediss:// or unix:// URL, got {redis_url!r}")
    sidecar_url = v.get("sidecar_url", "http://localhost:9090")
    parsed = urlparse(sidecar_url) if isinstance(sidecar_url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        errors.append(
            f"{ENV_VARS['sidecar_url']}: expected the sidecar admin port's base URL "
            f"(http://host:port), got {sidecar_url!r}"
        )
    routes = v.get("routes_file")
    if routes is not None and not isinstance(routes, str):
        errors.append(f"{ENV_VARS['routes_file']}: expected a file path, got {routes!r}")
    return errors
