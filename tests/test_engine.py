"""Engine scenarios: each checks the resulting states AND the exact state-change log."""

import pytest

from stepstream import engine
from stepstream.engine import flows
from stepstream.errors import Conflict, NotFound
from stepstream.models import FlowInstance, Person, StateChange
from stepstream.testing.flows import LINEAR_FLOW, log_rows, states


def person(env, key="alice"):
    engine.do_put_person(env, key, {})
    return Person.objects.get(environment=env, person_key=key)


def flow(identifier, steps, transitions):
    """A flow definition; transitions are (identifier, from, to[, type]) tuples."""
    return {
        "identifier": identifier,
        "steps": [{"identifier": s} for s in steps],
        "transitions": [
            {"identifier": t[0], "from": t[1], "to": t[2], "type": t[3] if len(t) > 3 else "manual"}
            for t in transitions
        ],
    }


def stored_states(env, key, flow_identifier):
    """States as read back from the database (not from the engine's answer)."""
    [instance] = [i for i in engine.snapshot(env, key)["flows"] if i["flow"] == flow_identifier]
    return states(instance)


def rows(seq_from, *changes):
    """Expected log rows numbered from seq_from: changes are (entity, identifier, prev, state)."""
    return [(seq_from + i, *change) for i, change in enumerate(changes)]


def test_linear_manual_flow_runs_to_completion(env, linear_flow):
    alice = person(env)

    started = engine.do_start_flow(env, "alice", "onboarding")
    assert started["version"] == 1
    assert started["flow"] == "onboarding"
    assert states(started) == {
        "flow": "active",
        "welcome": "active",
        "profile": "inactive",
        "done": "inactive",
    }
    assert [s["identifier"] for s in started["steps"]] == ["welcome", "profile", "done"]
    assert [s["name"] for s in started["steps"]] == ["Welcome", "Profile", "Done"]
    assert started["seq"] == 2
    assert log_rows(alice) == rows(
        1,
        ("flow", "onboarding", "inactive", "active"),
        ("step", "welcome", "inactive", "active"),
    )

    after_first = engine.do_transition(env, "alice", "onboarding", "next")
    assert states(after_first) == {
        "flow": "active",
        "welcome": "completed",
        "profile": "active",
        "done": "inactive",
    }
    assert after_first["seq"] == 4
    assert log_rows(alice)[2:] == rows(
        3,
        ("step", "welcome", "active", "completed"),
        ("step", "profile", "inactive", "active"),
    )

    finished = engine.do_transition(env, "alice", "onboarding", "next")
    assert states(finished) == {
        "flow": "completed",
        "welcome": "completed",
        "profile": "completed",
        "done": "completed",
    }
    assert finished["seq"] == 8
    assert log_rows(alice)[4:] == rows(
        5,
        ("step", "profile", "active", "completed"),
        ("step", "done", "inactive", "active"),
        ("step", "done", "active", "completed"),
        ("flow", "onboarding", "active", "completed"),
    )
    assert stored_states(env, "alice", "onboarding") == states(finished)
    alice.refresh_from_db()
    assert alice.last_seq == 8

    # A completed flow takes no more transitions, and nothing is logged.
    with pytest.raises(Conflict) as err:
        engine.do_transition(env, "alice", "onboarding", "next")
    assert err.value.status == 409
    assert len(log_rows(alice)) == 8


def test_log_rows_name_the_instance_and_step_ids(env, linear_flow):
    alice = person(env)
    started = engine.do_start_flow(env, "alice", "onboarding")
    flow_row, step_row = StateChange.objects.filter(person=alice).order_by("seq")
    assert str(flow_row.object_id) == started["id"]
    assert str(flow_row.flow_instance_id) == started["id"]
    assert flow_row.flow_identifier == "onboarding"
    welcome = next(s for s in started["steps"] if s["identifier"] == "welcome")
    assert str(step_row.object_id) == welcome["id"]
    assert str(step_row.flow_instance_id) == started["id"]


