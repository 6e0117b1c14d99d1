"""The flow engine: the only code that changes a flow or step state.

Each `do_*` action locks the person, computes the new states in memory,
writes the changed rows and their state-change log rows in one transaction,
and hands the log rows to delivery after commit (Zulip's do_* pattern). The
person lock serializes every change of one person, which is what makes `seq`
gap-free and lets concurrent callers of the same transition get one winner
and one 409.

Each `do_*` action is run by group commit (stepstream/engine/groupcommit.py):
outside a caller's own transaction it becomes a job, run with other people's
jobs in one transaction, in a savepoint of its own, and answered after that
transaction commits.

Every action works through a `_Session`: one person's transaction. After the
action's own change, the session evaluates the rules (docs/rules.md) in the
same transaction: flows whose `start_when` became true start, automatic
transitions whose condition became true run, until nothing changes. Only the
conditions that read something this transaction changed are evaluated
(docs/architecture.md, "Rules"); the outcome is the same as evaluating all.
"""

import uuid
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from stepstream import text
from stepstream.engine import conditions, flows, groupcommit, people, rules, store
from stepstream.engine.log import Recorder, epoch
from stepstream.engine.store import InstanceRow, PersonRow, StepRow
from stepstream.errors import Conflict, Invalid, NotFound
from stepstream.models import Environment, FlowInstance, Person, StepInstance

MAX_AUTOMATIC_ROUNDS = 10_000
VIA = ("rest", "websocket", "admin")


class _Run:
    """One instance's states during a transaction, and the changes made to them."""

    def __init__(
        self, session: "_Session", instance: InstanceRow, steps: list[StepRow], new: bool = False
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
        if identifier in self.graph.final:
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
                if self.active(a) and (cond is None or session.holds(cond))
            ]
            if not ready:
                break
            self.take([(a, b) for a, b, _ in ready], [session.automatic(tid) for *_, tid in ready])
            changed = True
        if self.instance.state == "active" and not any(s.state == "active" for s in self.steps):
            self.set_flow("completed")
            changed = True
        return changed

    def save(self) -> None:
        if self.new:
            store.insert_instance(self.person.pk, self.instance, self.steps, self.recorder.now)
            return
        if self.flow_changed or self.changed_steps:
            store.update_states(
                self.instance if self.flow_changed else None, list(self.changed_steps.values())
            )


class _Session:
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
        self.trigger = trigger or {}  # {"event": NAME} or {"data": True}
        self.recorder = Recorder(person)
        # everything is evaluated for a new person, and for one settled under older rules
        self.everything = created or person.rules_version != person.env_rules_version
        self.dirty: dict[str, set[str | None]] = {}
        self.fresh: set[str] = set()  # flows changed in this transaction
        self.runs: dict[str, _Run] = {}
        self._instances: dict[str, tuple[Any, ...]] | None = None
        self._values: dict[str, Any] = {}
        self._context: conditions.Variables | None = None
        self._context_roots: frozenset[str] = frozenset()
        self._rules: rules.EnvRules | None = None
        self._affected: dict[tuple[frozenset[conditions.Dep], int], bool] = {}

    # --- what changed -------------------------------------------------------
    def changed(self, root: str, key: str | None) -> None:
        self.dirty.setdefault(root, set()).add(key)
        if root == "events":
            self._values.pop("events", None)
        self._context = None

    def flow_state_changed(self, run: _Run) -> None:
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

    def run(self, flow_identifier: str) -> _Run | None:
        run = self.runs.get(flow_identifier)
        if run is None:
            found = store.read_instance(self.person.pk, flow_identifier)
            if found is None:
                return None
            run = self.runs[flow_identifier] = _Run(self, *found)
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
        if self._context is None or not cond.roots <= self._context_roots:
            roots = frozenset(cond.roots | self._context_roots)
            self._context = conditions.context({r: self._value(r) for r in roots})
            self._context_roots = roots
        return cond.evaluate(self._context)

    def affected(self, deps: frozenset[conditions.Dep]) -> bool:
        if self.everything:
            return True
        key = (deps, sum(len(v) for v in self.dirty.values()))  # dirty only grows
        found = self._affected.get(key)
        if found is None:
            found = self._affected[key] = rules.affected(deps, self.dirty, self.rules)
        return found

    # --- acting -------------------------------------------------------------
    def start(self, flow_identifier: str, flow_id: int, cause: dict[str, Any]) -> _Run:
        graph = flows.graph(flow_id)
        instance = InstanceRow(uuid.uuid4(), flow_id, flow_identifier, "inactive")
        steps = [
            StepRow(uuid.uuid4(), identifier, name, i)
            for i, (identifier, name) in enumerate(graph.steps)
        ]
        run = self.runs[flow_identifier] = _Run(self, instance, steps, new=True)
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

        Each round looks at start_when flows in identifier order, then at
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
                    if graph.start_when is None or not self.affected(graph.start_when.deps):
                        continue
                    if flow in self.instances():
                        continue
                    if self.holds(graph.start_when):
                        self.start(flow, flow_id, {"kind": "start_when", **self.trigger})
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


