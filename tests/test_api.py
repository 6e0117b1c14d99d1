"""The REST API, call by call, as CONTRACT.md's "REST API" section states it."""

import gc
import uuid
from urllib.parse import quote

import httpx
import pytest

from stepstream.testing.flows import LINEAR_FLOW, states
from tests.openapi import APIClient

BASE = "/api/v1"

EVENT_KEYS = {
    "entity",
    "id",
    "identifier",
    "state",
    "previous_state",
    "seq",
    "person_key",
    "flow",
    "flow_id",
    "occurred_at",
}
INSTANCE_KEYS = {"id", "flow", "version", "state", "steps", "seq"}
STEP_KEYS = {"id", "identifier", "name", "state"}


def url(*parts: str) -> str:
    """A path under /api/v1 with each part percent-encoded (no "/" left raw)."""
    return BASE + "/" + "/".join(quote(p, safe="") for p in parts)


def assert_errors(response, status: int) -> list[str]:
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert isinstance(body, dict), body
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, body
    assert all(isinstance(e, str) and e.strip() for e in errors), errors
    return errors


def assert_instance(instance: dict, flow: str = "onboarding") -> None:
    assert set(instance) >= INSTANCE_KEYS, instance
    uuid.UUID(instance["id"])
    assert instance["flow"] == flow
    assert isinstance(instance["version"], int)
    assert isinstance(instance["seq"], int)
    for step in instance["steps"]:
        assert set(step) >= STEP_KEYS, step
        uuid.UUID(step["id"])


def put_person(api, key: str, data=None, status: int | None = None):
    response = api.put(url("people", key), {"data": data or {}}, format="json")
    if status is not None:
        assert response.status_code == status, response.content
    return response


def start(api, key: str, flow: str = "onboarding"):
    return api.post(url("people", key, "flows"), {"flow": flow}, format="json")


def transition(api, key: str, name: str, flow: str = "onboarding"):
    return api.post(
        url("people", key, "flows", flow, "transitions"), {"transition": name}, format="json"
    )


def events(api, key: str, **params):
    return api.get(url("people", key, "events"), params)


@pytest.fixture
def person(api):
    put_person(api, "alice", {"name": "Alice"}, status=201)
    return "alice"


@pytest.fixture
def started(api, person, linear_flow):
    response = start(api, person)
    assert response.status_code == 201, response.content
    return response.json()


# --- health, authentication -------------------------------------------------------------------

ALL_CALLS = [
    ("get", "/schema/person", None),
    ("put", "/schema/person", {"type": "object"}),
    ("get", "/people/alice", None),
    ("put", "/people/alice", {"data": {}}),
    ("delete", "/people/alice", None),
    ("get", "/flows", None),
    ("post", "/flows", LINEAR_FLOW),
    ("get", "/flows/onboarding", None),
    ("get", "/people/alice/flows", None),
    ("post", "/people/alice/flows", {"flow": "onboarding"}),
    ("post", "/people/alice/flows/onboarding/transitions", {"transition": "next"}),
    ("post", "/people/alice/flows/onboarding/pause", None),
    ("post", "/people/alice/flows/onboarding/resume", None),
    ("post", "/people/alice/flows/onboarding/exit", None),
    ("get", "/people/alice/events", None),
]


@pytest.mark.django_db
def test_health_needs_no_key():
    response = APIClient().get(f"{BASE}/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("method,path,body", ALL_CALLS)
@pytest.mark.parametrize("credential", ["none", "wrong", "publishable", "not-bearer"])
def test_every_call_but_health_needs_the_secret_key(
    keys, api, linear_flow, method, path, body, credential
):
    put_person(api, "alice", status=201)  # exists, so a 401 is not a 404 in disguise
    client = APIClient()
    if credential == "wrong":
        client.credentials(HTTP_AUTHORIZATION="Bearer sk_" + "x" * 43)
    elif credential == "publishable":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['publishable_key']}")
    elif credential == "not-bearer":
        client.credentials(HTTP_AUTHORIZATION=f"Basic {keys['secret_key']}")
    kwargs = {"format": "json"} if body is not None else {}
    response = getattr(client, method)(BASE + path, body, **kwargs)
    assert_errors(response, 401)
    # nothing changed
    assert api.get(url("people", "alice")).status_code == 200
    assert api.get(url("people", "alice", "flows")).json() == []


