"""signalr-sidecar-publish: exit codes and messages, run as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from signalr_sidecar_publisher import events

from conftest import clean_env, free_port, settings_env

NOW = "2026-01-16T10:00:00.123Z"


def script() -> list[str]:
    found = shutil.which("signalr-sidecar-publish", path=str(Path(sys.executable).parent))
    assert found, "the console script is installed with the package (pip install -e publishers/python)"
    return [found]


def cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(script() + args, input=stdin, capture_output=True, text=True, env={**clean_env(), **env},
                          timeout=30)


def envelope_json(room: str = "room-cli") -> str:
    return events.chat_message(room, id="m1", request_id=room, content="hi", sequence_number=1,
                               created_at=NOW).to_json()


def test_publishes_from_stdin_over_http(http_sidecar):
    body = envelope_json()
    r = cli([], {"EVENT_TRANSPORT_SIDECAR_URL": http_sidecar.url}, stdin=body)
    assert r.returncode == 0, r.stderr
    assert http_sidecar.posts == [{"path": "/internal/events", "json": json.loads(body)}]
    assert "via http: sidecar accepted" in r.stdout and json.loads(body)["event_id"] in r.stdout
    assert r.stderr == ""


def test_a_queued_event_exits_0_and_says_so(http_sidecar):
    http_sidecar.reply = '{"status":"queued"}'
    r = cli([], {"EVENT_TRANSPORT_SIDECAR_URL": http_sidecar.url}, stdin=envelope_json())
    assert r.returncode == 0, r.stderr
    assert "via http: sidecar queued" in r.stdout
    assert "cannot reach Redis" in r.stderr and "delayed, not lost" in r.stderr


def test_publishes_a_file_over_redis(redis_server, http_sidecar, tmp_path):
    redis_server.command("FLUSHALL")
    f = tmp_path / "event.json"
    f.write_text(envelope_json())
    r = cli([str(f)], settings_env(redis_server.url, http_sidecar.url))
    assert r.returncode == 0, r.stderr
    assert "events:chat via redis_streams" in r.stdout
    assert redis_server.command("XLEN", "events:chat") == ":1"
    assert http_sidecar.posts == []


def test_via_and_restamp(redis_server, http_sidecar):
    body = envelope_json()
    r = cli(["--via", "http", "--restamp"], settings_env(redis_server.url, http_sidecar.url), stdin=body)
    assert r.returncode == 0, r.stderr
    [post] = http_sidecar.posts
    assert post["json"]["event_id"] != json.loads(body)["event_id"]
    assert post["json"]["timestamp"] != NOW and post["json"]["payload"] == json.loads(body)["payload"]


def test_falls_back_when_redis_is_down(http_sidecar):
    env = settings_env(f"redis://127.0.0.1:{free_port()}/0", http_sidecar.url)
    r = cli([], env, stdin=envelope_json())
    assert r.returncode == 0, r.stderr
    assert "fallback" in r.stdout and len(http_sidecar.posts) == 1


@pytest.mark.parametrize(
    "stdin, expected",
    [
        ("{not json", "input is not JSON"),
        ("[]", "expected an object"),
        (json.dumps({**json.loads(envelope_json()), "room_id": ""}), "room_id: must not be empty"),
        (json.dumps({**json.loads(envelope_json()), "payload": {"id": "m1"}}), "payload.request_id: required field is missing"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(http_sidecar, stdin, expected):
    r = cli([], {"EVENT_TRANSPORT_SIDECAR_URL": http_sidecar.url}, stdin=stdin)
    assert r.returncode == 2
    assert expected in r.stderr
    assert http_sidecar.posts == []


def test_missing_file_exits_2(tmp_path):
    r = cli([str(tmp_path / "nope.json")], {})
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_bad_settings_exit_3_naming_the_variable():
    r = cli([], {"EVENT_TRANSPORT_REDIS_PERCENTAGE": "half"}, stdin=envelope_json())
    assert r.returncode == 3
    assert "EVENT_TRANSPORT_REDIS_PERCENTAGE" in r.stderr


def test_transport_failures_exit_1_with_the_reason(http_sidecar):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    r = cli([], settings_env(dead, http_sidecar.url, fallback_to_http="false"), stdin=envelope_json())
    assert r.returncode == 1
    assert "EVENT_TRANSPORT_FALLBACK_TO_HTTP is false" in r.stderr

    http_sidecar.status, http_sidecar.reply = 400, "room_id: unknown hub"
    r = cli([], {"EVENT_TRANSPORT_SIDECAR_URL": http_sidecar.url}, stdin=envelope_json())
    assert r.returncode == 1
    assert "rejected the event (400): room_id: unknown hub" in r.stderr

    r = cli([], {"EVENT_TRANSPORT_SIDECAR_URL": f"http://127.0.0.1:{free_port()}"}, stdin=envelope_json())
    assert r.returncode == 1 and "failed" in r.stderr

    http_sidecar.status, http_sidecar.headers = 503, {"Retry-After": "2"}
    http_sidecar.reply = "Redis is unreachable and the spool of POSTed events is full (3 events): retry later"
    r = cli([], {"EVENT_TRANSPORT_SIDECAR_URL": http_sidecar.url}, stdin=envelope_json())
    assert r.returncode == 1
    assert "answered 503" in r.stderr and "spool of POSTed events is full" in r.stderr and "retry after 2 s" in r.stderr


def test_help_names_the_exit_codes():
    r = cli(["--help"], {})
    assert r.returncode == 0 and "Exit status" in r.stdout
