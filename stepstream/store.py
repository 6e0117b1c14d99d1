"""Hand-written SQL for the engine's hot path: one read and a few writes per change.

The ORM costs about 0.3 ms of Python per query to build; a transition made
through it spent most of its time there (docs/performance.md). These
statements use the tables the models define, with values converted by the
models' own fields, so SQLite and PostgreSQL store exactly what the ORM
would. Everything else keeps using the ORM.
"""

import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection, transaction

from stepstream.errors import NotFound
from stepstream.models import FlowInstance, Person, StateChange, StepInstance

P = Person._meta.db_table
I = FlowInstance._meta.db_table  # noqa: E741
S = StepInstance._meta.db_table
L = StateChange._meta.db_table
_uuid_field = StepInstance._meta.pk
_INSERT_CHUNK = 500


@dataclass(slots=True)
class PersonRow:
    pk: int
    person_key: str
    last_seq: int


@dataclass(slots=True)
class InstanceRow:
    id: uuid.UUID
    flow_id: int
    flow_identifier: str
    state: str


@dataclass(slots=True)
class StepRow:
    id: uuid.UUID
    identifier: str
    name: str
    position: int
    state: str = "inactive"


_sqlite_writers = threading.Lock()


@contextmanager
def writing():
    """A write transaction; on SQLite, this process's writers first take turns on a lock.

    SQLite has one write lock per file. A thread that finds it taken sleeps in
    SQLite's busy handler, whose sleeps grow to 100 ms whenever the lock
    frees, so eight database threads contending for it made p99 latency
    reach seconds (docs/performance.md). Queueing on a Python lock hands the
    write lock over at once. Other processes still meet the busy timeout.
    Inside an enclosing transaction the lock is not taken: that transaction
    may already hold the write lock, and waiting here could deadlock on it.
    """
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic():
            yield
        return
    with _sqlite_writers, transaction.atomic():
        yield


def db_uuid(value: uuid.UUID):
    return _uuid_field.get_db_prep_value(value, connection, prepared=False)


def py_uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _for_update(alias: str) -> str:
    return f" FOR UPDATE OF {alias}" if connection.features.has_select_for_update_of else ""


def person_not_found(person_key: str) -> NotFound:
    return NotFound(f"No person with person_key '{person_key}' in this environment.")


def lock_person(environment_id: int, person_key: str) -> PersonRow:
    """The person, row-locked until the transaction ends (serializes their changes)."""
    with connection.cursor() as c:
        c.execute(
            f"SELECT p.id, p.last_seq FROM {P} p WHERE p.environment_id = %s "
            f"AND p.person_key = %s{_for_update('p')}",
            [environment_id, person_key],
        )
        row = c.fetchone()
    if row is None:
        raise person_not_found(person_key)
    return PersonRow(row[0], person_key, row[1])


def lock_instance(environment_id: int, person_key: str, flow_identifier: str):
    """Locks the person, then reads one of their instances with its steps.

    Two statements, not one join: under READ COMMITTED a statement that waited
    for the person's lock re-reads only the locked row, so steps joined in the
    same statement would be the stale ones the previous writer just changed.
    """
    person = lock_person(environment_id, person_key)
    with connection.cursor() as c:
        c.execute(
            f"SELECT i.id, i.flow_id, i.state, s.id, s.identifier, s.name, s.position, s.state "
            f"FROM {I} i LEFT JOIN {S} s ON s.instance_id = i.id "
            f"WHERE i.person_id = %s AND i.flow_identifier = %s ORDER BY s.position",
            [person.pk, flow_identifier],
        )
        rows = c.fetchall()
    if not rows:
        raise NotFound(f"Person '{person_key}' has no instance of flow '{flow_identifier}'.")
    first = rows[0]
    instance = InstanceRow(py_uuid(first[0]), first[1], flow_identifier, first[2])
    steps = [StepRow(py_uuid(r[3]), r[4], r[5], r[6], r[7]) for r in rows if r[3] is not None]
    return person, instance, steps


def _insert(cursor, table: str, columns: str, rows: list[list]) -> None:
    """Multi-row INSERTs of at most _INSERT_CHUNK rows each (bounded statement size)."""
    width = len(rows[0]) if rows else 0
    placeholder = "(" + ", ".join(["%s"] * width) + ")"
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([placeholder] * len(chunk)),
            [value for row in chunk for value in row],
        )


def has_instance(person_id: int, flow_identifier: str) -> bool:
    with connection.cursor() as c:
        c.execute(
            f"SELECT 1 FROM {I} WHERE person_id = %s AND flow_identifier = %s",
            [person_id, flow_identifier],
        )
        return c.fetchone() is not None


def insert_instance(person_id: int, instance: InstanceRow, steps: list[StepRow], now) -> None:
    instance_id = db_uuid(instance.id)
    created = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as c:
        _insert(
            c,
            I,
            "id, person_id, flow_id, flow_identifier, state, created_at",
            [
                [
                    instance_id,
                    person_id,
                    instance.flow_id,
                    instance.flow_identifier,
                    instance.state,
                    created,
                ]
            ],
        )
        _insert(
            c,
            S,
            "id, instance_id, identifier, name, position, state",
            [
                [db_uuid(s.id), instance_id, s.identifier, s.name, s.position, s.state]
                for s in steps
            ],
        )


def update_states(instance: InstanceRow | None, steps: list[StepRow]) -> None:
    with connection.cursor() as c:
        if instance is not None:
            c.execute(
                f"UPDATE {I} SET state = %s WHERE id = %s", [instance.state, db_uuid(instance.id)]
            )
        if steps:
            cases, ids = [], []
            for s in steps:
                cases += [db_uuid(s.id), s.state]
                ids.append(db_uuid(s.id))
            c.execute(
                f"UPDATE {S} SET state = CASE id "
                + " ".join(["WHEN %s THEN %s"] * len(steps))
                + " END WHERE id IN ("
                + ", ".join(["%s"] * len(ids))
                + ")",
                cases + ids,
            )


def append_log(person: PersonRow, rows: list[tuple]) -> None:
    """Inserts log rows (already numbered) and moves the person's last_seq past them.

    Each row: (seq, entity, object_id, identifier, state, previous_state,
    flow_identifier, flow_instance_id, occurred_at). On PostgreSQL each row
    also gets its change-feed key `xid` (stepstream/feed.py): this
    transaction's id, raised to the person's previous key if that is higher,
    so a person's keys never go down even if this transaction got its id
    before an earlier writer of the same person did.
    """
    adapt = connection.ops.adapt_datetimefield_value
    columns = (
        "person_id, seq, entity, object_id, identifier, state, previous_state, "
        "flow_identifier, flow_instance_id, occurred_at"
    )
    values = [
        [person.pk, seq, entity, db_uuid(oid), ident, state, prev, flow, db_uuid(fid), adapt(at)]
        for seq, entity, oid, ident, state, prev, flow, fid, at in rows
    ]
    with connection.cursor() as c:
        if connection.vendor == "postgresql":
            c.execute(
                f"UPDATE {P} SET last_seq = %s WHERE id = %s RETURNING GREATEST("
                f"pg_current_xact_id()::text::bigint, (SELECT l.xid FROM {L} l "
                "WHERE l.person_id = %s AND l.seq = %s))",
                [person.last_seq, person.pk, person.pk, rows[0][0] - 1],
            )
            key = c.fetchone()[0]
            _insert(c, L, columns + ", xid", [v + [key] for v in values])
            return
        _insert(c, L, columns, values)
        c.execute(f"UPDATE {P} SET last_seq = %s WHERE id = %s", [person.last_seq, person.pk])
