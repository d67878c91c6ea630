"""The Grafana dashboard of deploy/local, proven against a real Prometheus.

Starts, on free loopback ports, a private ``redis-server``, the real sidecar
binary (``target/debug/signalr-sidecar``, built by ``cargo test``) and a real
Prometheus (Debian's ``prometheus`` package) that scrapes the sidecar's admin
port every second with the job of ``deploy/local/prometheus.yml``. It then
makes the traffic every panel needs: WebSocket SignalR clients that join rooms
(and one invocation of a method that does not exist), chat messages XADDed to
``events:chat``, typing bursts (coalesced), an invalid entry (dead-lettered),
a 10-minute-old event (dropped as stale), a duplicate event_id, a client that
stops reading (slow-consumer disconnect), a client that leaves, and one
message published by ``deploy/local/send_chat.py`` inside a traced request.
The traffic runs in two phases with scrapes in between, so every counter has
samples before and after and its rate is a number, not an empty result.

Then every query of ``deploy/local/grafana/dashboards/signalr-sidecar.json``
is run through Prometheus' HTTP API (with the dashboard's variables expanded
as Grafana would: ``$instance`` to its "All" value, ``$__rate_interval`` to
``RATE_INTERVAL``) and must return data; the sidecar's ``/metrics`` text is
parsed with ``prometheus_client`` and must hold every family the README's
Observability > Metrics table names, with the labels it names.

Every process is stopped at the end, by its own pid.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus_text
from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[2]
# Ports are picked as the other Python suites pick them (below the ephemeral range).
sys.path.insert(0, str(REPO / "publishers" / "python" / "tests"))
from ports import free_port  # noqa: E402

BINARY = REPO / "target" / "debug" / "signalr-sidecar"
LOCAL = REPO / "deploy" / "local"
DASHBOARD = LOCAL / "grafana" / "dashboards" / "signalr-sidecar.json"
PROMETHEUS_YML = LOCAL / "prometheus.yml"
SEND_CHAT = LOCAL / "send_chat.py"
README = REPO / "README.md"
JOB = "signalr-sidecar"

# Grafana's $__rate_interval for this run: the whole test fits in it, so a
# rate covers both traffic phases (Grafana computes max(4 x scrape interval,
# step + scrape interval); any window that holds two scrapes would do).
RATE_INTERVAL = "1m"
SCRAPE_INTERVAL = "1s"

RS = "\x1e"
# Clients authenticate as in production (SIDECAR_AUTH=jwt, HS256), so that the
# auth-failure counter can be made to move by one bad token.
JWT_SECRET = "dashboard-test-secret-that-is-long-enough"
# A low invocation burst, so that one flooding client is refused (sidecar_limited_total).
RATE_LIMIT_BURST = 20
CHAT = "events:chat"
ROOM = "room-1"
SLOW_ROOM = "room-slow"


# --- processes ---------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    status, _, body = http_get_typed(url, timeout)
    return status, body


def http_get_typed(url: str, timeout: float = 2.0) -> tuple[int, str, bytes]:
    """(status, Content-Type, body)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


@dataclass
class Scrape:
    """One GET /metrics: the text and the format it was served in."""

    text: str
    content_type: str

    def families(self) -> dict[str, Metric]:
        """The metric families, parsed by the parser of the served format, as
        Prometheus does: OpenMetrics (counters named without ``_total``, the
        samples with it, ``# EOF`` at the end) or the classic text format."""
        if self.content_type.startswith("application/openmetrics-text"):
            return {f.name: f for f in parse_openmetrics(self.text)}
        assert self.content_type.startswith("text/plain"), self.content_type
        out: dict[str, Metric] = {}
        for f in parse_prometheus_text(self.text):
            # The classic parser keeps a counter's `_total` samples apart when
            # the TYPE line names the family without it; fold them back.
            name = f.name[: -len("_total")] if f.type == "unknown" and f.name.endswith("_total") else f.name
            if name in out:
                out[name].samples.extend(f.samples)
            else:
                out[name] = f
        return out


