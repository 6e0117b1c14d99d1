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

from stepstream import flows, people
from stepstream.errors import Conflict, NotFound
from stepstream.log import Recorder
from stepstream.models import Environment, FlowInstance, Person, StepInstance

MAX_AUTOMATIC_ROUNDS = 10_000


class _Run:
    """One instance's states during a transaction, and the changes made to them."""

    def __init__(self, person: Person, instance: FlowInstance, steps: list[StepInstance]):
        self.person = person
        self.instance = instance
        self.graph = flows.graph(instance.flow_id)
        self.steps = steps
        self.by_identifier = {s.identifier: s for s in steps}
        self.changed_steps: dict[uuid.UUID, StepInstance] = {}
        self.flow_changed = False
        self.recorder = Recorder(person)

    def set_flow(self, state: str, previous: str | None = None) -> None:
        previous = previous or self.instance.state
        self.instance.state = state
        self.flow_changed = True
        self.recorder.change(
            "flow",
            self.instance.id,
            self.instance.flow_identifier,
            previous,
            state,
            self.instance.flow_identifier,
            self.instance.id,
        )

    def set_step(self, identifier: str, state: str) -> None:
        step = self.by_identifier[identifier]
        previous, step.state = step.state, state
        self.changed_steps[step.id] = step
        self.recorder.change(
            "step",
            step.id,
            identifier,
            previous,
            state,
            self.instance.flow_identifier,
            self.instance.id,
        )

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
        if self.changed_steps:
            StepInstance.objects.bulk_update(self.changed_steps.values(), ["state"])
        if self.flow_changed:
            FlowInstance.objects.filter(pk=self.instance.pk).update(state=self.instance.state)
        seq = self.recorder.save()
        return describe_instance(self.instance, self.graph.version, self.steps, seq)


def describe_instance(instance: FlowInstance, version: int, steps, seq: int) -> dict:
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


def _load(person: Person, flow_identifier: str) -> _Run:
    try:
        instance = FlowInstance.objects.get(person=person, flow_identifier=flow_identifier)
    except FlowInstance.DoesNotExist:
        raise NotFound(
            f"Person '{person.person_key}' has no instance of flow '{flow_identifier}'."
        ) from None
    return _Run(person, instance, list(instance.steps.all()))


def do_start_flow(environment: Environment, person_key: str, flow_identifier: str) -> dict:
    with transaction.atomic():
        person = people.locked(environment, person_key)
        flow = flows.latest(environment, flow_identifier)
        if FlowInstance.objects.filter(person=person, flow_identifier=flow_identifier).exists():
            raise Conflict(f"Person '{person_key}' already has flow '{flow_identifier}'.")
        graph = flows.graph(flow.pk)
        instance = FlowInstance(
            id=uuid.uuid4(),
            person=person,
            flow=flow,
            flow_identifier=flow_identifier,
            state="inactive",
        )
        steps = [
            StepInstance(
                id=uuid.uuid4(),
                instance=instance,
                identifier=identifier,
                name=name,
                position=i,
                state="inactive",
            )
            for i, (identifier, name) in enumerate(graph.steps)
        ]
        run = _Run(person, instance, steps)
        run.set_flow("active", previous="inactive")
        for identifier in graph.start:
            run.activate(identifier)
        run.settle()
        try:
            with transaction.atomic():
                instance.save(force_insert=True)
        except IntegrityError:
            raise Conflict(f"Person '{person_key}' already has flow '{flow_identifier}'.") from None
        StepInstance.objects.bulk_create(steps)
        run.changed_steps.clear()
        run.flow_changed = False
        return run.save()


def do_transition(
    environment: Environment, person_key: str, flow_identifier: str, transition: str
) -> dict:
    with transaction.atomic():
        run = _load(people.locked(environment, person_key), flow_identifier)
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
    with transaction.atomic():
        run = _load(people.locked(environment, person_key), flow_identifier)
        if run.instance.state not in allowed:
            raise Conflict(f"Cannot {action} flow '{flow_identifier}': it is {run.instance.state}.")
        run.set_flow(target)
        return run.save()


def snapshot(environment: Environment, person_key: str) -> dict:
    """A consistent view of a person: every instance and the seq it reflects."""
    with transaction.atomic():
        person = people.locked(environment, person_key)
        return {
            "person_key": person.person_key,
            "seq": person.last_seq,
            "flows": instances_of(person),
        }


def instances_of(person: Person) -> list[dict]:
    instances = (
        FlowInstance.objects.filter(person=person)
        .select_related("flow")
        .prefetch_related("steps")
        .order_by("created_at", "id")
    )
    return [describe_instance(i, i.flow.version, i.steps.all(), person.last_seq) for i in instances]
