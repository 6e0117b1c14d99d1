"""Condition budgets (docs/rules.md, "Condition budgets"): no condition and no input can
stall the server.

Reproductions of issue 24: a cost bomb is refused when saved; an input beyond the
limits is refused when written, over REST and WebSocket alike; a condition that slips
past the estimate is cut off in its child process, fails only its own write, and is
suspended; another environment keeps answering meanwhile.
"""

import contextlib
import threading
import time

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from stepstream.engine import conditioncost, conditions, flows, sandbox, segments
from stepstream.errors import Invalid
from tests.test_rules import errors, publish, track, url

LIST70 = "[" + ",".join(str(i) for i in range(70)) + "]"
# issue 24's reproduction: 635 characters, four nested `exists` over 70-item lists
BOMB = (
    f"{LIST70}.exists(a, {LIST70}.exists(b, {LIST70}.exists(c, "
    f"{LIST70}.exists(d, a + b + c + d == -1))))"
)


def flow_with(start_when=None, condition=None, identifier="costly"):
    transition = {"identifier": "next", "from": "a", "to": "b"}
    if condition is not None:
        transition["condition"] = condition
    body = {
        "identifier": identifier,
        "steps": [{"identifier": "a"}, {"identifier": "b"}],
        "transitions": [transition],
    }
    if start_when is not None:
        body["start_when"] = start_when
    return body


# -- refused when saved ------------------------------------------------------------


def test_a_cost_bomb_is_refused_when_published_naming_where_and_why(api):
    for body, where in (
        (flow_with(start_when=BOMB), "start_when"),
        (flow_with(condition=BOMB), "transitions[0].condition"),
    ):
        (message,) = errors(api.post(url("flows"), body, format="json"), 400)
        assert message.startswith(f"{where}: the condition may cost up to ")
        assert "STEPSTREAM_CONDITION_COST_BUDGET" in message
        assert "Its costliest part is `.exists(a, [0,1,2" in message
    assert api.get(url("flows", "costly")).status_code == 404


def test_a_costly_segment_is_refused(api):
    response = api.put(url("segments", "bomb"), {"condition": BOMB}, format="json")
    (message,) = errors(response, 400)
    assert message.startswith("condition: the condition may cost up to ")
    assert api.get(url("segments", "bomb")).status_code == 404


def test_quadratic_macros_over_growable_inputs_are_costed_as_such(api):
    """`filter` over 1,000 event names is quadratic in this CEL package: refused, with the
    way out; `exists` over the same names is linear and accepted."""
    quadratic = 'events.filter(k, k.startsWith("export_")).size() >= 3'
    (message,) = errors(api.post(url("flows"), flow_with(start_when=quadratic), format="json"), 400)
    assert '`.filter(k, k.startsWith("export_"))`' in message
    assert "quadratic" in message and "`exists`" in message
    linear = 'events.exists(k, k.startsWith("export_"))'
    publish(api, flow_with(start_when=linear))


def test_the_budget_is_a_setting(api, settings):
    condition = "person.tags.exists(a, person.tags.exists(b, a == b))"
    assert api.post(url("flows"), flow_with(start_when=condition), format="json").status_code == 400
    settings.STEPSTREAM = {**settings.STEPSTREAM, "CONDITION_COST_BUDGET": 10**12}
    publish(api, flow_with(start_when=condition))


def test_usual_conditions_are_cheap_and_run_inline():
    for text in (
        'person.plan == "pro"',
        "has(events.upload) && events.upload.count >= 3",
        'has(flows.onboarding) && flows.onboarding == "completed"',
        'now - events.signup.first_at > duration("72h")',
        'person.tags.exists(t, t == "beta")',
        "segments.power_users",
    ):
        compiled = conditions.compile_condition(text, "c")
        assert compiled.inline, (text, compiled.cost)


# -- refused when written ----------------------------------------------------------


def test_person_data_beyond_the_limits_is_refused_over_rest(api):
    for data, field in (
        ({"tags": list(range(257))}, "data.tags has 257 items; at most 256"),
        ({"nested": {"deep": [{"x": "y" * 4097}]}}, "data.nested.deep[0].x is a string of 4,097"),
        ({f"k{i}": i for i in range(257)}, "data has 257 entries; at most 256"),
        ({"a": ["z" * 4000] * 9}, "data is 36,0"),
    ):
        response = api.put(url("people", "big"), {"data": data}, format="json")
        (message,) = errors(response, 400)
        assert message.startswith(field), message
    assert api.get(url("people", "big")).status_code == 404
    api.put(url("people", "big"), {"data": {"tags": list(range(256))}}, format="json")
    response = api.patch(url("people", "big"), {"data": {"more": ["z" * 4000] * 8}}, format="json")
    if response.status_code != 405:  # a merge whose result is too large
        assert "STEPSTREAM_DATA_MAX_BYTES" in errors(response, 400)[0]