def test_secret_key_of_other_environment_is_its_own_tenant(project, api):
    prod = APIClient()
    prod.credentials(HTTP_AUTHORIZATION=f"Bearer {project['environments'][1]['secret_key']}")
    assert prod.get(f"{BASE}/flows").status_code == 200


# --- schema -----------------------------------------------------------------------------------


def test_schema_is_empty_object_when_none(api):
    response = api.get(f"{BASE}/schema/person")
    assert response.status_code == 200
    assert response.json() == {}


def test_schema_put_then_get(api):
    schema = {
        "type": "object",
        "properties": {"age": {"type": "integer"}},
        "required": ["email"],
    }
    response = api.put(f"{BASE}/schema/person", schema, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == schema
    assert api.get(f"{BASE}/schema/person").json() == schema


@pytest.mark.parametrize(
    "schema",
    [
        {"type": 5},
        {"type": "no-such-type"},
        {"properties": []},
        {"required": "email"},
        ["not", "an", "object"],
        "a string",
    ],
)
def test_invalid_schema_is_400_and_keeps_the_old_one(api, schema):
    assert api.put(f"{BASE}/schema/person", {"type": "object"}, format="json").status_code == 200
    assert_errors(api.put(f"{BASE}/schema/person", schema, format="json"), 400)
    assert api.get(f"{BASE}/schema/person").json() == {"type": "object"}


def test_schema_applies_to_person_writes_from_then_on(api):
    put_person(api, "early", {"age": "old"}, status=201)
    schema = {
        "type": "object",
        "properties": {"age": {"type": "integer"}, "email": {"type": "string"}},
        "required": ["email"],
    }
    assert api.put(f"{BASE}/schema/person", schema, format="json").status_code == 200
    # existing data stays as it was
    assert api.get(url("people", "early")).json()["data"] == {"age": "old"}

    errors = assert_errors(put_person(api, "bob", {"email": "b@x.io", "age": "ten"}), 400)
    assert any("age" in e for e in errors), errors
    errors = assert_errors(put_person(api, "bob", {"age": 3}), 400)
    assert any("email" in e for e in errors), errors
    # both problems named at once
    errors = assert_errors(put_person(api, "bob", {"age": "ten"}), 400)
    text = " ".join(errors)
    assert "age" in text and "email" in text, errors
    assert api.get(url("people", "bob")).status_code == 404

    response = put_person(api, "bob", {"email": "b@x.io", "age": 3}, status=201)
    assert response.json() == {"person_key": "bob", "data": {"email": "b@x.io", "age": 3}}
    # replacing also checks
    assert_errors(put_person(api, "early", {"age": "old"}), 400)
    assert api.get(url("people", "early")).json()["data"] == {"age": "old"}


# --- people -----------------------------------------------------------------------------------


def test_put_person_creates_then_replaces(api):
    response = put_person(api, "alice", {"name": "Alice", "plan": "free"})
    assert response.status_code == 201
    assert response.json() == {"person_key": "alice", "data": {"name": "Alice", "plan": "free"}}
    response = put_person(api, "alice", {"plan": "pro"})
    assert response.status_code == 200
    assert response.json() == {"person_key": "alice", "data": {"plan": "pro"}}
    response = api.get(url("people", "alice"))
    assert response.status_code == 200
    assert response.json() == {"person_key": "alice", "data": {"plan": "pro"}}


def test_put_person_ignores_unknown_body_keys(api):
    response = api.put(url("people", "alice"), {"data": {"a": 1}, "extra": True}, format="json")
    assert response.status_code == 201
    assert response.json() == {"person_key": "alice", "data": {"a": 1}}


@pytest.mark.parametrize("data", [[1, 2], "text", 3, True])
def test_put_person_data_must_be_an_object(api, data):
    errors = assert_errors(api.put(url("people", "alice"), {"data": data}, format="json"), 400)
    assert any("data" in e for e in errors), errors
    assert api.get(url("people", "alice")).status_code == 404


def test_put_person_body_must_be_an_object(api):
    assert_errors(api.put(url("people", "alice"), [1], format="json"), 400)


def test_person_key_longer_than_255_is_400(api):
    assert_errors(put_person(api, "k" * 256), 400)
    put_person(api, "k" * 255, status=201)
    assert api.get(url("people", "k" * 255)).json()["person_key"] == "k" * 255


def test_get_unknown_person_is_404(api):
    assert_errors(api.get(url("people", "nobody")), 404)


def test_delete_person(api, person):
    response = api.delete(url("people", person))
    assert response.status_code == 204
    assert_errors(api.get(url("people", person)), 404)
    assert_errors(api.delete(url("people", person)), 404)


def test_delete_person_removes_instances_and_log(api, started, person):
    assert events(api, person).json()
    assert api.delete(url("people", person)).status_code == 204
    assert_errors(api.get(url("people", person, "flows")), 404)
    assert_errors(events(api, person), 404)
    put_person(api, person, status=201)
    assert api.get(url("people", person, "flows")).json() == []
    assert events(api, person).json() == []
    response = start(api, person)
    assert response.status_code == 201
    log = events(api, person).json()
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert log[0]["seq"] == 1
    assert response.json()["seq"] == len(log)


@pytest.mark.parametrize("key", ["a+b@example.com", "first last", "ünï cødé ✓", "50%off?&#"])
def test_person_key_with_special_characters(api, linear_flow, key):
    response = put_person(api, key, {"k": 1})
    assert response.status_code == 201, response.content
    assert response.json() == {"person_key": key, "data": {"k": 1}}
    assert api.get(url("people", key)).json() == {"person_key": key, "data": {"k": 1}}
    assert start(api, key).status_code == 201
    assert transition(api, key, "next").status_code == 200
    log = events(api, key).json()
    assert log and all(e["person_key"] == key for e in log)
    assert api.delete(url("people", key)).status_code == 204
    assert api.get(url("people", key)).status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_person_key_with_slash_through_asgi(keys, linear_flow):
    from asgiref.sync import sync_to_async
    from django.db import connections

    try:
        await _slash_key_calls(keys)
    finally:
        # Django serves each ASGI request on a thread of its own; their connections go when
        # those threads' locals are collected, and must, for the test database to be dropped.
        gc.collect()
        await sync_to_async(connections.close_all, thread_sensitive=True)()


async def _slash_key_calls(keys):
    from stepstream.http.asgi import application

    key = "team/alice"
    headers = {"Authorization": f"Bearer {keys['secret_key']}"}
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as client:
        path = f"{BASE}/people/team%2Falice"
        response = await client.put(path, json={"data": {"x": 1}})
        assert response.status_code == 201, response.text
        assert response.json() == {"person_key": key, "data": {"x": 1}}
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json()["person_key"] == key
        # the slash is part of the key, not a path separator
        assert (await client.get(f"{BASE}/people/team")).status_code == 404
        response = await client.post(f"{path}/flows", json={"flow": "onboarding"})
        assert response.status_code == 201, response.text
        response = await client.post(
            f"{path}/flows/onboarding/transitions", json={"transition": "next"}
        )
        assert response.status_code == 200, response.text
        response = await client.get(f"{path}/events")
        assert response.status_code == 200
        assert {e["person_key"] for e in response.json()} == {key}
        # lower-case encoding works too
        response = await client.get(f"{BASE}/people/team%2falice")
        assert response.status_code == 200
        assert response.json()["person_key"] == key
        assert (await client.delete(path)).status_code == 204
        assert (await client.get(path)).status_code == 404


# --- flows ------------------------------------------------------------------------------------


def test_publish_flow(api):
    response = api.post(f"{BASE}/flows", LINEAR_FLOW, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["identifier"] == "onboarding"
    assert body["version"] == 1
    assert [s["identifier"] for s in body["steps"]] == ["welcome", "profile", "done"]
    assert [(t["identifier"], t["from"], t["to"], t["type"]) for t in body["transitions"]] == [
        ("next", "welcome", "profile", "manual"),
        ("next", "profile", "done", "manual"),
    ]
    response = api.post(f"{BASE}/flows", LINEAR_FLOW, format="json")
    assert response.status_code == 201
    assert response.json()["version"] == 2
    response = api.post(f"{BASE}/flows", LINEAR_FLOW, format="json")
    assert response.json()["version"] == 3


def test_publish_flow_ignores_unknown_keys(api):
    body = {
        **LINEAR_FLOW,
        "colour": "blue",
        "steps": [{**s, "icon": "x"} for s in LINEAR_FLOW["steps"]],
        "transitions": [{**t, "weight": 3} for t in LINEAR_FLOW["transitions"]],
    }
    response = api.post(f"{BASE}/flows", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["version"] == 1


def test_publish_flow_names_every_problem(api):
    body = {
        "identifier": "broken",
        "steps": [
            {"identifier": "a"},
            {"identifier": "b"},
            {"identifier": "a"},
        ],
        "transitions": [
            {"identifier": "go", "from": "a", "to": "b"},
            {"identifier": "go", "from": "b", "to": "ghost"},
        ],
    }
    errors = assert_errors(api.post(f"{BASE}/flows", body, format="json"), 400)
    text = " ".join(errors)
    assert "Duplicate" in text or "duplicate" in text, errors
    assert "'a'" in text, errors
    assert "ghost" in text, errors
    assert len(errors) >= 2
    assert_errors(api.get(f"{BASE}/flows/broken"), 404)


def test_publish_flow_without_start_step_is_400(api):
    body = {
        "identifier": "loop",
        "steps": [{"identifier": "a"}, {"identifier": "b"}],
        "transitions": [
            {"identifier": "x", "from": "a", "to": "b"},
            {"identifier": "y", "from": "b", "to": "a"},
        ],
    }
    errors = assert_errors(api.post(f"{BASE}/flows", body, format="json"), 400)
    assert any("start" in e for e in errors), errors


def test_publish_flow_with_automatic_cycle_is_400(api):
    body = {
        "identifier": "spin",
        "steps": [{"identifier": "s"}, {"identifier": "a"}, {"identifier": "b"}],
        "transitions": [
            {"identifier": "go", "from": "s", "to": "a"},
            {"identifier": "x", "from": "a", "to": "b", "type": "automatic"},
            {"identifier": "y", "from": "b", "to": "a", "type": "automatic"},
        ],
    }
    errors = assert_errors(api.post(f"{BASE}/flows", body, format="json"), 400)
    assert any("cycle" in e for e in errors), errors
    # the same loop with one manual edge is fine
    body["transitions"][2]["type"] = "manual"
    assert api.post(f"{BASE}/flows", body, format="json").status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"steps": [{"identifier": "a"}]},
        {"identifier": "", "steps": [{"identifier": "a"}]},
        {"identifier": "f"},
        {"identifier": "f", "steps": []},
        {"identifier": "f", "steps": [{"identifier": "a"}], "transitions": {}},
        {"identifier": "f", "steps": [{"name": "no id"}]},
        {"identifier": "f", "steps": ["a"]},
        {
            "identifier": "f",
            "steps": [{"identifier": "a"}, {"identifier": "b"}],
            "transitions": [{"identifier": "t", "from": "a", "to": "b", "type": "sometimes"}],
        },
        [LINEAR_FLOW],
    ],
)
def test_publish_malformed_flow_is_400(api, body):
    assert_errors(api.post(f"{BASE}/flows", body, format="json"), 400)
    assert api.get(f"{BASE}/flows").json() == []