def wait_for(what: str, check, timeout: float, proc: "Proc | None" = None, interval: float = 0.1):
    """Polls ``check()`` until it returns something truthy; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            pytest.fail(f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}:\n{proc.tail()}")
        try:
            value = check()
            if value:
                return value
        except (OSError, urllib.error.URLError, redis.RedisError, ValueError, KeyError) as e:
            last_error = e
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    logs = f"\n{proc.tail()}" if proc is not None else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{detail}{logs}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], log: Path, **kwargs: Any) -> "Proc":
        out = log.open("wb")
        try:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
        finally:
            out.close()
        return cls(name, popen, log)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  {line}" for line in text[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)


@dataclass
class Stack:
    tmp: Path
    redis_port: int
    client_port: int
    admin_port: int
    prom_port: int
    redis: redis.Redis
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def client(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def scrape(self) -> Scrape:
        status, content_type, body = http_get_typed(f"{self.admin}/metrics")
        assert status == 200, f"/metrics answered {status}"
        return Scrape(body.decode(), content_type)

    def query(self, promql: str) -> list[dict]:
        """An instant query through Prometheus' HTTP API; the result vector."""
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = http_get(url, timeout=5)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{promql}: {status} {answer}"
        assert answer["data"]["resultType"] == "vector", f"{promql}: {answer['data']['resultType']}"
        return answer["data"]["result"]

    def last_scrape(self) -> float:
        """Time of Prometheus' latest successful scrape of the sidecar (0 before the first)."""
        result = self.query(f'timestamp(up{{job="{JOB}"}} == 1)')
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for_scrapes(self, n: int = 2) -> None:
        """Waits until Prometheus has scraped the sidecar ``n`` times from now."""
        since = time.time()
        wait_for(
            f"{n} Prometheus scrapes of the sidecar",
            lambda: self.last_scrape() >= since + (n - 1) * 1.0,
            timeout=15,
            proc=self.procs["prometheus"],
            interval=0.25,
        )


def prometheus_config(admin_port: int) -> dict:
    """deploy/local/prometheus.yml with this run's target and a 1 s interval."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] = {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                        "evaluation_interval": SCRAPE_INTERVAL}
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    for static in job["static_configs"]:
        static["targets"] = [f"127.0.0.1:{admin_port}"]
    return config


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} is missing: build it first (`cargo build` or `cargo test`, as scripts/test.sh does)")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.fail("redis-server is missing: apt-get install -y redis-server")
    prometheus = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if prometheus is None:
        pytest.fail("prometheus is missing: apt-get install -y prometheus (Debian's package; the test runs its own "
                    "instance and never the Debian service)")

    tmp = tmp_path_factory.mktemp("dashboard")
    ports = [free_port() for _ in range(4)]
    redis_port, client_port, admin_port, prom_port = ports
    client = redis.Redis(host="127.0.0.1", port=redis_port, decode_responses=True)
    st = Stack(tmp, redis_port, client_port, admin_port, prom_port, client)
    try:
        st.procs["redis"] = Proc.start(
            "redis-server",
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)],
            tmp / "redis.log",
        )
        wait_for("redis-server", client.ping, timeout=10, proc=st.procs["redis"])

        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "OTEL_"))}
        env.update(
            SIDECAR_LISTEN=f"127.0.0.1:{client_port}",
            SIDECAR_ADMIN_LISTEN=f"127.0.0.1:{admin_port}",
            SIDECAR_REDIS_URL=f"redis://127.0.0.1:{redis_port}",
            SIDECAR_INSTANCE_ID="dashboard-test",
            # Stream lag/pending are refreshed on the claim timer; every second here.
            SIDECAR_CLAIM_INTERVAL_SECONDS="1",
            SIDECAR_DRAIN_WINDOW_SECONDS="1",
            SIDECAR_SHUTDOWN_TIMEOUT_SECONDS="5",
            SIDECAR_AUTH="jwt",
            SIDECAR_JWT_SECRET=JWT_SECRET,
            SIDECAR_RATE_LIMIT_PER_MINUTE="60",
            SIDECAR_RATE_LIMIT_BURST=str(RATE_LIMIT_BURST),
            SIDECAR_LOG="warn",
        )
        st.procs["sidecar"] = Proc.start("signalr-sidecar", [str(BINARY)], tmp / "sidecar.log", cwd=REPO, env=env)
        wait_for("the sidecar's /readyz", lambda: http_get(f"{st.admin}/readyz")[0] == 200, timeout=20,
                 proc=st.procs["sidecar"])

        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(admin_port)))
        st.procs["prometheus"] = Proc.start(
            "prometheus",
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            tmp / "prometheus.log",
            cwd=tmp,
        )
        wait_for("Prometheus /-/ready", lambda: http_get(f"{st.prometheus}/-/ready")[0] == 200, timeout=30,
                 proc=st.procs["prometheus"])
        wait_for("the first scrape of the sidecar", st.last_scrape, timeout=15, proc=st.procs["prometheus"])
        yield st
    finally:
        for name in ("prometheus", "sidecar", "redis"):
            if name in st.procs:
                st.procs[name].stop()
        client.close()


# --- SignalR clients -----------------------------------------------------------


def now_iso(delta: timedelta = timedelta()) -> str:
    return (datetime.now(timezone.utc) + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jwt(sub: str, secret: str = JWT_SECRET, lifetime: int = 3600) -> str:
    """An HS256 JSON Web Token for ``sub``."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": sub, "name": sub, "exp": int(time.time()) + lifetime}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


