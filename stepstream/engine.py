"""The flow engine: the only code that changes a flow or step state.

Each `do_*` action locks the person, computes the new states in memory,
writes the changed rows and their state-change log rows in one transaction,
and hands the log rows to delivery after commit (Zulip's do_* pattern). The
person lock serializes every change of one person, which is what makes `seq`
gap-free and lets concurrent callers of the same transition get one winner
and one 409.
"""

import uuid

from django.db import IntegrityError, transaction

from stepstream import flows, people, store
from stepstream.errors import Conflict
from stepstream.log import Recorder, epoch
from stepstream.models import Environment, FlowInstance, Person
from stepstream.store import InstanceRow, PersonRow, StepRow

MAX_AUTOMATIC_ROUNDS = 10_000


class _Run:
    """One instance's states during a transaction, and the changes made to them."""

    def __init__(self, person: PersonRow, instance: InstanceRow, steps: list[StepRow]):
        self.person = person
        self.instance = instance
        self.graph = flows.graph(instance.flow_id)
        self.steps = steps
        self.by_identifier = {s.identifier: s for s in steps}
        self.changed_steps: dict[uuid.UUID, StepRow] = {}
        self.flow_changed = False
        self.recorder = Recorder(person)

    def set_flow(self, state: str, previous: str | None = None) -> None:
        previous = previous or self.instance.state
        self.instance.state = state
        self.flow_changed = True
        flow = self.instance.flow_identifier
        self.recorder.change(
            "flow", self.instance.id, flow, previous, state, flow, self.instance.id
        )

    def set_step(self, identifier: str, state: str) -> None:
        step = self.by_identifier[identifier]
        previous, step.state = step.state, state
        self.changed_steps[step.id] = step
        flow = self.instance.flow_identifier
        self.recorder.change("step", step.id, identifier, previous, state, flow, self.instance.id)

    def active(self, identifier: str) -> bool:
        return self.by_identifier[identifier].state == "active"

    def activate(self, identifier: str) -> None:
        if self.active(identifier):
            return
        self.set_step(identifier, "active")
        if identifier in self.graph.final:
            self.set_step(identifier, "completed")

    def take(self, edges) -> None:
        """Runs transitions together: all `from` steps complete, then each `to` activates once."""
        for source in dict.fromkeys(a for a, _ in edges):
            self.set_step(source, "completed")
        for target in dict.fromkeys(b for _, b in edges):
            self.activate(target)

    def settle(self) -> None:
        """Runs automatic transitions to a fixed point, then completes a finished flow."""
        for _ in range(MAX_AUTOMATIC_ROUNDS):
            ready = [(a, b) for a, b in self.graph.automatic if self.active(a)]
            if not ready:
                break
            self.take(ready)
        if self.instance.state == "active" and not any(s.state == "active" for s in self.steps):
            self.set_flow("completed")

    def save(self) -> dict:
        store.update_states(
            self.instance if self.flow_changed else None, list(self.changed_steps.values())
        )
        seq = self.recorder.save()
        return describe_instance(self.instance, self.graph.version, self.steps, seq)


def describe_instance(instance, version: int, steps, seq: int) -> dict:
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


def do_start_flow(environment: Environment, person_key: str, flow_identifier: str) -> dict:
    with store.writing():
        person = store.lock_person(environment.pk, person_key)
        flow_id = flows.latest_id(environment, flow_identifier)
        if store.has_instance(person.pk, flow_identifier):
            raise Conflict(f"Person '{person_key}' already has flow '{flow_identifier}'.")
        graph = flows.graph(flow_id)
        instance = InstanceRow(uuid.uuid4(), flow_id, flow_identifier, "inactive")
        steps = [
            StepRow(uuid.uuid4(), identifier, name, i)
            for i, (identifier, name) in enumerate(graph.steps)
        ]
        run = _Run(person, instance, steps)
        run.set_flow("active", previous="inactive")
        for identifier in graph.start:
            run.activate(identifier)
        run.settle()
        try:
            with transaction.atomic():
                store.insert_instance(person.pk, instance, steps, run.recorder.now)
        except IntegrityError:
            raise Conflict(f"Person '{person_key}' already has flow '{flow_identifier}'.") from None
        seq = run.recorder.save()
        return describe_instance(instance, graph.version, steps, seq)


def _load(environment: Environment, person_key: str, flow_identifier: str) -> _Run:
    return _Run(*store.lock_instance(environment.pk, person_key, flow_identifier))


def do_transition(
    environment: Environment, person_key: str, flow_identifier: str, transition: str
) -> dict:
    with store.writing():
        run = _load(environment, person_key, flow_identifier)
        if run.instance.state != "active":
            raise Conflict(
                f"Flow '{flow_identifier}' is {run.instance.state}; "
                "only an active flow takes transitions."
            )
        edges = [(a, b) for a, b in run.graph.by_identifier.get(transition, ()) if run.active(a)]
        if not edges:
            raise Conflict(
                f"No active step of flow '{flow_identifier}' has transition '{transition}'."
            )
        run.take(edges)
        run.settle()
        return run.save()


_FLOW_MOVES = {
    "pause": ({"active"}, "inactive"),
    "resume": ({"inactive"}, "active"),
    "exit": ({"active", "inactive"}, "exited"),
}


def do_flow_action(
    environment: Environment, person_key: str, flow_identifier: str, action: str
) -> dict:
    """Pause, resume or exit: the flow's state changes, its steps keep theirs."""
    allowed, target = _FLOW_MOVES[action]
    with store.writing():
        run = _load(environment, person_key, flow_identifier)
        if run.instance.state not in allowed:
            raise Conflict(f"Cannot {action} flow '{flow_identifier}': it is {run.instance.state}.")
        run.set_flow(target)
        return run.save()


def snapshot(environment: Environment, person_key: str) -> dict:
    """A consistent view of a person: every instance and the seq it reflects."""
    with store.writing():
        person = people.locked(environment, person_key)
        return {
            "person_key": person.person_key,
            "seq": person.last_seq,
            "flows": instances_of(person),
            "epoch": epoch(person.pk),
        }


def instances_of(person: Person) -> list[dict]:
    instances = (
        FlowInstance.objects.filter(person=person)
        .select_related("flow")
        .prefetch_related("steps")
        .order_by("created_at", "id")
    )
    return [describe_instance(i, i.flow.version, i.steps.all(), person.last_seq) for i in instances]
