"""The state-change log: written with each change, read for backlog and resume.

Every change gets the person's next `seq` inside the engine's transaction, so
the log is gap-free and only committed rows exist. After commit the rows are
handed to `stepstream.delivery` already encoded, so fan-out never re-encodes.
See docs/architecture.md.
"""

from dataclasses import dataclass
from datetime import UTC

import orjson
from django.db import transaction
from django.utils import timezone

from stepstream.models import Person, StateChange


@dataclass(frozen=True, slots=True)
class Record:
    """A committed change as delivery sees it: routing fields plus the encoded event data."""

    person_id: int
    seq: int
    entity: str
    data: str  # JSON text of the event's `data` object


def _timestamp(dt) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_data(row: StateChange, person_key: str) -> dict:
    return {
        "entity": row.entity,
        "id": str(row.object_id),
        "identifier": row.identifier,
        "state": row.state,
        "previous_state": row.previous_state,
        "seq": row.seq,
        "person_key": person_key,
        "flow": row.flow_identifier,
        "flow_id": str(row.flow_instance_id),
        "occurred_at": _timestamp(row.occurred_at),
    }


def to_record(row: StateChange, person_key: str) -> Record:
    data = orjson.dumps(event_data(row, person_key)).decode()
    return Record(row.person_id, row.seq, row.entity, data)


class Recorder:
    """Collects one transaction's changes for a person locked by the caller."""

    def __init__(self, person: Person):
        self.person = person
        self.rows: list[StateChange] = []
        self.now = timezone.now()

    def change(self, entity, object_id, identifier, previous, state, flow_identifier, flow_id):
        self.rows.append(
            StateChange(
                person_id=self.person.pk,
                seq=self.person.last_seq + len(self.rows) + 1,
                entity=entity,
                object_id=object_id,
                identifier=identifier,
                state=state,
                previous_state=previous,
                flow_identifier=flow_identifier,
                flow_instance_id=flow_id,
                occurred_at=self.now,
            )
        )

    def save(self) -> int:
        """Writes the rows and the person's new seq; delivery runs only after commit."""
        if not self.rows:
            return self.person.last_seq
        StateChange.objects.bulk_create(self.rows)
        self.person.last_seq += len(self.rows)
        Person.objects.filter(pk=self.person.pk).update(last_seq=self.person.last_seq)
        records = [to_record(row, self.person.person_key) for row in self.rows]
        from stepstream.delivery import notify_committed

        transaction.on_commit(lambda: notify_committed(records))
        return self.person.last_seq


def read_since(person: Person, since_seq: int, limit: int = 1000) -> list[dict]:
    rows = StateChange.objects.filter(person=person, seq__gt=since_seq).order_by("seq")[:limit]
    return [event_data(row, person.person_key) for row in rows]


def read_records(
    person_id: int, after: int, upto: int | None = None, entity=None, limit: int = 1000
) -> list[Record]:
    """Committed records of one person with after < seq <= upto, oldest first, at most `limit`."""
    query = StateChange.objects.filter(person_id=person_id, seq__gt=after).select_related("person")
    if upto is not None:
        query = query.filter(seq__lte=upto)
    if entity is not None:
        query = query.filter(entity=entity)
    return [to_record(row, row.person.person_key) for row in query.order_by("seq")[:limit]]


def read_new(after_id: int, limit: int = 5000) -> tuple[int, list[Record]]:
    """Rows with a log id above `after_id`: the tail the delivery hub follows."""
    rows = list(
        StateChange.objects.filter(id__gt=after_id).select_related("person").order_by("id")[:limit]
    )
    last = rows[-1].id if rows else after_id
    return last, [to_record(row, row.person.person_key) for row in rows]


def last_id() -> int:
    row = StateChange.objects.order_by("-id").values_list("id", flat=True).first()
    return row or 0
