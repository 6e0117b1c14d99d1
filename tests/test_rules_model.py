"""The engine's rules agree with a small reference model that evaluates every condition.

The engine re-evaluates only the conditions a write can affect (its
dependency index); the model evaluates all of them on every pass, in the
order the contract gives (start_when flows by identifier, then automatic
transitions of active instances by flow identifier, until nothing changes).
On random flows, conditions and writes, both must end in the same states and
the same log, cause kinds included.
"""

import os

import cel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepstream import engine
from stepstream.engine import flows, segments
from stepstream.errors import StepstreamError
from stepstream.models import StateChange

EVENTS = ["e0", "e1", "e2"]
FLOWS = ["f0", "f1", "f2", "f3"]
KEYS = ["a", "b"]


def _base_conditions(with_segments: bool) -> st.SearchStrategy[str]:
    options = [
        st.just("true"),
        st.sampled_from(EVENTS).map(lambda e: f"has(events.{e})"),
        st.tuples(st.sampled_from(EVENTS), st.integers(1, 3)).map(
            lambda t: f"has(events.{t[0]}) && events.{t[0]}.count >= {t[1]}"
        ),
        st.tuples(st.sampled_from(KEYS), st.integers(0, 2)).map(
            lambda t: f"person.{t[0]} == {t[1]}"  # an error (false) while the key is absent
        ),
        st.tuples(st.sampled_from(FLOWS), st.sampled_from(["active", "completed", "exited"])).map(
            lambda t: f'has(flows.{t[0]}) && flows.{t[0]} == "{t[1]}"'
        ),
        st.sampled_from(EVENTS).map(lambda e: f'!("{e}" in events)'),
    ]
    if with_segments:
        options.append(st.just("segments.s0"))
    return st.one_of(options)


def conditions(with_segments=True):
    single = _base_conditions(with_segments)
    return st.one_of(
        single,
        st.tuples(single, single, st.sampled_from(["&&", "||"])).map(
            lambda t: f"({t[0]}) {t[2]} ({t[1]})"
        ),
    )


@st.composite
def flow_definition(draw, identifier):
    n = draw(st.integers(2, 4))
    steps = [f"s{i}" for i in range(n)]
    transitions = []
    for i in range(n - 1):
        t = {
            "identifier": draw(st.sampled_from(["go", "t" + str(i)])),
            "from": steps[i],
            "to": steps[i + 1],
            "type": draw(st.sampled_from(["manual", "automatic"])),
        }
        if draw(st.booleans()):
            t["condition"] = draw(conditions())
        transitions.append(t)
    if n > 2 and draw(st.booleans()):  # a branch from the start step
        t = {"identifier": "go", "from": steps[0], "to": steps[-1], "type": "manual"}
        if draw(st.booleans()):
            t["condition"] = draw(conditions())
        transitions.append(t)
    definition = {
        "identifier": identifier,
        "steps": [{"identifier": s} for s in steps],
        "transitions": transitions,
    }
    if draw(st.booleans()):
        definition["start_when"] = draw(conditions())
    if draw(st.booleans()):  # several start_when true at one write start by priority
        definition["priority"] = draw(st.integers(-2, 2))
    return definition


writes = st.one_of(
    st.tuples(st.just("track"), st.sampled_from(EVENTS)),
    st.tuples(
        st.just("put"), st.dictionaries(st.sampled_from(KEYS), st.integers(0, 2), max_size=2)
    ),
    st.tuples(
        st.just("identify"),
        st.dictionaries(st.sampled_from(KEYS), st.integers(0, 2), max_size=2),
    ),
    st.tuples(st.just("start"), st.sampled_from(FLOWS)),
    st.tuples(st.just("transition"), st.sampled_from(FLOWS), st.sampled_from(["go", "t0", "t1"])),
    st.tuples(st.sampled_from(["pause", "resume", "exit", "restart"]), st.sampled_from(FLOWS)),
)


