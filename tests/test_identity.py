"""Identity verification: person tokens (HS256 JWTs) on the WebSocket, managed over REST.

The REST management runs in-process; everything a browser sees runs through
the session's real server and real sockets.
"""

import time
import uuid

import pytest

from stepstream.testing.flows import LINEAR_FLOW, states
from tests.openapi import APIClient
from tests.trust import (
    eventually,
    mint,
    mint_claims,
    unsigned,
    with_payload_swapped,
    with_signature_flipped,
)
from tests.wsclient import WsClient

BASE = "/api/v1"
PERSON_ACTIONS = (
    "subscribe_state_change",
    "unsubscribe_state_change",
    "identify",
    "get_state",
    "transition",
    "pause",
    "resume",
    "exit",
    "complete_step",
)


def request_data(action: str, person_key: str) -> dict:
    data = {"person_key": person_key}
    if action in ("subscribe_state_change", "unsubscribe_state_change"):
        data["entity"] = "step"
    if action == "transition":
        data.update(flow="onboarding", transition="next")
    if action in ("pause", "resume", "exit", "complete_step"):
        data["flow"] = "onboarding"
    if action == "complete_step":
        data["step"] = "done"
    return data


# -- managing it over REST ----------------------------------------------------


def test_verification_is_off_by_default_with_nothing_counted(api):
    response = api.get(f"{BASE}/identity-verification")
    assert response.status_code == 200
    assert response.json() == {
        "mode": "off",
        "signed_requests": 0,
        "unsigned_requests": 0,
        "has_identity_secret": False,
    }


def test_a_new_identity_secret_is_shown_once(api, env):
    first = api.post(f"{BASE}/identity-verification/secret")
    assert first.status_code == 201
    secret = first.json()["identity_secret"]
    assert first.json().keys() == {"identity_secret"}
    assert isinstance(secret, str) and len(secret) >= 32
    described = api.get(f"{BASE}/identity-verification")
    assert described.json()["has_identity_secret"] is True
    assert secret not in described.content.decode()
    # a new one replaces it
    second = api.post(f"{BASE}/identity-verification/secret").json()["identity_secret"]
    assert second != secret
    env.refresh_from_db()
    assert env.identity_secret == second


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "on"},
        {"mode": "ENFORCE"},
        {"mode": ""},
        {"mode": None},
        {"mode": ["enforce"]},
        {"mode": 1},
        {},
        ["enforce"],
        "enforce",
    ],
    ids=repr,
)
def test_an_unknown_mode_is_400_naming_the_modes(api, body):
    response = api.put(f"{BASE}/identity-verification", body, format="json")
    assert response.status_code == 400, response.content
    text = " ".join(response.json()["errors"])
    assert "mode" in text and "enforce" in text and "rollout" in text
    assert api.get(f"{BASE}/identity-verification").json()["mode"] == "off"


def test_enforce_without_an_identity_secret_is_refused(api):
    response = api.put(f"{BASE}/identity-verification", {"mode": "enforce"}, format="json")
    assert response.status_code == 409
    assert "identity secret" in " ".join(response.json()["errors"])
    assert api.get(f"{BASE}/identity-verification").json()["mode"] == "off"

    api.post(f"{BASE}/identity-verification/secret")
    for mode in ("enforce", "rollout", "off", "enforce"):
        response = api.put(f"{BASE}/identity-verification", {"mode": mode}, format="json")
        assert response.status_code == 200
        assert response.json()["mode"] == mode
        assert response.json().keys() >= {"mode", "signed_requests", "unsigned_requests"}


def test_rollout_is_allowed_without_a_secret_and_counts_everything_unsigned(api):
    response = api.put(f"{BASE}/identity-verification", {"mode": "rollout"}, format="json")
    assert response.status_code == 200 and response.json()["mode"] == "rollout"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/identity-verification"),
        ("put", "/identity-verification"),
        ("post", "/identity-verification/secret"),
    ],
)
def test_managing_verification_needs_the_secret_key(keys, api, method, path):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['publishable_key']}")
    response = getattr(client, method)(BASE + path, {"mode": "off"}, format="json")
    assert response.status_code == 401
    assert api.get(f"{BASE}/identity-verification").json()["has_identity_secret"] is False