def negotiate(host: str, token: str, hub: str = "chat") -> tuple[int, dict]:
    req = urllib.request.Request(f"http://{host}/hubs/{hub}/negotiate?negotiateVersion=1", data=b"", method="POST",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


class HubClient:
    """A raw SignalR JSON-protocol client over WebSockets."""

    def __init__(self, ws: ClientConnection):
        self.ws = ws
        self.messages: list[dict] = []
        self.completions: dict[str, dict] = {}
        self.closed_with: dict | None = None
        self._ids = 0
        self._reader: asyncio.Task | None = None

    @classmethod
    async def open(cls, host: str, user: str, hub: str = "chat", **ws_options: Any) -> "HubClient":
        """Negotiates (token in the Authorization header), then connects the
        WebSocket the way browsers do (token in ``access_token``)."""
        token = jwt(user)
        status, body = await asyncio.to_thread(negotiate, host, token, hub)
        assert status == 200, f"negotiate answered {status}"
        query = urllib.parse.urlencode({"id": body["connectionToken"], "access_token": token})
        ws = await connect(f"ws://{host}/hubs/{hub}?{query}", **ws_options)
        client = cls(ws)
        await ws.send('{"protocol":"json","version":1}' + RS)
        handshake = await asyncio.wait_for(ws.recv(), 5)
        assert json.loads(handshake.split(RS)[0]) == {}, handshake
        return client

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self._take(frame)
        except Exception:  # noqa: BLE001 - a closed socket ends the reader
            pass

    def _take(self, frame: str | bytes) -> None:
        text = frame.decode() if isinstance(frame, bytes) else frame
        for record in filter(None, text.split(RS)):
            msg = json.loads(record)
            if msg.get("type") == 1:
                self.messages.append(msg)
            elif msg.get("type") == 3:
                self.completions[msg["invocationId"]] = msg
            elif msg.get("type") == 7:
                self.closed_with = msg

    async def invoke(self, target: str, *args: Any) -> dict:
        """Invokes a hub method and waits for its completion (reading inline if no reader runs)."""
        self._ids += 1
        inv_id = str(self._ids)
        await self.ws.send(json.dumps({"type": 1, "invocationId": inv_id, "target": target, "arguments": list(args)})
                           + RS)
        deadline = time.monotonic() + 5
        while inv_id not in self.completions:
            if time.monotonic() > deadline:
                raise AssertionError(f"no completion for {target}{args}")
            if self._reader is None:
                self._take(await asyncio.wait_for(self.ws.recv(), 5))
            else:
                await asyncio.sleep(0.01)
        return self.completions[inv_id]

    def received(self, method: str) -> list[Any]:
        return [m["arguments"][0] for m in self.messages if m.get("target") == method]

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)


