"""Tenant isolation, proven by walking every REST call and every WebSocket action.

With environment A's keys against environment B's objects (another project;
then a production key against development objects) every call naming one of
B's objects is a 404, never a 403 and never data; calls that name nothing
answer about A alone; and nothing of B changes. The walk checks that it
covers every route of the REST API and every WebSocket action, so a new one
cannot be added without being walked.
"""

import json
import uuid

import pytest

from stepstream.http.api import urls as api_urls
from stepstream.testing.flows import LINEAR_FLOW
from stepstream.ws.actions import ACTIONS
from tests.trust import mint
from tests.wsclient import WsClient

SECRET_FLOW = {
    **LINEAR_FLOW,
    "identifier": "secret-flow",
    "steps": [{"identifier": "b-step-one"}, {"identifier": "b-step-two"}],
    "transitions": [{"identifier": "next", "from": "b-step-one", "to": "b-step-two"}],
}
# A publishes a flow of the same identifier, with steps of its own
A_FLOW = {
    "identifier": "secret-flow",
    "steps": [{"identifier": "a-one"}, {"identifier": "a-two"}],
    "transitions": [{"identifier": "next", "from": "a-one", "to": "a-two"}],
}
B_DATA = {"ssn": "B-SECRET-123"}
B_SCHEMA = {"type": "object", "properties": {"b_only_field": {"type": "string"}}}
B_ORIGIN = "https://b-only.example"
NO_KEY_ROUTES = {"health", "ready", "openapi.json", "docs"}  # answer without a key, about no tenant


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's own server: B's webhook points at a closed loopback port."""
    from stepstream.testing.servers import Server

    srv = Server(tmp_path_factory.mktemp("isolation"), STEPSTREAM_WEBHOOK_ALLOW_PRIVATE="1").start()
    yield srv
    srv.stop()


@pytest.fixture
def pair(server, request):
    """(A's keys, B's keys and objects) for the two kinds of neighbour."""
    tag = uuid.uuid4().hex[:8]
    b_project = server.init_project(f"iso-b-{tag}")
    if request.param == "another project":
        a_keys = server.init_project(f"iso-a-{tag}")["environments"][0]
        b_keys = b_project["environments"][0]
    else:  # a production key against development objects
        a_keys, b_keys = b_project["environments"][1], b_project["environments"][0]
    with server.rest(b_keys["secret_key"]) as b:
        assert b.put("/schema/person", json=B_SCHEMA).status_code == 200
        assert b.post("/flows", json=SECRET_FLOW).status_code == 201
        assert b.put("/people/carol", json={"data": B_DATA}).status_code == 201
        instance = b.post("/people/carol/flows", json={"flow": "secret-flow"}).json()
        secret = b.post("/identity-verification/secret").json()["identity_secret"]
        assert b.put("/allowed-origins", json={"origins": [B_ORIGIN]}).status_code == 200
        b_keys_listed = b.get("/keys").json()
        assert b.put("/segments/b-seg", json={"condition": "true"}).status_code == 201
        limit = {"flows": ["secret-flow"], "max": 5, "window": "1h"}
        assert b.put("/limits/b-limit", json=limit).status_code == 201
        hook = b.post("/webhooks", json={"url": "http://127.0.0.1:9/b-only-hook"})
        assert hook.status_code == 201, hook.text
        draft = {**SECRET_FLOW, "name": "b-draft-marker"}
        assert b.put("/flows/secret-flow/draft", json=draft).status_code == 200
    return a_keys, {
        "webhook": hook.json(),
        **b_keys,
        "instance": instance,
        "identity_secret": secret,
        "key_ids": [k["id"] for k in b_keys_listed],
        "hints": [k["hint"] for k in b_keys_listed],
    }


def b_markers(b: dict) -> list[str]:
    """Strings only B's data contains: none may appear in an answer to A."""
    return [
        "B-SECRET-123",
        "b_only_field",
        "b-step-one",
        B_ORIGIN,
        b["instance"]["id"],
        *[s["id"] for s in b["instance"]["steps"]],
        b["identity_secret"],
        b["webhook"]["secret"],
        "b-only-hook",
        "b-draft-marker",
        b["secret_key"],
        b["publishable_key"],
        *b["hints"],
    ]


