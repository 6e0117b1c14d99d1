"""Events agree with state (Zulip's verify_action): snapshot, act, apply events, compare.

For every engine action: take get_state, run the action, apply the events the
subscriber received to the snapshot, and check the result equals a fresh
get_state. The events are applied by the Python client's own merging
(stepstream_client.state.PersonState), so this checks the code clients run.
Each event's previous_state must also match the state it replaces.
"""

import pytest

from stepstream_client.state import FlowState, PersonState

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


def _held(flows: dict[str, FlowState]) -> dict:
    """What a client holds: flow -> (instance id, its state, {step id: state})."""
    return {f: (i.id, i.state, {s.id: s.state for s in i.steps}) for f, i in flows.items()}


def _server(instances: list[dict]) -> dict:
    """The same shape, from get_state's flows."""
    return {
        i["flow"]: (i["id"], i["state"], {s["id"]: s["state"] for s in i["steps"]})
        for i in instances
    }


def _holds(state: PersonState, change: dict) -> str | None:
    """The state the client holds for the change's item; None if it lacks its instance."""
    flow = state.flows.get(change["flow"])
    if flow is None or flow.id != change["flow_id"]:
        return None
    if change["entity"] == "flow":
        return flow.state
    return next((s.state for s in flow.steps if s.id == change["id"]), None)


def _replay(snapshot: dict, changes: list[dict]) -> PersonState:
    """A client's state: ``snapshot``, then each change, checked against what it replaces."""
    state = PersonState()
    state.apply_snapshot(snapshot, replace=True)
    state.resume_from(snapshot["seq"])
    for change in changes:
        assert change["cause"]["kind"] in ("call", "automatic", "start_when"), change
        held = _holds(state, change)
        if held is not None:
            assert held == change["previous_state"], change
        applied = state.apply_event(change)
        assert applied.new, change
        # an instance the client lacks (started or restarted since): the change waits
        assert applied.needs_snapshot == (held is None), change
        assert applied.changed == (() if held is None else (change["flow"],)), change
    return state


def _as_started(instance: dict) -> dict:
    """An instance as it was when it started: everything inactive."""
    steps = [{**s, "state": "inactive"} for s in instance["steps"]]
    return {**instance, "state": "inactive", "steps": steps}


def _agree(before: dict, events: list[dict], after: dict) -> None:
    """The events, applied to ``before`` as the client applies them, make ``after``."""
    changes = [e["data"] for e in events]
    state = _replay(before, changes)
    fresh = {i["flow"]: i for i in after["flows"]}
    new = {f for f, i in fresh.items() if f not in state.flows or state.flows[f].id != i["id"]}
    # the instances the client held: the events alone bring them where the server is
    held = {f: i for f, i in state.flows.items() if f not in new}
    assert _held(held) == _server([i for f, i in fresh.items() if f not in new])
    # instances started (or put in place by a restart) since: their events wait for
    # a snapshot, and they agree with the instance as it started
    assert {c["flow_id"] for c in state.unplaced} == {fresh[f]["id"] for f in new}
    assert state.needs_snapshot == bool(new)
    if new:
        waiting = list(state.unplaced)
        started = {
            "seq": waiting[0]["seq"] - 1,
            "flows": [_as_started(fresh[f]) for f in sorted(new)],
        }
        assert _held(_replay(started, waiting).flows) == _server([fresh[f] for f in sorted(new)])
    # the snapshot the client then takes puts them in place; nothing waits any more
    applied = state.apply_snapshot(after, replace=False)
    assert not applied.needs_snapshot and not state.unplaced
    assert _held(state.flows) == _server(after["flows"])


@pytest.fixture
def verify(ws, person_key):
    ws.subscribe(person_key, "flow")
    ws.subscribe(person_key, "step")

    def verify_action(act) -> list[dict]:
        before = ws.request("get_state", {"person_key": person_key})["data"]
        ws.events.clear()
        act()
        after = ws.request("get_state", {"person_key": person_key})["data"]
        events = ws.wait_seq(after["seq"]) if after["seq"] > before["seq"] else []
        ws.quiet(0.1)
        assert [e["data"]["seq"] for e in events] == list(
            range(before["seq"] + 1, after["seq"] + 1)
        )
        _agree(before, events, after)
        return events

    return verify_action


@pytest.mark.slow
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
# A client keeps one instance per flow: events with a new flow_id wait for the snapshot
# that replaces it.
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


def test_track_and_restart_send_events_that_agree_with_state(verify, ws, rest, person_key):
    rest.post("/flows", json=CHECKLIST)

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
