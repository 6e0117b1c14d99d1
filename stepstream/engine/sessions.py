"""One person's transaction: the runs of their instances and the rules settled in it.

Every engine action (stepstream.engine.actions) works through a `Session`:
after the action's own change, the session evaluates the rules
(docs/rules.md) in the same transaction: flows whose `start_when` became
true start, automatic transitions whose condition became true run, until
nothing changes. Only the conditions that read something this transaction
changed are evaluated (docs/architecture.md, "Rules"); the outcome is the
same as evaluating all.
"""

import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from stepstream.engine import conditions, flows, pages, rules, store, timers
from stepstream.engine.changes import timestamp
from stepstream.engine.log import Recorder
from stepstream.engine.rules import LimitRule
from stepstream.engine.store import InstanceRow, PersonRow, StepRow
from stepstream.errors import NotFound
from stepstream.models import Environment, FlowInstance, StepInstance

MAX_AUTOMATIC_ROUNDS = 10_000
VIA = ("rest", "websocket", "admin")


class Run:
    """One instance's states during a transaction, and the changes made to them."""

    def __init__(
        self, session: "Session", instance: InstanceRow, steps: list[StepRow], new: bool = False
    ) -> None:
        self.session = session
        self.person = session.person
        self.instance = instance
        self.graph = flows.graph(instance.flow_id)
        self.steps = steps
        self.by_identifier = {s.identifier: s for s in steps}
        self.changed_steps: dict[uuid.UUID, StepRow] = {}
        self.flow_changed = False
        self.new = new
        self.recorder = session.recorder
        self.activated_now: set[str] = set()  # steps made active in this transaction
        self._timers: dict[tuple[str, str], timers.TimerRow] | None = None
        read = session.timer_rows
        if read is not None and not new and self.graph.timed:  # read already, under the lock
            self._timers = {
                (t.from_step, t.transition): t
                for t in read
                if t.kind == timers.TIMER and t.instance_id == instance.id
            }

    def set_flow(self, state: str, previous: str | None = None) -> None:
        previous = previous or self.instance.state
        self.instance.state = state
        self.flow_changed = True
        flow = self.instance.flow_identifier
        self.recorder.change(
            "flow", self.instance.id, flow, previous, state, flow, self.instance.id
        )
        self.session.flow_state_changed(self)

    def set_step(self, identifier: str, state: str) -> None:
        step = self.by_identifier[identifier]
        previous = step.state
        step.move(state, self.recorder.now)
        if state == "active":
            self.activated_now.add(identifier)
        self.changed_steps[step.id] = step
        flow = self.instance.flow_identifier
        self.recorder.change("step", step.id, identifier, previous, state, flow, self.instance.id)
        self.session.fresh.add(flow)

    def active(self, identifier: str) -> bool:
        return self.by_identifier[identifier].state == "active"

    def activate(self, identifier: str) -> None:
        if self.active(identifier):
            return
        self.set_step(identifier, "active")
        # a final step with content stays active until completed (complete_step)
        if identifier in self.graph.completes_at_once:
            self.set_step(identifier, "completed")

    def take(
        self,
        edges: Sequence[tuple[str, str]],
        causes: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Runs transitions together: all `from` steps complete, then each `to` activates once.

        `causes`, when given, is each edge's cause, in the same order.
        """
        recorder = self.recorder
        sources: dict[str, int] = {}
        targets: dict[str, int] = {}
        for i, (a, b) in enumerate(edges):
            sources.setdefault(a, i)
            targets.setdefault(b, i)
        for source, i in sources.items():
            if causes:
                recorder.cause = causes[i]
            self.set_step(source, "completed")
        for target, i in targets.items():
            if causes:
                recorder.cause = causes[i]
            self.activate(target)

    def settle(self) -> bool:
        """Runs automatic transitions to a fixed point, then completes a finished flow.

        True when anything changed. A transition's condition is evaluated
        against the person as they are when the round starts.
        """
        session = self.session
        changed = False
        for _ in range(MAX_AUTOMATIC_ROUNDS):
            ready = [
                (a, b, tid)
                for a, b, tid, cond in self.graph.auto_rules
                if self.active(a) and self._due(a, b, tid) and (cond is None or session.holds(cond))
            ]
            if not ready:
                break
            self.take(
                [(a, b) for a, b, _ in ready], [self._cause(a, b, tid) for a, b, tid in ready]
            )
            changed = True
        if self.instance.state == "active" and not any(s.state == "active" for s in self.steps):
            self.set_flow("completed")
            changed = True
        return changed

    # --- timers (docs/rules.md, "Timers") ------------------------------------
    def timers(self) -> dict[tuple[str, str], timers.TimerRow]:
        """(from, transition) -> this instance's timer rows (none for a new one)."""
        if self._timers is None:
            self._timers = (
                {} if self.new or not self.graph.timed else timers.of_instance(self.instance.id)
            )
        return self._timers

    def _due(self, a: str, b: str, tid: str) -> bool:
        if (a, b, tid) not in self.graph.timed:
            return True
        row = self.timers().get((a, tid))
        return row is not None and row.due_at <= self.recorder.now

    def _cause(self, a: str, b: str, tid: str) -> dict[str, Any]:
        if (a, b, tid) not in self.graph.timed:
            return self.session.automatic(tid)
        return {
            "kind": "timer",
            "transition": tid,
            "due_at": timestamp(self.timers()[(a, tid)].due_at),
        }

    def _sync_timers(self) -> None:
        """A timer row for each `after` transition leaving an active step of an active
        instance, and none else: written with the change that makes it so."""
        existing = self.timers()
        wanted: dict[tuple[str, str], int] = {}
        if self.instance.state == "active":
            for (a, _, tid), seconds in self.graph.timed.items():
                if self.active(a):
                    wanted.setdefault((a, tid), seconds)
        gone = [row.id for key, row in existing.items() if key not in wanted]
        timers.delete(gone)
        self.session.deleted_timers.update(gone)
        added: list[tuple[str, str, datetime]] = []
        for (a, tid), seconds in wanted.items():
            if (a, tid) in existing:
                continue
            step = self.by_identifier[a]
            since = step.last_activated_at or step.activated_at  # the latest activation
            if a in self.activated_now or since is None:
                since = self.recorder.now
            added.append((a, tid, since + timedelta(seconds=seconds)))
        timers.add_timers(self.person.pk, self.instance.id, self.instance.flow_identifier, added)
        self._timers = None

    def save(self) -> None:
        if self.new:
            store.insert_instance(self.person.pk, self.instance, self.steps, self.recorder.now)
        elif self.flow_changed or self.changed_steps:
            store.update_states(
                self.instance if self.flow_changed else None, list(self.changed_steps.values())
            )
        if self.graph.timed and (self.new or self.flow_changed or self.changed_steps):
            self._sync_timers()


class Session:
    """One person's write transaction: their changes, and the rules those changes set off."""

    def __init__(
        self,
        environment: Environment,
        person: PersonRow,
        via: str = "admin",
        trigger: dict[str, Any] | None = None,
        created: bool = False,
    ):
        if via not in VIA:
            raise ValueError(f"via must be one of {VIA}")
        self.environment = environment
        self.person = person
        self.via = via
        self.trigger = trigger or {}  # {"event": NAME}, {"data": True} or {"page": True}
        self.recorder = Recorder(person)
        # everything is evaluated for a new person, and for one settled under older rules
        self.everything = created or person.rules_version != person.env_rules_version
        self.dirty: dict[str, set[str | None]] = {}
        self.fresh: set[str] = set()  # flows changed in this transaction
        self.runs: dict[str, Run] = {}
        self._instances: dict[str, tuple[Any, ...]] | None = None
        self._values: dict[str, Any] = {}
        self._context: conditions.Variables | None = None
        self._context_roots: frozenset[str] = frozenset()
        self._rules: rules.EnvRules | None = None
        self._affected: dict[tuple[frozenset[conditions.Dep], int], bool] = {}
        self._deferred: dict[str, timers.TimerRow] | None = None
        # the person's timer rows as the firing pass read them under this transaction's
        # lock (None: read when needed), and the ids this transaction deleted
        self.timer_rows: list[timers.TimerRow] | None = None
        self.deleted_timers: set[int] = set()

    # --- what changed -------------------------------------------------------
    def changed(self, root: str, key: str | None) -> None:
        self.dirty.setdefault(root, set()).add(key)
        if root == "events":
            self._values.pop("events", None)
        self._context = None

    def flow_state_changed(self, run: Run) -> None:
        flow = run.instance.flow_identifier
        self.fresh.add(flow)
        if self._instances is not None:
            self._instances[flow] = (run.instance.id, run.instance.flow_id, run.instance.state)
        if "flows" in self._values:
            self._values["flows"][flow] = run.instance.state
        self.dirty.setdefault("flows", set()).add(flow)
        self._context = None

    # --- causes ---------------------------------------------------------------
    def call(self, action: str, **extra: Any) -> dict[str, Any]:
        return {"kind": "call", "via": self.via, "action": action, **extra, **self.trigger}

    def automatic(self, transition: str) -> dict[str, Any]:
        return {"kind": "automatic", "transition": transition, **self.trigger}

    # --- reading the person -------------------------------------------------
    @property
    def rules(self) -> rules.EnvRules:
        if self._rules is None:
            self._rules = rules.env_rules(
                self.environment.pk, self.person.env_rules_version, flows.graph
            )
        return self._rules

    def instances(self) -> dict[str, tuple[Any, ...]]:
        if self._instances is None:
            self._instances = store.instance_states(self.person.pk)
            for flow, run in self.runs.items():
                i = run.instance
                self._instances[flow] = (i.id, i.flow_id, i.state)
        return self._instances

    def run(self, flow_identifier: str) -> Run | None:
        run = self.runs.get(flow_identifier)
        if run is None:
            found = store.read_instance(self.person.pk, flow_identifier)
            if found is None:
                return None
            run = self.runs[flow_identifier] = Run(self, *found)
        return run

    def _ready(self, flow: str, active_steps: Collection[str]) -> bool:
        graph = flows.graph(self.instances()[flow][1])
        return any(
            a in active_steps and (cond is None or self.holds(cond))
            for a, _, _, cond in graph.auto_rules
        )

    def set_data(self, data: dict[str, Any]) -> None:
        self._values["person"] = data
        self._context = None

    def _value(self, root: str) -> Any:
        if root in self._values:
            return self._values[root]
        value: object
        if root == "person":
            value = store.person_data(self.person.pk)
        elif root == "events":
            value = store.tracked_events(self.person.pk)
        elif root == "flows":
            value = {flow: row[2] for flow, row in self.instances().items()}
        elif root == "now":
            value = self.recorder.now
        elif root == "page":  # None before any page: then the variable is absent
            value = pages.read(self.person.pk)
        else:  # segments: each evaluated against the rest
            needed: set[str] = set()
            for cond in self.rules.segments.values():
                needed |= cond.roots
            base = conditions.context({r: self._value(r) for r in needed})
            value = {name: cond.evaluate(base) for name, cond in self.rules.segments.items()}
        if root != "segments":  # segments are recomputed with each new context
            self._values[root] = value
        return value

    def holds(self, cond: conditions.Condition) -> bool:
        """The condition's value for the person now; an evaluation error is false."""
        return cond.evaluate(self.variables(cond))

    def variables(self, cond: conditions.Condition) -> conditions.Variables:
        """The person's variables now, with every root `cond` reads."""
        if self._context is None or not cond.roots <= self._context_roots:
            roots = frozenset(cond.roots | self._context_roots)
            values = {r: self._value(r) for r in roots}
            if values.get("page", 0) is None:
                del values["page"]
            self._context = conditions.context(values)
            self._context_roots = roots
        return self._context

    def affected(self, deps: frozenset[conditions.Dep]) -> bool:
        if self.everything:
            return True
        key = (deps, sum(len(v) for v in self.dirty.values()))  # dirty only grows
        found = self._affected.get(key)
        if found is None:
            found = self._affected[key] = rules.affected(deps, self.dirty, self.rules)
        return found

    # --- limits (docs/rules.md, "Limits") ----------------------------------------
    def held_back(self, flow: str) -> tuple[LimitRule, datetime] | None:
        """The first limit that allows no start of `flow` now, and when it next does."""
        now = self.recorder.now
        for limit in self.rules.limits_of(flow):
            window = timedelta(seconds=limit.window_seconds)
            times = timers.start_times(self.person.pk, limit.flows, now - window)
            times += [now for f, run in self.runs.items() if run.new and limit.covers(f)]
            if len(times) >= limit.max:
                times.sort()
                return limit, times[len(times) - limit.max] + window
        return None

    def deferred(self) -> dict[str, timers.TimerRow]:
        if self._deferred is None:
            self._deferred = timers.deferred(self.person.pk) if self.rules.limits else {}
        return self._deferred

    def _start_when(self, flow: str, flow_id: int, cause: dict[str, Any]) -> bool:
        """Starts a flow whose start_when is true, unless a limit defers it; True if started."""
        if self.rules.limits:
            if flow in self.deferred():
                return False  # its deferred start looks again when the window allows
            held = self.held_back(flow)
            if held is not None:
                limit, free_at = held
                timers.defer(self.person.pk, flow, limit.identifier, free_at)
                self._deferred = None
                return False
        self.start(flow, flow_id, cause)
        return True

    # --- acting -------------------------------------------------------------
    def start(self, flow_identifier: str, flow_id: int, cause: dict[str, Any]) -> Run:
        if self.rules.limits and flow_identifier in self.deferred():  # started some other way
            timers.delete([self.deferred()[flow_identifier].id])
            self._deferred = None
        graph = flows.graph(flow_id)
        instance = InstanceRow(uuid.uuid4(), flow_id, flow_identifier, "inactive")
        steps = [
            StepRow(uuid.uuid4(), identifier, name, i)
            for i, (identifier, name) in enumerate(graph.steps)
        ]
        run = self.runs[flow_identifier] = Run(self, instance, steps, new=True)
        if self._instances is not None:
            self._instances[flow_identifier] = (instance.id, flow_id, "inactive")
        self.recorder.cause = cause
        run.set_flow("active", previous="inactive")
        for identifier in graph.start:
            run.activate(identifier)
        run.settle()
        return run

    def settle(self) -> None:
        """Rules to a fixed point: start_when flows start, then automatic transitions run.

        Each round looks at start_when flows in priority order (higher first, then
        identifier), then at
        active instances in flow identifier order; a condition is evaluated
        only if something it reads changed in this transaction (or its
        instance did), since every other one was false when the person was
        last settled and still is.
        """
        for _ in range(MAX_AUTOMATIC_ROUNDS):
            progressed = False
            if self.everything or self.dirty or self.rules.uses_now:
                for flow, flow_id in self.rules.starters:
                    graph = flows.graph(flow_id)
                    window = self.rules.windows.get(flow)
                    if window is not None and not rules.inside(window, self.recorder.now):
                        continue
                    if graph.start_when is None or (
                        window is None and not self.affected(graph.start_when.deps)
                    ):
                        continue
                    if flow in self.instances():
                        continue
                    if self.holds(graph.start_when) and self._start_when(
                        flow, flow_id, {"kind": "start_when", **self.trigger}
                    ):
                        progressed = True
            if self.everything or self.dirty or self.rules.uses_now:
                candidates = sorted(f for f, row in self.instances().items() if row[2] == "active")
            else:
                candidates = sorted(f for f, r in self.runs.items() if r.instance.state == "active")
            # Each instance is looked at in turn, against the person as the instances
            # before it left them (so a later one sees an earlier one complete).
            active_steps = None
            for flow in candidates:
                if flow not in self.fresh and not self.everything:
                    graph = flows.graph(self.instances()[flow][1])
                    if not graph.auto_rules or not self.affected(graph.auto_deps):
                        continue
                run = self.runs.get(flow)
                if run is None:
                    # read in full only an instance with an automatic transition ready to
                    # run; the active steps of those not read cannot change meanwhile
                    if active_steps is None:
                        unread = [f for f in candidates if f not in self.runs]
                        active_steps = store.active_steps(self.person.pk, unread)
                    if not self._ready(flow, active_steps.get(flow, ())):
                        continue
                    run = self.run(flow)
                    assert run is not None  # a candidate's instance exists
                if run.instance.state == "active" and run.graph.auto_rules and run.settle():
                    progressed = True
            if not progressed:
                break
        if self.person.rules_version != self.person.env_rules_version:
            store.set_rules_version(self.person.pk, self.person.env_rules_version)
            self.person.rules_version = self.person.env_rules_version

    def save(self) -> int:
        # by flow, as store.update_states orders steps: shared counter rows lock in one order
        for _, run in sorted(self.runs.items()):
            run.save()
        return self.recorder.save()


def describe_instance(
    instance: InstanceRow | FlowInstance,
    version: int,
    steps: Iterable[StepRow | StepInstance],
    seq: int,
) -> dict[str, Any]:
    return {
        "id": str(instance.id),
        "flow": instance.flow_identifier,
        "version": version,
        "state": instance.state,
        "steps": [
            {"id": str(s.id), "identifier": s.identifier, "name": s.name, "state": s.state}
            for s in steps
        ],
        "seq": seq,
    }


def describe(run: Run, seq: int) -> dict[str, Any]:
    return describe_instance(run.instance, run.graph.version, run.steps, seq)


def session(environment: Environment, person_key: str, via: str) -> Session:
    return Session(environment, store.lock_person(environment.pk, person_key), via)


def load(
    session: Session,
    person_key: str,
    flow_identifier: str,
    found: tuple[InstanceRow, list[StepRow]] | None = None,
) -> Run:
    """The person's instance of the flow; `found` is what store.read_instance gave, if read."""
    if found is not None:
        session.runs[flow_identifier] = Run(session, *found)
    run = session.run(flow_identifier)
    if run is None:
        raise NotFound(f"Person '{person_key}' has no instance of flow '{flow_identifier}'.")
    return run