def assert_no_b(response_text: str, b: dict) -> None:
    for marker in b_markers(b):
        assert marker not in response_text, f"{marker!r} of B leaked: {response_text[:300]}"


def assert_404(response, b: dict) -> None:
    assert response.status_code == 404, (
        response.request.method,
        response.request.url,
        response.text,
    )
    assert response.json()["errors"], response.text
    assert_no_b(response.text, b)


def assert_b_untouched(server, b: dict) -> None:
    with server.rest(b["secret_key"]) as rest:
        assert rest.get("/people/carol").json()["data"] == B_DATA
        flows = rest.get("/people/carol/flows").json()
        assert [(i["id"], i["state"], i["seq"]) for i in flows] == [
            (b["instance"]["id"], "active", 2)
        ]
        assert [s["state"] for s in flows[0]["steps"]] == ["active", "inactive"]
        assert len(rest.get("/people/carol/events").json()) == 2
        assert rest.get("/schema/person").json() == B_SCHEMA
        assert [f["identifier"] for f in rest.get("/flows").json()] == ["secret-flow"]
        flow = rest.get("/flows/secret-flow").json()
        assert (flow["version"], flow["enabled"], flow["archived"]) == (1, True, False)
        assert rest.get("/flows/secret-flow/draft").json()["draft"]["name"] == "b-draft-marker"
        assert [v["version"] for v in rest.get("/flows/secret-flow/versions").json()] == [1]
        described = rest.get("/identity-verification").json()
        assert described["has_identity_secret"] and described["mode"] == "off"
        assert rest.get("/allowed-origins").json() == {"origins": [B_ORIGIN]}
        assert [s["identifier"] for s in rest.get("/segments").json()] == ["b-seg"]
        assert rest.get("/theme").json()["tokens"]["radius"] == "8px"  # A's PUT not here
        assert [lim["identifier"] for lim in rest.get("/limits").json()] == ["b-limit"]
        assert all(k["revoked_at"] is None for k in rest.get("/keys").json())
        assert len(rest.get("/keys").json()) == 2


