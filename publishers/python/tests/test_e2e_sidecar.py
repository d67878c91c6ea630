"""End to end: publisher -> (Redis Streams | HTTP bridge) -> the real signalr-sidecar
binary -> a SignalR client connected over WebSockets to a room.

The publisher's HTTP path goes through a recording forwarder in front of the
sidecar's admin port, so each test can tell which path every event took while
the sidecar still delivers it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from signalr_sidecar_publisher import EventPublisher, TransportSettings, events, room_bucket, utc_now

from conftest import REPO, RecordingSidecar, RedisServer, free_port

BINARY = REPO / "target" / "debug" / "signalr-sidecar"

pytestmark = pytest.mark.skipif(
    not BINARY.is_file(),
    reason=f"{BINARY} is missing: build the sidecar with `cargo build` in {REPO} to run the end-to-end tests",
)

RS = "\x1e"
WAIT = 10.0  # seconds to wait for one expected message


# === the sidecar process =====================================================


class Sidecar:
    """One signalr-sidecar process on free loopback ports."""

    def __init__(self, redis_url: str | None, log_dir: Path):
        self.client_port, self.admin_port = free_port(), free_port()
        self.instance = f"pytest-{uuid.uuid4().hex[:8]}"
        self.log_path = log_dir / f"sidecar-{self.instance}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "OTEL_"))}
        env.update(
            SIDECAR_LISTEN=f"127.0.0.1:{self.client_port}",
            SIDECAR_ADMIN_LISTEN=f"127.0.0.1:{self.admin_port}",
            SIDECAR_INSTANCE_ID=self.instance,
        )
        if redis_url:
            env["SIDECAR_REDIS_URL"] = redis_url
        env.setdefault("RUST_LOG", "info")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(BINARY)], cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log_tail(self, n: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(
                    f"{BINARY} exited with {self.proc.returncode} before /readyz answered 200 "
                    f"(is it still a stub?). Its output:\n{self.log_tail()}"
                )
            try:
                r = httpx.get(f"{self.admin_url}/readyz", timeout=1.0)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"sidecar not ready after {timeout} s (last /readyz: {last}). Its output:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# === a minimal SignalR client (JSON hub protocol over WebSockets) =============


class HubClient:
    """negotiate -> WebSocket -> handshake; then invocations and incoming messages."""

    def __init__(self, ws):
        self.ws = ws
        self.messages: asyncio.Queue = asyncio.Queue()
        self.completions: dict[str, asyncio.Future] = {}
        self.closed: dict | None = None
        self._ids = 0
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, base_url: str, hub: str = "/hubs/chat") -> "HubClient":
        from websockets.asyncio.client import connect

        async with httpx.AsyncClient() as http:
            r = await http.post(f"{base_url}{hub}/negotiate?negotiateVersion=1", timeout=5)
        assert r.status_code == 200, f"negotiate answered {r.status_code}: {r.text}"
        token = r.json()["connectionToken"]
        ws = await connect(f"{base_url.replace('http://', 'ws://')}{hub}?id={token}", open_timeout=5)
        await ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
        first = await asyncio.wait_for(ws.recv(), 5)
        first = first.decode() if isinstance(first, bytes) else first
        handshake, _, rest = first.partition(RS)
        assert json.loads(handshake) == {}, f"handshake answered {handshake!r}"
        client = cls(ws)
        if rest:
            client._dispatch(rest)
        return client

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self._dispatch(frame.decode() if isinstance(frame, bytes) else frame)
        except Exception:  # noqa: BLE001 - the socket closed; tests see it through timeouts
            pass

    def _dispatch(self, text: str) -> None:
        for record in text.split(RS):
            if not record:
                continue
            msg = json.loads(record)
            kind = msg.get("type")
            if kind == 6:  # ping
                continue
            if kind == 3:
                fut = self.completions.pop(msg.get("invocationId"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif kind == 7:
                self.closed = msg
            elif kind == 1:
                self.messages.put_nowait(msg)

    async def invoke(self, target: str, *args) -> dict:
        self._ids += 1
        inv = str(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self.completions[inv] = fut
        await self.ws.send(json.dumps({"type": 1, "invocationId": inv, "target": target, "arguments": list(args)}) + RS)
        completion = await asyncio.wait_for(fut, 5)
        assert completion.get("error") is None, f"{target}{args} failed: {completion}"
        return completion

    async def join(self, *rooms: str) -> None:
        for room in rooms:
            await self.invoke("JoinRoom", room)

    async def receive(self, target: str, count: int, timeout: float = WAIT) -> list[dict]:
        """The first argument of the next ``count`` invocations of ``target`` (others are skipped)."""
        got: list[dict] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                msg = await asyncio.wait_for(self.messages.get(), left)
            except asyncio.TimeoutError:
                break
            if msg.get("target") == target:
                got.append(msg["arguments"][0])
        return got

    async def drain(self, target: str, quiet: float = 1.0) -> list[dict]:
        """Everything of ``target`` that arrives until ``quiet`` seconds pass without a message."""
        got = []
        while True:
            try:
                msg = await asyncio.wait_for(self.messages.get(), quiet)
            except asyncio.TimeoutError:
                return got
            if msg.get("target") == target:
                got.append(msg["arguments"][0])

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


# === fixtures =================================================================


@pytest.fixture(scope="module")
def e2e_redis():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sidecar(e2e_redis, tmp_path_factory):
    """A sidecar reading Redis Streams from ``e2e_redis``."""
    s = Sidecar(e2e_redis.url, tmp_path_factory.mktemp("sidecar"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sidecar_memory(tmp_path_factory):
    """A sidecar without Redis: the in-process bus (CONTRACT section 9)."""
    s = Sidecar(None, tmp_path_factory.mktemp("sidecar-mem"))
    yield s
    s.stop()


@pytest.fixture
def forwarder(sidecar):
    """Records the publisher's HTTP posts and forwards them to the sidecar's admin port."""
    f = RecordingSidecar()
    f.forward_to = sidecar.admin_url
    yield f
    f.close()


def run(coro):
    return asyncio.run(coro)


def settings(redis_url: str, sidecar_url: str, **kw) -> TransportSettings:
    base = dict(use_redis_streams=True, redis_percentage=100, fallback_to_http=True, dual_write=False,
                redis_url=redis_url, sidecar_url=sidecar_url)
    base.update(kw)
    return TransportSettings(**base)


def chat(room: str, seq: int):
    return events.chat_message(room, id=f"{room}-m{seq}-{uuid.uuid4().hex[:6]}", request_id=room,
                               content=f"message {seq}", sequence_number=seq, created_at=utc_now(), sender_id="u1")


def room() -> str:
    return f"room-{uuid.uuid4().hex[:10]}"


def ids(payloads: list[dict]) -> list[str]:
    return [p["id"] for p in payloads]


# === each path reaches the client =============================================


def test_event_via_redis_streams_reaches_the_client(sidecar, forwarder, e2e_redis):
    r = room()

    async def go():
        client = await HubClient.connect(sidecar.client_url)
        await client.join(r)
        async with EventPublisher(settings(e2e_redis.url, forwarder.url)) as p:
            e = chat(r, 1)
            result = await p.publish(e)
        got = await client.receive("ReceiveMessage", 1)
        await client.close()
        return e, result, got

    e, result, got = run(go())
    assert result.transports == ("redis_streams",)
    assert got == [e.payload], sidecar.log_tail()
    assert forwarder.posts == []


def test_event_via_http_reaches_the_client(sidecar, forwarder, e2e_redis):
    r = room()

    async def go():
        client = await HubClient.connect(sidecar.client_url)
        await client.join(r)
        async with EventPublisher(settings(e2e_redis.url, forwarder.url, use_redis_streams=False)) as p:
            e = chat(r, 1)
            result = await p.publish(e)
        got = await client.receive("ReceiveMessage", 1)
        await client.close()
        return e, result, got

    e, result, got = run(go())
    assert forwarder.event_ids() == [e.event_id]
    assert result.sidecar_answer == "accepted", "the sidecar appended it to the stream at once"
    assert got == [e.payload], sidecar.log_tail()


def test_event_via_http_reaches_the_client_on_the_in_process_bus(sidecar_memory):
    r = room()

    async def go():
        client = await HubClient.connect(sidecar_memory.client_url)
        await client.join(r)
        dead_redis = f"redis://127.0.0.1:{free_port()}/0"
        async with EventPublisher(settings(dead_redis, sidecar_memory.admin_url, use_redis_streams=False)) as p:
            e = chat(r, 1)
            result = await p.publish(e)
        got = await client.receive("ReceiveMessage", 1)
        await client.close()
        return e, result, got

    e, result, got = run(go())
    assert result.sidecar_answer == "accepted"
    assert got == [e.payload], sidecar_memory.log_tail()


# === percentage rollout ========================================================


@pytest.mark.parametrize("pct", [0, 50, 100])
def test_percentage_routes_rooms_and_every_event_arrives_once(sidecar, forwarder, e2e_redis, pct):
    low, high = [], []  # six rooms on each side of the 50 % line
    while len(low) < 6 or len(high) < 6:
        r = room()
        side = low if room_bucket(r) < 50 else high
        if len(side) < 6:
            side.append(r)
    rooms = low + high

    async def go():
        client = await HubClient.connect(sidecar.client_url)
        await client.join(*rooms)
        sent = {}
        async with EventPublisher(settings(e2e_redis.url, forwarder.url, redis_percentage=pct)) as p:
            for seq in (1, 2):
                for r in rooms:
                    e = chat(r, seq)
                    sent[e.event_id] = e
                    await p.publish(e)
        got = await client.receive("ReceiveMessage", len(sent))
        got += await client.drain("ReceiveMessage", quiet=0.5)
        await client.close()
        return sent, got

    sent, got = run(go())
    assert sorted(ids(got)) == sorted(e.payload["id"] for e in sent.values()), sidecar.log_tail()
    via_http = {sent[i].room_id for i in forwarder.event_ids()}
    expected_http = {r for r in rooms if room_bucket(r) >= pct}
    assert via_http == expected_http
    # order within each room is kept
    for r in rooms:
        assert [p["sequence_number"] for p in got if p["request_id"] == r] == [1, 2]


# === dual-write =================================================================


def test_dual_write_delivers_each_event_once(sidecar, forwarder, e2e_redis):
    r = room()

    async def go():
        client = await HubClient.connect(sidecar.client_url)
        await client.join(r)
        async with EventPublisher(settings(e2e_redis.url, forwarder.url, dual_write=True)) as p:
            sent = [chat(r, seq) for seq in range(1, 6)]
            results = [await p.publish(e) for e in sent]
        got = await client.receive("ReceiveMessage", len(sent))
        got += await client.drain("ReceiveMessage", quiet=1.5)  # a duplicate would arrive by now
        redis = aioredis.Redis.from_url(e2e_redis.url, decode_responses=True)
        entries = await redis.xrange("events:chat")
        await redis.aclose()
        await client.close()
        return sent, results, got, entries

    sent, results, got, entries = run(go())
    assert all(set(res.transports) == {"redis_streams", "http"} for res in results)
    assert forwarder.event_ids() == [e.event_id for e in sent]  # the HTTP leg really happened
    in_stream = [f.get("event_id") for _, f in entries]
    assert all(in_stream.count(e.event_id) >= 1 for e in sent)
    assert ids(got) == [e.payload["id"] for e in sent], (
        "dual-write must deliver each event_id exactly once (CONTRACT 5: duplicates within 5 minutes "
        f"are delivered once); got {ids(got)}\n{sidecar.log_tail()}"
    )


# === Redis failure ==============================================================


class TcpProxy:
    """A TCP forwarder in the test's event loop: ``cut()`` drops every connection and stops
    listening, as if Redis became unreachable from the backend."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> "TcpProxy":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()


