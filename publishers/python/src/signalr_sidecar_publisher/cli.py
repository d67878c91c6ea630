"""``signalr-sidecar-publish``: publish one envelope (JSON) for operators.

Reads the envelope from standard input, or from the file named as the argument,
and publishes it by the path the ``EVENT_TRANSPORT_*`` settings choose
(``--via`` forces one). Exit status:

  0  published (a line on standard output says how); over HTTP the line ends with the
     sidecar's answer: ``accepted``, or ``queued`` when the sidecar cannot reach Redis
     and holds the event until it can (a note on standard error says so)
  1  the transport failed (Redis without fallback, HTTP error, sidecar said 400, or
     503: the sidecar's spool is full, retry later)
  2  bad input: unreadable file, not JSON, not a valid envelope (the field is named)
  3  bad settings (the variable is named)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from typing import Sequence

from .envelope import Envelope, new_event_id, utc_now
from .errors import PublisherError, SettingsError, TransportError, ValidationError
from .publisher import EventPublisher
from .settings import Path, TransportSettings

EXIT_OK, EXIT_TRANSPORT, EXIT_INPUT, EXIT_SETTINGS = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="signalr-sidecar-publish",
        description="Publish one event envelope (JSON) to signalr-sidecar, by the path the "
        "EVENT_TRANSPORT_* settings choose.",
        epilog="Exit status: 0 published, 1 transport failed, 2 bad input, 3 bad settings.",
    )
    p.add_argument("file", nargs="?", default="-", help="envelope JSON file (default: standard input)")
    p.add_argument(
        "--via",
        choices=["auto", Path.HTTP.value, Path.REDIS.value, Path.DUAL.value],
        default="auto",
        help="force a path instead of the one the settings choose for the room",
    )
    p.add_argument(
        "--restamp",
        action="store_true",
        help="give the event a new event_id and the current timestamp (re-sending an old event)",
    )
    return p


def _fail(code: int, message: str) -> int:
    print(f"signalr-sidecar-publish: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        return _fail(EXIT_INPUT, f"cannot read {args.file}: {exc.strerror or exc}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _fail(EXIT_INPUT, f"input is not JSON: {exc}")
    if args.restamp and isinstance(data, dict):
        data = {**data, "event_id": new_event_id(), "timestamp": utc_now()}
    try:
        settings = TransportSettings.from_env()
    except SettingsError as exc:
        return _fail(EXIT_SETTINGS, f"invalid settings: {exc}")
    try:
        envelope = Envelope.from_dict(data)
    except ValidationError as exc:
        return _fail(EXIT_INPUT, str(exc))
    via = None if args.via == "auto" else args.via
    try:
        result = asyncio.run(_publish(settings, envelope, via))
    except ValidationError as exc:
        return _fail(EXIT_INPUT, str(exc))
    except (TransportError, PublisherError) as exc:
        return _fail(EXIT_TRANSPORT, str(exc))
    how = "+".join(result.transports) + (" (fallback after a Redis error)" if result.fell_back else "")
    answer = f": sidecar {result.sidecar_answer}" if result.sidecar_answer else ""
    print(
        f"published {result.event_id} ({result.event_type}, room {envelope.room_id}) to {result.stream} "
        f"via {how}{answer}"
    )
    if result.queued:
        print(
            "signalr-sidecar-publish: the sidecar cannot reach Redis; it holds the event and appends it "
            "once it can (delivery is delayed, not lost)",
            file=sys.stderr,
        )
    return EXIT_OK


async def _publish(settings: TransportSettings, envelope: Envelope, via: str | None):
    async with EventPublisher(settings) as publisher:
        return await publisher.publish(envelope, path=via)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
