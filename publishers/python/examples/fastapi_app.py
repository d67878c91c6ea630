"""A small FastAPI backend that publishes through signalr-sidecar.

    pip install 'signalr-sidecar-publisher[otel,metrics]' fastapi uvicorn
    EVENT_TRANSPORT_USE_REDIS_STREAMS=true EVENT_TRANSPORT_REDIS_PERCENTAGE=100 \\
    EVENT_TRANSPORT_REDIS_URL=redis://localhost:6379/0 \\
    EVENT_TRANSPORT_SIDECAR_URL=http://localhost:9090 \\
        uvicorn fastapi_app:app --port 8000

    curl -X POST localhost:8000/requests/R1/messages -H 'content-type: application/json' \\
         -d '{"sender_id": "u1", "content": "hello"}'
    curl -X POST localhost:8000/requests/R1/typing -H 'content-type: application/json' \\
         -d '{"user_id": "u1", "username": "Ann", "is_typing": true}'

Browsers connected to the sidecar's /hubs/chat that called JoinRoom("R1") get
ReceiveMessage and UserTyping. One EventPublisher lives as long as the app; the
transport (Redis Streams, HTTP, dual-write, fallback) is chosen by the
EVENT_TRANSPORT_* variables alone, so rollout and rollback need no code change.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from signalr_sidecar_publisher import EventPublisher, TransportError, ValidationError, events, utc_now


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Settings errors (a bad EVENT_TRANSPORT_* value) stop the app at start-up, named.
    async with EventPublisher.from_env(source_instance="fastapi-example") as publisher:
        app.state.publisher = publisher
        yield


app = FastAPI(title="signalr-sidecar publisher example", lifespan=lifespan)

# Stand-in for the database's per-request message sequence.
_sequences: defaultdict[str, itertools.count] = defaultdict(lambda: itertools.count(1))


class NewMessage(BaseModel):
    sender_id: str | None = None
    content: str
    client_temp_id: str | None = None


class Typing(BaseModel):
    user_id: str
    username: str
    is_typing: bool


async def _publish(request: Request, envelope):
    try:
        result = await request.app.state.publisher.publish(envelope)
    except TransportError as exc:  # Redis down without fallback, sidecar unreachable, ...
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    return {"event_id": result.event_id, "stream": result.stream, "transports": list(result.transports),
            "fell_back": result.fell_back}


@app.post("/requests/{request_id}/messages", status_code=201)
async def post_message(request_id: str, body: NewMessage, request: Request):
    """Store the message (not shown), then tell the room."""
    message_id = str(uuid.uuid4())
    try:
        envelope = events.chat_message(
            request_id,
            id=message_id,
            request_id=request_id,
            sender_id=body.sender_id,
            content=body.content,
            sequence_number=next(_sequences[request_id]),
            created_at=utc_now(),
            client_temp_id=body.client_temp_id,
        )
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=exc.errors) from exc
    return {"message_id": message_id, **await _publish(request, envelope)}


@app.post("/requests/{request_id}/typing", status_code=202)
async def post_typing(request_id: str, body: Typing, request: Request):
    """A typing indicator; the sidecar coalesces these per room and user (100 ms)."""
    try:
        envelope = events.typing(request_id, user_id=body.user_id, username=body.username, is_typing=body.is_typing)
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=exc.errors) from exc
    return await _publish(request, envelope)


try:  # the publisher's Prometheus metrics, when prometheus_client is installed
    from prometheus_client import make_asgi_app

    app.mount("/metrics", make_asgi_app())
except ImportError:  # pragma: no cover
    pass
