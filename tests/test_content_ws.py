"""Content over the WebSocket (docs/content.md, docs/protocol.md): what the browser SDK calls.

get_content and get_theme (public: the publishable key reads them), pause,
resume and exit, and complete_step, through a real server and real sockets.
"""

import copy
import uuid

import pytest

from stepstream.testing.flows import CONTENT_FLOW


@pytest.fixture
def tour(rest):
    """CONTENT_FLOW published under a new identifier: {"identifier", "version"}."""
    flow = copy.deepcopy(CONTENT_FLOW)
    flow["identifier"] = f"tour-{uuid.uuid4().hex[:8]}"
    response = rest.post("/flows", json=flow)
    assert response.status_code == 201, response.json()
    return response.json()


def _states(instance) -> dict[str, str]:
    return {s["identifier"]: s["state"] for s in instance["steps"]}


def test_get_content_answers_a_version_in_a_locale_with_the_theme(ws, tour):
    answer = ws.request("get_content", {"flow": tour["identifier"], "version": 1, "locale": "fr"})
    assert answer["status"] == 200, answer
    data = answer["data"]
    assert data["flow"] == tour["identifier"] and data["version"] == 1 and data["locale"] == "fr"
    steps = {s["identifier"]: s for s in data["steps"]}
    assert list(steps) == ["welcome", "menu", "done"]
    assert steps["welcome"]["content"]["title"] == "Bienvenue"
    assert steps["welcome"]["content"]["buttons"][0]["transition"] == "next"
    assert steps["menu"]["locale"] == "default"
    assert steps["menu"]["content"]["target"]["selector"] == "#menu"
    assert steps["done"]["content"]["buttons"] == [
        {"label": "Compris", "action": "complete", "style": "primary"}
    ]
    assert data["theme"]["tokens"]["color-primary"].startswith("#")
    # the latest version when none is named; the default locale when none is given
    latest = ws.request("get_content", {"flow": tour["identifier"]})["data"]
    assert latest["version"] == 1 and latest["locale"] == "default"
    assert latest["steps"][0]["content"]["title"] == "Welcome"
    # a locale the version lacks falls back to the default
    assert (
        ws.request("get_content", {"flow": tour["identifier"], "locale": "ja"})["data"]["locale"]
        == "default"
    )


def test_get_content_refusals(ws, tour):
    assert ws.request("get_content", {"flow": "no-such-flow"})["status"] == 404
    assert ws.request("get_content", {"flow": tour["identifier"], "version": 9})["status"] == 404
    bad = ws.request("get_content", {"flow": tour["identifier"], "version": "1"})
    assert bad["status"] == 400 and "data.version" in bad["errors"][0]
    bad = ws.request("get_content", {"flow": tour["identifier"], "locale": "x" * 36})
    assert bad["status"] == 400 and "data.locale" in bad["errors"][0]
    assert ws.request("get_content", {})["status"] == 400


def test_get_content_is_per_environment(connect, tenant, tour):
    other = connect(tenant["prod"]["publishable_key"])
    assert other.request("get_content", {"flow": tour["identifier"]})["status"] == 404


def test_get_theme_follows_put_theme(ws, rest):
    tokens = {"color-primary": "#0f766e", "radius": "2px"}
    assert rest.put("/theme", json={"tokens": tokens}).status_code == 200
    try:
        theme = ws.request("get_theme")["data"]["tokens"]
        assert theme["color-primary"] == "#0f766e" and theme["radius"] == "2px"
    finally:
        rest.put("/theme", json={"tokens": {}})


def test_pause_resume_exit_and_complete_step(ws, rest, person_key, tour):
    flow = tour["identifier"]
    assert rest.post(f"/people/{person_key}/flows", json={"flow": flow}).status_code == 201
    data = {"person_key": person_key, "flow": flow}
    paused = ws.request("pause", data)
    assert paused["status"] == 200 and paused["action"] == "pause"
    assert paused["data"]["state"] == "inactive"
    assert ws.request("pause", data)["status"] == 409
    assert ws.request("complete_step", {**data, "step": "done"})["status"] == 409
    assert ws.request("resume", data)["data"]["state"] == "active"
    moved = ws.request("transition", {**data, "transition": "skip"})["data"]
    assert _states(moved)["done"] == "active" and moved["state"] == "active"
    assert ws.request("complete_step", {**data, "step": "welcome"})["status"] == 409
    missing = ws.request("complete_step", data)
    assert missing["status"] == 400 and "data.step" in missing["errors"][0]
    done = ws.request("complete_step", {**data, "step": "done"})
    assert done["status"] == 200, done
    assert done["data"]["state"] == "completed" and _states(done["data"])["done"] == "completed"
    assert ws.request("exit", data)["status"] == 409  # completed: nothing to exit
    events = rest.get(f"/people/{person_key}/events").json()
    assert events[-2]["cause"] == {
        "kind": "call",
        "via": "websocket",
        "action": "complete_step",
        "step": "done",
    }


def test_exit_over_the_websocket(ws, rest, person_key):
    assert rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"}).status_code == 201
    data = {"person_key": person_key, "flow": "onboarding"}
    exited = ws.request("exit", data)
    assert exited["status"] == 200 and exited["data"]["state"] == "exited"
    assert ws.request("resume", data)["status"] == 409
    assert ws.request("exit", {"person_key": person_key, "flow": "nope"})["status"] == 404


def test_reserved_names_and_what_was_seen_over_the_websocket(ws, rest, person_key, tour):
    flow = tour["identifier"]
    rest.post(f"/people/{person_key}/flows", json={"flow": flow})
    refused = ws.request("track", {"person_key": person_key, "event": "$clicked"})
    assert refused["status"] == 400 and "reserved" in refused["errors"][0]
    seen = {"flow": flow, "version": 1, "step": "welcome"}
    for event in ("$shown", "$shown", "$dismissed"):
        answer = ws.request("track", {"person_key": person_key, "event": event, "properties": seen})
        assert answer["status"] == 200, answer
    missing = {**seen, "step": "menu"}
    ws.request(
        "track", {"person_key": person_key, "event": "$target_missing", "properties": missing}
    )
    steps = {s["identifier"]: s for s in rest.get(f"/flows/{flow}/analytics").json()["steps"]}
    assert (steps["welcome"]["shown"], steps["menu"]["target_missing"]) == (1, 1)