def test_manual_then_automatic_transition_runs_in_the_same_call(env):
    flows.publish(
        env,
        flow(
            "auto",
            ["a", "b", "c", "d"],
            [("go", "a", "b"), ("skip", "b", "c", "automatic"), ("finish", "c", "d")],
        ),
    )
    alice = person(env)
    engine.do_start_flow(env, "alice", "auto")

    result = engine.do_transition(env, "alice", "auto", "go")

    expected = {
        "flow": "active",
        "a": "completed",
        "b": "completed",
        "c": "active",
        "d": "inactive",
    }
    assert states(result) == expected
    assert stored_states(env, "alice", "auto") == expected
    assert log_rows(alice) == rows(
        1,
        ("flow", "auto", "inactive", "active"),
        ("step", "a", "inactive", "active"),
        ("step", "a", "active", "completed"),
        ("step", "b", "inactive", "active"),
        ("step", "b", "active", "completed"),
        ("step", "c", "inactive", "active"),
    )
    assert result["seq"] == 6


def test_automatic_transitions_chain_and_run_at_start(env):
    flows.publish(
        env,
        flow(
            "chain",
            ["a", "b", "c"],
            [("t1", "a", "b", "automatic"), ("t2", "b", "c", "automatic")],
        ),
    )
    alice = person(env)

    result = engine.do_start_flow(env, "alice", "chain")

    expected = {"flow": "completed", "a": "completed", "b": "completed", "c": "completed"}
    assert states(result) == expected
    assert stored_states(env, "alice", "chain") == expected
    assert log_rows(alice) == rows(
        1,
        ("flow", "chain", "inactive", "active"),
        ("step", "a", "inactive", "active"),
        ("step", "a", "active", "completed"),
        ("step", "b", "inactive", "active"),
        ("step", "b", "active", "completed"),
        ("step", "c", "inactive", "active"),
        ("step", "c", "active", "completed"),
        ("flow", "chain", "active", "completed"),
    )


def test_manual_transitions_never_chain(env):
    # Both transitions are called "next": one call moves one step only.
    flows.publish(
        env,
        flow(
            "m", ["a", "b", "c", "d"], [("next", "a", "b"), ("next", "b", "c"), ("end", "c", "d")]
        ),
    )
    alice = person(env)
    engine.do_start_flow(env, "alice", "m")

    result = engine.do_transition(env, "alice", "m", "next")

    assert states(result) == {
        "flow": "active",
        "a": "completed",
        "b": "active",
        "c": "inactive",
        "d": "inactive",
    }
    assert log_rows(alice)[2:] == rows(
        3,
        ("step", "a", "active", "completed"),
        ("step", "b", "inactive", "active"),
    )


def test_branching_on_two_manual_transitions_leaves_the_other_branch_untouched(env):
    flows.publish(
        env,
        flow(
            "fork",
            ["start", "left", "right", "left_end", "right_end"],
            [
                ("go_left", "start", "left"),
                ("go_right", "start", "right"),
                ("finish_left", "left", "left_end"),
                ("finish_right", "right", "right_end"),
            ],
        ),
    )
    alice = person(env)
    engine.do_start_flow(env, "alice", "fork")

    result = engine.do_transition(env, "alice", "fork", "go_left")

    expected = {
        "flow": "active",
        "start": "completed",
        "left": "active",
        "right": "inactive",
        "left_end": "inactive",
        "right_end": "inactive",
    }
    assert states(result) == expected
    assert log_rows(alice) == rows(
        1,
        ("flow", "fork", "inactive", "active"),
        ("step", "start", "inactive", "active"),
        ("step", "start", "active", "completed"),
        ("step", "left", "inactive", "active"),
    )

    # The other branch's transition is no longer available: its `from` step completed.
    with pytest.raises(Conflict):
        engine.do_transition(env, "alice", "fork", "go_right")
    assert stored_states(env, "alice", "fork") == expected
    assert len(log_rows(alice)) == 4


