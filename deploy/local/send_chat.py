"""Publish one chat message the way the backend does, inside a traced request,
so its whole trace can be read in Jaeger (deploy/local/README.md).

    pip install ./publishers/python opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
    python deploy/local/send_chat.py --room room-1 --text hello

It opens a SERVER span ``POST /requests/{request_id}/messages`` for the
service ``support-backend`` (``OTEL_SERVICE_NAME``), publishes a
``chat_message`` to ``events:chat`` with ``signalr_sidecar_publisher`` (the
publisher adds its ``publish chat_message`` PRODUCER span and puts its W3C
``traceparent`` in the envelope's ``metadata``), exports the spans over
OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default http://localhost:4318,
Jaeger of the local stack) and prints the trace id and its Jaeger address.
Without the OTLP exporter package it still publishes, with the trace context,
and says that nothing was exported.

Redis: ``EVENT_TRANSPORT_REDIS_URL`` (default redis://localhost:6379/0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from signalr_sidecar_publisher import EventPublisher, events, utc_now


def make_provider(export: bool = True) -> tuple[TracerProvider, str | None]:
    """A tracer provider exporting over OTLP/HTTP, or recording only (and why)."""
    service = os.environ.get("OTEL_SERVICE_NAME", "support-backend")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if not export:
        return provider, "--no-export: spans were not exported"
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        return provider, "opentelemetry-exporter-otlp-proto-http is not installed: spans were not exported"
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
    return provider, None


async def send(room: str, text: str, sequence_number: int, provider: TracerProvider) -> tuple[str, str]:
    """Publishes one chat message inside a request span; returns (trace id, event id)."""
    tracer = provider.get_tracer("deploy.local.send_chat")
    message_id = f"m-{uuid.uuid4().hex[:12]}"
    with tracer.start_as_current_span(
        "POST /requests/{request_id}/messages",
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": "POST", "http.route": "/requests/{request_id}/messages"},
    ) as span:
        envelope = events.chat_message(
            room,
            id=message_id,
            request_id=room,
            sender_id="agent-7",
            content=text,
            sequence_number=sequence_number,
            created_at=utc_now(),
        )
        async with EventPublisher.from_env(tracer_provider=provider) as publisher:
            result = await publisher.publish(envelope, path="redis_streams")
        trace_id = format(span.get_span_context().trace_id, "032x")
    return trace_id, result.event_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--room", default="room-1", help="room_id (the group clients JoinRoom()ed)")
    parser.add_argument("--text", default="hello from send_chat.py", help="message content")
    parser.add_argument("--sequence-number", type=int, default=1)
    parser.add_argument("--jaeger-ui", default=os.environ.get("JAEGER_UI", "http://localhost:16686"))
    parser.add_argument("--no-export", action="store_true", help="publish with trace context, export no spans")
    args = parser.parse_args(argv)

    provider, not_exported = make_provider(export=not args.no_export)
    trace_id, event_id = asyncio.run(send(args.room, args.text, args.sequence_number, provider))
    provider.shutdown()  # flushes the batch to the exporter
    print(f"event_id {event_id}")
    print(f"trace_id {trace_id}")
    if not_exported:
        print(f"note: {not_exported}", file=sys.stderr)
    else:
        print(f"jaeger {args.jaeger_ui.rstrip('/')}/trace/{trace_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
