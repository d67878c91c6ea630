"""Which Redis Stream each event_type goes to, and how long each stream may grow.

The sidecar's routing file (``protocol/routes.toml``, ``[[route]] event_type, stream``)
is the source of truth; when it cannot be found the built-in table below, seed
004's stream topology, is used.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

#: Seed 004 "Stream Topology", plus the presence events of CONTRACT section 11.
DEFAULT_STREAMS: dict[str, str] = {
    "chat_message": "events:chat",
    "typing_start": "events:chat",
    "typing_stop": "events:chat",
    "read_receipt": "events:chat",
    "user_joined": "events:chat",
    "user_left": "events:chat",
    "status_change": "events:ticket",
    "assignment_change": "events:ticket",
    "notification": "events:notification",
    "remote_session_start": "events:remote",
    "remote_session_end": "events:remote",
}

#: Seed 004 "Memory Considerations": the approximate MAXLEN of each stream.
DEFAULT_MAXLEN: dict[str, int] = {
    "events:chat": 10_000,
    "events:ticket": 5_000,
    "events:notification": 5_000,
    "events:remote": 1_000,
}
#: MAXLEN of a stream not named above.
FALLBACK_MAXLEN = 10_000


def load_routes(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{event_type: stream}`` from the ``[[route]]`` tables of a routing file."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        return _parse_routes_minimal(text)
    data = tomllib.loads(text)
    routes: dict[str, str] = {}
    for i, route in enumerate(data.get("route", [])):
        event_type, stream = route.get("event_type"), route.get("stream")
        if not isinstance(event_type, str) or not isinstance(stream, str):
            raise ValueError(f"{path}: [[route]] number {i + 1} needs string event_type and stream")
        routes[event_type] = stream
    return routes


def _parse_routes_minimal(text: str) -> dict[str, str]:
    """Python 3.10 has no tomllib: read ``key = "value"`` lines of ``[[route]]`` tables only."""
    routes: dict[str, str] = {}
    current: dict[str, str] | None = None
    line_re = re.compile(r'^\s*(event_type|stream)\s*=\s*"([^"]*)"\s*(#.*)?$')

    def flush() -> None:
        if current and "event_type" in current and "stream" in current:
            routes[current["event_type"]] = current["stream"]

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            flush()
            current = {} if stripped == "[[route]]" else None
            continue
        if current is not None:
            m = line_re.match(line)
            if m:
                current[m.group(1)] = m.group(2)
    flush()
    return routes


def resolve_routes(routes_file: str | None = None, cwd: str | None = None) -> tuple[dict[str, str], str]:
    """The routing table to use and where it came from.

    ``routes_file`` (``EVENT_TRANSPORT_ROUTES_FILE``) if given; otherwise
    ``protocol/routes.toml`` under the working directory when it exists (as the
    sidecar finds it); otherwise ``DEFAULT_STREAMS``.
    """
    if routes_file:
        return load_routes(routes_file), routes_file
    candidate = Path(cwd or os.getcwd()) / "protocol" / "routes.toml"
    if candidate.is_file():
        return load_routes(candidate), str(candidate)
    return dict(DEFAULT_STREAMS), "built-in (seed 004)"


def maxlen_for(stream: str, overrides: Mapping[str, int] | None = None) -> int:
    """Approximate MAXLEN for ``stream``: an override, seed 004's figure, or 10000."""
    if overrides and stream in overrides:
        return overrides[stream]
    return DEFAULT_MAXLEN.get(stream, FALLBACK_MAXLEN)
