"""The shipped schemas equal protocol/schemas, the small validator agrees with
jsonschema, and the routing table matches protocol/routes.toml."""

from __future__ import annotations

import copy
import json
from importlib import resources

import jsonschema
import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the package itself also runs on 3.10

from signalr_sidecar_publisher import events
from signalr_sidecar_publisher.routing import DEFAULT_STREAMS, _parse_routes_minimal, load_routes, resolve_routes
from signalr_sidecar_publisher.schema import SchemaError, SchemaSet, check_schema, iter_errors

from conftest import PROTOCOL

SCHEMAS = PROTOCOL / "schemas"


def test_shipped_schemas_equal_the_repository_copies():
    shipped = resources.files("signalr_sidecar_publisher") / "schemas"
    shipped_names = sorted(e.name for e in shipped.iterdir() if e.name.endswith(".json"))
    repo_names = sorted(p.name for p in SCHEMAS.glob("*.json"))
    assert shipped_names == repo_names, "copy protocol/schemas/*.json into src/signalr_sidecar_publisher/schemas/"
    for name in repo_names:
        assert (shipped / name).read_bytes() == (SCHEMAS / name).read_bytes(), f"{name} drifted from protocol/schemas"


def test_every_schema_uses_only_supported_keywords():
    SchemaSet.from_directory(SCHEMAS)  # raises SchemaError otherwise


def test_an_unsupported_keyword_is_refused_not_ignored():
    with pytest.raises(SchemaError, match="additionalProperties"):
        check_schema({"type": "object", "properties": {"a": {"additionalProperties": False}}})


def test_default_streams_match_routes_toml():
    routes = load_routes(PROTOCOL / "routes.toml")
    assert routes == DEFAULT_STREAMS
    assert _parse_routes_minimal((PROTOCOL / "routes.toml").read_text()) == routes


def test_every_routed_event_type_has_a_builder_and_a_schema():
    routes = tomllib.loads((PROTOCOL / "routes.toml").read_text())["route"]
    for route in routes:
        assert route["event_type"] in events.BUILDERS
        assert (SCHEMAS / f"{route['event_type']}.json").is_file()


def test_routes_file_resolution(tmp_path):
    custom = tmp_path / "routes.toml"
    custom.write_text('[[route]]\nevent_type = "response_posted"\nhub = "d"\nmethod = "M"\nstream = "events:discussion"\n')
    assert resolve_routes(str(custom)) == ({"response_posted": "events:discussion"}, str(custom))
    routes, source = resolve_routes(None, cwd=str(PROTOCOL.parent))
    assert routes == DEFAULT_STREAMS and source.endswith("protocol/routes.toml")
    routes, source = resolve_routes(None, cwd=str(tmp_path))
    assert routes == DEFAULT_STREAMS and source.startswith("built-in")


# --- the validator agrees with jsonschema ------------------------------------

NOW = "2026-01-16T10:00:00.123Z"
UUID = "0b9c7e1e-7c4f-4d1a-9a56-3f3f7a1f2b10"


def _valid_payloads() -> dict[str, dict]:
    return {
        "chat_message": {"id": "m1", "request_id": "r1", "sender_id": None, "content": "hi", "sequence_number": 3,
                         "is_screenshot": False, "created_at": NOW, "sender": {"name": "A"}, "extra": [1, 2]},
        "typing_start": {"user_id": "u1", "username": "Ann", "is_typing": True},
        "typing_stop": {"user_id": "u1", "username": "", "is_typing": False},
        "read_receipt": {"user_id": "u1", "last_read_message_id": None},
        "status_change": {"request_id": "r1", "old_status": "open", "new_status": "closed", "changed_by": "u2",
                          "changed_at": NOW},
        "assignment_change": {"request_id": "r1", "old_assignee_id": None, "new_assignee_id": "u3"},
        "notification": {"id": "n1", "user_id": "u1", "title": "T", "message": "M", "created_at": NOW},
        "remote_session_start": {"request_id": "r1", "session_id": "s1", "agent_id": None},
        "remote_session_end": {"request_id": "r1"},
        "user_joined": {"user_id": "u1", "username": None, "room_id": "r1"},
        "user_left": {"user_id": "u1", "room_id": "r1"},
    }


def _mutations(value: dict) -> list[dict]:
    """Variants of a valid object: each field dropped, or replaced by values of other types."""
    out = []
    for key in value:
        dropped = dict(value)
        del dropped[key]
        out.append(dropped)
        for bad in (None, 1, 1.5, 2.0, True, "", "x", [], {}, -1):
            changed = dict(value)
            changed[key] = bad
            out.append(changed)
    return out


def _samples():
    for event_type, payload in _valid_payloads().items():
        schema = json.loads((SCHEMAS / f"{event_type}.json").read_text())
        yield event_type, schema, payload
        for variant in _mutations(payload):
            yield event_type, schema, variant
    envelope_schema = json.loads((SCHEMAS / "envelope.json").read_text())
    envelope = {"event_id": UUID, "event_type": "chat_message", "timestamp": NOW, "room_id": "r1",
                "payload": {}, "metadata": {"trace_id": "t", "coalesced_count": 2}}
    yield "envelope", envelope_schema, envelope
    for variant in _mutations(envelope):
        yield "envelope", envelope_schema, variant
    for key, values in {
        "event_id": ["not-a-uuid", UUID.upper(), UUID + "x", "x" + UUID],
        "timestamp": ["2026-01-16", "2026-01-16 10:00:00", "2026-01-16T10:00:00+01:00", "2026-01-16T10:00:00+0100",
                      "16/01/2026", "2026-01-16T10:00:00.5z", "2026-01-16T10:00:00Zjunk"],
        "event_type": ["a" * 128, "a" * 129],
        "room_id": ["r" * 512, "r" * 513, "user:1", "*"],
        "metadata": [None, {"coalesced_count": -1}, {"coalesced_count": 0}, {"coalesced_count": 1.0},
                     {"traceparent": 5}, {"other": {"any": 1}}],
    }.items():
        for v in values:
            changed = copy.deepcopy(envelope)
            changed[key] = v
            yield "envelope", envelope_schema, changed


def test_validator_agrees_with_jsonschema():
    checked = valid = 0
    for name, schema, sample in _samples():
        reference = sorted(e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(sample))
        ours = list(iter_errors(schema, sample))
        assert bool(ours) == bool(reference), (name, sample, ours, reference)
        checked += 1
        valid += not ours
    assert checked > 300 and 20 < valid < checked - 100


def test_errors_name_the_field():
    schemas = SchemaSet.from_directory(SCHEMAS)
    bad = {"event_id": UUID, "event_type": "chat_message", "timestamp": NOW, "room_id": "r1",
           "payload": {"id": "m1", "request_id": "r1", "content": "hi", "sequence_number": "3",
                       "is_screenshot": False}}
    errors = schemas.errors(bad)
    assert ("payload.sequence_number", "expected integer, got string") in errors
    assert ("payload.created_at", "required field is missing") in errors
    assert schemas.errors({**bad, "room_id": ""})[0] == ("room_id", "must not be empty")