# Every authenticated route, and what A's secret key does with it against B's objects.
# Calls naming one of B's objects: 404. Calls naming nothing: answer about A only.
def walk_rest(a, b: dict) -> set[str]:
    walked = set()

    def route(path: str) -> str:
        """The route pattern a path resolves to, as urlpatterns spell it."""
        bare = path.split("?")[0].lstrip("/")
        return next(str(p.pattern) for p in api_urls.urlpatterns if p.resolve(bare))

    def naming_b(method, path, body=None):
        walked.add(route(path))
        assert_404(a.request(method, path, json=body), b)

    def about_a(method, path, body=None, status=200):
        walked.add(route(path))
        response = a.request(method, path, json=body)
        assert response.status_code == status, (method, path, response.text)
        assert_no_b(response.text, b)
        return response

    naming_b("GET", "/people/carol")
    naming_b("DELETE", "/people/carol")
    naming_b("GET", "/people/carol/flows")
    naming_b("POST", "/people/carol/flows", {"flow": "secret-flow"})
    naming_b(
        "POST",
        "/people/carol/flows/secret-flow/transitions",
        {"transition": "next"},
    )
    for action in ("pause", "resume", "exit"):
        naming_b(
            "POST",
            f"/people/carol/flows/secret-flow/{action}",
        )
    naming_b("POST", "/people/carol/flows/secret-flow/steps/b-step-two/complete")
    naming_b("GET", "/people/carol/events")
    naming_b("GET", "/people/carol/events?since_seq=0&limit=10")
    naming_b("GET", "/flows/secret-flow")
    naming_b("GET", "/flows/secret-flow?version=1")
    naming_b("GET", "/flows/secret-flow/analytics")
    # authoring: B's flow, its versions, draft and switches are out of sight
    naming_b("GET", "/flows/secret-flow?version=1")
    naming_b("GET", "/flows/secret-flow/versions")
    naming_b("PATCH", "/flows/secret-flow", {"enabled": False})
    naming_b("DELETE", "/flows/secret-flow")
    naming_b("POST", "/flows/secret-flow/unarchive")
    naming_b("POST", "/flows/secret-flow/versions/1/promote", {"to": "development"})
    naming_b("GET", "/flows/secret-flow/draft")
    naming_b("DELETE", "/flows/secret-flow/draft")
    naming_b("POST", "/flows/secret-flow/draft/publish")
    # A's own draft of the same identifier is A's
    about_a("PUT", "/flows/secret-flow/draft", A_FLOW)
    about_a("DELETE", "/flows/secret-flow/draft", status=204)
    assert about_a("POST", "/conditions/check", {"condition": "true"}).json()["ok"] is True
    assert about_a("GET", "/audit").json()["entries"] == []
    hook = f"/webhooks/{b['webhook']['id']}"
    for method, path in (("GET", hook), ("POST", f"{hook}/enable"), ("GET", f"{hook}/deliveries")):
        naming_b(method, path)
    naming_b("DELETE", hook)
    for key_id in b["key_ids"]:
        naming_b("POST", f"/keys/{key_id}/revoke")

    # calls that name nothing of B's: A's own, with none of B's in them
    assert about_a("GET", "/schema/person").json() == {}
    assert about_a("GET", "/flows").json() == []
    listed = about_a("GET", "/keys").json()
    assert not {k["id"] for k in listed} & set(b["key_ids"])
    assert about_a("GET", "/allowed-origins").json() == {"origins": []}
    described = about_a("GET", "/identity-verification").json()
    assert described == {
        "mode": "off",
        "signed_requests": 0,
        "unsigned_requests": 0,
        "has_identity_secret": False,
    }
    assert about_a("GET", "/theme").json()["tokens"]["radius"] == "8px"  # the default
    # writes land in A only
    about_a("PUT", "/theme", {"tokens": {"radius": "3px"}})
    about_a("PUT", "/schema/person", {"type": "object"})
    assert about_a("POST", "/flows", A_FLOW, status=201).json()["version"] == 1
    about_a("POST", "/keys", {"kind": "publishable"}, status=201)
    about_a("PUT", "/allowed-origins", {"origins": ["https://a.example"]})
    about_a("PUT", "/allowed-origins", {"origins": []})
    about_a("POST", "/identity-verification/secret", status=201)
    about_a("PUT", "/identity-verification", {"mode": "rollout"})
    about_a("PUT", "/identity-verification", {"mode": "off"})
    # A's own "carol" is a new person of A's, who has nothing of B's
    made = about_a("PUT", "/people/carol", {"data": {"mine": True}}, status=201)
    assert made.json() == {"person_key": "carol", "data": {"mine": True}}
    assert about_a("GET", "/people/carol").json()["data"] == {"mine": True}
    started = about_a("POST", "/people/carol/flows", {"flow": "secret-flow"}, status=201).json()
    assert started["seq"] == 2 and started["id"] != b["instance"]["id"]
    assert len(about_a("GET", "/people/carol/events").json()) == 2
    about_a("DELETE", "/people/carol", status=204)
    # rules: B's segment and B's carol's instance are out of sight; track makes A's own carol
    naming_b("GET", "/segments/b-seg")
    naming_b("DELETE", "/segments/b-seg")
    naming_b("GET", "/segments/b-seg/people")
    naming_b("POST", "/people/carol/flows/secret-flow/restart")
    assert about_a("GET", "/segments").json() == []
    about_a("PUT", "/segments/b-seg", {"condition": "false"}, status=201)
    tracked = about_a("POST", "/people/carol/track", {"event": "e"})
    assert tracked.json() == {"person_key": "carol", "event": "e", "count": 1, "seq": 0}
    about_a("DELETE", "/people/carol", status=204)
    about_a("DELETE", "/segments/b-seg", status=204)
    # orchestration: B's limit and B's carol's explanation are out of sight
    naming_b("GET", "/limits/b-limit")
    naming_b("DELETE", "/limits/b-limit")
    naming_b("GET", "/people/carol/explain?flow=secret-flow")
    assert about_a("GET", "/limits").json() == []
    # A's own secret-flow (published above): A's own limit, B's untouched
    about_a("PUT", "/limits/b-limit", {"flows": ["secret-flow"], "max": 1, "window": "1h"}, 201)
    about_a("DELETE", "/limits/b-limit", status=204)
    # outbound: A's feed, webhooks and analytics hold nothing of B's
    feed = about_a("GET", "/events").json()
    assert {e["person_key"] for e in feed["events"]} <= {"carol"}
    assert about_a("GET", "/webhooks").json() == []
    made = about_a("POST", "/webhooks", {"url": "http://127.0.0.1:9/a-hook"}, status=201)
    about_a("DELETE", f"/webhooks/{made.json()['id']}", status=204)
    # A's carol, who started secret-flow, was deleted: not counted
    assert about_a("GET", "/flows/secret-flow/analytics").json()["instances"]["total"] == 0
    return walked