def test_the_identity_secret_is_not_in_the_admin(admin_client, api, env):
    secret = api.post(f"{BASE}/identity-verification/secret").json()["identity_secret"]
    for url in (
        "/admin/stepstream/environment/",
        f"/admin/stepstream/environment/{env.pk}/change/",
        f"/admin/stepstream/project/{env.project_id}/change/",
        "/admin/stepstream/apikey/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert secret not in response.content.decode(), url
    # saving the environment in the admin keeps the secret
    response = admin_client.post(
        f"/admin/stepstream/environment/{env.pk}/change/",
        {
            "project": env.project_id,
            "identifier": env.identifier,
            "person_schema": "{}",
            "verification_mode": "off",
            "allowed_origins": "[]",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    env.refresh_from_db()
    assert env.identity_secret == secret


# -- on the WebSocket (the session's real server) -----------------------------


@pytest.fixture(scope="module")
def verified(server):
    """A project of its own, with an identity secret, a flow, and alice and bob."""
    keys = server.init_project(f"identity {uuid.uuid4().hex[:8]}")["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        assert rest.post("/flows", json=LINEAR_FLOW).status_code == 201
        secret = rest.post("/identity-verification/secret").json()["identity_secret"]
    return {**keys, "identity_secret": secret}


@pytest.fixture
def vrest(server, verified):
    with server.rest(verified["secret_key"]) as client:
        yield client


@pytest.fixture
def person(vrest):
    """A new person with the onboarding flow started (welcome active)."""
    key = f"p-{uuid.uuid4().hex[:10]}"
    assert vrest.put(f"/people/{key}", json={"data": {"plan": "free"}}).status_code == 201
    assert vrest.post(f"/people/{key}/flows", json={"flow": "onboarding"}).status_code == 201
    return key


@pytest.fixture
def other(vrest):
    key = f"o-{uuid.uuid4().hex[:10]}"
    assert vrest.put(f"/people/{key}", json={"data": {}}).status_code == 201
    return key


def set_mode(vrest, mode: str) -> None:
    response = vrest.put("/identity-verification", json={"mode": mode})
    assert response.status_code == 200, response.text


@pytest.fixture
def vclient(server, verified):
    clients = []

    def open_client():
        client = WsClient(server.ws_url, verified["publishable_key"])
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


def settled_counts(vrest) -> dict:
    """The counters once earlier requests are all counted (they are written every second)."""
    now = vrest.get("/identity-verification").json()
    while True:
        time.sleep(1.3)  # two reads a write of the counters apart agree: nothing was pending
        later = vrest.get("/identity-verification").json()
        if later == now:
            return now
        now = later


def flow_state(vrest, person_key) -> dict:
    return states(vrest.get(f"/people/{person_key}/flows").json()[0])


@pytest.mark.slow
def test_enforce_refuses_every_action_naming_a_person_without_a_token(
    vrest, vclient, person, verified
):
    set_mode(vrest, "enforce")
    ws = vclient()
    newcomer = f"new-{uuid.uuid4().hex[:8]}"
    for action in PERSON_ACTIONS:
        for who in (person, newcomer):
            response = ws.request(action, request_data(action, who))
            assert response["status"] == 401, (action, response)
            assert response["code"] == "unauthenticated"
            assert "person_token" in response["errors"][0]
    assert ws.request("ping")["status"] == 200
    # nothing happened: no transition, nobody created, no subscription
    assert flow_state(vrest, person)["welcome"] == "active"
    assert vrest.get(f"/people/{newcomer}").status_code == 404
    response = vrest.post(
        f"/people/{person}/flows/onboarding/transitions", json={"transition": "next"}
    )
    assert response.status_code == 200
    assert ws.quiet(0.5) == []


def bad_tokens(secret: str, person_key: str) -> dict:
    good = mint(secret, person_key)
    return {
        "expired": mint(secret, person_key, expires_in=-60),
        "payload tampered": with_payload_swapped(mint(secret, "someone-else"), person_key),
        "signature tampered": with_signature_flipped(good),
        "signed with another secret": mint("ids_" + "x" * 43, person_key),
        "no exp": mint_claims(secret, {"sub": person_key}),
        "no sub": mint_claims(secret, {"exp": int(time.time()) + 300}),
        "sub not a string": mint_claims(secret, {"sub": 42, "exp": int(time.time()) + 300}),
        "alg none": unsigned(person_key),
        "HS512": mint_claims(
            secret, {"sub": person_key, "exp": int(time.time()) + 300}, algorithm="HS512"
        ),
        "not yet valid": mint(secret, person_key, nbf=int(time.time()) + 3600),
        "not a jwt": "not-a-token",
        "empty": "",
        "a number": 12345,
        "an object": {"sub": person_key},
        "three dots of garbage": "a.b.c",
    }


WORDS = {
    "expired": "expired",
    "no exp": "exp",
    "signed with another secret": "identity secret",
    "signature tampered": "identity secret",
    "payload tampered": "identity secret",
    "alg none": "HS256",
    "HS512": "HS256",
    "not a jwt": "malformed",
}


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 one
def test_enforce_refuses_bad_tokens_with_401_naming_the_problem(vrest, vclient, person, verified):
    set_mode(vrest, "enforce")
    ws = vclient()
    for name, token in bad_tokens(verified["identity_secret"], person).items():
        for action in ("subscribe_state_change", "get_state", "transition"):
            data = {**request_data(action, person), "person_token": token}
            response = ws.request(action, data)
            assert response["status"] == 401, (name, action, response)
            assert response["code"] == "unauthenticated"
            sentence = " ".join(response["errors"])
            assert "person_token" in sentence, (name, sentence)
            if name in WORDS:
                assert WORDS[name] in sentence, (name, sentence)
            if isinstance(token, str) and len(token) > 3:
                assert token not in sentence
            assert verified["identity_secret"] not in sentence
    assert flow_state(vrest, person)["welcome"] == "active"
    vrest.post(f"/people/{person}/flows/onboarding/transitions", json={"transition": "next"})
    assert ws.quiet(0.5) == [], "a refused subscription delivered events"


def test_enforce_refuses_a_token_for_another_person_with_403(
    vrest, vclient, person, other, verified
):
    set_mode(vrest, "enforce")
    ws = vclient()
    token = mint(verified["identity_secret"], other)
    for action in PERSON_ACTIONS:
        data = {**request_data(action, person), "person_token": token}
        response = ws.request(action, data)
        assert response["status"] == 403, (action, response)
        assert response["code"] == "forbidden"
        assert "another person" in response["errors"][0]
    assert flow_state(vrest, person)["welcome"] == "active"
    # the same token is good for the person it names
    assert ws.request("get_state", {"person_key": other, "person_token": token})["status"] == 200


def test_enforce_serves_every_action_with_a_valid_token(vrest, vclient, person, verified):
    set_mode(vrest, "enforce")
    ws = vclient()
    token = mint(verified["identity_secret"], person)

    def ask(action, **data):
        response = ws.request(action, {"person_key": person, "person_token": token, **data})
        assert response["status"] == 200, (action, response)
        return response

    snapshot = ask("get_state")["data"]
    assert snapshot["person_key"] == person and snapshot["seq"] == 2
    ask("subscribe_state_change", entity="step", since_seq=0)
    assert [e["data"]["identifier"] for e in ws.wait_events(1)] == ["welcome"]
    assert ask("identify", data={"name": "Ann"})["data"]["data"] == {"plan": "free", "name": "Ann"}
    ask("transition", flow="onboarding", transition="next")
    ws.wait_seq(4)
    assert [e["data"]["seq"] for e in ws.events] == [2, 3, 4]
    ask("unsubscribe_state_change", entity="step")
    vrest.post(f"/people/{person}/flows/onboarding/transitions", json={"transition": "next"})
    assert ws.quiet(0.5) == []
    # the actions a browser closes content with (docs/content.md), on a new instance
    assert vrest.post(f"/people/{person}/flows/onboarding/restart").status_code == 200
    assert ask("pause", flow="onboarding")["data"]["state"] == "inactive"
    assert ask("resume", flow="onboarding")["data"]["state"] == "active"
    assert ask("exit", flow="onboarding")["data"]["state"] == "exited"


def test_a_valid_token_for_an_unknown_person_gets_404_and_identify_creates_them(
    vrest, vclient, verified
):
    set_mode(vrest, "enforce")
    ws = vclient()
    newcomer = f"new-{uuid.uuid4().hex[:8]}"
    token = mint(verified["identity_secret"], newcomer)
    response = ws.request("get_state", {"person_key": newcomer, "person_token": token})
    assert response["status"] == 404
    response = ws.request("identify", {"person_key": newcomer, "person_token": token})
    assert response["status"] == 200
    assert vrest.get(f"/people/{newcomer}").status_code == 200


@pytest.mark.slow
def test_switching_modes_applies_to_open_connections_within_seconds(vrest, vclient, person):
    set_mode(vrest, "off")
    ws = vclient()
    assert ws.request("get_state", {"person_key": person})["status"] == 200
    started = time.monotonic()
    set_mode(vrest, "enforce")

    def refused():
        """get_state without a token is refused on the open connection"""
        return ws.request("get_state", {"person_key": person})["status"] == 401

    eventually(refused, timeout=5)
    assert time.monotonic() - started < 3.5
    set_mode(vrest, "off")

    def served():
        """get_state without a token is served again"""
        return ws.request("get_state", {"person_key": person})["status"] == 200

    eventually(served, timeout=5)


def test_a_new_identity_secret_retires_old_tokens_on_open_connections(
    vrest, vclient, person, verified
):
    set_mode(vrest, "enforce")
    ws = vclient()
    old_token = mint(verified["identity_secret"], person)
    assert (
        ws.request("get_state", {"person_key": person, "person_token": old_token})["status"] == 200
    )
    new_secret = vrest.post("/identity-verification/secret").json()["identity_secret"]
    verified["identity_secret"] = new_secret  # for the tests that follow

    def retired():
        """the old token is refused"""
        response = ws.request("get_state", {"person_key": person, "person_token": old_token})
        return response["status"] == 401

    eventually(retired, timeout=5)
    new_token = mint(new_secret, person)
    response = ws.request("get_state", {"person_key": person, "person_token": new_token})
    assert response["status"] == 200


@pytest.mark.slow
def test_rollout_serves_unsigned_requests_and_counts_signed_and_unsigned(
    vrest, vclient, person, other, verified
):
    set_mode(vrest, "rollout")
    before = settled_counts(vrest)
    assert before["mode"] == "rollout"
    ws = vclient()
    secret = verified["identity_secret"]
    good = mint(secret, person)
    unsigned_requests = [
        {"person_key": person},
        {"person_key": person},
        {"person_key": person, "person_token": mint(secret, person, expires_in=-5)},
        {"person_key": person, "person_token": mint(secret, other)},
        {"person_key": person, "person_token": "garbage"},
    ]
    signed_requests = [{"person_key": person, "person_token": good}] * 3
    for data in unsigned_requests + signed_requests:
        response = ws.request("get_state", data)
        assert response["status"] == 200, response
    ws.request("ping")  # names nobody: not counted
    response = ws.request(
        "transition", {"person_key": person, "flow": "onboarding", "transition": "next"}
    )
    assert response["status"] == 200
    assert flow_state(vrest, person)["profile"] == "active"

    def counted():
        """the counters reach the requests made"""
        now = vrest.get("/identity-verification").json()
        return (
            now["signed_requests"] - before["signed_requests"] == 3
            and now["unsigned_requests"] - before["unsigned_requests"] == 6
        ) and now

    eventually(counted, timeout=6)
    # and nothing more arrives later: one more signed request, counted in a later write of
    # the counters, and the earlier ones are still counted once each
    assert ws.request("get_state", {"person_key": person, "person_token": good})["status"] == 200

    def fence_counted():
        """the extra signed request is counted"""
        now = vrest.get("/identity-verification").json()
        return now["signed_requests"] - before["signed_requests"] >= 4 and now

    now = eventually(fence_counted, timeout=6)
    assert now["signed_requests"] - before["signed_requests"] == 4
    assert now["unsigned_requests"] - before["unsigned_requests"] == 6


@pytest.mark.slow
def test_off_ignores_tokens_and_counts_nothing(vrest, vclient, person):
    set_mode(vrest, "off")
    ws = vclient()
    before = settled_counts(vrest)
    for token in (None, "garbage", 12):
        data = (
            {"person_key": person}
            if token is None
            else {"person_key": person, "person_token": token}
        )
        assert ws.request("get_state", data)["status"] == 200
    time.sleep(1.5)  # a write of the counters later: off counts nothing (no fence shows a zero)
    after = vrest.get("/identity-verification").json()
    assert (after["signed_requests"], after["unsigned_requests"]) == (
        before["signed_requests"],
        before["unsigned_requests"],
    )