class Model:
    """The rules, naively: every condition evaluated on every pass."""

    def __init__(self, definitions, segment):
        self.flows = {}
        for d in definitions:
            self.publish(d)
        self.segment = segment
        self.data: dict = {}
        self.events: dict = {}
        self.instances: dict = {}  # flow -> {"state", "steps": {step: state}}
        self.graphs: dict = {}  # flow -> the graph of the version its instance runs
        self.log: list = []
        self.cause = ""

    def publish(self, d):
        steps = [s["identifier"] for s in d["steps"]]
        ts = [
            (t["identifier"], t["from"], t["to"], t["type"], t.get("condition"))
            for t in d["transitions"]
        ]
        incoming = {t[2] for t in ts}
        outgoing = {t[1] for t in ts}
        self.flows[d["identifier"]] = {
            "steps": steps,
            "transitions": ts,
            "start": [s for s in steps if s not in incoming],
            "final": {s for s in steps if s not in outgoing},
            "start_when": d.get("start_when"),
            "priority": d.get("priority", 0),
        }

    def holds(self, text) -> bool:
        variables = {
            "person": self.data,
            "events": self.events,
            "flows": {f: i["state"] for f, i in self.instances.items()},
        }
        try:
            variables["segments"] = {"s0": cel.compile(self.segment).execute(variables) is True}
        except Exception:
            variables["segments"] = {"s0": False}
        try:
            return cel.compile(text).execute(variables) is True
        except Exception:
            return False

    def set_flow(self, flow, state):
        self.log.append(("flow", flow, flow, self.instances[flow]["state"], state, self.cause))
        self.instances[flow]["state"] = state

    def set_step(self, flow, step, state):
        steps = self.instances[flow]["steps"]
        self.log.append(("step", flow, step, steps[step], state, self.cause))
        steps[step] = state

    def activate(self, flow, step):
        if self.instances[flow]["steps"][step] == "active":
            return
        self.set_step(flow, step, "active")
        if step in self.graphs[flow]["final"]:
            self.set_step(flow, step, "completed")

    def take(self, flow, edges):
        sources = dict.fromkeys((a, k) for a, _, k in edges)
        targets = dict.fromkeys((b, k) for _, b, k in edges)
        seen = set()
        for a, kind in sources:
            if a not in seen:
                seen.add(a)
                self.cause = kind
                self.set_step(flow, a, "completed")
        seen = set()
        for b, kind in targets:
            if b not in seen:
                seen.add(b)
                self.cause = kind
                self.activate(flow, b)

    def settle_instance(self, flow) -> bool:
        changed = False
        steps = self.instances[flow]["steps"]
        while True:
            ready = [
                (a, b, "automatic")
                for _, a, b, kind, cond in self.graphs[flow]["transitions"]
                if kind == "automatic"
                and steps[a] == "active"
                and (cond is None or self.holds(cond))
            ]
            if not ready:
                break
            self.take(flow, ready)
            changed = True
        if self.instances[flow]["state"] == "active" and "active" not in steps.values():
            self.set_flow(flow, "completed")
            changed = True
        return changed

    def start(self, flow, cause):
        g = self.graphs[flow] = self.flows[flow]
        self.instances[flow] = {"state": "inactive", "steps": dict.fromkeys(g["steps"], "inactive")}
        self.cause = cause
        self.set_flow(flow, "active")
        for s in g["start"]:
            self.activate(flow, s)
        self.settle_instance(flow)

    def settle(self):
        while True:
            progressed = False
            for flow in sorted(self.flows, key=lambda f: (-self.flows[f]["priority"], f)):
                cond = self.flows[flow]["start_when"]
                if cond and flow not in self.instances and self.holds(cond):
                    self.start(flow, "start_when")
                    progressed = True
            for flow in sorted(self.instances):
                if self.instances[flow]["state"] == "active" and self.settle_instance(flow):
                    progressed = True
            if not progressed:
                return

    def apply(self, op) -> int:
        kind = op[0]
        if kind == "publish":  # not a write of the person: rules see it at their next write
            self.publish(op[1])
            return 200
        if kind == "segment":
            self.segment = op[1]
            return 200
        if kind == "track":
            e = self.events.setdefault(op[1], {"count": 0})
            e["count"] += 1
        elif kind == "put":
            self.data = dict(op[1])
        elif kind == "identify":
            self.data = {**self.data, **op[1]}
        elif kind == "start":
            if op[1] in self.instances:
                return 409
            self.start(op[1], "call")
        elif kind == "transition":
            flow, name = op[1], op[2]
            if flow not in self.instances:
                return 404
            if self.instances[flow]["state"] != "active":
                return 409
            steps = self.instances[flow]["steps"]
            edges = [
                (a, b, "call")
                for t, a, b, _, cond in self.graphs[flow]["transitions"]
                if t == name and steps[a] == "active" and (cond is None or self.holds(cond))
            ]
            if not edges:
                return 409
            self.take(flow, edges)
            self.settle_instance(flow)
        elif kind == "restart":
            flow = op[1]
            if flow not in self.instances:
                return 404
            self.cause = "call"
            if self.instances[flow]["state"] not in ("completed", "exited"):
                self.set_flow(flow, "exited")
            del self.instances[flow]
            self.start(flow, "call")
        else:
            allowed, target = {
                "pause": ({"active"}, "inactive"),
                "resume": ({"inactive"}, "active"),
                "exit": ({"active", "inactive"}, "exited"),
            }[kind]
            flow = op[1]
            if flow not in self.instances:
                return 404
            if self.instances[flow]["state"] not in allowed:
                return 409
            self.cause = "call"
            self.set_flow(flow, target)
        self.settle()
        return 200


