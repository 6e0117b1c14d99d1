"""Durable timers and deferred starts: the rows a person's transaction keeps, and the reads
of the firing loop (docs/rules.md, "Timers", "Limits").

A timer row exists exactly while its `from` step is active in an active
instance: the engine writes it in the transaction that activates the step
(or resumes the instance) and deletes it in the one that ends that. A
deferred start's row exists while a limit holds back a true `start_when`.
The rows are what the firing loop (stepstream.engine.actions.timers) reads.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.utils.dateparse import parse_datetime

from stepstream.engine import commits
from stepstream.engine.counters import SHARDS
from stepstream.engine.db import cursor, db_datetime, db_uuid
from stepstream.models import FlowInstance, PendingTimer, Person

TIMER = "timer"
_T = PendingTimer._meta.db_table
DEFERRED = "deferred"


@dataclass(slots=True)
class TimerRow:
    id: int
    kind: str
    flow: str
    from_step: str
    transition: str  # a deferred start's: the limit's identifier
    due_at: datetime
    waiting: bool
    instance_id: uuid.UUID | None = None  # a timer's instance (none for a deferred start)
    person_id: int = 0


def _row(t: PendingTimer) -> TimerRow:
    return TimerRow(
        t.pk,
        t.kind,
        t.flow_identifier,
        t.from_step,
        t.transition,
        t.due_at,
        t.waiting,
        t.instance_id,
        t.person_id,
    )


_COLUMNS = (
    "id, kind, flow_identifier, from_step, transition, due_at, waiting, instance_id, person_id"
)


def _rows(where: str, params: list[object]) -> list[TimerRow]:
    """Rows read on the driver's cursor (the firing path reads them for every person)."""
    with cursor() as c:
        c.execute(f"SELECT {_COLUMNS} FROM {_T} WHERE {where} ORDER BY due_at, id", params)
        found = c.fetchall()
    return [
        TimerRow(r[0], r[1], r[2], r[3], r[4], _when(r[5]), bool(r[6]), _uuid(r[7]), r[8])
        for r in found
    ]


