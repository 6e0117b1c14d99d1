"""Flow analytics against a history whose numbers are counted by hand."""

import random
import statistics
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from stepstream import engine
from stepstream.engine import analytics, flows, people
from stepstream.engine import clock as engine_clock
from stepstream.testing.flows import LINEAR_FLOW, LOOP_FLOW

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch):
    """The engine's clock, set by the test: `clock(s)` makes the next changes happen at T0 + s."""
    now = SimpleNamespace(at=T0)
    monkeypatch.setattr(engine_clock, "timezone", SimpleNamespace(now=lambda: now.at))

    def set_to(seconds: float) -> None:
        now.at = T0 + timedelta(seconds=seconds)

    return set_to


@pytest.fixture
def history(env, linear_flow, clock):
    """a: welcome; b: welcome->profile; c: to the end; d: paused; e: exited; f: deleted."""
    clock(0)
    for key in "abcdef":
        engine.do_put_person(env, key, {})
        engine.do_start_flow(env, key, "onboarding")
    clock(10)
    for key in "bf":
        engine.do_transition(env, key, "onboarding", "next")
    clock(30)
    engine.do_transition(env, "c", "onboarding", "next")
    clock(34)
    engine.do_transition(env, "c", "onboarding", "next")
    clock(50)
    engine.do_flow_action(env, "d", "onboarding", "pause")
    engine.do_flow_action(env, "e", "onboarding", "exit")
    people.delete(env, "f")  # its 10 s would make welcome's median 10
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
                "shown": 0,
                "target_missing": 0,
            },
            {
                "identifier": "profile",
                "reached": 2,
                "active": 1,
                "completed": 1,
                "median_seconds_to_complete": 4.0,
                "shown": 0,
                "target_missing": 0,
            },
            {
                "identifier": "done",
                "reached": 1,
                "active": 0,
                "completed": 1,
                "median_seconds_to_complete": 0.0,  # a final step completes at once
                "shown": 0,
                "target_missing": 0,
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


def test_a_step_completed_again_counts_once_with_its_first_time(api, env, clock):
    """a's times to first completion are 5, 7 and 100 s: the median is 7, whatever came after."""
    flows.publish(env, LOOP_FLOW)
    for key, first in (("l", 5), ("m", 100), ("n", 7)):
        clock(0)
        engine.do_put_person(env, key, {})
        engine.do_start_flow(env, key, "loop")
        engine.do_transition(env, key, "loop", "go")  # a active at 0
        clock(first)
        engine.do_transition(env, key, "loop", "flip")  # a completed, b active
        clock(first + 1000)
        engine.do_transition(env, key, "loop", "flip")  # b completed, a active again
        clock(first + 1001)
        engine.do_transition(env, key, "loop", "flip")  # a completed again, after 1 s
    clock(2000)
    engine.do_transition(env, "n", "loop", "flip")  # n: a active once more
    steps = {s["identifier"]: s for s in api.get("/api/v1/flows/loop/analytics").json()["steps"]}
    assert steps["a"] == {
        "identifier": "a",
        "reached": 3,
        "active": 1,
        "completed": 3,
        "median_seconds_to_complete": 7.0,
        "shown": 0,
        "target_missing": 0,
    }
    assert steps["b"] == {
        "identifier": "b",
        "reached": 3,
        "active": 2,
        "completed": 3,
        "median_seconds_to_complete": 1000.0,
        "shown": 0,
        "target_missing": 0,
    }
    assert steps["begin"]["completed"] == 3 and steps["begin"]["active"] == 0


def test_a_restarted_instance_counts_only_as_its_new_instance(api, env, linear_flow, clock):
    """r's first instance completed welcome in 50 s; its new one has not: only s's 2 s counts."""
    clock(0)
    for key in "rs":
        engine.do_put_person(env, key, {})
        engine.do_start_flow(env, key, "onboarding")
    clock(2)
    engine.do_transition(env, "s", "onboarding", "next")
    clock(50)
    engine.do_transition(env, "r", "onboarding", "next")
    clock(60)
    engine.do_restart(env, "r", "onboarding")
    report = api.get("/api/v1/flows/onboarding/analytics").json()
    assert report["instances"] == {
        "active": 2,
        "inactive": 0,
        "completed": 0,
        "exited": 0,
        "total": 2,
    }
    assert report["steps"][:2] == [
        {
            "identifier": "welcome",
            "reached": 2,
            "active": 1,
            "completed": 1,
            "median_seconds_to_complete": 2.0,
            "shown": 0,
            "target_missing": 0,
        },
        {
            "identifier": "profile",
            "reached": 1,
            "active": 1,
            "completed": 0,
            "median_seconds_to_complete": None,
            "shown": 0,
            "target_missing": 0,
        },
    ]


def test_other_environments_flows_are_404(api, other_env, history):
    from stepstream.errors import NotFound

    with pytest.raises(NotFound):
        analytics.report(other_env, "onboarding")


def _from_the_log(flow) -> dict:
    """The report as the log tells it, counted in Python: the current step instances' rows."""
    from stepstream.models import FlowInstance, StateChange, StepInstance

    instances = dict.fromkeys(("active", "inactive", "completed", "exited"), 0)
    for state in FlowInstance.objects.filter(flow=flow).values_list("state", flat=True):
        instances[state] += 1
    instances["total"] = sum(instances.values())
    steps = []
    for identifier in flow.steps.order_by("position").values_list("identifier", flat=True):
        reached = active = completed = 0
        seconds = []
        for step in StepInstance.objects.filter(instance__flow=flow, identifier=identifier):
            rows = list(StateChange.objects.filter(object_id=step.id).order_by("seq"))
            activations = [r.occurred_at for r in rows if r.state == "active"]
            completions = [r.occurred_at for r in rows if r.state == "completed"]
            reached += bool(activations)
            active += step.state == "active"
            if completions:
                completed += 1
                seconds.append((completions[0] - activations[0]).total_seconds())
        steps.append(
            {
                "identifier": identifier,
                "reached": reached,
                "active": active,
                "completed": completed,
                "median_seconds_to_complete": (
                    round(statistics.median(seconds), 3) if seconds else None
                ),
                "shown": 0,  # no content here: nothing seen
                "target_missing": 0,
            }
        )
    return {
        "flow": flow.identifier,
        "version": flow.version,
        "instances": instances,
        "steps": steps,
    }


def test_a_random_history_agrees_with_the_log(env, clock):
    """Starts, transitions, pauses, exits, restarts, deletions and new versions at random times
    (to the microsecond): every version's report is what its log says."""
    from stepstream.errors import StepstreamError
    from stepstream.models import Flow

    rng = random.Random(12)
    flows.publish(env, LOOP_FLOW)
    flows.publish(env, LINEAR_FLOW)
    keys = [f"k{i}" for i in range(12)]
    for key in keys:
        engine.do_put_person(env, key, {})
    seconds = 0.0
    for _ in range(800):
        seconds += rng.randrange(1, 90_000_000) / 1e6
        clock(seconds)
        key, flow = rng.choice(keys), rng.choice(["loop", "onboarding"])
        move = rng.random()
        try:
            if move < 0.2:
                engine.do_start_flow(env, key, flow)
            elif move < 0.75:
                name = rng.choice(["go", "flip", "flip"]) if flow == "loop" else "next"
                engine.do_transition(env, key, flow, name)
            elif move < 0.82:
                engine.do_flow_action(env, key, flow, rng.choice(["pause", "resume", "exit"]))
            elif move < 0.9:
                engine.do_restart(env, key, flow)
            elif move < 0.92 and len(keys) > 6:
                people.delete(env, key)
                keys.remove(key)
            elif move < 0.925:
                flows.publish(env, LOOP_FLOW if flow == "loop" else LINEAR_FLOW)
        except StepstreamError:
            pass  # not allowed now (no instance, not active, ...): as a caller would meet it
    versions = Flow.objects.filter(environment=env).order_by("identifier", "version")
    assert len(versions) > 2
    for flow in versions:
        assert analytics.report(env, flow.identifier, flow.version) == _from_the_log(flow)
