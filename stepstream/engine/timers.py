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

from django.db import connection, transaction
from django.utils.dateparse import parse_datetime

from stepstream.engine import commits
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


def _row(t: PendingTimer) -> TimerRow:
    return TimerRow(t.pk, t.kind, t.flow_identifier, t.from_step, t.transition, t.due_at, t.waiting)


_COLUMNS = "id, kind, flow_identifier, from_step, transition, due_at, waiting"


def _rows(where: str, params: list[object]) -> list[TimerRow]:
    """Rows read on the driver's cursor (the firing path reads them for every person)."""
    with cursor() as c:
        c.execute(f"SELECT {_COLUMNS} FROM {_T} WHERE {where} ORDER BY due_at, id", params)
        found = c.fetchall()
    return [TimerRow(r[0], r[1], r[2], r[3], r[4], _when(r[5]), bool(r[6])) for r in found]


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


def add_timers(
    person_id: int, instance_id: uuid.UUID, flow: str, wanted: list[tuple[str, str, datetime]]
) -> None:
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
    if wanted:
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
    """The earliest due_at of a timer or deferred start not waiting nor claimed, if any (a
    claim that lapses is seen at a later look)."""
    first = (
        PendingTimer.objects.filter(waiting=False)
        .exclude(claimed_until__gte=now)
        .order_by("due_at")
        .values("due_at")
        .first()
    )
    return None if first is None else first["due_at"]


CLAIM_SECONDS = 30  # a claim a process died holding lapses after this


def claim_due(now: datetime, batch: int) -> list[tuple[int, str]]:
    """(environment id, person key) of people with something due, the most overdue first,
    each row claimed for CLAIM_SECONDS so other processes' loops skip it.

    On PostgreSQL the rows are picked with FOR UPDATE SKIP LOCKED: two loops
    polling together take different rows. Firing itself is exactly once
    whatever the claims do (the person's lock, stepstream.engine.actions.timers).
    """
    table = PendingTimer._meta.db_table
    skip = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with transaction.atomic(), connection.cursor() as c:
        c.execute(
            f"UPDATE {table} SET claimed_until = %s WHERE id IN (SELECT id FROM {table} "
            "WHERE waiting = %s AND due_at <= %s AND (claimed_until IS NULL OR claimed_until < %s) "
            f"ORDER BY due_at LIMIT %s{skip}) RETURNING person_id",
            [
                db_datetime(now + timedelta(seconds=CLAIM_SECONDS)),
                False,
                db_datetime(now),
                db_datetime(now),
                batch,
            ],
        )
        person_ids = list(dict.fromkeys(r[0] for r in c.fetchall()))[:batch]
    found = {
        pk: (env, key)
        for pk, env, key in Person.objects.filter(pk__in=person_ids).values_list(
            "pk", "environment_id", "person_key"
        )
    }
    return [found[p] for p in person_ids if p in found]
