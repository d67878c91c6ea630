"""Envelope construction (seed 004), its wire forms, and the typed builders."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from signalr_sidecar_publisher import Envelope, ValidationError, events

NOW = "2026-01-16T10:00:00.123Z"


def _chat(**overrides):
    args = dict(id="m1", request_id="r1", content="hello", sequence_number=7, created_at=NOW, sender_id="u1")
    args.update(overrides)
    return events.chat_message("r1", **args)


def test_envelope_has_uuid4_id_and_iso_utc_timestamp():
    e = _chat()
    assert uuid.UUID(e.event_id).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e.timestamp)
    when = datetime.fromisoformat(e.timestamp.replace("Z", "+00:00"))
    assert abs(datetime.now(timezone.utc) - when) < timedelta(seconds=5)
    assert _chat().event_id != e.event_id


def test_to_dict_and_metadata_only_when_present():
    e = _chat()
    assert set(e.to_dict()) == {"event_id", "event_type", "timestamp", "room_id", "payload"}
    with_meta = e.with_metadata(trace_id="abc")
    assert with_meta.to_dict()["metadata"] == {"trace_id": "abc"}
    assert with_meta.event_id == e.event_id
    # keys already set by the caller win
    assert with_meta.with_metadata(trace_id="other").metadata == {"trace_id": "abc"}


def test_stream_fields_are_flat_with_json_text():
    e = _chat(metadata={"source_instance": "api-1"})
    fields = e.to_stream_fields()
    assert set(fields) == {"event_id", "event_type", "timestamp", "room_id", "payload", "metadata"}
    assert all(isinstance(v, str) for v in fields.values())
    assert json.loads(fields["payload"])["sequence_number"] == 7
    assert json.loads(fields["metadata"]) == {"source_instance": "api-1"}
    assert "metadata" not in _chat().to_stream_fields()
    assert Envelope.from_stream_fields({k.encode(): v.encode() for k, v in fields.items()}) == e


def test_json_round_trip():
    e = _chat(content="grüße \u2603")
    assert Envelope.from_dict(json.loads(e.to_json())) == e
    assert "grüße" in e.to_json()


def test_builders_for_every_event_type_validate():
    built = [
        _chat(),
        events.chat_message("r1", id="m2", request_id="r1", content="", sequence_number=1, created_at=NOW),
        events.typing_start("r1", user_id="u1", username="Ann"),
        events.typing_stop("r1", user_id="u1", username="Ann"),
        events.typing("r1", user_id="u1", username="Ann", is_typing=True),
        events.read_receipt("r1", user_id="u1", last_read_message_id="m1"),
        events.status_change("r1", request_id="r1", old_status="open", new_status="done", changed_by="u2"),
        events.assignment_change("r1", request_id="r1", new_assignee_id="u3"),
        events.notification(id="n1", user_id="u9", title="Hi", message="There"),
        events.remote_session_start("user:u9", request_id="r1", session_id="s1"),
        events.remote_session_end("user:u9", request_id="r1"),
        events.user_joined("r1", user_id="u1", username="Ann"),
        events.user_left("r1", user_id="u1"),
    ]
    assert {e.event_type for e in built} == set(events.BUILDERS)
    for e in built:
        assert e.validate() is e
    assert built[1].payload["sender_id"] is None  # system message: sender_id null, always sent
    assert built[2].payload == {"user_id": "u1", "username": "Ann", "is_typing": True}
    assert built[3].payload["is_typing"] is False and built[4].event_type == "typing_start"
    assert built[8].room_id == "user:u9"
    assert built[7].payload["old_assignee_id"] is None


def test_extra_fields_pass_through():
    e = _chat(reply_to="m0", attachments=[{"name": "a.png"}])
    assert e.payload["reply_to"] == "m0" and e.payload["attachments"] == [{"name": "a.png"}]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"sequence_number": "7"}, "payload.sequence_number"),
        ({"sequence_number": True}, "payload.sequence_number"),
        ({"content": None}, "payload.content"),
        ({"id": ""}, "payload.id"),
        ({"is_screenshot": "no"}, "payload.is_screenshot"),
        ({"created_at": ""}, "payload.created_at"),
        ({"sender": "Ann"}, "payload.sender"),
    ],
)
def test_invalid_payload_is_refused_naming_the_field(overrides, field):
    with pytest.raises(ValidationError) as info:
        _chat(**overrides)
    assert info.value.field == field
    assert field in str(info.value)


def test_invalid_envelope_fields_are_named():
    with pytest.raises(ValidationError) as info:
        events.typing_start("", user_id="u1", username="Ann")
    assert info.value.field == "room_id"
    with pytest.raises(ValidationError) as info:
        events.build("chat_message", "r1", {}, event_id="42")
    assert info.value.field == "event_id"
    with pytest.raises(ValidationError) as info:
        events.build("typing_start", "r1", {"user_id": "u", "username": "n", "is_typing": 1})
    assert info.value.field == "payload.is_typing"
    with pytest.raises(ValidationError) as info:
        events.build("typing_start", "r1", {"user_id": "u", "username": "n", "is_typing": True}, timestamp="yesterday")
    assert info.value.field == "timestamp"


def test_payload_that_is_not_json_is_refused():
    with pytest.raises(ValidationError, match="payload"):
        events.build("custom", "r1", {"n": float("nan")})
    with pytest.raises(ValidationError, match="payload"):
        events.build("custom", "r1", {"when": datetime.now()})


def test_from_dict_names_missing_and_unknown_fields():
    with pytest.raises(ValidationError) as info:
        Envelope.from_dict({"event_type": "chat_message", "room_id": "r1", "payload": {}, "extra": 1})
    text = str(info.value)
    assert "event_id: required field is missing" in text
    assert "timestamp: required field is missing" in text
    assert "extra: unknown envelope field" in text
    with pytest.raises(ValidationError, match="expected an object"):
        Envelope.from_dict([1, 2])  # type: ignore[arg-type]


def test_event_types_without_a_schema_only_need_a_valid_envelope():
    e = events.build("poll_closed", "discussion-1", {"anything": [1, 2, 3]})
    assert e.validate() is e