def test_event_properties_beyond_the_limits_are_refused(api):
    response = api.post(
        url("people", "p", "track"),
        {"event": "e", "properties": {"ids": list(range(300))}},
        format="json",
    )
    assert errors(response, 400) == [
        "properties.ids has 300 items; at most 256 (STEPSTREAM_DATA_MAX_ITEMS)."
    ]


def test_a_browser_cannot_write_a_huge_list_over_the_websocket(ws, rest):
    """Issue 24: one 64 KB `identify` with `tags` of 32,000 ints stalled every tenant."""
    response = ws.request("identify", {"person_key": "huge-tags", "data": {"tags": [7] * 20_000}})
    assert response["status"] == 400
    assert response["errors"] == [
        "data.tags has 20,000 items; at most 256 (STEPSTREAM_DATA_MAX_ITEMS)."
    ]
    response = ws.request(
        "track", {"person_key": "huge-tags", "event": "e", "properties": {"s": "x" * 5000}}
    )
    assert response["status"] == 400 and "properties.s" in response["errors"][0]
    assert rest.get("/people/huge-tags").status_code == 404


# -- what slips past the estimate is cut off ----------------------------------------


def test_a_costly_condition_gives_the_same_answer_in_its_child_process(api, env):
    condition = "has(person.tags) && person.tags.filter(t, t == 7).size() > 2"
    compiled = conditions.compile_condition(condition, "start_when")
    assert not compiled.inline and compiled.cost <= conditions.budget()
    publish(api, flow_with(start_when=condition))
    before = sandbox.report()["evaluated_apart"]
    api.put(url("people", "few"), {"data": {"tags": [7, 7, 1]}}, format="json")
    api.put(url("people", "many"), {"data": {"tags": [7] * 256}}, format="json")
    assert [f["flow"] for f in api.get(url("people", "few", "flows")).json()] == []
    assert [f["flow"] for f in api.get(url("people", "many", "flows")).json()] == ["costly"]
    assert sandbox.report()["evaluated_apart"] >= before + 2


@pytest.fixture
def no_budget(settings):
    """What the estimate would let through if it were wrong: the budget lifted."""
    settings.STEPSTREAM = {**settings.STEPSTREAM, "CONDITION_COST_BUDGET": 10**15}


def test_a_condition_past_its_deadline_fails_its_write_and_is_suspended(api, no_budget):
    publish(api, flow_with(start_when=BOMB))
    response = api.post(url("people", "victim", "track"), {"event": "go"}, format="json")
    assert response.status_code == 503  # cut off: a bomb evaluated to its end answers 200
    assert response.json()["code"] == "condition_timeout"
    assert api.get(url("people", "victim")).status_code == 404  # nothing committed
    report = sandbox.report()
    assert report["timeouts"] >= 1 and report["suspended"] >= 1
    # suspended: counted false without running, so the next write goes through
    before = sandbox.report()["evaluated_apart"]
    assert track(api, "victim", "go")["count"] == 1
    assert sandbox.report()["evaluated_apart"] == before  # the condition did not run
    assert api.get(url("people", "victim", "flows")).json() == []
    health = api.get("/api/v1/health").json()
    assert health["conditions"]["suspended"] >= 1


@pytest.mark.slow
def test_another_environment_keeps_answering_during_an_attack(tmp_path):
    """A real server, its budget lifted: while one tenant's bomb is cut off, another
    environment's writes and /health answer (the benchmark, bench/attacks.py, gives
    the p99; here: nothing waits anywhere near the 23.5 s the bomb ran before)."""
    from stepstream.testing.servers import Server

    srv = Server(tmp_path, STEPSTREAM_CONDITION_COST_BUDGET=10**15).start()
    try:
        attacker = srv.init_project("attacker")["environments"][0]
        victim = srv.init_project("victim")["environments"][0]
        with srv.rest(attacker["secret_key"]) as rest:
            assert rest.post("/flows", json=flow_with(start_when=BOMB)).status_code == 201
        latencies: list[float] = []
        stop = threading.Event()

        def victim_loop():
            with srv.rest(victim["secret_key"]) as rest:
                i = 0
                while not stop.is_set() and i < 2000:
                    i += 1
                    started = time.perf_counter()
                    assert rest.post(f"/people/v{i % 5}/track", json={"event": "x"}).is_success
                    assert rest.get("/health").status_code == 200
                    latencies.append(time.perf_counter() - started)

        thread = threading.Thread(target=victim_loop)
        thread.start()
        try:
            with srv.rest(attacker["secret_key"]) as rest:
                for i in range(3):  # the first is cut off; the rest find it suspended
                    status = rest.post(f"/people/a{i}/track", json={"event": "go"}).status_code
                    assert status == (503 if i == 0 else 200)
        finally:
            stop.set()
            thread.join(30)
        # every one answered, none held for the 9-24 s the bomb ran before (the benchmark,
        # bench/attacks.py, times the p99 on an idle machine; here the suite shares it)
        assert latencies and max(latencies) < 5.0, max(latencies)
    finally:
        srv.stop()