def run_engine(env, op) -> int:
    kind = op[0]
    try:
        if kind == "publish":
            flows.publish(env, op[1])
        elif kind == "segment":
            segments.put(env, "s0", {"condition": op[1]})
        elif kind == "track":
            engine.do_track(env, "p", op[1])
        elif kind == "put":
            engine.do_put_person(env, "p", op[1])
        elif kind == "identify":
            engine.do_identify(env, "p", op[1])
        elif kind == "start":
            engine.do_start_flow(env, "p", op[1])
        elif kind == "transition":
            engine.do_transition(env, "p", op[1], op[2])
        elif kind == "restart":
            engine.do_restart(env, "p", op[1])
        else:
            engine.do_flow_action(env, "p", op[1], kind)
    except StepstreamError as e:
        return e.status
    return 200


def assert_agrees(env, model) -> None:
    """The person's instances and the whole log are the model's."""
    snapshot = engine.snapshot(env, "p")
    got = {
        i["flow"]: {"state": i["state"], "steps": {s["identifier"]: s["state"] for s in i["steps"]}}
        for i in snapshot["flows"]
    }
    assert got == model.instances
    rows = StateChange.objects.filter(person__environment=env).order_by("seq")
    log = [
        (r.entity, r.flow_identifier, r.identifier, r.previous_state, r.state, r.cause["kind"])
        for r in rows
    ]
    assert log == model.log


# On PostgreSQL each example's dozens of statements take several times SQLite's time:
# fewer examples there (the engine's logic is the same; its SQL is what differs), and a
# timeout that a loaded machine (both suites side by side in CI) cannot reach.
@pytest.mark.timeout(600)
@pytest.mark.django_db
@settings(
    max_examples=75 if os.environ.get("DATABASE_URL") else 150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    definitions=st.lists(st.sampled_from(FLOWS), min_size=1, max_size=4, unique=True).flatmap(
        lambda ids: st.tuples(*[flow_definition(i) for i in ids])
    ),
    segment=conditions(with_segments=False),
    ops=st.lists(writes, max_size=14),
    republished=st.lists(
        st.tuples(st.integers(0, 14), st.sampled_from(FLOWS).flatmap(flow_definition)),
        max_size=2,
    ),
    resegmented=st.lists(
        st.tuples(st.integers(0, 14), conditions(with_segments=False)), max_size=1
    ),
)
@pytest.mark.slow
def test_engine_agrees_with_the_reference_model(
    definitions, segment, ops, republished, resegmented
):
    from stepstream.trust.tenants import create_project, environment_for_key

    project = create_project("model")
    env = environment_for_key(project["environments"][0]["secret_key"], "secret")
    segments.put(env, "s0", {"condition": segment})
    for d in definitions:
        flows.publish(env, d)
    model = Model(definitions, segment)
    engine.do_put_person(env, "p", {})
    model.settle()
    ops = list(ops)  # new versions and segment changes land between the person's writes
    for at, definition in republished:
        ops.insert(min(at, len(ops)), ("publish", definition))
    for at, condition in resegmented:
        ops.insert(min(at, len(ops)), ("segment", condition))
    for op in ops:
        if op[0] in ("start", "transition", "restart", "pause", "resume", "exit") and (
            op[1] not in model.flows
        ):
            continue
        assert run_engine(env, op) == model.apply(op), op
    assert_agrees(env, model)


