"""Publishing flow versions: numbering, validation and tenant isolation."""

import pytest

from stepstream.engine import flows
from stepstream.errors import Invalid, NotFound
from stepstream.models import Flow
from stepstream.testing.flows import LINEAR_FLOW


def definition(steps, transitions, identifier="f"):
    return {
        "identifier": identifier,
        "steps": [{"identifier": s} for s in steps],
        "transitions": [
            {"identifier": t[0], "from": t[1], "to": t[2], **({"type": t[3]} if len(t) > 3 else {})}
            for t in transitions
        ],
    }


def problems(env, body) -> list[str]:
    with pytest.raises(Invalid) as err:
        flows.publish(env, body)
    assert err.value.status == 400
    assert err.value.messages
    return err.value.messages


def mentions(messages, *words) -> bool:
    """True when one message contains every word (case-insensitive)."""
    return any(all(w.lower() in m.lower() for w in words) for m in messages)


def test_publish_returns_the_definition_with_defaults(env):
    published = flows.publish(env, LINEAR_FLOW)
    assert published == {
        "identifier": "onboarding",
        "version": 1,
        "name": "Onboarding",
        "steps": [
            {"identifier": "welcome", "name": "Welcome", "properties": {}},
            {"identifier": "profile", "name": "Profile", "properties": {}},
            {"identifier": "done", "name": "Done", "properties": {}},
        ],
        "transitions": [
            {"identifier": "next", "from": "welcome", "to": "profile", "type": "manual"},
            {"identifier": "next", "from": "profile", "to": "done", "type": "manual"},
        ],
    }


def test_each_publish_makes_the_next_version(env):
    assert [flows.publish(env, LINEAR_FLOW)["version"] for _ in range(3)] == [1, 2, 3]
    assert flows.latest(env, "onboarding").version == 3
    assert sorted(
        Flow.objects.filter(environment=env, identifier="onboarding").values_list(
            "version", flat=True
        )
    ) == [1, 2, 3]
    # Another identifier has its own numbering.
    assert flows.publish(env, definition(["a"], [], identifier="other"))["version"] == 1
    assert [f["version"] for f in flows.list_latest(env)] == [3, 1]


def test_an_invalid_publish_makes_no_version(env):
    flows.publish(env, LINEAR_FLOW)
    bad = {**LINEAR_FLOW, "steps": LINEAR_FLOW["steps"] + [{"identifier": "welcome"}]}
    problems(env, bad)
    assert flows.latest(env, "onboarding").version == 1
    assert flows.publish(env, LINEAR_FLOW)["version"] == 2


def test_duplicate_step_is_named(env):
    messages = problems(env, definition(["a", "b", "a"], [("go", "a", "b")]))
    assert mentions(messages, "duplicate", "'a'")


def test_unknown_step_in_a_transition_is_named(env):
    messages = problems(
        env, definition(["a", "b"], [("go", "a", "ghost"), ("back", "phantom", "b")])
    )
    assert mentions(messages, "unknown step", "ghost")
    assert mentions(messages, "unknown step", "phantom")


def test_no_start_step_is_named(env):
    messages = problems(env, definition(["a", "b"], [("go", "a", "b"), ("back", "b", "a")]))
    assert mentions(messages, "no start step")


def test_a_cycle_of_automatic_transitions_is_named(env):
    body = definition(
        ["s", "a", "b"],
        [("go", "s", "a"), ("x", "a", "b", "automatic"), ("y", "b", "a", "automatic")],
    )
    messages = problems(env, body)
    assert mentions(messages, "cycle")
    assert not mentions(messages, "no start step")


def test_an_automatic_self_loop_is_a_cycle(env):
    messages = problems(
        env, definition(["s", "a"], [("go", "s", "a"), ("x", "a", "a", "automatic")])
    )
    assert mentions(messages, "cycle")


def test_a_cycle_of_manual_transitions_is_allowed(env):
    body = definition(["s", "a", "b"], [("go", "s", "a"), ("next", "a", "b"), ("back", "b", "a")])
    assert flows.publish(env, body)["version"] == 1


