"""The harness of the OpenAPI check: a private redis-server, the real sidecar binary
(built by `cargo build` when missing) with JWT users and the admin token, and the
official SignalR client (tests/client/driver.mjs) holding connections of several
users in several rooms over every transport, so the API answers with real data."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Ports are picked as the publisher's tests pick them (one helper for both suites).
sys.path.insert(0, str(REPO / "publishers" / "python" / "tests"))
from ports import free_port  # noqa: E402
BINARY = REPO / "target" / "debug" / "signalr-sidecar"
OPENAPI = REPO / "protocol" / "admin-openapi.yaml"
ADMIN_TOKEN = "openapi-test-admin-token-0123456789"
JWT_SECRET = "a-test-secret-that-is-long-enough-0123456789"


def jwt(sub: str) -> str:
    """An HS256 token for `sub`, valid ten minutes."""
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")  # noqa: E731
    header = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = enc(json.dumps({"sub": sub, "name": sub, "exp": int(time.time()) + 600}).encode())
    signed = header + b"." + claims
    signature = enc(hmac.new(JWT_SECRET.encode(), signed, hashlib.sha256).digest())
    return (signed + b"." + signature).decode()


def get(url: str, token: str | None = ADMIN_TOKEN) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


class Process:
    """A child process stopped by its own PID at the end."""

    def __init__(self, args: list[str], **kwargs):
        self.proc = subprocess.Popen(args, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def redis_url():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    server = Process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def sidecar(redis_url, tmp_path_factory):
    """The admin base URL of a sidecar with Redis, JWT users and the admin token."""
    if not BINARY.is_file():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "signalr-sidecar"], cwd=REPO, check=True)
    client_port, admin_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "OTEL_"))}
    env.update(
        SIDECAR_LISTEN=f"127.0.0.1:{client_port}",
        SIDECAR_ADMIN_LISTEN=f"127.0.0.1:{admin_port}",
        SIDECAR_INSTANCE_ID=f"openapi-{admin_port}",
        SIDECAR_REDIS_URL=redis_url,
        SIDECAR_AUTH="jwt",
        SIDECAR_JWT_SECRET=JWT_SECRET,
        SIDECAR_ADMIN_TOKEN=ADMIN_TOKEN,
        SIDECAR_LOG="warn",
    )
    log = open(tmp_path_factory.mktemp("sidecar") / "sidecar.log", "wb")
    proc = Process([str(BINARY)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    admin = f"http://127.0.0.1:{admin_port}"
    deadline = time.monotonic() + 30
    while get(f"{admin}/readyz", None)[0] != 200:
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            pytest.fail(f"the sidecar did not become ready: see {log.name}")
        time.sleep(0.1)
    yield {"admin": admin, "client": f"http://127.0.0.1:{client_port}"}
    proc.stop()
    log.close()


@pytest.fixture(scope="session")
def clients(sidecar):
    """Official clients: alice over WebSockets in room-a and room-b, alice over
    Server-Sent Events in room-a, bob over Long Polling in room-a."""
    driver = Process(["node", str(REPO / "tests" / "client" / "driver.mjs")], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, text=True)
    next_id = iter(range(1, 1_000_000))

    def call(cmd: dict) -> dict:
        cmd["id"] = next(next_id)
        driver.proc.stdin.write(json.dumps(cmd) + "\n")
        driver.proc.stdin.flush()
        while True:
            line = driver.proc.stdout.readline()
            if not line:
                pytest.fail("the Node driver exited (npm ci in tests/client?)")
            reply = json.loads(line)
            if reply.get("id") == cmd["id"]:
                assert reply["ok"], reply
                return reply["result"]

    url = sidecar["client"] + "/hubs/chat"
    ids = {}
    for name, user, transport, rooms in [("a1", "alice", "WebSockets", ["room-a", "room-b"]),
                                         ("a2", "alice", "ServerSentEvents", ["room-a"]),
                                         ("b1", "bob", "LongPolling", ["room-a"])]:
        ids[name] = call({"cmd": "connect", "name": name, "url": url, "methods": [], "transport": transport,
                          "accessToken": jwt(user)})["connectionId"]
        for room in rooms:
            call({"cmd": "invoke", "name": name, "method": "JoinRoom", "args": [room]})
    yield ids
    driver.proc.stdin.close()
    driver.stop()