def test_list_flows_gives_latest_versions(api):
    api.post(f"{BASE}/flows", LINEAR_FLOW, format="json")
    second = {**LINEAR_FLOW, "steps": [*LINEAR_FLOW["steps"], {"identifier": "extra"}]}
    api.post(f"{BASE}/flows", second, format="json")
    api.post(f"{BASE}/flows", {"identifier": "tour", "steps": [{"identifier": "x"}]}, format="json")
    response = api.get(f"{BASE}/flows")
    assert response.status_code == 200
    by_id = {f["identifier"]: f for f in response.json()}
    assert set(by_id) == {"onboarding", "tour"}
    assert by_id["onboarding"]["version"] == 2
    assert [s["identifier"] for s in by_id["onboarding"]["steps"]][-1] == "extra"
    assert by_id["tour"]["version"] == 1


def test_get_flow_latest_version_and_404(api):
    assert_errors(api.get(f"{BASE}/flows/onboarding"), 404)
    api.post(f"{BASE}/flows", LINEAR_FLOW, format="json")
    api.post(f"{BASE}/flows", LINEAR_FLOW, format="json")
    response = api.get(f"{BASE}/flows/onboarding")
    assert response.status_code == 200
    body = response.json()
    assert body["identifier"] == "onboarding" and body["version"] == 2
    assert {"identifier", "version", "steps", "transitions"} <= set(body)


