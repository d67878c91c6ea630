"""A community client from the field (CONTRACT section 13): `signalrcore`, the
Python SignalR client on PyPI, which follows the server, not the JS client. It
connects to the real sidecar (Redis, JWT) over the transports and encodings
it implements soundly, joins a room, receives a published event unchanged (extra fields
kept), types, and gets a Completion error for an unknown method."""

from __future__ import annotations

import datetime
import json
import logging
import threading
import urllib.request
import uuid

import pytest
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.types import HttpTransportType, HubProtocolEncoding

from conftest import jwt

# Long Polling is left out: signalrcore 1.0.2's polls carry no access token
# (only its POSTs do), so a hub that requires one answers them 401, ASP.NET
# Core as well; and it hands on one record per poll response, keeping the rest
# until the next poll returns, so a Completion behind a UserJoined waits for
# the next event. (Without auth it connects: every transport was tried.)
CASES = [
    (HttpTransportType.web_sockets, HubProtocolEncoding.text),
    (HttpTransportType.web_sockets, HubProtocolEncoding.binary),
    (HttpTransportType.server_sent_events, HubProtocolEncoding.text),
]
WAIT = 10


def publish(admin: str, room: str, event_type: str, payload: dict) -> int:
    envelope = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "room_id": room,
        "payload": payload,
    }
    request = urllib.request.Request(f"{admin}/internal/events", data=json.dumps(envelope).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as r:
        return r.status


class Client:
    """One signalrcore connection with what it received, by client method."""

    def __init__(self, url: str, user: str, transport, encoding):
        self.received: dict[str, list] = {}
        self.errors: list = []
        self.changed = threading.Condition()
        self.conn = (HubConnectionBuilder()
                     .with_url(url, options={"transport": transport, "access_token_factory": lambda: jwt(user)})
                     .with_hub_protocol(encoding)
                     .configure_logging(logging.WARNING)
                     .build())
        opened = threading.Event()
        self.conn.on_open(opened.set)
        self.conn.on_error(lambda message: self._note(self.errors, message))
        for method in ("ReceiveMessage", "UserTyping"):
            self.conn.on(method, lambda args, m=method: self._note(self.received.setdefault(m, []), args))
        self.conn.start()
        assert opened.wait(WAIT), "the connection opened"

    def _note(self, into: list, item) -> None:
        with self.changed:
            into.append(item)
            self.changed.notify_all()

    def wait_for(self, what) -> None:
        with self.changed:
            assert self.changed.wait_for(what, WAIT), f"received: {self.received}, errors: {self.errors}"

    def invoke(self, method: str, args: list):
        done = []
        self.conn.send(method, args, on_invocation=lambda m: self._note(done, m))
        return done


@pytest.mark.parametrize("transport,encoding", CASES, ids=lambda c: c.value)
def test_the_python_client_joins_receives_types_and_gets_errors(sidecar, transport, encoding):
    room = f"py-{transport.value}-{encoding.value}"
    client = Client(sidecar["client"] + "/hubs/chat", "carol", transport, encoding)
    try:
        joined = client.invoke("JoinRoom", [room])
        client.wait_for(lambda: joined)
        assert joined[0].error is None and joined[0].result is None

        payload = {"id": str(uuid.uuid4()), "request_id": str(uuid.uuid4()), "sender_id": "dave",
                   "content": f"hello {room}", "sequence_number": 1, "is_screenshot": False,
                   "created_at": "2026-12-05T10:00:00Z", "extra": {"kept": [1, 2]}}
        assert publish(sidecar["admin"], room, "chat_message", payload) == 202
        client.wait_for(lambda: client.received.get("ReceiveMessage"))
        assert client.received["ReceiveMessage"] == [[payload]]

        # The typing event goes through the bus and back to the room, caller included.
        client.invoke("SendTyping", [room, True])
        client.wait_for(lambda: client.received.get("UserTyping"))
        typing = client.received["UserTyping"][0][0]
        assert (typing["user_id"], typing["username"], typing["is_typing"]) == ("carol", "carol", True)

        # A failed blocking invocation reaches the client's error callback.
        client.invoke("NoSuchMethod", [])
        client.wait_for(lambda: client.errors)
        assert "NoSuchMethod" in client.errors[0].error
    finally:
        client.conn.stop()