@pytest.mark.parametrize(
    "pair", ["another project", "production key, development objects"], indirect=True
)
@pytest.mark.slow
def test_every_rest_call_with_a_neighbours_key_is_404_or_about_its_own_environment(server, pair):
    a_keys, b = pair
    with server.rest(a_keys["secret_key"]) as a:
        walked = walk_rest(a, b)
    routes = {str(p.pattern) for p in api_urls.urlpatterns} - NO_KEY_ROUTES
    assert routes - walked == set(), "REST routes the isolation walk does not cover"
    assert_b_untouched(server, b)


def ws_request(action: str, person_key: str) -> dict:
    data = {"person_key": person_key}
    if action in ("subscribe_state_change", "unsubscribe_state_change"):
        data["entity"] = "step"
    if action == "transition":
        data.update(flow="secret-flow", transition="next")
    if action in ("restart", "pause", "resume", "exit", "complete_step"):
        data.update(flow="secret-flow")
    if action == "complete_step":
        data.update(step="b-step-two")
    return data


@pytest.mark.parametrize(
    "pair", ["another project", "production key, development objects"], indirect=True
)
@pytest.mark.slow
def test_every_websocket_action_with_a_neighbours_key_finds_nothing(server, pair):
    a_keys, b = pair
    walked = {"ping"}
    with WsClient(server.ws_url, a_keys["publishable_key"]) as a:
        person_actions = ("subscribe_state_change", "get_state", "transition", "restart")
        for action in (*person_actions, "pause", "resume", "exit", "complete_step"):
            for entity_data in ({}, {"entity": "flow"}, {"since_seq": 0}):
                data = {**ws_request(action, "carol"), **entity_data}
                response = a.request(action, data)
                assert response["status"] == 404, (action, response)
                assert_no_b(json.dumps(response), b)
            walked.add(action)
        response = a.request(
            "unsubscribe_state_change", ws_request("unsubscribe_state_change", "carol")
        )
        assert response["status"] == 200 and "data" not in response  # the contract: 200 always
        response = a.request("unsubscribe_state_change", {"person_key": "carol", "entity": "step"})
        assert response["status"] == 200
        walked.add("unsubscribe_state_change")
        # public content: A's flow of that identifier, if A has one, never B's
        for action, data in (("get_content", {"flow": "secret-flow"}), ("get_theme", {})):
            response = a.request(action, data)
            assert response["status"] in (200, 404), (action, response)
            assert_no_b(json.dumps(response), b)
            walked.add(action)
        # identify creates A's own carol: B's data, flows and log stay out of sight
        response = a.request("identify", {"person_key": "carol", "data": {"mine": True}})
        assert response["status"] == 200, response
        assert response["data"] == {
            "person_key": "carol",
            "seq": 0,
            "flows": [],
            "data": {"mine": True},
            "epoch": response["data"]["epoch"],  # the epoch of A's carol, not of B's
        }
        walked.add("identify")
        response = a.request("track", {"person_key": "carol", "event": "e"})
        assert response["data"] == {"person_key": "carol", "event": "e", "count": 1, "seq": 0}
        walked.add("track")
        response = a.request("page", {"person_key": "carol", "url": "/b-only"})
        assert response["data"] == {"person_key": "carol", "seq": 0}
        walked.add("page")
        assert a.request("get_state", {"person_key": "carol"})["data"]["flows"] == []
        assert a.subscribe("carol", "step", since_seq=0)["status"] == 200
        assert a.subscribe("carol", "flow")["status"] == 200
        response = a.request(
            "transition", {"person_key": "carol", "flow": "secret-flow", "transition": "next"}
        )
        assert response["status"] == 404
        # B's carol moves on; A's subscriptions to A's carol hear nothing of it
        with WsClient(server.ws_url, b["publishable_key"], origin=B_ORIGIN) as b_client:
            assert b_client.subscribe("carol", "step")["status"] == 200
            response = b_client.request(
                "transition", {"person_key": "carol", "flow": "secret-flow", "transition": "next"}
            )
            assert response["status"] == 200
            assert b_client.wait_seq(5)[-1]["data"]["seq"] >= 4
        assert a.quiet(0.8) == []
        assert a.events == []
    assert walked == set(ACTIONS), "WebSocket actions the isolation walk does not cover"
    with server.rest(b["secret_key"]) as rest:
        assert rest.get("/people/carol").json()["data"] == B_DATA
        assert rest.get("/people/carol/flows").json()[0]["state"] == "completed"
    with server.rest(a_keys["secret_key"]) as rest:
        assert rest.get("/people/carol").json()["data"] == {"mine": True}