async def until(what: str, check, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- events --------------------------------------------------------------------


def chat_entry(room: str, seq: int, content: str = "hello", *, timestamp: str | None = None,
               event_id: str | None = None) -> dict[str, str]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": "chat_message",
        "timestamp": timestamp or now_iso(),
        "room_id": room,
        "payload": json.dumps({
            "id": f"m-{seq}", "request_id": room, "content": content, "sequence_number": seq,
            "is_screenshot": False, "created_at": now_iso(),
        }),
    }


def typing_entry(event_type: str, room: str, user: str) -> dict[str, str]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "timestamp": now_iso(),
        "room_id": room,
        "payload": json.dumps({"user_id": user, "username": user.title(), "is_typing": event_type == "typing_start"}),
    }


def stream_drained(r: redis.Redis, stream: str) -> bool:
    """The sidecar's group has read every entry of ``stream`` and acknowledged it."""
    last = r.xrevrange(stream, count=1)
    if not last:
        return True
    [group] = [g for g in r.xinfo_groups(stream) if g["name"].endswith(":dashboard-test")]
    return group["last-delivered-id"] == last[0][0] and group["pending"] == 0


def counter(scrape: Scrape, family: str, **labels: str) -> float:
    """Sum of a family's samples (``_total`` / gauge value) whose labels include ``labels``."""
    fam = scrape.families().get(family)
    if fam is None:
        return 0.0
    return sum(s.value for s in fam.samples
               if s.name in (family, f"{family}_total") and all(s.labels.get(k) == v for k, v in labels.items()))


@dataclass
class Traffic:
    before: Scrape
    after: Scrape
    chat_sent: int
    room_messages: list[Any]
    send_chat_stdout: str
    send_chat_text: str


async def phase(st: Stack, n: int, readers: list[HubClient], chat_seq: int) -> int:
    """One round of every kind of event; returns the next chat sequence number."""
    r = st.redis
    # Invocations: a join (ok) and a method the hub does not have (an error outcome).
    assert (await readers[0].invoke("JoinRoom", f"room-extra-{n}")).get("error") is None
    failed = await readers[0].invoke("NoSuchMethod", "x")
    assert failed.get("error"), failed
    # A token signed with another secret: 401 (sidecar_auth_failures_total{reason="signature"}).
    status, _ = await asyncio.to_thread(negotiate, st.client, jwt("mallory", secret="not-the-secret"))
    assert status == 401, status
    # One client flooding past the burst: refused (sidecar_limited_total{limit="invocations"}).
    flooder = await HubClient.open(st.client, f"flooder-{n}")
    flooder.start_reading()
    outcomes = [await flooder.invoke("LeaveRoom", "room-nowhere") for _ in range(RATE_LIMIT_BURST + 5)]
    assert any(o.get("error") for o in outcomes), outcomes[-1]
    await flooder.close()

    # Chat messages to the room both readers joined.
    for _ in range(5):
        r.xadd(CHAT, chat_entry(ROOM, chat_seq, f"message {chat_seq}"))
        chat_seq += 1
    # A typing burst: inside the 100 ms window the first goes out, the rest are merged.
    for _ in range(6):
        r.xadd(CHAT, typing_entry("typing_start", ROOM, f"user-{n}"))
    r.xadd(CHAT, typing_entry("typing_stop", ROOM, f"user-{n}"))
    # An invalid entry (dead letter), a 10-minute-old event (stale), a duplicate event_id.
    r.xadd(CHAT, {"event_id": "not-a-uuid", "event_type": "chat_message", "timestamp": now_iso(),
                  "room_id": ROOM, "payload": "{}"})
    r.xadd(CHAT, chat_entry(ROOM, 9000 + n, "too old", timestamp=now_iso(timedelta(minutes=-10))))
    dup = chat_entry(ROOM, chat_seq, f"message {chat_seq}")
    r.xadd(CHAT, dup)
    r.xadd(CHAT, dup)
    chat_seq += 1

    await until("the sidecar to read and acknowledge every entry", lambda: stream_drained(r, CHAT))
    await asyncio.sleep(0.3)  # the coalescing window's trailing edge (100 ms)
    await until(f"{chat_seq - 1} chat messages in each reader",
                lambda: all(len(c.received("ReceiveMessage")) >= chat_seq - 1 for c in readers))
    return chat_seq