def test_a_cycle_mixing_manual_and_automatic_transitions_is_allowed(env):
    body = definition(
        ["s", "a", "b"],
        [("go", "s", "a"), ("x", "a", "b", "automatic"), ("back", "b", "a", "manual")],
    )
    published = flows.publish(env, body)
    assert [t["type"] for t in published["transitions"]] == ["manual", "automatic", "manual"]


def test_bad_transition_type_is_named(env):
    messages = problems(env, definition(["a", "b"], [("go", "a", "b", "sideways")]))
    assert mentions(messages, "transitions[0].type")


@pytest.mark.parametrize(
    "body, where",
    [
        ({"steps": [{"identifier": "a"}]}, "identifier"),
        ({"identifier": "", "steps": [{"identifier": "a"}]}, "identifier"),
        ({"identifier": "f", "steps": [{"name": "no id"}]}, "steps[0].identifier"),
        (
            {
                "identifier": "f",
                "steps": [{"identifier": "a"}, {"identifier": "b"}],
                "transitions": [{"from": "a", "to": "b"}],
            },
            "transitions[0].identifier",
        ),
        (
            {
                "identifier": "f",
                "steps": [{"identifier": "a"}, {"identifier": "b"}],
                "transitions": [{"identifier": "go", "to": "b"}],
            },
            "transitions[0].from",
        ),
    ],
)
def test_missing_identifier_is_named(env, body, where):
    messages = problems(env, body)
    assert any(m.startswith(where + " ") for m in messages), messages


def test_no_steps_is_invalid(env):
    assert mentions(problems(env, {"identifier": "f", "steps": []}), "steps")
    assert mentions(problems(env, {"identifier": "f"}), "steps")
    problems(env, "not an object")


def test_several_problems_are_reported_at_once(env):
    body = {
        "identifier": "f",
        "steps": [{"identifier": "a"}, {"identifier": "b"}, {"identifier": "a"}, {}],
        "transitions": [
            {"identifier": "go", "from": "a", "to": "ghost"},
            {"identifier": "go", "from": "a", "to": "b", "type": "sideways"},
            {"from": "a", "to": "b"},
        ],
    }
    messages = problems(env, body)
    assert mentions(messages, "duplicate", "'a'")
    assert mentions(messages, "steps[3].identifier")
    assert mentions(messages, "unknown step", "ghost")
    assert mentions(messages, "transitions[1].type")
    assert mentions(messages, "transitions[2].identifier")
    assert len(messages) >= 5


def test_no_start_step_and_automatic_cycle_are_reported_together(env):
    body = definition(["a", "b"], [("x", "a", "b", "automatic"), ("y", "b", "a", "automatic")])
    messages = problems(env, body)
    assert mentions(messages, "no start step")
    assert mentions(messages, "cycle")


def test_graph_problems_are_named_alongside_other_problems(env):
    # The contract: a 400 names every problem. The automatic cycle a -> b -> a is
    # well defined even though another transition has a bad type.
    body = definition(
        ["s", "a", "b"],
        [
            ("go", "s", "a", "sideways"),
            ("x", "a", "b", "automatic"),
            ("y", "b", "a", "automatic"),
        ],
    )
    messages = problems(env, body)
    assert mentions(messages, "transitions[0].type")
    assert mentions(messages, "cycle"), messages


def test_flows_of_another_environment_are_invisible(env, other_env):
    flows.publish(env, LINEAR_FLOW)
    flows.publish(env, LINEAR_FLOW)

    with pytest.raises(NotFound) as err:
        flows.latest(other_env, "onboarding")
    assert err.value.status == 404
    assert flows.list_latest(other_env) == []

    # The other environment numbers its own versions from 1.
    assert flows.publish(other_env, LINEAR_FLOW)["version"] == 1
    assert flows.latest(env, "onboarding").version == 2
    assert flows.latest(other_env, "onboarding").version == 1


def test_latest_of_an_unknown_flow_is_not_found(env):
    with pytest.raises(NotFound):
        flows.latest(env, "nothing")
