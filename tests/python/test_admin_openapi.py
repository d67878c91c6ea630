"""protocol/admin-openapi.yaml against the running sidecar: schemathesis generates
requests from the description (its examples, then property-based variations of every
parameter, with and without the admin token) and checks each answer's status, content
type and body against it. The sidecar holds real connections meanwhile (conftest.py),
so the 200 answers carry rooms, members and a user's connections, not empty lists."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from conftest import ADMIN_TOKEN, OPENAPI, get


@pytest.fixture(scope="session")
def admin_api(sidecar, clients):
    config = schemathesis.Config.from_dict({
        "base-url": sidecar["admin"],
        # Through the description's security scheme, so schemathesis also sends
        # requests without it (and expects 401) instead of always adding it.
        "auth": {"openapi": {"adminToken": {"bearer": ADMIN_TOKEN}}},
        # Unknown query parameters are ignored, as HTTP APIs do: not a rejection case.
        "generation": {"allow-extra-parameters": False},
    })
    return schemathesis.openapi.from_path(OPENAPI, config=config)


schema = schemathesis.pytest.from_fixture("admin_api")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_matches_the_openapi_description(case):
    case.call_and_validate()


def test_the_examples_in_the_description_reach_real_data(sidecar, clients):
    """The description's examples (hub chat, room room-a, user alice) are what the
    property-based run starts from: they must name things that exist here."""
    status, body = get(f"{sidecar['admin']}/admin/api/hubs/chat/rooms/room-a")
    room = json.loads(body)
    assert status == 200
    assert room["connections"] == 3
    assert {m["connection_id"] for m in room["members"]} == set(clients.values())
    status, body = get(f"{sidecar['admin']}/admin/api/users/alice")
    assert status == 200 and json.loads(body)["rooms"] == ["room-a", "room-b"]
    status, body = get(f"{sidecar['admin']}/admin/api/openapi.yaml")
    assert status == 200 and body == OPENAPI.read_bytes(), "the served description is the file"
    assert get(f"{sidecar['admin']}/admin/api/hubs", None)[0] == 401


def test_a_path_segment_that_is_not_utf8_gets_a_documented_answer(sidecar, clients):
    """Every path parameter is percent-encoded text; one that decodes to something
    other than UTF-8 is refused with 400, and the description must say so for each
    operation with a path parameter (schemathesis only sends valid text there)."""
    import yaml

    paths = yaml.safe_load(OPENAPI.read_text())["paths"]
    asked = {
        "/admin/api/hubs/{hub}/rooms": "/admin/api/hubs/%FF/rooms",
        "/admin/api/hubs/{hub}/rooms/{room}": "/admin/api/hubs/chat/rooms/%FF",
        "/admin/api/users/{user}": "/admin/api/users/%FF",
    }
    assert set(asked) == {p for p in paths if "{" in p}, "every templated path is asked"
    for template, path in asked.items():
        status, body = get(f"{sidecar['admin']}{path}")
        assert status == 400, (path, status, body)
        assert "error" in json.loads(body), body
        documented = paths[template]["get"]["responses"]
        assert "400" in documented, f"{template} answers 400 ({body!r}) but documents only {sorted(documented)}"