# --- limits and timers on a simulated clock ---------------------------------------

AFTER = {"30m": 30, "2h": 120}  # minutes
WINDOWS = {"1h": 60, "3h": 180}


@st.composite
def timed_flow_definition(draw, identifier):
    definition = draw(flow_definition(identifier))
    for t in definition["transitions"]:
        if t["type"] == "automatic" and draw(st.integers(0, 3)):
            t["after"] = draw(st.sampled_from(sorted(AFTER)))
    return definition


timed_writes = st.one_of(
    st.tuples(st.just("track"), st.sampled_from(EVENTS)),
    st.tuples(
        st.just("put"), st.dictionaries(st.sampled_from(KEYS), st.integers(0, 2), max_size=2)
    ),
    st.tuples(st.just("start"), st.sampled_from(FLOWS)),
    st.tuples(st.just("transition"), st.sampled_from(FLOWS), st.sampled_from(["go", "t0", "t1"])),
    st.tuples(st.sampled_from(["pause", "resume", "exit"]), st.sampled_from(FLOWS)),
    st.tuples(st.just("wait"), st.sampled_from([10, 30, 60, 120])),
    # the server is down for a while and starts again: what fell due meanwhile fires then
    st.tuples(st.just("restart_server"), st.sampled_from([30, 120, 240])),
)


def restart_server() -> None:
    """What a server that starts again does, in this process: it knows no compiled flow
    version or environment's rules yet, and its firing loop's first pass runs everything
    overdue (engine.firing.fire_due) until nothing is left."""
    from stepstream.engine import flows as flow_versions
    from stepstream.engine import rules
    from stepstream.engine.firing import fire_due

    for memo in (flow_versions._graphs, rules._cache, rules._compiled):
        memo.clear()
    while fire_due()[0]:
        pass