def _uuid(value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(value)  # SQLite: 32 hex digits


def _when(value: datetime | str) -> datetime:
    if isinstance(value, str):
        parsed = parse_datetime(value)
        assert parsed is not None  # written by Django
        value = parsed
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def of_instance(instance_id: uuid.UUID) -> dict[tuple[str, str], TimerRow]:
    """(from step, transition) -> the instance's timer."""
    rows = _rows("instance_id = %s AND kind = %s", [db_uuid(instance_id), TIMER])
    return {(t.from_step, t.transition): t for t in rows}


def of_person(person_id: int) -> list[TimerRow]:
    return _rows("person_id = %s", [person_id])


def of_people(person_ids: list[int]) -> dict[int, list[TimerRow]]:
    """person id -> their rows, in one read (the firing pass, under the people's locks)."""
    found: dict[int, list[TimerRow]] = {p: [] for p in person_ids}
    if person_ids:
        marks = ", ".join(["%s"] * len(person_ids))
        for row in _rows(f"person_id IN ({marks})", list(person_ids)):
            found[row.person_id].append(row)
    return found


def add_timers(
    person_id: int, instance_id: uuid.UUID, flow: str, wanted: list[tuple[str, str, datetime]]
) -> None:
    if not wanted:  # the firing path: a timer fired, none new
        return
    PendingTimer.objects.bulk_create(
        PendingTimer(
            person_id=person_id,
            instance_id=instance_id,
            kind=TIMER,
            flow_identifier=flow,
            from_step=a,
            transition=t,
            due_at=due,
        )
        for a, t, due in wanted
    )
    commits.due_on_commit(min(due for _, _, due in wanted))


def delete(ids: list[int]) -> None:
    if ids:
        with cursor() as c:
            c.execute(f"DELETE FROM {_T} WHERE id IN ({', '.join(['%s'] * len(ids))})", ids)


def delete_instance_timers(instance_id: uuid.UUID) -> None:
    PendingTimer.objects.filter(instance_id=instance_id).delete()


def set_waiting(ids: list[int]) -> None:
    if ids:
        marks = ", ".join(["%s"] * len(ids))
        with cursor() as c:
            c.execute(f"UPDATE {_T} SET waiting = %s WHERE id IN ({marks})", [True, *ids])


def deferred(person_id: int) -> dict[str, TimerRow]:
    """flow identifier -> its deferred start."""
    return {
        t.flow_identifier: _row(t)
        for t in PendingTimer.objects.filter(person_id=person_id, kind=DEFERRED)
    }


def defer(person_id: int, flow: str, limit: str, due_at: datetime) -> None:
    PendingTimer.objects.create(
        person_id=person_id, kind=DEFERRED, flow_identifier=flow, transition=limit, due_at=due_at
    )
    commits.due_on_commit(due_at)


def move(timer_id: int, due_at: datetime, limit: str) -> None:
    PendingTimer.objects.filter(pk=timer_id).update(due_at=due_at, transition=limit)
    commits.due_on_commit(due_at)


def start_times(person_id: int, flows: frozenset[str] | None, since: datetime) -> list[datetime]:
    """When the person's instances of `flows` (None: all) started after `since`, oldest first.

    An instance's `created_at` is its start (a restart makes a new one).
    """
    found = FlowInstance.objects.filter(person_id=person_id, created_at__gt=since)
    if flows is not None:
        found = found.filter(flow_identifier__in=sorted(flows))
    return sorted(found.values_list("created_at", flat=True))


def next_due(now: datetime) -> datetime | None:
    """The earliest due_at of a timer or deferred start neither waiting nor held back
    after a failed firing (its hold lapses at a later look), if any."""
    first = (
        PendingTimer.objects.filter(waiting=False)
        .exclude(claimed_until__gte=now)
        .order_by("due_at")
        .values("due_at")
        .first()
    )
    return None if first is None else first["due_at"]


@dataclass(slots=True)
class DuePerson:
    id: int
    environment_id: int
    person_key: str


CANDIDATES = 4  # due rows read per person wanted: room to skip those another process holds


def lock_due(now: datetime, batch: int) -> list[DuePerson]:
    """At most `batch` people with something due, among the most overdue, each row-locked
    (the lock every write of theirs takes) until the caller's transaction ends.

    On PostgreSQL with FOR UPDATE SKIP LOCKED: two processes' passes lock
    different people, and a person being written right now is left to the
    next pass; the locks go with the transaction, so a process that dies
    holds nothing back. On SQLite the caller holds the one write lock.
    Firing is exactly once because the caller reads the timers again under
    these locks (the second reader finds them gone).

    The people come in the order of their counter shard (engine.counters), so
    a pass, which writes them all in one transaction, takes the shared counter
    rows in the order of (shard, flow, step), as every other pass does: two
    processes' passes do not deadlock on them (people of one shard with
    different flows still can; PostgreSQL then aborts one person's firing,
    which the next pass runs again).
    """
    skip = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    p = Person._meta.db_table
    with cursor() as c:
        c.execute(
            f"SELECT id, environment_id, person_key FROM {p} WHERE id IN ("
            f"SELECT person_id FROM {_T} WHERE waiting = %s AND due_at <= %s "
            "AND (claimed_until IS NULL OR claimed_until < %s) ORDER BY due_at LIMIT %s) "
            f"ORDER BY id - id / {SHARDS} * {SHARDS}, id LIMIT %s{skip}",  # id modulo SHARDS
            [False, db_datetime(now), db_datetime(now), batch * CANDIDATES, batch],
        )
        return [DuePerson(*row) for row in c.fetchall()]


HOLD_SECONDS = 30  # a person whose firing failed is tried again after this


def hold_back(person_id: int, now: datetime) -> None:
    """A firing of the person failed (and was rolled back): their rows wait HOLD_SECONDS,
    so one bad person does not take every pass."""
    until = db_datetime(now + timedelta(seconds=HOLD_SECONDS))
    with cursor() as c:
        c.execute(f"UPDATE {_T} SET claimed_until = %s WHERE person_id = %s", [until, person_id])