def test_branching_on_two_automatic_transitions_activates_both(env):
    flows.publish(
        env,
        flow(
            "split",
            ["start", "a", "b", "a_end", "b_end"],
            [
                ("to_a", "start", "a", "automatic"),
                ("to_b", "start", "b", "automatic"),
                ("finish_a", "a", "a_end"),
                ("finish_b", "b", "b_end"),
            ],
        ),
    )
    alice = person(env)

    started = engine.do_start_flow(env, "alice", "split")

    assert states(started) == {
        "flow": "active",
        "start": "completed",
        "a": "active",
        "b": "active",
        "a_end": "inactive",
        "b_end": "inactive",
    }
    assert log_rows(alice) == rows(
        1,
        ("flow", "split", "inactive", "active"),
        ("step", "start", "inactive", "active"),
        ("step", "start", "active", "completed"),
        ("step", "a", "inactive", "active"),
        ("step", "b", "inactive", "active"),
    )

    # Finishing one branch leaves the flow active while the other is still active.
    after_a = engine.do_transition(env, "alice", "split", "finish_a")
    assert states(after_a) == {
        "flow": "active",
        "start": "completed",
        "a": "completed",
        "b": "active",
        "a_end": "completed",
        "b_end": "inactive",
    }
    assert log_rows(alice)[5:] == rows(
        6,
        ("step", "a", "active", "completed"),
        ("step", "a_end", "inactive", "active"),
        ("step", "a_end", "active", "completed"),
    )

    after_b = engine.do_transition(env, "alice", "split", "finish_b")
    assert states(after_b) == {
        "flow": "completed",
        "start": "completed",
        "a": "completed",
        "b": "completed",
        "a_end": "completed",
        "b_end": "completed",
    }
    assert log_rows(alice)[8:] == rows(
        9,
        ("step", "b", "active", "completed"),
        ("step", "b_end", "inactive", "active"),
        ("step", "b_end", "active", "completed"),
        ("flow", "split", "active", "completed"),
    )


def test_transitions_sharing_an_identifier_run_together_and_join_once(env):
    flows.publish(
        env,
        flow(
            "join",
            ["start", "a", "b", "joined", "end"],
            [
                ("split_a", "start", "a", "automatic"),
                ("split_b", "start", "b", "automatic"),
                ("go", "a", "joined"),
                ("go", "b", "joined"),
                ("finish", "joined", "end"),
            ],
        ),
    )
    alice = person(env)
    engine.do_start_flow(env, "alice", "join")
    assert len(log_rows(alice)) == 5

    result = engine.do_transition(env, "alice", "join", "go")

    expected = {
        "flow": "active",
        "start": "completed",
        "a": "completed",
        "b": "completed",
        "joined": "active",
        "end": "inactive",
    }
    assert states(result) == expected
    assert stored_states(env, "alice", "join") == expected
    assert log_rows(alice)[5:] == rows(
        6,
        ("step", "a", "active", "completed"),
        ("step", "b", "active", "completed"),
        ("step", "joined", "inactive", "active"),
    )

    done = engine.do_transition(env, "alice", "join", "finish")
    assert done["state"] == "completed"
    assert log_rows(alice)[8:] == rows(
        9,
        ("step", "joined", "active", "completed"),
        ("step", "end", "inactive", "active"),
        ("step", "end", "active", "completed"),
        ("flow", "join", "active", "completed"),
    )


def test_shared_identifier_takes_only_the_transitions_whose_from_step_is_active(env):
    flows.publish(
        env,
        flow(
            "partial",
            ["start", "a", "b", "a_next", "b_next", "a_end", "b_end"],
            [
                ("split_a", "start", "a", "automatic"),
                ("split_b", "start", "b", "automatic"),
                ("step_a", "a", "a_next"),
                ("go", "a_next", "a_end"),
                ("go", "b", "b_next"),
                ("finish_b", "b_next", "b_end"),
            ],
        ),
    )
    alice = person(env)
    engine.do_start_flow(env, "alice", "partial")

    result = engine.do_transition(env, "alice", "partial", "go")

    # a_next is not active, so only b -> b_next runs.
    assert states(result) == {
        "flow": "active",
        "start": "completed",
        "a": "active",
        "b": "completed",
        "a_next": "inactive",
        "b_next": "active",
        "a_end": "inactive",
        "b_end": "inactive",
    }
    assert log_rows(alice)[5:] == rows(
        6,
        ("step", "b", "active", "completed"),
        ("step", "b_next", "inactive", "active"),
    )


def test_a_manual_cycle_reactivates_a_completed_step(env):
    flows.publish(
        env,
        flow("loop", ["s", "a", "b"], [("go", "s", "a"), ("next", "a", "b"), ("back", "b", "a")]),
    )
    alice = person(env)
    engine.do_start_flow(env, "alice", "loop")
    engine.do_transition(env, "alice", "loop", "go")
    engine.do_transition(env, "alice", "loop", "next")

    result = engine.do_transition(env, "alice", "loop", "back")

    assert states(result) == {"flow": "active", "s": "completed", "a": "active", "b": "completed"}
    assert log_rows(alice)[6:] == rows(
        7,
        ("step", "b", "active", "completed"),
        ("step", "a", "completed", "active"),
    )