def test_redis_unreachable_from_the_backend_falls_back_to_http(sidecar, forwarder, e2e_redis):
    """Redis is lost by the publisher only (network cut): events go over the HTTP bridge,
    which the sidecar appends to the stream with its own connection. None is lost."""
    r = room()

    async def go():
        proxy = await TcpProxy(e2e_redis.port).start()
        client = await HubClient.connect(sidecar.client_url)
        await client.join(r)
        async with EventPublisher(settings(f"redis://127.0.0.1:{proxy.port}/0", forwarder.url)) as p:
            before = [chat(r, seq) for seq in range(1, 6)]
            for e in before:
                assert (await p.publish(e)).transports == ("redis_streams",)
            await proxy.cut()
            during = [chat(r, seq) for seq in range(6, 16)]
            results = [await p.publish(e) for e in during]
        got = await client.receive("ReceiveMessage", 15)
        await client.close()
        return before, during, results, got

    before, during, results, got = run(go())
    assert all(res.fell_back and res.sidecar_answer == "accepted" for res in results), "the sidecar still reaches Redis"
    assert forwarder.event_ids() == [e.event_id for e in during]
    assert ids(got) == [e.payload["id"] for e in before + during], sidecar.log_tail()


def test_redis_stopped_mid_run_queues_in_the_sidecar_until_redis_returns(tmp_path):
    """Redis itself stops (the sidecar loses it too) with fallback on: events published
    during the outage go over HTTP, the sidecar answers ``queued`` and holds them, the
    client receives none of them while Redis is away (the sidecar does not deliver them
    locally: the clients of other instances would miss them), and once Redis is back
    (with its data, as a Redis with persistence restarts) every one arrives once, in
    order."""
    redis_server = RedisServer(data_dir=tmp_path).start()
    side = Sidecar(redis_server.url, tmp_path)
    forward = RecordingSidecar()
    forward.forward_to = side.admin_url
    r = room()

    async def go():
        client = await HubClient.connect(side.client_url)
        await client.join(r)
        async with EventPublisher(settings(redis_server.url, forward.url)) as p:
            before = [chat(r, seq) for seq in range(1, 6)]
            for e in before:
                await p.publish(e)
            got = await client.receive("ReceiveMessage", len(before))
            redis_server.stop(keep_data=True)
            during = [chat(r, seq) for seq in range(6, 16)]
            results = []
            for e in during:
                try:
                    results.append(await p.publish(e))
                except Exception as exc:  # noqa: BLE001 - reported below
                    results.append(exc)
            early = await client.drain("ReceiveMessage", quiet=1.5)
            redis_server.start()
            got += await client.receive("ReceiveMessage", len(during), timeout=30)
            extra = await client.drain("ReceiveMessage", quiet=1.0)
        await client.close()
        return before, during, results, got, early, extra

    try:
        before, during, results, got, early, extra = run(go())
        failures = [x for x in results if isinstance(x, Exception)]
        assert not failures, f"publishing during the Redis outage failed: {failures[0]}\n{side.log_tail()}"
        assert all(res.fell_back and res.sidecar_answer == "queued" and res.queued for res in results)
        assert forward.event_ids() == [e.event_id for e in during]
        assert early == [], "nothing is delivered while the sidecar cannot append it to the stream"
        assert ids(got) == [e.payload["id"] for e in before + during], (
            f"events queued in the sidecar while Redis was down did not all reach the client\n{side.log_tail()}"
        )
        assert extra == [], "each exactly once"
    finally:
        forward.close()
        side.stop()
        redis_server.stop()
