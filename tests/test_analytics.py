"""Flow analytics against a history whose numbers are counted by hand."""

from datetime import timedelta

import pytest

from stepstream import engine
from stepstream.engine import flows, people
from stepstream.models import StateChange
from stepstream.testing.flows import LINEAR_FLOW, LOOP_FLOW


def at(env, key, identifier, state, when):
    """Moves a logged change to a known time, so medians are known."""
    StateChange.objects.filter(
        person__environment=env, person__person_key=key, identifier=identifier, state=state
    ).update(occurred_at=when)


@pytest.fixture
def history(env, linear_flow):
    """a: welcome; b: welcome->profile; c: to the end; d: paused; e: exited; f: deleted."""
    for key in "abcdef":
        people.put(env, key, {})
        engine.do_start_flow(env, key, "onboarding")
    for key in "bcf":
        engine.do_transition(env, key, "onboarding", "next")
    engine.do_transition(env, "c", "onboarding", "next")
    engine.do_flow_action(env, "d", "onboarding", "pause")
    engine.do_flow_action(env, "e", "onboarding", "exit")
    people.delete(env, "f")
    t0 = StateChange.objects.order_by("occurred_at").first().occurred_at
    for key in "abcde":
        at(env, key, "welcome", "active", t0)
    at(env, "b", "welcome", "completed", t0 + timedelta(seconds=10))
    at(env, "c", "welcome", "completed", t0 + timedelta(seconds=30))
    at(env, "c", "profile", "active", t0 + timedelta(seconds=30))
    at(env, "c", "profile", "completed", t0 + timedelta(seconds=34))
    return env


def test_counts_and_medians_match_a_hand_count(api, history):
    report = api.get("/api/v1/flows/onboarding/analytics").json()
    assert report == {
        "flow": "onboarding",
        "version": 1,
        "instances": {"active": 2, "inactive": 1, "completed": 1, "exited": 1, "total": 5},
        "steps": [
            {
                "identifier": "welcome",
                "reached": 5,
                "active": 3,  # a, and d and e: a paused or exited flow keeps its steps
                "completed": 2,
                "median_seconds_to_complete": 20.0,  # 10 and 30
            },
            {
                "identifier": "profile",
                "reached": 2,
                "active": 1,
                "completed": 1,
                "median_seconds_to_complete": 4.0,
            },
            {
                "identifier": "done",
                "reached": 1,
                "active": 0,
                "completed": 1,
                "median_seconds_to_complete": 0.0,  # a final step completes at once
            },
        ],
    }


def test_versions(api, history, env):
    flows.publish(env, LINEAR_FLOW)
    latest = api.get("/api/v1/flows/onboarding/analytics").json()
    assert latest["version"] == 2 and latest["instances"]["total"] == 0
    assert all(
        s["reached"] == 0 and s["median_seconds_to_complete"] is None for s in latest["steps"]
    )
    first = api.get("/api/v1/flows/onboarding/analytics", {"version": 1}).json()
    assert first["instances"]["total"] == 5
    assert api.get("/api/v1/flows/onboarding/analytics", {"version": 3}).status_code == 404
    assert api.get("/api/v1/flows/onboarding/analytics", {"version": "x"}).status_code == 400
    assert api.get("/api/v1/flows/nope/analytics").status_code == 404


def test_a_step_completed_several_times_counts_once_and_each_time_for_the_median(api, env):
    flows.publish(env, LOOP_FLOW)
    people.put(env, "l", {})
    engine.do_start_flow(env, "l", "loop")
    for transition in ("go", "flip", "flip", "flip"):
        engine.do_transition(env, "l", "loop", transition)
    steps = {s["identifier"]: s for s in api.get("/api/v1/flows/loop/analytics").json()["steps"]}
    assert steps["a"]["reached"] == 1 and steps["a"]["completed"] == 1
    assert steps["b"]["active"] == 1 and steps["b"]["completed"] == 1
    assert steps["begin"]["completed"] == 1 and steps["begin"]["active"] == 0


def test_other_environments_flows_are_404(api, other_env, history):
    from stepstream.engine import analytics
    from stepstream.errors import NotFound

    with pytest.raises(NotFound):
        analytics.report(other_env, "onboarding")