async def slow_consumer(st: Stack) -> None:
    """A client that stops reading while 30 kB messages pile up: its outbox overflows."""
    slow = await HubClient.open(st.client, "slow-reader", max_queue=1, max_size=None, close_timeout=1)
    assert (await slow.invoke("JoinRoom", SLOW_ROOM)).get("error") is None
    before = counter(st.scrape(), "sidecar_slow_consumer_disconnects")
    big = "x" * 30_000
    # The kernel's socket buffers (both ends, autotuned: several MB on some
    # machines) absorb an unknown amount before the sidecar's 1 MiB outbox
    # fills, so entries go in batches until the overflow is counted; the cap
    # (60 MB) is far past any buffer and still fails a sidecar that never kicks.
    seq = 0
    deadline = time.monotonic() + 30
    while counter(st.scrape(), "sidecar_slow_consumer_disconnects") <= before:
        assert seq < 2000 and time.monotonic() < deadline, \
            f"the slow consumer was not disconnected after {seq} entries of 30 kB"
        for _ in range(100):
            st.redis.xadd(CHAT, chat_entry(SLOW_ROOM, seq, big))
            seq += 1
        await asyncio.sleep(0.5)
    await until("the sidecar to read and acknowledge every entry", lambda: stream_drained(st.redis, CHAT))
    # The client catches up: the sidecar's socket writes go through, then its
    # Close (allowReconnect) arrives and the connection ends as a slow consumer.
    slow.start_reading()
    closed = await until("the Close message to the slow consumer", lambda: slow.closed_with, timeout=20)
    assert closed.get("allowReconnect") is True, closed
    await until("the slow consumer's disconnect to be counted",
                lambda: counter(st.scrape(), "sidecar_disconnects", reason="slow_consumer") >= 1, timeout=10)
    await slow.close()


async def make_traffic(st: Stack) -> Traffic:
    before = st.scrape()
    readers = [await HubClient.open(st.client, f"reader-{i}") for i in range(2)]
    for c in readers:
        c.start_reading()
        assert (await c.invoke("JoinRoom", ROOM)).get("error") is None
    leaver = await HubClient.open(st.client, "leaver")
    leaver.start_reading()
    assert (await leaver.invoke("JoinRoom", ROOM)).get("error") is None

    # Phase 1 creates every labelled series; Prometheus scrapes; phase 2 moves them.
    seq = await phase(st, 1, readers, 1)
    await slow_consumer(st)
    await leaver.close()
    await asyncio.to_thread(st.wait_for_scrapes, 2)

    seq = await phase(st, 2, readers, seq)
    text = f"traced message {uuid.uuid4().hex[:8]}"
    env = dict(os.environ, EVENT_TRANSPORT_REDIS_URL=f"redis://127.0.0.1:{st.redis_port}/0",
               EVENT_TRANSPORT_SIDECAR_URL=st.admin, OTEL_SERVICE_NAME="support-backend")
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(SEND_CHAT), "--room", ROOM, "--text", text, "--sequence-number",
                         str(seq), "--no-export"],
        capture_output=True, text=True, timeout=30, env=env, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    await until("the traced message in each reader",
                lambda: all(any(m["content"] == text for m in c.received("ReceiveMessage")) for c in readers))
    await until("the sidecar to read and acknowledge every entry", lambda: stream_drained(st.redis, CHAT))
    await asyncio.to_thread(st.wait_for_scrapes, 3)

    after = st.scrape()
    room_messages = readers[0].received("ReceiveMessage")
    for c in readers:
        await c.close()
    return Traffic(before, after, seq, room_messages, out.stdout, text)


@pytest.fixture(scope="module")
def traffic(stack) -> Traffic:
    started = time.monotonic()
    result = asyncio.run(asyncio.wait_for(make_traffic(stack), 60))
    assert time.monotonic() - started < 60
    return result


# --- the dashboard -----------------------------------------------------------------


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets(dash: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows' nested panels included."""
    panels = []
    for panel in dash["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels") or [])
    return [(p["title"], t["expr"]) for p in panels if p["type"] != "row" for t in p.get("targets", [])]