def _describe(run: _Run, seq: int) -> dict[str, Any]:
    return describe_instance(run.instance, run.graph.version, run.steps, seq)


def _session(environment: Environment, person_key: str, via: str) -> _Session:
    return _Session(environment, store.lock_person(environment.pk, person_key), via)


@groupcommit.grouped
@store.retried
def do_start_flow(
    environment: Environment, person_key: str, flow_identifier: str, via: str = "admin"
) -> dict[str, Any]:
    with store.writing():
        session = _session(environment, person_key, via)
        flow_id = flows.latest_id(environment, flow_identifier)
        if store.has_instance(session.person.pk, flow_identifier):
            raise Conflict(f"Person '{person_key}' already has flow '{flow_identifier}'.")
        run = session.start(flow_identifier, flow_id, session.call("start"))
        session.settle()
        try:
            with transaction.atomic():
                seq = session.save()
        except IntegrityError:
            raise Conflict(f"Person '{person_key}' already has flow '{flow_identifier}'.") from None
        return _describe(run, seq)


def _load(
    session: _Session,
    person_key: str,
    flow_identifier: str,
    found: tuple[InstanceRow, list[StepRow]] | None = None,
) -> _Run:
    """The person's instance of the flow; `found` is what store.read_instance gave, if read."""
    if found is not None:
        session.runs[flow_identifier] = _Run(session, *found)
    run = session.run(flow_identifier)
    if run is None:
        raise NotFound(f"Person '{person_key}' has no instance of flow '{flow_identifier}'.")
    return run


@groupcommit.grouped
@store.retried
def do_transition(
    environment: Environment,
    person_key: str,
    flow_identifier: str,
    transition: str,
    via: str = "admin",
) -> dict[str, Any]:
    with store.writing():
        person, found = store.lock_person_reading(environment.pk, person_key, flow_identifier)
        session = _Session(environment, person, via)
        run = _load(session, person_key, flow_identifier, found)
        if run.instance.state != "active":
            raise Conflict(
                f"Flow '{flow_identifier}' is {run.instance.state}; "
                "only an active flow takes transitions."
            )
        eligible = [t for t in run.graph.guarded.get(transition, ()) if run.active(t[0])]
        edges = [(a, b) for a, b, cond in eligible if cond is None or session.holds(cond)]
        if not edges:
            if eligible:
                # every one has a condition (one without would have given an edge)
                texts = list(
                    dict.fromkeys(cond.text for _, _, cond in eligible if cond is not None)
                )
                raise Conflict(
                    f"Transition '{transition}' of flow '{flow_identifier}' is not allowed now: "
                    + "; ".join(f"its condition `{t}` is false" for t in texts)
                    + "."
                )
            raise Conflict(
                f"No active step of flow '{flow_identifier}' has transition '{transition}'."
            )
        session.recorder.cause = session.call("transition", transition=transition)
        run.take(edges)
        run.settle()
        session.settle()
        return _describe(run, session.save())


_FLOW_MOVES = {
    "pause": ({"active"}, "inactive"),
    "resume": ({"inactive"}, "active"),
    "exit": ({"active", "inactive"}, "exited"),
}


@groupcommit.grouped
@store.retried
def do_flow_action(
    environment: Environment,
    person_key: str,
    flow_identifier: str,
    action: str,
    via: str = "admin",
) -> dict[str, Any]:
    """Pause, resume or exit: the flow's state changes, its steps keep theirs."""
    allowed, target = _FLOW_MOVES[action]
    with store.writing():
        session = _session(environment, person_key, via)
        run = _load(session, person_key, flow_identifier)
        if run.instance.state not in allowed:
            raise Conflict(f"Cannot {action} flow '{flow_identifier}': it is {run.instance.state}.")
        session.recorder.cause = session.call(action)
        run.set_flow(target)
        session.settle()
        return _describe(run, session.save())