# --- instances --------------------------------------------------------------------------------


def test_start_flow(api, person, linear_flow):
    response = start(api, person)
    assert response.status_code == 201, response.content
    instance = response.json()
    assert_instance(instance)
    assert instance["version"] == 1
    assert instance["state"] == "active"
    assert [(s["identifier"], s["name"]) for s in instance["steps"]] == [
        ("welcome", "Welcome"),
        ("profile", "Profile"),
        ("done", "Done"),
    ]
    assert states(instance) == {
        "flow": "active",
        "welcome": "active",
        "profile": "inactive",
        "done": "inactive",
    }
    assert instance["seq"] == 2
    listed = api.get(url("people", person, "flows"))
    assert listed.status_code == 200
    assert listed.json() == [instance]


def test_start_flow_errors(api, person, linear_flow):
    assert_errors(start(api, "nobody"), 404)
    assert_errors(start(api, person, "no-such-flow"), 404)
    assert_errors(api.post(url("people", person, "flows"), {}, format="json"), 400)
    assert_errors(api.post(url("people", person, "flows"), {"flow": ""}, format="json"), 400)
    assert_errors(api.post(url("people", person, "flows"), {"flow": 7}, format="json"), 400)
    assert_errors(api.post(url("people", person, "flows"), ["onboarding"], format="json"), 400)
    assert api.get(url("people", person, "flows")).json() == []
    assert start(api, person).status_code == 201
    assert_errors(start(api, person), 409)
    assert len(api.get(url("people", person, "flows")).json()) == 1