def expand(expr: str, dash: dict) -> str:
    """Expands the dashboard's variables the way Grafana does for an "All" selection."""
    variables = {v["name"]: v for v in dash["templating"]["list"]}

    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name == "__rate_interval":
            return RATE_INTERVAL
        var = variables[name]
        assert var.get("includeAll") and var.get("allValue"), f"${name} has no All value to expand to"
        return var["allValue"]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def test_every_dashboard_query_returns_data(stack, traffic):
    dash = load_dashboard()
    targets = dashboard_targets(dash)
    assert len(targets) >= 20
    empty, nan_only = [], []
    for title, expr in targets:
        promql = expand(expr, dash)
        result = stack.query(promql)
        if not result:
            empty.append(f"{title}: {promql}")
            continue
        values = [float(sample["value"][1]) for sample in result]
        if not any(math.isfinite(v) for v in values):
            nan_only.append(f"{title}: {promql} -> {values}")
    assert not empty, "dashboard queries without data:\n  " + "\n  ".join(empty)
    assert not nan_only, "dashboard queries with only NaN:\n  " + "\n  ".join(nan_only)


def test_dashboard_queries_show_what_the_traffic_did(stack, traffic):
    """Spot checks that the panels read the right series, not merely some series."""
    dash = load_dashboard()
    by_metric: dict[str, list[dict]] = {}
    for _, expr in dashboard_targets(dash):
        result = stack.query(expand(expr, dash))
        for name in set(re.findall(r"\b(sidecar_\w+)", expr)):
            by_metric.setdefault(name, []).extend(result)

    def labels(metric: str, label: str) -> set[str]:
        return {s["metric"].get(label) for s in by_metric[metric]} - {None}

    def moved(metric: str, label: str) -> set[str]:
        """Like ``labels``, of the series with a non-zero value only: the sidecar
        shows zeros for the series it knows at start (hubs, routed event types,
        drop and disconnect reasons, limits, dead letters per stream), so being
        there says nothing of the traffic."""
        return {s["metric"].get(label) for s in by_metric[metric] if float(s["value"][1]) > 0} - {None}

    assert {"stale", "duplicate"} <= moved("sidecar_events_dropped_total", "reason")
    assert moved("sidecar_dead_letters_total", "stream") == {CHAT}
    assert {"ok"} < labels("sidecar_invocations_total", "outcome")
    assert ("chat", "websockets") in {(s["metric"].get("hub"), s["metric"].get("transport"))
                                      for s in by_metric["sidecar_connections"] if "hub" in s["metric"]}
    assert "slow_consumer" in moved("sidecar_disconnects_total", "reason")
    assert "invocations" in moved("sidecar_limited_total", "limit")
    assert labels("sidecar_auth_failures_total", "reason") == {"signature"}
    assert {"chat_message", "typing_start", "typing_stop"} <= moved("sidecar_events_consumed_total", "event_type")
    assert labels("sidecar_stream_lag", "stream") >= {CHAT}
    assert labels("sidecar_stream_pending", "stream") >= {CHAT}

    def scalar(promql: str) -> float:
        [sample] = stack.query(expand(promql, dash))
        return float(sample["value"][1])

    assert scalar('min(sidecar_redis_up{instance=~"$instance"})') == 1
    assert scalar('sum(increase(sidecar_slow_consumer_disconnects_total{instance=~"$instance"}[$__rate_interval]))') > 0
    assert scalar('sum(rate(sidecar_events_coalesced_total{instance=~"$instance"}[$__rate_interval]))') > 0
    p99 = scalar('histogram_quantile(0.99, sum by (le) (rate(sidecar_event_delivery_seconds_bucket'
                 '{instance=~"$instance"}[$__rate_interval])))')
    assert 0 < p99 <= 5, p99


def test_instance_variable_lists_the_sidecar(stack, traffic):
    dash = load_dashboard()
    [var] = [v for v in dash["templating"]["list"] if v["name"] == "instance"]
    m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["definition"])
    assert m, var["definition"]
    metric, label = m.groups()
    url = f"{stack.prometheus}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": metric})
    status, body = http_get(url)
    assert status == 200
    assert stack.instance in json.loads(body)["data"]


# --- the metrics text itself ---------------------------------------------------------