# -- accepted conditions stay within the budget's time -------------------------------

NAMES = st.sampled_from(["person.tags", "person.names", "[1, 2, 3]", "person.matrix"])
LEAVES = st.sampled_from(["{v} == 7", '{v} == "a"', "true", "{v} != {w}", "size({v}) > 1"])
VARIABLES = "xyzw"


@st.composite
def generated_conditions(draw, depth=0):
    """Nested macros, concatenations, `in` and string functions over person data."""
    kind = draw(st.sampled_from(["macro", "macro", "concat", "in", "leaf", "string"]))
    if depth >= 3 or (kind == "leaf" and depth > 0):
        v = VARIABLES[depth - 1]
        w = VARIABLES[max(depth - 2, 0)]
        return draw(LEAVES).format(v=v, w=w)
    if kind == "concat":
        n = draw(st.integers(1, 6))
        return "size(" + " + ".join([draw(NAMES)] * n) + ") > 0"
    if kind == "in":
        return f"7 in {draw(NAMES)}"
    if kind in ("string", "leaf"):
        return 'person.s.matches("a+b") || person.s.contains("zz")'
    macro = draw(st.sampled_from(["exists", "all", "exists_one", "map", "filter"]))
    inner = draw(generated_conditions(depth=depth + 1))
    var = VARIABLES[depth]
    if macro in ("map", "filter"):
        return f"{draw(NAMES)}.{macro}({var}, {inner}).size() >= 0"
    return f"{draw(NAMES)}.{macro}({var}, {inner})"


def _largest_inputs(limits: conditioncost.Limits) -> dict:
    """The worst data the limits allow for the generated conditions."""
    n = limits.items
    return {
        "person": {
            "tags": [7] * n,
            "names": ["a" * 12] * n,
            "matrix": [[7] * 8 for _ in range(n // 8)],
            "s": "a" * limits.string_chars,
        }
    }


@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=generated_conditions())
def test_every_accepted_condition_evaluates_within_the_budgets_time(text):
    """Time per unit measured at 0.04-0.35 us (docs/rules.md): the budget's time is at
    most 35 ms of CPU; 100 ms leaves room, and anything the estimate missed by an order of
    magnitude (a quadratic it did not see) would exceed it. CPU time, not the clock: the
    suite shares the machine."""
    try:
        compiled = conditions.compile_condition(text, "c")
    except Invalid as refused:
        assert "the condition may cost up to" in refused.messages[0], refused.messages
        return
    inputs = conditions.context(_largest_inputs(conditions.limits()))
    started = time.thread_time()
    with contextlib.suppress(Exception):
        compiled.program.execute(inputs.context)
    assert time.thread_time() - started < 0.1, (text, compiled.cost)


def test_segment_listing_and_flow_publish_use_the_same_estimate(env):
    with pytest.raises(Invalid):
        segments.put(env, "bomb", {"condition": BOMB})
    with pytest.raises(Invalid):
        flows.publish(env, flow_with(start_when=BOMB))


def test_a_condition_saved_under_a_larger_budget_still_loads_and_runs_apart(api, settings):
    """Lowering the budget never breaks an environment: what is stored is not refused
    again when loaded, and, being costly, it is evaluated in the child process."""
    condition = "has(person.tags) && person.tags.exists(a, person.tags.exists(b, a == b))"
    budget = settings.STEPSTREAM
    settings.STEPSTREAM = {**budget, "CONDITION_COST_BUDGET": 10**12}
    publish(api, flow_with(start_when=condition))
    settings.STEPSTREAM = budget
    assert api.post(url("flows"), flow_with(start_when=condition), format="json").status_code == 400
    before = sandbox.report()["evaluated_apart"]
    response = api.put(url("people", "stored"), {"data": {"tags": [1, 2]}}, format="json")
    assert response.status_code == 201
    assert [f["flow"] for f in api.get(url("people", "stored", "flows")).json()] == ["costly"]
    assert sandbox.report()["evaluated_apart"] > before


def test_a_child_the_machine_cannot_run_fails_its_write_but_suspends_nothing(monkeypatch):
    """The child's CPU time decides, not the clock: a saturated machine (here, the child
    stopped outright) is no sign against the condition."""
    import os
    import signal

    from stepstream.errors import Unavailable

    monkeypatch.setattr(sandbox, "STARVED_SECONDS", 0.5)
    evaluator = sandbox.Sandbox(timeout=0.05, suspend_seconds=300)
    child = evaluator._take()
    evaluator._give(child)
    os.kill(child.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(Unavailable, match="too busy"):
            evaluator.evaluate("[1, 2].exists(x, x == 2)", {})
    finally:
        with contextlib.suppress(OSError):
            os.kill(child.process.pid, signal.SIGCONT)
    assert evaluator.report() == {"evaluated_apart": 0, "timeouts": 0, "suspended": 0}
    assert evaluator.evaluate("[1, 2].exists(x, x == 2)", {}) is True  # a fresh child
    evaluator.close()
