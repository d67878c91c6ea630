"""Test harness: a real redis-server on a free loopback port, and a small real HTTP
server standing in for the sidecar's admin port (records every POST, answers 202
``{"status": "accepted"}`` as the sidecar does, or what a test sets, or forwards to a
real sidecar)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ports import free_port  # noqa: F401 (the tests import it from here)

REPO = Path(__file__).resolve().parents[3]
PROTOCOL = REPO / "protocol"


# === redis-server ===========================================================


class RedisServer:
    """One redis-server process without persistence; can be stopped and started again
    on the same port. With ``data_dir``, ``stop(keep_data=True)`` saves its data there
    first and the next ``start`` loads it (a Redis with persistence restarting)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "warning"]
        if self.data_dir is not None:
            args += ["--dir", str(self.data_dir)]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def ping(self) -> bool:
        try:
            return self.command("PING") == "+PONG"
        except OSError:
            return False

    def command(self, *args: str) -> str:
        """Send one command in RESP and return the first reply line (enough for tests)."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(payload.encode())
            return s.makefile("rb").readline().decode().rstrip("\r\n")

    def stop(self, keep_data: bool = False) -> None:
        if keep_data:
            assert self.data_dir is not None, "keep_data needs a data_dir"
            try:
                self.command("SHUTDOWN", "SAVE")  # no reply: the server saves and exits
            except OSError:
                pass
            if self.proc is not None:
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def own_redis():
    """A redis-server of this test alone (for tests that stop it mid-run)."""
    server = RedisServer().start()
    yield server
    server.stop()


# === a stand-in for the sidecar's admin port ================================


class RecordingSidecar:
    """``POST /internal/events``: records the JSON body, then answers ``status`` with
    ``reply`` and ``headers`` (default 202 ``{"status": "accepted"}``, as the sidecar
    answers), or forwards to ``forward_to`` (a real sidecar's base URL) and answers what
    it answered."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.status = 202
        self.reply = '{"status":"accepted"}'
        self.headers: dict[str, str] = {}
        self.forward_to: str | None = None
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer._lock:
                    try:
                        outer.posts.append({"path": self.path, "json": json.loads(body)})
                    except ValueError:
                        outer.posts.append({"path": self.path, "raw": body})
                status, reply, headers = outer.status, outer.reply.encode(), dict(outer.headers)
                if outer.forward_to is not None:
                    req = urllib.request.Request(
                        outer.forward_to.rstrip("/") + self.path, data=body,
                        headers={"content-type": "application/json"}, method="POST",
                    )
                    try:
                        with urllib.request.urlopen(req, timeout=5) as resp:
                            status, reply = resp.status, resp.read()
                            headers = {k: v for k, v in resp.headers.items() if k.lower() == "retry-after"}
                    except urllib.error.HTTPError as exc:
                        status, reply = exc.code, exc.read()
                        headers = {k: v for k, v in exc.headers.items() if k.lower() == "retry-after"}
                    except OSError as exc:
                        status, reply = 502, str(exc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json" if reply.startswith(b"{") else "text/plain")
                self.send_header("content-length", str(len(reply)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def event_ids(self) -> list[str]:
        with self._lock:
            return [p["json"]["event_id"] for p in self.posts if "json" in p]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_sidecar():
    server = RecordingSidecar()
    yield server
    server.close()


def settings_env(redis_url: str, sidecar_url: str, **overrides: str) -> dict[str, str]:
    """EVENT_TRANSPORT_* variables for a test."""
    env = {
        "EVENT_TRANSPORT_USE_REDIS_STREAMS": "true",
        "EVENT_TRANSPORT_REDIS_PERCENTAGE": "100",
        "EVENT_TRANSPORT_FALLBACK_TO_HTTP": "true",
        "EVENT_TRANSPORT_DUAL_WRITE": "false",
        "EVENT_TRANSPORT_REDIS_URL": redis_url,
        "EVENT_TRANSPORT_SIDECAR_URL": sidecar_url,
    }
    env.update({f"EVENT_TRANSPORT_{k.upper()}": v for k, v in overrides.items()})
    return env


def clean_env() -> dict[str, str]:
    """os.environ without any EVENT_TRANSPORT_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EVENT_TRANSPORT_")}