class TimedModel(Model):
    """The model with time (minutes): `after` counts from a step's latest activation,
    limits count the starts of current instances in a sliding window, a start_when
    start a limit holds back is deferred until the window allows it."""

    def __init__(self, definitions, segment, limit):
        super().__init__(definitions, segment)
        self.now = 0
        self.limit = limit  # (flows or None for "*", max, window minutes)
        self.activated: dict = {}  # (flow, step) -> latest activation
        self.created: dict = {}  # flow -> its instance's start
        self.deferred: dict = {}  # flow -> due
        self.after = {
            d["identifier"]: {
                (t["from"], t["to"]): AFTER[t["after"]] for t in d["transitions"] if "after" in t
            }
            for d in definitions
        }

    def publish(self, d):  # not used with time: versions stay
        super().publish(d)

    def set_step(self, flow, step, state):
        super().set_step(flow, step, state)
        if state == "active":
            self.activated[(flow, step)] = self.now

    def held(self, flow):
        flows, most, window = self.limit
        if flows is not None and flow not in flows:
            return None
        times = sorted(
            t
            for f, t in self.created.items()
            if f in self.instances and (flows is None or f in flows) and t > self.now - window
        )
        if len(times) >= most:
            return times[len(times) - most] + window
        return None

    def start(self, flow, cause):
        self.deferred.pop(flow, None)
        self.created[flow] = self.now
        super().start(flow, cause)

    def settle_instance(self, flow) -> bool:
        changed = False
        steps = self.instances[flow]["steps"]
        after = self.after.get(flow, {})
        while True:
            ready = [
                (a, b, "timer" if (a, b) in after else "automatic")
                for _, a, b, kind, cond in self.graphs[flow]["transitions"]
                if kind == "automatic"
                and steps[a] == "active"
                and ((a, b) not in after or self.activated[(flow, a)] + after[(a, b)] <= self.now)
                and (cond is None or self.holds(cond))
            ]
            if not ready:
                break
            self.take(flow, ready)
            changed = True
        if self.instances[flow]["state"] == "active" and "active" not in steps.values():
            self.set_flow(flow, "completed")
            changed = True
        return changed

    def order(self):
        return sorted(self.flows, key=lambda f: (-self.flows[f]["priority"], f))

    def settle(self):
        while True:
            progressed = False
            for flow in self.order():
                cond = self.flows[flow]["start_when"]
                if cond and flow not in self.instances and self.holds(cond):
                    if flow in self.deferred:
                        continue
                    free_at = self.held(flow)
                    if free_at is not None:
                        self.deferred[flow] = free_at
                        continue
                    self.start(flow, "start_when")
                    progressed = True
            for flow in sorted(self.instances):
                if self.instances[flow]["state"] == "active" and self.settle_instance(flow):
                    progressed = True
            if not progressed:
                return

    def apply(self, op) -> int:
        if op[0] == "start" and op[1] not in self.instances and self.held(op[1]) is not None:
            return 409
        if op[0] not in ("wait", "restart_server"):  # a restart: the wait it was down
            return super().apply(op)
        self.now += op[1]
        for flow in [f for f in self.order() if self.deferred.get(f, self.now + 1) <= self.now]:
            cond = self.flows[flow]["start_when"]
            if not cond or flow in self.instances or not self.holds(cond):
                del self.deferred[flow]
                continue
            free_at = self.held(flow)
            if free_at is not None:
                self.deferred[flow] = free_at
                continue
            self.start(flow, "start_when")
        for flow in sorted(self.instances):
            if self.instances[flow]["state"] == "active":
                self.settle_instance(flow)
        self.settle()
        return 200


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    definitions=st.lists(st.sampled_from(FLOWS), min_size=1, max_size=3, unique=True).flatmap(
        lambda ids: st.tuples(*[timed_flow_definition(i) for i in ids])
    ),
    segment=conditions(with_segments=False),
    limit=st.tuples(
        st.one_of(st.none(), st.lists(st.sampled_from(FLOWS), min_size=1, unique=True)),
        st.integers(1, 2),
        st.sampled_from(sorted(WINDOWS)),
    ),
    ops=st.lists(timed_writes, min_size=3, max_size=16),
)
@pytest.mark.slow
def test_engine_agrees_with_the_model_on_limits_and_timers(definitions, segment, limit, ops):
    """Time moves on a simulated clock (engine.clock); after each wait the firing loop's
    action runs, as a server's loop would within 2 s; a server restart after a downtime
    forgets what the process compiled and runs the loop's pass over what is overdue."""
    from datetime import timedelta

    from django.utils import timezone

    from stepstream.engine import clock, limits
    from stepstream.trust.tenants import create_project, environment_for_key

    project = create_project("model")
    env = environment_for_key(project["environments"][0]["secret_key"], "secret")
    segments.put(env, "s0", {"condition": segment})
    for d in definitions:
        flows.publish(env, d)
    published = [d["identifier"] for d in definitions]
    flows_of, most, window = limit
    flows_of = None if flows_of is None else [f for f in flows_of if f in published] or None
    body = {"flows": flows_of or "*", "max": most, "window": window}
    limits.put(env, "cap", body)
    model = TimedModel(
        definitions, segment, (None if flows_of is None else set(flows_of), most, WINDOWS[window])
    )
    base = timezone.now()
    with clock.at(base):
        engine.do_put_person(env, "p", {})
    model.settle()
    for op in ops:
        if op[0] not in ("track", "put", "wait", "restart_server"):  # a flow the run published
            op = (op[0], published[FLOWS.index(op[1]) % len(published)], *op[2:])
        expected = model.apply(op)
        with clock.at(base + timedelta(minutes=model.now)):
            if op[0] == "wait":
                got = engine.do_fire(env, "p") and 200
            elif op[0] == "restart_server":
                restart_server()
                got = 200
            else:
                got = run_engine(env, op)
        assert got == expected, op
    assert_agrees(env, model)