@pytest.mark.parametrize("pair", ["another project"], indirect=True)
def test_person_keys_that_look_alike_stay_apart(server, pair):
    a_keys, b = pair
    lookalikes = ["carol", "Carol", "CAROL", "carol ", " carol", "c\u0430rol", "carol\u200b"]
    with server.rest(a_keys["secret_key"]) as a:
        assert a.post("/flows", json=LINEAR_FLOW).status_code == 201
        for n, key in enumerate(lookalikes):
            assert a.put(f"/people/{key}", json={"data": {"n": n}}).status_code == 201, key
        for n, key in enumerate(lookalikes):
            assert a.get(f"/people/{key}").json() == {"person_key": key, "data": {"n": n}}
        assert a.post("/people/Carol/flows", json={"flow": "onboarding"}).status_code == 201
        assert a.get("/people/carol/flows").json() == []
    with WsClient(server.ws_url, a_keys["publishable_key"]) as ws:
        for n, key in enumerate(lookalikes):
            response = ws.request("identify", {"person_key": key})
            assert response["data"]["data"] == {"n": n}, key
            assert response["data"]["seq"] == (2 if key == "Carol" else 0), key
    assert_b_untouched(server, b)


@pytest.mark.parametrize("pair", ["another project"], indirect=True)
def test_person_tokens_do_not_cross_environments(server, pair):
    a_keys, b = pair
    with server.rest(a_keys["secret_key"]) as a:
        a_secret = a.post("/identity-verification/secret").json()["identity_secret"]
        assert a.put("/identity-verification", json={"mode": "enforce"}).status_code == 200
    with WsClient(server.ws_url, a_keys["publishable_key"]) as ws:
        # B's token for B's carol does not open A's door
        b_token = mint(b["identity_secret"], "carol")
        response = ws.request("get_state", {"person_key": "carol", "person_token": b_token})
        assert response["status"] == 401, response
        # A's valid token for "carol" finds A's (absent) carol, never B's
        a_token = mint(a_secret, "carol")
        for action in ("get_state", "subscribe_state_change", "transition"):
            data = {**ws_request(action, "carol"), "person_token": a_token}
            response = ws.request(action, data)
            assert response["status"] == 404, (action, response)
            assert_no_b(json.dumps(response), b)
    assert_b_untouched(server, b)