def test_start_ignores_unknown_body_keys(api, person, linear_flow):
    response = api.post(
        url("people", person, "flows"), {"flow": "onboarding", "extra": 1}, format="json"
    )
    assert response.status_code == 201


def test_start_is_409_whatever_the_instance_state(api, started, person):
    assert api.post(url("people", person, "flows", "onboarding", "exit")).status_code == 200
    assert_errors(start(api, person), 409)


def test_start_runs_automatic_transitions(api, person):
    flow = {
        "identifier": "auto",
        "steps": [{"identifier": "a"}, {"identifier": "b"}, {"identifier": "c"}],
        "transitions": [
            {"identifier": "t1", "from": "a", "to": "b", "type": "automatic"},
            {"identifier": "t2", "from": "b", "to": "c"},
        ],
    }
    assert api.post(f"{BASE}/flows", flow, format="json").status_code == 201
    instance = start(api, person, "auto").json()
    assert states(instance) == {"flow": "active", "a": "completed", "b": "active", "c": "inactive"}


def test_instance_stays_on_its_version(api, started, person):
    second = {**LINEAR_FLOW, "steps": [*LINEAR_FLOW["steps"], {"identifier": "extra"}]}
    assert api.post(f"{BASE}/flows", second, format="json").json()["version"] == 2
    instance = transition(api, person, "next").json()
    assert instance["version"] == 1
    assert [s["identifier"] for s in instance["steps"]] == ["welcome", "profile", "done"]


def test_list_instances_of_unknown_person_is_404(api):
    assert_errors(api.get(url("people", "nobody", "flows")), 404)