def test_two_people_on_the_same_flow_do_not_affect_each_other(env, linear_flow):
    alice = person(env, "alice")
    bob = person(env, "bob")

    engine.do_start_flow(env, "alice", "onboarding")
    engine.do_transition(env, "alice", "onboarding", "next")
    bob_started = engine.do_start_flow(env, "bob", "onboarding")

    assert bob_started["seq"] == 2
    assert states(bob_started) == {
        "flow": "active",
        "welcome": "active",
        "profile": "inactive",
        "done": "inactive",
    }
    assert log_rows(bob) == rows(
        1,
        ("flow", "onboarding", "inactive", "active"),
        ("step", "welcome", "inactive", "active"),
    )
    assert stored_states(env, "alice", "onboarding") == {
        "flow": "active",
        "welcome": "completed",
        "profile": "active",
        "done": "inactive",
    }
    assert [r[0] for r in log_rows(alice)] == [1, 2, 3, 4]

    engine.do_transition(env, "bob", "onboarding", "next")
    engine.do_transition(env, "bob", "onboarding", "next")
    assert stored_states(env, "alice", "onboarding")["profile"] == "active"
    assert [r[0] for r in log_rows(alice)] == [1, 2, 3, 4]
    assert [r[0] for r in log_rows(bob)] == list(range(1, 9))
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert (alice.last_seq, bob.last_seq) == (4, 8)
    assert engine.snapshot(env, "alice")["seq"] == 4
    assert engine.snapshot(env, "bob")["seq"] == 8


def test_one_instance_per_person_and_flow(env, linear_flow):
    alice = person(env)
    first = engine.do_start_flow(env, "alice", "onboarding")
    before = log_rows(alice)

    with pytest.raises(Conflict) as err:
        engine.do_start_flow(env, "alice", "onboarding")

    assert err.value.status == 409
    assert log_rows(alice) == before
    assert FlowInstance.objects.filter(person=alice).count() == 1
    snap = engine.snapshot(env, "alice")
    assert [i["id"] for i in snap["flows"]] == [first["id"]]
    assert snap["seq"] == 2


@pytest.mark.parametrize("action", ["exit", "complete"])
def test_a_finished_instance_still_blocks_a_new_start(env, linear_flow, action):
    alice = person(env)
    engine.do_start_flow(env, "alice", "onboarding")
    if action == "exit":
        engine.do_flow_action(env, "alice", "onboarding", "exit")
    else:
        engine.do_transition(env, "alice", "onboarding", "next")
        engine.do_transition(env, "alice", "onboarding", "next")
    before = log_rows(alice)

    with pytest.raises(Conflict):
        engine.do_start_flow(env, "alice", "onboarding")
    assert log_rows(alice) == before
    assert FlowInstance.objects.filter(person=alice).count() == 1


def test_an_unknown_transition_changes_nothing(env, linear_flow):
    alice = person(env)
    started = engine.do_start_flow(env, "alice", "onboarding")
    before = log_rows(alice)

    with pytest.raises(Conflict) as err:
        engine.do_transition(env, "alice", "onboarding", "no-such-transition")

    assert err.value.status == 409
    assert log_rows(alice) == before
    assert stored_states(env, "alice", "onboarding") == states(started)
    alice.refresh_from_db()
    assert alice.last_seq == 2


def test_a_transition_no_active_step_has_is_a_conflict(env):
    flows.publish(env, flow("two", ["a", "b", "c"], [("go", "a", "b"), ("finish", "b", "c")]))
    alice = person(env)
    started = engine.do_start_flow(env, "alice", "two")

    with pytest.raises(Conflict) as err:
        engine.do_transition(env, "alice", "two", "finish")

    assert err.value.status == 409
    assert log_rows(alice) == rows(
        1,
        ("flow", "two", "inactive", "active"),
        ("step", "a", "inactive", "active"),
    )
    assert stored_states(env, "alice", "two") == states(started)