@groupcommit.grouped
@store.retried
def do_restart(
    environment: Environment, person_key: str, flow_identifier: str, via: str = "admin"
) -> dict[str, Any]:
    """Replaces the person's instance with a new one of the latest version.

    The old instance becomes `exited` first (unless completed or exited);
    its rows are then removed (a person has one current instance per flow),
    its log rows stay.
    """
    with store.writing():
        session = _session(environment, person_key, via)
        old = _load(session, person_key, flow_identifier)
        cause = session.call("restart")
        if old.instance.state not in ("completed", "exited"):
            session.recorder.cause = cause
            old.set_flow("exited")
        store.delete_instance(old.instance.id)
        del session.runs[flow_identifier]
        flow_id = flows.latest_id(environment, flow_identifier)
        run = session.start(flow_identifier, flow_id, cause)
        session.settle()
        return _describe(run, session.save())


# --- writes that concern a person without naming a flow ------------------------


def _data_changes(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    return {k for k in old.keys() | new.keys() if old.get(k, _MISSING) != new.get(k, _MISSING)}


_MISSING = object()


@groupcommit.grouped
@store.retried
def do_put_person(
    environment: Environment, person_key: str, data: Any, via: str = "admin"
) -> tuple[dict[str, Any], bool]:
    """Creates or replaces a person's data; (their description, True when created)."""
    people.check_person_key(person_key)
    people.check_data(environment, data)
    with store.writing():
        person, created = store.lock_or_create_person(environment.pk, person_key, data)
        session = _Session(environment, person, via, {"data": True}, created)
        if not created:
            old = store.person_data(person.pk)
            changes = _data_changes(old, data)
            if changes:
                store.write_person_data(person.pk, data)
            for key in changes:
                session.changed("person", key)
        session.set_data(data)
        session.settle()
        session.save()
    return {"person_key": person_key, "data": data}, created


@groupcommit.grouped
@store.retried
def do_identify(
    environment: Environment, person_key: str, data: object, via: str = "admin"
) -> dict[str, Any]:
    """Creates the person, or merges top-level keys of `data` into theirs; their data."""
    people.check_person_key(person_key)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise Invalid("data must be a JSON object.")
    with store.writing():
        person, created = store.lock_or_create_person(
            environment.pk, person_key, data, lambda d: people.check_data(environment, d)
        )
        session = _Session(environment, person, via, {"data": True}, created)
        merged = data
        if not created and data:
            old = store.person_data(person.pk)
            merged = {**old, **data}
            changes = _data_changes(old, merged)
            if changes:
                people.check_data(environment, merged)
                store.write_person_data(person.pk, merged)
            for key in changes:
                session.changed("person", key)
        elif not created:
            merged = store.person_data(person.pk)
        session.set_data(merged)
        session.settle()
        session.save()
    return merged


def check_event_name(name: object) -> str:
    return text.validate_identifier(name, "event")


@groupcommit.grouped
@store.retried
def do_track(
    environment: Environment,
    person_key: str,
    event: object,
    properties: object = None,
    via: str = "admin",
) -> dict[str, Any]:
    """Counts one tracked event for the person (created with {} if unknown), then the rules."""
    people.check_person_key(person_key)
    event = check_event_name(event)  # the same string, once checked
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise Invalid("properties must be a JSON object.")
    text.check(properties, "properties")
    people.check_sizes(properties, "properties")
    most_names = settings.STEPSTREAM["MAX_EVENT_NAMES"]
    with store.writing():
        person, created = store.lock_or_create_person(
            environment.pk, person_key, {}, lambda d: people.check_data(environment, d)
        )
        session = _Session(environment, person, via, {"event": event}, created)
        count = store.bump_event(person.pk, event, session.recorder.now, properties)
        if count == 1 and store.tracked_event_names(person.pk) > most_names:
            raise Invalid(  # rolls the whole write back
                f"Person '{person_key}' has tracked {most_names} different event names, "
                "the most one person may have (STEPSTREAM_MAX_EVENT_NAMES); track a known name."
            )
        session.changed("events", event)
        session.settle()
        seq = session.save()
    return {"person_key": person_key, "event": event, "count": count, "seq": seq}


def snapshot(environment: Environment, person_key: str) -> dict[str, Any]:
    """A consistent view of a person: every instance and the seq it reflects."""
    with store.writing():
        person = people.locked(environment, person_key)
        return {
            "person_key": person.person_key,
            "seq": person.last_seq,
            "flows": instances_of(person),
            "epoch": epoch(person.pk),
        }


def instances_of(person: Person) -> list[dict[str, Any]]:
    instances = (
        FlowInstance.objects.filter(person=person)
        .select_related("flow")
        .prefetch_related("steps")
        .order_by("created_at", "id")
    )
    return [describe_instance(i, i.flow.version, i.steps.all(), person.last_seq) for i in instances]