def test_transitions(api, started, person):
    response = transition(api, person, "next")
    assert response.status_code == 200, response.content
    instance = response.json()
    assert_instance(instance)
    assert instance["id"] == started["id"]
    assert states(instance) == {
        "flow": "active",
        "welcome": "completed",
        "profile": "active",
        "done": "inactive",
    }
    assert instance["seq"] == 4
    instance = transition(api, person, "next").json()
    assert states(instance) == {
        "flow": "completed",
        "welcome": "completed",
        "profile": "completed",
        "done": "completed",
    }
    assert_errors(transition(api, person, "next"), 409)


BRANCHING_FLOW = {
    "identifier": "branches",
    "steps": [
        {"identifier": "welcome"},
        {"identifier": "task"},
        {"identifier": "invite"},
        {"identifier": "done"},
        {"identifier": "celebrate"},
    ],
    "transitions": [
        {"identifier": "start", "from": "welcome", "to": "task"},
        {"identifier": "start", "from": "welcome", "to": "invite"},
        {"identifier": "complete", "from": "task", "to": "done"},
        {"identifier": "complete", "from": "invite", "to": "done"},
        {"identifier": "finish", "from": "done", "to": "celebrate", "type": "automatic"},
    ],
}


def test_branching_transitions_through_rest(api, person):
    assert api.post(f"{BASE}/flows", BRANCHING_FLOW, format="json").status_code == 201
    assert start(api, person, "branches").status_code == 201
    instance = transition(api, person, "start", flow="branches").json()
    assert states(instance) == {
        "flow": "active",
        "welcome": "completed",
        "task": "active",
        "invite": "active",
        "done": "inactive",
        "celebrate": "inactive",
    }
    before = instance["seq"]
    instance = transition(api, person, "complete", flow="branches").json()
    assert states(instance)["flow"] == "completed"
    assert set(states(instance).values()) == {"completed"}
    new = events(api, person, since_seq=before).json()
    changes = [(e["entity"], e["identifier"], e["state"]) for e in new]
    # "done" is reached by two transitions but activated once; the automatic one ran
    assert changes.count(("step", "done", "active")) == 1
    assert ("step", "celebrate", "completed") in changes
    assert changes[-1] == ("flow", "branches", "completed")
    assert [e["seq"] for e in new] == list(range(before + 1, instance["seq"] + 1))


def test_transition_errors(api, started, person):
    assert_errors(transition(api, "nobody", "next"), 404)
    assert_errors(transition(api, person, "next", flow="no-such-flow"), 404)
    assert_errors(transition(api, person, "unknown"), 409)
    path = url("people", person, "flows", "onboarding", "transitions")
    assert_errors(api.post(path, {}, format="json"), 400)
    assert_errors(api.post(path, {"transition": ""}, format="json"), 400)
    assert_errors(api.post(path, {"transition": 1}, format="json"), 400)
    # nothing changed
    assert api.get(url("people", person, "flows")).json() == [started]


def test_transition_on_published_but_not_started_flow_is_404(api, person, linear_flow):
    assert_errors(transition(api, person, "next"), 404)


def test_transition_on_paused_or_exited_instance_is_409(api, started, person):
    base = url("people", person, "flows", "onboarding")
    assert api.post(f"{base}/pause").status_code == 200
    assert_errors(transition(api, person, "next"), 409)
    assert api.post(f"{base}/resume").status_code == 200
    assert transition(api, person, "next").status_code == 200
    assert api.post(f"{base}/exit").status_code == 200
    assert_errors(transition(api, person, "next"), 409)


def test_pause_resume_exit(api, started, person):
    base = url("people", person, "flows", "onboarding")
    step_states = {k: v for k, v in states(started).items() if k != "flow"}

    response = api.post(f"{base}/pause")
    assert response.status_code == 200
    assert_instance(response.json())
    assert states(response.json()) == {"flow": "inactive", **step_states}
    assert_errors(api.post(f"{base}/pause"), 409)

    response = api.post(f"{base}/resume")
    assert response.status_code == 200
    assert states(response.json()) == {"flow": "active", **step_states}
    assert_errors(api.post(f"{base}/resume"), 409)

    assert api.post(f"{base}/pause").status_code == 200
    response = api.post(f"{base}/exit")
    assert response.status_code == 200
    assert states(response.json()) == {"flow": "exited", **step_states}
    for action in ("pause", "resume", "exit"):
        assert_errors(api.post(f"{base}/{action}"), 409)