def test_pause_resume_and_exit_change_the_flow_only(env, linear_flow):
    alice = person(env)
    engine.do_start_flow(env, "alice", "onboarding")
    engine.do_transition(env, "alice", "onboarding", "next")
    steps = {"welcome": "completed", "profile": "active", "done": "inactive"}

    paused = engine.do_flow_action(env, "alice", "onboarding", "pause")
    assert states(paused) == {"flow": "inactive", **steps}
    assert paused["seq"] == 5
    assert log_rows(alice)[4:] == [(5, "flow", "onboarding", "active", "inactive")]

    # A paused flow refuses transitions, and refuses another pause.
    with pytest.raises(Conflict):
        engine.do_transition(env, "alice", "onboarding", "next")
    with pytest.raises(Conflict):
        engine.do_flow_action(env, "alice", "onboarding", "pause")
    assert len(log_rows(alice)) == 5
    assert stored_states(env, "alice", "onboarding") == {"flow": "inactive", **steps}

    resumed = engine.do_flow_action(env, "alice", "onboarding", "resume")
    assert states(resumed) == {"flow": "active", **steps}
    assert log_rows(alice)[5:] == [(6, "flow", "onboarding", "inactive", "active")]
    with pytest.raises(Conflict):
        engine.do_flow_action(env, "alice", "onboarding", "resume")

    # Transitions work again after resume.
    engine.do_transition(env, "alice", "onboarding", "next")
    assert stored_states(env, "alice", "onboarding")["flow"] == "completed"
    assert len(log_rows(alice)) == 10

    # A completed flow cannot be paused, resumed or exited.
    for action in ("pause", "resume", "exit"):
        with pytest.raises(Conflict) as err:
            engine.do_flow_action(env, "alice", "onboarding", action)
        assert err.value.status == 409
    assert len(log_rows(alice)) == 10


def test_exit_from_active_keeps_the_steps(env, linear_flow):
    alice = person(env)
    engine.do_start_flow(env, "alice", "onboarding")

    exited = engine.do_flow_action(env, "alice", "onboarding", "exit")

    expected = {"flow": "exited", "welcome": "active", "profile": "inactive", "done": "inactive"}
    assert states(exited) == expected
    assert stored_states(env, "alice", "onboarding") == expected
    assert log_rows(alice)[2:] == [(3, "flow", "onboarding", "active", "exited")]
    for action in ("pause", "resume", "exit"):
        with pytest.raises(Conflict):
            engine.do_flow_action(env, "alice", "onboarding", action)
    with pytest.raises(Conflict):
        engine.do_transition(env, "alice", "onboarding", "next")
    assert len(log_rows(alice)) == 3


def test_exit_from_inactive_is_allowed(env, linear_flow):
    alice = person(env)
    engine.do_start_flow(env, "alice", "onboarding")
    engine.do_flow_action(env, "alice", "onboarding", "pause")

    exited = engine.do_flow_action(env, "alice", "onboarding", "exit")

    expected = {"flow": "exited", "welcome": "active", "profile": "inactive", "done": "inactive"}
    assert states(exited) == expected
    assert stored_states(env, "alice", "onboarding") == expected
    assert log_rows(alice)[2:] == rows(
        3,
        ("flow", "onboarding", "active", "inactive"),
        ("flow", "onboarding", "inactive", "exited"),
    )


def test_a_new_version_does_not_change_running_instances(env, linear_flow):
    alice = person(env, "alice")
    bob = person(env, "bob")
    engine.do_start_flow(env, "alice", "onboarding")

    v2 = flows.publish(
        env,
        {
            "identifier": "onboarding",
            "steps": [{"identifier": "intro"}, {"identifier": "finish"}],
            "transitions": [{"identifier": "go", "from": "intro", "to": "finish"}],
        },
    )
    assert v2["version"] == 2

    alice_instance = engine.snapshot(env, "alice")["flows"][0]
    assert alice_instance["version"] == 1
    assert [s["identifier"] for s in alice_instance["steps"]] == ["welcome", "profile", "done"]

    # Alice still runs version 1's graph: "next" works, version 2's "go" does not exist for her.
    with pytest.raises(Conflict):
        engine.do_transition(env, "alice", "onboarding", "go")
    moved = engine.do_transition(env, "alice", "onboarding", "next")
    assert moved["version"] == 1
    assert states(moved) == {
        "flow": "active",
        "welcome": "completed",
        "profile": "active",
        "done": "inactive",
    }
    assert log_rows(alice) == rows(
        1,
        ("flow", "onboarding", "inactive", "active"),
        ("step", "welcome", "inactive", "active"),
        ("step", "welcome", "active", "completed"),
        ("step", "profile", "inactive", "active"),
    )

    bob_started = engine.do_start_flow(env, "bob", "onboarding")
    assert bob_started["version"] == 2
    assert states(bob_started) == {"flow": "active", "intro": "active", "finish": "inactive"}
    assert log_rows(bob) == rows(
        1,
        ("flow", "onboarding", "inactive", "active"),
        ("step", "intro", "inactive", "active"),
    )
    with pytest.raises(Conflict):
        engine.do_transition(env, "bob", "onboarding", "next")
    assert engine.do_transition(env, "bob", "onboarding", "go")["state"] == "completed"