def readme_metrics() -> dict[str, set[str]]:
    """{family: labels} of every metric in the README's Observability > Metrics table
    (rows: | `name` | type | labels | what |; a label may be followed by its values in parentheses)."""
    text = README.read_text()
    section = text.split("\n### Metrics", 1)[1].split("\n### ", 1)[0]
    names = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(sidecar_\w+)`", cells[0]) if len(cells) >= 3 else None
        if not match:
            continue
        name = match.group(1)
        family = name[: -len("_total")] if name.endswith("_total") else name
        labels = re.sub(r"\([^)]*\)", "", cells[2])
        names[family] = {label.strip() for label in labels.split(",") if label.strip()}
    return names


def test_metrics_text_has_every_family_the_readme_names(traffic):
    expected = readme_metrics()
    assert len(expected) >= 13, expected
    families = traffic.after.families()
    missing = sorted(set(expected) - set(families))
    assert not missing, f"families named in README's metrics table but not in /metrics: {missing}"
    for family, wanted in expected.items():
        samples = families[family].samples
        assert samples, f"{family} has no samples"
        for sample in samples:
            assert wanted <= set(sample.labels), f"{sample.name}{sample.labels}: README names labels {wanted}"


def test_metrics_move_with_the_traffic(traffic):
    before, after = traffic.before, traffic.after

    def delta(family: str, **labels: str) -> float:
        return counter(after, family, **labels) - counter(before, family, **labels)

    assert delta("sidecar_events_consumed", stream=CHAT, event_type="chat_message") >= traffic.chat_sent - 1
    assert delta("sidecar_events_consumed", stream=CHAT, event_type="typing_start") == 12
    assert delta("sidecar_events_delivered") >= 2 * (traffic.chat_sent - 1)
    assert delta("sidecar_events_coalesced") >= 2 * 4
    assert delta("sidecar_events_dropped", reason="stale") == 2
    assert delta("sidecar_events_dropped", reason="duplicate") == 2
    assert delta("sidecar_dead_letters", stream=CHAT) == 2
    assert delta("sidecar_slow_consumer_disconnects") == 1
    assert delta("sidecar_disconnects", reason="slow_consumer") == 1
    assert delta("sidecar_disconnects", reason="client") >= 1
    assert delta("sidecar_limited", limit="invocations") >= 2
    assert delta("sidecar_auth_failures", reason="signature") == 2
    assert delta("sidecar_invocations", hub="chat", method="JoinRoom", outcome="ok") >= 5
    assert delta("sidecar_invocations", hub="chat", outcome="ok") < delta("sidecar_invocations", hub="chat")
    assert counter(after, "sidecar_redis_up") == 1
    # A gauge: the two readers were connected when `after` was scraped (the
    # series itself is there from the start, at zero).
    assert counter(after, "sidecar_connections", hub="chat", transport="websockets") >= 2
    # Histograms: every delivered event observed once in each.
    for hist in ("sidecar_event_delivery_seconds", "sidecar_broadcast_seconds"):
        count_before = {s.name: s.value for s in before.families()[hist].samples}[f"{hist}_count"]
        count_after = {s.name: s.value for s in after.families()[hist].samples}[f"{hist}_count"]
        assert count_after > count_before, hist


def test_send_chat_script_carries_the_request_trace(stack, traffic):
    """deploy/local/send_chat.py (the README's walk-through) publishes inside its
    request's trace: the entry's metadata.traceparent holds the trace id it prints."""
    lines = dict(line.split(" ", 1) for line in traffic.send_chat_stdout.splitlines() if " " in line)
    trace_id, event_id = lines["trace_id"], lines["event_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and trace_id != "0" * 32
    entries = [fields for _, fields in stack.redis.xrange(CHAT) if fields.get("event_id") == event_id]
    assert len(entries) == 1
    metadata = json.loads(entries[0]["metadata"])
    assert metadata["trace_id"] == trace_id
    m = re.fullmatch(rf"00-{trace_id}-([0-9a-f]{{16}})-([0-9a-f]{{2}})", metadata["traceparent"])
    assert m, metadata["traceparent"]
    assert int(m.group(2), 16) & 1, "the trace is sampled"
    assert any(m["content"] == traffic.send_chat_text for m in traffic.room_messages)