def test_exit_from_active(api, started, person):
    response = api.post(url("people", person, "flows", "onboarding", "exit"))
    assert response.status_code == 200
    assert response.json()["state"] == "exited"


def test_flow_actions_on_completed_instance_are_409(api, started, person):
    transition(api, person, "next")
    assert transition(api, person, "next").json()["state"] == "completed"
    for action in ("pause", "resume", "exit"):
        assert_errors(api.post(url("people", person, "flows", "onboarding", action)), 409)


@pytest.mark.parametrize("action", ["pause", "resume", "exit"])
def test_flow_actions_404(api, person, linear_flow, action):
    assert_errors(api.post(url("people", "nobody", "flows", "onboarding", action)), 404)
    assert_errors(api.post(url("people", person, "flows", "onboarding", action)), 404)
    assert_errors(api.post(url("people", person, "flows", "no-such-flow", action)), 404)


# --- events -----------------------------------------------------------------------------------


def test_events(api, started, person):
    transition(api, person, "next")
    transition(api, person, "next")
    response = events(api, person)
    assert response.status_code == 200
    log = response.json()
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    for e in log:
        assert set(e) >= EVENT_KEYS, e
        assert e["person_key"] == person
        assert e["flow"] == "onboarding"
        assert e["flow_id"] == started["id"]
        assert e["occurred_at"].endswith("Z")
    assert [(e["entity"], e["identifier"], e["previous_state"], e["state"]) for e in log] == [
        ("flow", "onboarding", "inactive", "active"),
        ("step", "welcome", "inactive", "active"),
        ("step", "welcome", "active", "completed"),
        ("step", "profile", "inactive", "active"),
        ("step", "profile", "active", "completed"),
        ("step", "done", "inactive", "active"),
        ("step", "done", "active", "completed"),
        ("flow", "onboarding", "active", "completed"),
    ]
    assert log[0]["id"] == started["id"]
    step_ids = {s["identifier"]: s["id"] for s in started["steps"]}
    assert all(e["id"] == step_ids[e["identifier"]] for e in log if e["entity"] == "step")

    assert [e["seq"] for e in events(api, person, since_seq=3).json()] == [4, 5, 6, 7, 8]
    assert [e["seq"] for e in events(api, person, since_seq=3, limit=2).json()] == [4, 5]
    assert [e["seq"] for e in events(api, person, limit=1).json()] == [1]
    assert events(api, person, since_seq=8).json() == []
    assert events(api, person, since_seq=100).json() == []


def test_events_of_person_without_changes(api, person):
    response = events(api, person)
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize(
    "params", [{"since_seq": "abc"}, {"since_seq": "-1"}, {"since_seq": "1.5"}, {"limit": "x"}]
)
def test_events_bad_parameters_are_400(api, started, person, params):
    assert_errors(events(api, person, **params), 400)


def test_events_of_unknown_person_is_404(api):
    assert_errors(events(api, "nobody"), 404)


def test_seq_counts_across_flows(api, started, person):
    assert (
        api.post(
            f"{BASE}/flows", {"identifier": "tour", "steps": [{"identifier": "x"}]}, format="json"
        ).status_code
        == 201
    )
    instance = start(api, person, "tour").json()
    # flow active, x active, x completed (final), flow completed
    assert instance["seq"] == 6
    assert states(instance) == {"flow": "completed", "x": "completed"}
    assert [e["seq"] for e in events(api, person).json()] == [1, 2, 3, 4, 5, 6]
    listed = api.get(url("people", person, "flows")).json()
    assert [i["flow"] for i in listed] == ["onboarding", "tour"]
    assert all(i["seq"] == 6 for i in listed)


# --- tenant isolation -------------------------------------------------------------------------


@pytest.fixture
def foreign(other_env):
    """A person with a running flow in the production environment."""
    from stepstream import engine
    from stepstream.engine import flows

    flows.publish(other_env, {**LINEAR_FLOW, "identifier": "secret-flow"})
    engine.do_put_person(other_env, "carol", {"ssn": "123"})
    engine.do_start_flow(other_env, "carol", "secret-flow")
    return other_env