def test_start_logs_the_flow_first_then_each_start_step(env):
    flows.publish(
        env,
        flow(
            "multi",
            ["first", "second", "third", "after_first", "after_second"],
            [
                ("auto", "first", "after_first", "automatic"),
                ("go", "second", "after_second"),
                ("more", "third", "after_second"),
            ],
        ),
    )
    alice = person(env)

    started = engine.do_start_flow(env, "alice", "multi")

    assert states(started) == {
        "flow": "active",
        "first": "completed",
        "second": "active",
        "third": "active",
        "after_first": "completed",
        "after_second": "inactive",
    }
    assert log_rows(alice) == rows(
        1,
        ("flow", "multi", "inactive", "active"),
        ("step", "first", "inactive", "active"),
        ("step", "second", "inactive", "active"),
        ("step", "third", "inactive", "active"),
        ("step", "first", "active", "completed"),
        ("step", "after_first", "inactive", "active"),
        ("step", "after_first", "active", "completed"),
    )


def test_unknown_person_or_flow_is_not_found(env, other_env, linear_flow):
    alice = person(env)

    for call in (
        lambda: engine.do_start_flow(env, "nobody", "onboarding"),
        lambda: engine.do_start_flow(env, "alice", "no-such-flow"),
        lambda: engine.do_transition(env, "nobody", "onboarding", "next"),
        lambda: engine.do_transition(env, "alice", "onboarding", "next"),  # no instance yet
        lambda: engine.do_flow_action(env, "nobody", "onboarding", "pause"),
        lambda: engine.do_flow_action(env, "alice", "onboarding", "pause"),
        lambda: engine.snapshot(env, "nobody"),
    ):
        with pytest.raises(NotFound) as err:
            call()
        assert err.value.status == 404

    assert log_rows(alice) == []
    assert FlowInstance.objects.count() == 0


def test_people_and_flows_of_another_environment_are_not_found(env, other_env, linear_flow):
    alice = person(env)
    engine.do_start_flow(env, "alice", "onboarding")
    person(other_env, "carol")

    with pytest.raises(NotFound):
        engine.do_transition(other_env, "alice", "onboarding", "next")
    with pytest.raises(NotFound):
        engine.snapshot(other_env, "alice")
    with pytest.raises(NotFound):  # the flow is published in `env` only
        engine.do_start_flow(other_env, "carol", "onboarding")
    assert len(log_rows(alice)) == 2


def test_snapshot_of_a_person_without_flows(env):
    person(env)
    snap = engine.snapshot(env, "alice")
    assert snap == {"person_key": "alice", "seq": 0, "flows": [], "epoch": snap["epoch"]}


def test_snapshot_lists_instances_with_the_latest_seq(env, linear_flow):
    person(env)
    flows.publish(env, flow("second", ["x", "y"], [("go", "x", "y")]))
    first = engine.do_start_flow(env, "alice", "onboarding")
    second = engine.do_start_flow(env, "alice", "second")

    snap = engine.snapshot(env, "alice")

    assert snap["seq"] == 4
    assert [i["id"] for i in snap["flows"]] == [first["id"], second["id"]]
    assert [i["seq"] for i in snap["flows"]] == [4, 4]
    assert snap["flows"][0]["steps"] == first["steps"]
    assert LINEAR_FLOW["identifier"] == snap["flows"][0]["flow"]
