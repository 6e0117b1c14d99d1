"""Events agree with state (Zulip's verify_action): snapshot, act, apply events, compare.

For every engine action: take get_state, run the action, apply the events the
subscriber received to the snapshot, and check the result equals a fresh
get_state. Each event's previous_state must also match the state it replaces.
"""

import pytest

BRANCHING = {
    "identifier": "branching",
    "steps": [
        {"identifier": "intro"},
        {"identifier": "left"},
        {"identifier": "right"},
        {"identifier": "join"},
        {"identifier": "auto1"},
        {"identifier": "auto2"},
        {"identifier": "end"},
    ],
    "transitions": [
        {"identifier": "split", "from": "intro", "to": "left"},
        {"identifier": "split", "from": "intro", "to": "right"},
        {"identifier": "merge", "from": "left", "to": "join"},
        {"identifier": "merge", "from": "right", "to": "join"},
        {"identifier": "a", "from": "join", "to": "auto1", "type": "automatic"},
        {"identifier": "b", "from": "join", "to": "auto2", "type": "automatic"},
        {"identifier": "done", "from": "auto1", "to": "end"},
        {"identifier": "done", "from": "auto2", "to": "end"},
    ],
}


def _states(snapshot: dict) -> dict:
    states = {}
    for instance in snapshot["flows"]:
        states[("flow", instance["id"])] = instance["state"]
        for step in instance["steps"]:
            states[("step", step["id"])] = step["state"]
    return states


def _apply(states: dict, events: list[dict]) -> dict:
    states = dict(states)
    for event in events:
        data = event["data"]
        key = (data["entity"], data["id"])
        assert states.get(key, "inactive") == data["previous_state"], data
        states[key] = data["state"]
    return states


@pytest.fixture
def verify(ws, person_key):
    ws.subscribe(person_key, "flow")
    ws.subscribe(person_key, "step")

    def verify_action(act) -> list[dict]:
        before = ws.request("get_state", {"person_key": person_key})["data"]
        ws.events.clear()
        act()
        after = ws.request("get_state", {"person_key": person_key})["data"]
        events = ws.wait_seq(after["seq"])
        ws.quiet(0.1)
        assert [e["data"]["seq"] for e in events] == list(
            range(before["seq"] + 1, after["seq"] + 1)
        )
        applied = _apply(_states(before), events)
        fresh = _states(after)
        assert {k: applied.get(k, "inactive") for k in fresh} == fresh
        assert set(applied) <= set(fresh)
        return events

    return verify_action


def test_every_engine_action_sends_events_that_agree_with_state(verify, ws, rest, person_key):
    rest.post("/flows", json=BRANCHING)
    base = f"/people/{person_key}/flows"

    def post(path, **body):
        return lambda: rest.post(base + path, json=body or None).raise_for_status()

    def ws_transition(flow, transition):
        def act():
            response = ws.request(
                "transition", {"person_key": person_key, "flow": flow, "transition": transition}
            )
            assert response["status"] == 200, response

        return act

    verify(post("", flow="onboarding"))
    verify(post("/onboarding/transitions", transition="next"))
    verify(post("/onboarding/pause"))
    verify(post("/onboarding/resume"))
    verify(ws_transition("onboarding", "next"))  # reaches the final step: flow completes
    verify(post("", flow="branching"))
    verify(post("/branching/transitions", transition="split"))
    verify(ws_transition("branching", "merge"))  # join, then both automatic branches
    verify(post("/branching/transitions", transition="done"))
    verify(post("", flow="loop"))
    verify(post("/loop/transitions", transition="go"))
    verify(post("/loop/transitions", transition="flip"))
    verify(post("/loop/exit"))
    final = ws.request("get_state", {"person_key": person_key})["data"]
    assert {f["flow"]: f["state"] for f in final["flows"]} == {
        "onboarding": "completed",
        "branching": "completed",
        "loop": "exited",
    }


# Rules: track sets off starts and automatic transitions; restart replaces an instance.
# A client keeps one instance per flow: an event with a new flow_id for a flow replaces it.
CHECKLIST = {
    "identifier": "checklist",
    "start_when": "has(events.signed_up)",
    "steps": [{"identifier": "start"}, {"identifier": "invited"}, {"identifier": "end"}],
    "transitions": [
        {
            "identifier": "invite",
            "from": "start",
            "to": "invited",
            "type": "automatic",
            "condition": "has(events.invited)",
        },
        {"identifier": "finish", "from": "invited", "to": "end"},
    ],
}


def _by_flow(snapshot: dict) -> dict:
    return {
        i["flow"]: (i["id"], {("flow", i["id"]): i["state"]} | _states({"flows": [i]}))
        for i in snapshot["flows"]
    }


def _apply_replacing(by_flow: dict, events: list[dict]) -> dict:
    by_flow = {flow: (iid, dict(states)) for flow, (iid, states) in by_flow.items()}
    for event in events:
        data = event["data"]
        assert data["cause"]["kind"] in ("call", "automatic", "start_when"), data
        iid, states = by_flow.get(data["flow"], (None, {}))
        if iid != data["flow_id"]:
            iid, states = data["flow_id"], {}
            by_flow[data["flow"]] = (iid, states)
        key = (data["entity"], data["id"])
        assert states.get(key, "inactive") == data["previous_state"], data
        states[key] = data["state"]
    return by_flow


def test_track_and_restart_send_events_that_agree_with_state(ws, rest, person_key):
    rest.post("/flows", json=CHECKLIST)
    ws.subscribe(person_key, "flow")
    ws.subscribe(person_key, "step")

    def verify(act) -> list[dict]:
        before = ws.request("get_state", {"person_key": person_key})["data"]
        ws.events.clear()
        act()
        after = ws.request("get_state", {"person_key": person_key})["data"]
        events = ws.wait_seq(after["seq"]) if after["seq"] > before["seq"] else []
        ws.quiet(0.1)
        assert [e["data"]["seq"] for e in events] == list(
            range(before["seq"] + 1, after["seq"] + 1)
        )
        applied = _apply_replacing(_by_flow(before), events)
        fresh = _by_flow(after)
        assert set(applied) == set(fresh)
        for flow, (iid, states) in fresh.items():
            assert applied[flow][0] == iid
            assert {k: applied[flow][1].get(k, "inactive") for k in states} == states
        return events

    def ws_call(action, **data):
        def act():
            response = ws.request(action, {"person_key": person_key, **data})
            assert response["status"] == 200, response

        return act

    def rest_post(path, **body):
        return lambda: rest.post(f"/people/{person_key}" + path, json=body).raise_for_status()

    verify(ws_call("track", event="visited"))  # nothing starts
    started = verify(ws_call("track", event="signed_up"))
    assert started[0]["data"]["cause"] == {"kind": "start_when", "event": "signed_up"}
    verify(rest_post("/track", event="invited"))  # the automatic transition runs
    verify(ws_call("restart", flow="checklist"))  # exited, then a new instance runs on
    verify(rest_post("/flows/checklist/transitions", transition="finish"))
    verify(rest_post("/flows/checklist/restart"))  # completed: no exit, a new instance
    final = ws.request("get_state", {"person_key": person_key})["data"]
    assert [(f["flow"], f["state"]) for f in final["flows"]] == [("checklist", "active")]