def test_other_environment_is_invisible(api, foreign):
    for response in (
        api.get(url("people", "carol")),
        api.delete(url("people", "carol")),
        api.get(url("people", "carol", "flows")),
        start(api, "carol", "secret-flow"),
        transition(api, "carol", "next", flow="secret-flow"),
        api.post(url("people", "carol", "flows", "secret-flow", "pause")),
        api.post(url("people", "carol", "flows", "secret-flow", "resume")),
        api.post(url("people", "carol", "flows", "secret-flow", "exit")),
        events(api, "carol"),
        api.get(url("flows", "secret-flow")),
    ):
        errors = assert_errors(response, 404)
        assert "123" not in " ".join(errors)
    assert api.get(f"{BASE}/flows").json() == []
    assert api.get(f"{BASE}/schema/person").json() == {}

    # the development person "carol" is a different person
    put_person(api, "carol", {"mine": True}, status=201)
    assert_errors(start(api, "carol", "secret-flow"), 404)
    assert api.get(url("people", "carol", "flows")).json() == []
    assert api.get(url("people", "carol")).json()["data"] == {"mine": True}

    # and production is untouched
    from stepstream import engine
    from stepstream.engine import people

    assert people.get(foreign, "carol").data == {"ssn": "123"}
    snap = engine.snapshot(foreign, "carol")
    assert [(i["flow"], i["state"]) for i in snap["flows"]] == [("secret-flow", "active")]
    assert snap["seq"] == 2


def test_same_keys_in_both_environments_stay_apart(api, project, other_env):
    prod = APIClient()
    prod.credentials(HTTP_AUTHORIZATION=f"Bearer {project['environments'][1]['secret_key']}")
    for client, tag in ((api, "dev"), (prod, "prod")):
        put_person(client, "dave", {"env": tag}, status=201)
        assert client.post(f"{BASE}/flows", LINEAR_FLOW, format="json").status_code == 201
    assert api.put(f"{BASE}/schema/person", {"type": "object"}, format="json").status_code == 200
    assert prod.get(f"{BASE}/schema/person").json() == {}
    assert api.get(url("people", "dave")).json()["data"] == {"env": "dev"}
    assert prod.get(url("people", "dave")).json()["data"] == {"env": "prod"}

    assert start(api, "dave").status_code == 201
    assert transition(api, "dave", "next").status_code == 200
    assert prod.get(url("people", "dave", "flows")).json() == []
    assert_errors(transition(prod, "dave", "next"), 404)
    assert prod.get(url("people", "dave", "events")).json() == []
    prod_instance = start(prod, "dave").json()
    assert prod_instance["seq"] == 2
    assert states(prod_instance)["welcome"] == "active"
    assert api.get(url("people", "dave", "flows")).json()[0]["seq"] == 4

    assert api.delete(url("people", "dave")).status_code == 204
    assert prod.get(url("people", "dave")).status_code == 200
    assert len(prod.get(url("people", "dave", "events")).json()) == 2
    # a flow published twice in dev is still version 1 in prod
    assert api.post(f"{BASE}/flows", LINEAR_FLOW, format="json").json()["version"] == 2
    assert prod.get(f"{BASE}/flows/onboarding").json()["version"] == 1


# --- error bodies, OpenAPI --------------------------------------------------------------------


def test_malformed_json_is_400_with_errors(api):
    response = api.generic(
        "PUT", url("people", "alice"), b"{not json", content_type="application/json"
    )
    assert_errors(response, 400)
    response = api.generic("POST", f"{BASE}/flows", b"[", content_type="application/json")
    assert_errors(response, 400)


def test_unknown_path_under_api_is_404(api):
    response = api.get(f"{BASE}/no-such-thing")
    assert response.status_code == 404


@pytest.mark.django_db
def test_openapi_document_lists_people_paths():
    response = APIClient().get(f"{BASE}/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert "openapi" in doc
    paths = doc["paths"]
    assert any(p.startswith("/api/v1/people") for p in paths), list(paths)
    assert any(p.startswith("/api/v1/flows") for p in paths), list(paths)
