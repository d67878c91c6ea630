"""The FastAPI example posts a chat message and a typing indicator through the publisher."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import settings_env  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastapi_app.py"


def load_example():
    spec = importlib.util.spec_from_file_location("fastapi_example_app", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_posts_a_message_and_typing(redis_server, http_sidecar, monkeypatch):
    redis_server.command("FLUSHALL")
    for k, v in settings_env(redis_server.url, http_sidecar.url, redis_percentage="0").items():
        monkeypatch.setenv(k, v)
    app = load_example().app
    with TestClient(app) as client:
        r = client.post("/requests/R1/messages", json={"sender_id": "u1", "content": "hello"})
        assert r.status_code == 201, r.text
        assert r.json()["transports"] == ["http"]
        r = client.post("/requests/R1/typing", json={"user_id": "u1", "username": "Ann", "is_typing": True})
        assert r.status_code == 202, r.text
        r = client.post("/requests/R1/typing", json={"user_id": "u1", "username": "Ann", "is_typing": "perhaps"})
        assert r.status_code == 422
    posted = [p["json"] for p in http_sidecar.posts]
    assert [p["event_type"] for p in posted] == ["chat_message", "typing_start"]
    assert posted[0]["room_id"] == "R1" and posted[0]["payload"]["content"] == "hello"
    assert posted[0]["payload"]["sequence_number"] == 1
    assert posted[0]["metadata"]["source_instance"] == "fastapi-example"
    assert posted[1]["payload"] == {"user_id": "u1", "username": "Ann", "is_typing": True}


def test_example_answers_503_when_no_path_works(monkeypatch):
    from conftest import free_port

    for k, v in settings_env(f"redis://127.0.0.1:{free_port()}/0", f"http://127.0.0.1:{free_port()}").items():
        monkeypatch.setenv(k, v)
    with TestClient(load_example().app) as client:
        r = client.post("/requests/R2/messages", json={"content": "hello"})
        assert r.status_code == 503 and "failed" in r.json()["detail"]
