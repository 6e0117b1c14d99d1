"""Reading a person's state: every instance and the `seq` it reflects, without a lock.

A snapshot is read in one transaction and checked against the person's
`seq` before and after: a write that committed in between moves the seq, and
the read is made again (at most a few times, then under the person's lock),
so a snapshot never mixes two moments and a read never waits on writers.
"""

from typing import Any

from stepstream.engine import db, people, store
from stepstream.engine.log import epoch
from stepstream.engine.sessions import describe_instance
from stepstream.models import Environment, FlowInstance, Person

ATTEMPTS = 3


def snapshot(environment: Environment, person_key: str) -> dict[str, Any]:
    """A consistent view of a person: every instance and the seq it reflects."""
    for _ in range(ATTEMPTS):
        before = people.get(environment, person_key)
        flows = instances_of(before)
        after = Person.objects.filter(pk=before.pk).values_list("last_seq", flat=True).first()
        if after == before.last_seq:
            return _snapshot(before, flows)
        if after is None:  # deleted meanwhile
            raise store.person_not_found(person_key)
    with db.writing():  # a person written without pause: read under their lock
        person = people.locked(environment, person_key)
        return _snapshot(person, instances_of(person))


def _snapshot(person: Person, flows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "person_key": person.person_key,
        "seq": person.last_seq,
        "flows": flows,
        "epoch": epoch(person.pk),
    }


def instances_of(person: Person, flow: str | None = None) -> list[dict[str, Any]]:
    """The person's instances described (`flow`: that flow's only)."""
    found = FlowInstance.objects.filter(person=person)
    if flow is not None:
        found = found.filter(flow_identifier=flow)
    instances = found.select_related("flow").prefetch_related("steps").order_by("created_at", "id")
    return [describe_instance(i, i.flow.version, i.steps.all(), person.last_seq) for i in instances]
