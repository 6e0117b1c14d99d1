"""Hand-written SQL for the engine's hot path: one read and a few writes per change.

The ORM costs about 0.3 ms of Python per query to build; a transition made
through it spent most of its time there (docs/performance-history.md). These
statements use the tables the models define, with values converted as the
models' own fields convert them, so SQLite and PostgreSQL store exactly what
the ORM would; they run on the driver's cursor (`cursor`), without Django's
per-statement layers. Everything else keeps using the ORM.
"""

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from django.db import (
    IntegrityError,
    connection,
    transaction,
)

from stepstream.engine.changes import Change
from stepstream.engine.db import Cursor, _postgres, cursor, db_datetime, db_uuid, py_uuid
from stepstream.errors import NotFound
from stepstream.models import (
    ContentSeen,
    Environment,
    FlowInstance,
    Person,
    StateChange,
    StepInstance,
    TrackedEvent,
)

P = Person._meta.db_table
I = FlowInstance._meta.db_table  # noqa: E741
S = StepInstance._meta.db_table
L = StateChange._meta.db_table
E = Environment._meta.db_table
T = TrackedEvent._meta.db_table
C = ContentSeen._meta.db_table
_cause_field = StateChange._meta.get_field("cause")
_data_field = Person._meta.get_field("data")
_INSERT_CHUNK = 500


@dataclass(slots=True)
class PersonRow:
    pk: int
    person_key: str
    last_seq: int
    rules_version: int = 0  # the environment's rules_version this person was last settled at
    env_rules_version: int = 0  # the environment's, read under the person's lock


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
    # for analytics: when it first became active, seconds from then to its first completion
    activated_at: datetime | None = None
    seconds_to_complete: float | None = None
    last_activated_at: datetime | None = None  # the latest activation (timers' resume)

    def move(self, state: str, now: datetime) -> None:
        """Takes `state` at `now`, noting a first activation and timing a first completion.

        Only the first of each counts, so a step completed, reactivated and
        completed again keeps the time of its first completion.
        """
        self.state = state
        if state == "active":
            self.last_activated_at = now
        if state == "active" and self.activated_at is None:
            self.activated_at = now
        elif state == "completed" and self.seconds_to_complete is None and self.activated_at:
            self.seconds_to_complete = max((now - self.activated_at).total_seconds(), 0.0)


def _for_update(alias: str) -> str:
    return f" FOR UPDATE OF {alias}" if _postgres() else ""


def person_not_found(person_key: str) -> NotFound:
    return NotFound(f"No person with person_key '{person_key}' in this environment.")


def lock_person(environment_id: int, person_key: str) -> PersonRow:
    """The person, row-locked until the transaction ends (serializes their changes)."""
    row = _lock_person(environment_id, person_key)
    if row is None:
        raise person_not_found(person_key)
    return row


def _lock_sql() -> str:
    return (
        f"SELECT p.id, p.last_seq, p.rules_version, e.rules_version FROM {P} p "
        f"JOIN {E} e ON e.id = p.environment_id WHERE p.environment_id = %s "
        f"AND p.person_key = %s{_for_update('p')}"
    )


def _person_row(row: Sequence[Any] | None, person_key: str) -> PersonRow | None:
    return None if row is None else PersonRow(row[0], person_key, row[1], row[2], row[3])


def _lock_person(environment_id: int, person_key: str) -> PersonRow | None:
    with cursor() as c:
        c.execute(_lock_sql(), [environment_id, person_key])
        return _person_row(c.fetchone(), person_key)


def lock_person_reading(
    environment_id: int, person_key: str, flow_identifier: str
) -> tuple[PersonRow, tuple[InstanceRow, list[StepRow]] | None]:
    """(the person locked, `read_instance` of their instance of the flow).

    On SQLite in one statement (the writer lock serializes writers already).
    On PostgreSQL in one round trip of two statements. Under READ COMMITTED
    each statement of a query takes its own snapshot, so the read, which runs
    once the lock is held, sees what the previous writer committed; a join in
    the locking statement would re-read only the locked row, with stale steps.
    """
    if not _postgres():
        with cursor() as c:
            c.execute(_LOCK_READ_SQLITE, [flow_identifier, environment_id, person_key])
            rows = c.fetchall()
        if not rows:
            raise person_not_found(person_key)
        person = _person_row(rows[0], person_key)
        assert person is not None  # its row was read
        steps = [r[4:] for r in rows] if rows[0][4] is not None else []
        return person, _instance(steps, flow_identifier)
    person_id = f"(SELECT id FROM {P} WHERE environment_id = %s AND person_key = %s)"
    with cursor() as c:
        c.execute(
            _lock_sql() + "; " + _READ_INSTANCE.replace("%(person)s", person_id),
            [environment_id, person_key, environment_id, person_key, flow_identifier],
        )
        person = _person_row(c.fetchone(), person_key)
        if person is None:
            raise person_not_found(person_key)
        c.nextset()
        return person, _instance(c.fetchall(), flow_identifier)


def lock_or_create_person(
    environment_id: int,
    person_key: str,
    data: dict[str, Any],
    check: Callable[[dict[str, Any]], object] | None = None,
) -> tuple[PersonRow, bool]:
    """(the person locked, True when created now with `data`); `check(data)` runs before creating.

    Created through the ORM (rare, and every field's default applies) in a
    savepoint: a concurrent creator makes it fail with IntegrityError after
    that creator commits, and the row is then found and locked.
    """
    row = _lock_person(environment_id, person_key)
    if row is not None:
        return row, False
    if check is not None:
        check(data)
    created = True
    try:
        with transaction.atomic():
            Person.objects.create(environment_id=environment_id, person_key=person_key, data=data)
    except IntegrityError:
        created = False
    return lock_person(environment_id, person_key), created


def person_data(person_id: int) -> dict[str, Any]:
    with cursor() as c:
        c.execute(f"SELECT data FROM {P} WHERE id = %s", [person_id])
        raw = c.fetchone()[0]
    found: dict[str, Any]
    # no expression: the field's from_db_value only asks whether it is a key transform
    found = (
        _data_field.from_db_value(raw, None, connection)  # type: ignore[arg-type]
        if isinstance(raw, str)
        else raw
    )
    return found


def write_person_data(person_id: int, data: dict[str, Any]) -> None:
    with cursor() as c:
        c.execute(
            f"UPDATE {P} SET data = %s WHERE id = %s",
            [_data_field.get_db_prep_value(data, connection), person_id],
        )


def set_rules_version(person_id: int, version: int) -> None:
    with cursor() as c:
        c.execute(f"UPDATE {P} SET rules_version = %s WHERE id = %s", [version, person_id])


def instance_states(person_id: int) -> dict[str, tuple[Any, ...]]:
    """flow identifier -> (instance id, flow id, state) for each of the person's instances."""
    with cursor() as c:
        c.execute(
            f"SELECT flow_identifier, id, flow_id, state FROM {I} WHERE person_id = %s",
            [person_id],
        )
        return {r[0]: (py_uuid(r[1]), r[2], r[3]) for r in c.fetchall()}


_STEP_COLUMNS = (
    "s.id, s.identifier, s.name, s.position, s.state, s.activated_at, s.seconds_to_complete, "
    "s.last_activated_at"
)
_READ_INSTANCE = (
    f"SELECT i.id, i.flow_id, i.state, {_STEP_COLUMNS} "
    f"FROM {I} i LEFT JOIN {S} s ON s.instance_id = i.id "
    "WHERE i.person_id = %(person)s AND i.flow_identifier = %s ORDER BY s.position"
)


_LOCK_READ_SQLITE = (
    f"SELECT p.id, p.last_seq, p.rules_version, e.rules_version, i.id, i.flow_id, i.state, "
    f"{_STEP_COLUMNS} FROM {P} p JOIN {E} e ON e.id = p.environment_id "
    f"LEFT JOIN {I} i ON i.person_id = p.id AND i.flow_identifier = %s "
    f"LEFT JOIN {S} s ON s.instance_id = i.id "
    "WHERE p.environment_id = %s AND p.person_key = %s ORDER BY s.position"
)


def read_instance(person_id: int, flow_identifier: str) -> tuple[InstanceRow, list[StepRow]] | None:
    """(InstanceRow, steps) of the person's instance of a flow, or None."""
    with cursor() as c:
        c.execute(_READ_INSTANCE.replace("%(person)s", "%s"), [person_id, flow_identifier])
        return _instance(c.fetchall(), flow_identifier)


def _instance(
    rows: Sequence[Sequence[Any]], flow_identifier: str
) -> tuple[InstanceRow, list[StepRow]] | None:
    if not rows:
        return None
    first = rows[0]
    instance = InstanceRow(py_uuid(first[0]), first[1], flow_identifier, first[2])
    steps = [_step_row(r) for r in rows if r[3] is not None]
    return instance, steps


def _step_row(r: Sequence[Any]) -> StepRow:
    """A StepRow from columns 3 onwards of a row selecting _STEP_COLUMNS after three others."""
    return StepRow(
        py_uuid(r[3]),
        r[4],
        r[5],
        r[6],
        r[7],
        _datetime_from_db(r[8]),
        r[9],
        _datetime_from_db(r[10]),
    )


def active_steps(person_id: int, flow_identifiers: list[str]) -> dict[str, set[str]]:
    """flow identifier -> identifiers of its active steps, for active instances (no step rows)."""
    if not flow_identifiers:
        return {}
    marks = ", ".join(["%s"] * len(flow_identifiers))
    with cursor() as c:
        c.execute(
            f"SELECT i.flow_identifier, s.identifier FROM {I} i JOIN {S} s ON s.instance_id = i.id "
            f"WHERE i.person_id = %s AND i.state = 'active' AND s.state = 'active' "
            f"AND i.flow_identifier IN ({marks})",
            [person_id, *flow_identifiers],
        )
        found: dict[str, set[str]] = {}
        for flow, step in c.fetchall():
            found.setdefault(flow, set()).add(step)
    return found


def delete_instance(instance_id: uuid.UUID) -> None:
    """Restart replaces an instance: its rows go (what its content showed too), its log stays."""
    with cursor() as c:
        c.execute(f"DELETE FROM {C} WHERE instance_id = %s", [db_uuid(instance_id)])
        c.execute(f"DELETE FROM {S} WHERE instance_id = %s", [db_uuid(instance_id)])
        c.execute(f"DELETE FROM {I} WHERE id = %s", [db_uuid(instance_id)])


def tracked_events(person_id: int) -> dict[str, dict[str, Any]]:
    """event name -> {"count", "first_at", "last_at"} (aware datetimes)."""
    with cursor() as c:
        c.execute(
            f"SELECT name, count, first_at, last_at FROM {T} WHERE person_id = %s", [person_id]
        )
        rows = c.fetchall()
    conv = _datetime_from_db
    return {r[0]: {"count": r[1], "first_at": conv(r[2]), "last_at": conv(r[3])} for r in rows}


def _datetime_from_db(value: datetime | str | None) -> datetime | None:
    from django.utils.dateparse import parse_datetime

    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def tracked_event_names(person_id: int) -> int:
    with cursor() as c:
        c.execute(f"SELECT COUNT(*) FROM {T} WHERE person_id = %s", [person_id])
        count: int = c.fetchone()[0]
    return count


def bump_event(person_id: int, name: str, at: datetime, properties: dict[str, Any]) -> int:
    """Counts one more `name` for the person; the new count."""
    when = db_datetime(at)
    props = TrackedEvent._meta.get_field("last_properties").get_db_prep_value(
        properties, connection
    )
    with cursor() as c:
        c.execute(
            f"INSERT INTO {T} (person_id, name, count, first_at, last_at, last_properties) "
            "VALUES (%s, %s, 1, %s, %s, %s) ON CONFLICT (person_id, name) DO UPDATE SET "
            f"count = {T}.count + 1, last_at = excluded.last_at, "
            "last_properties = excluded.last_properties RETURNING count",
            [person_id, name, when, when, props],
        )
        count: int = c.fetchone()[0]
    return count


def _insert(cursor: Cursor, table: str, columns: str, rows: list[list[Any]]) -> None:
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
    with cursor() as c:
        c.execute(
            f"SELECT 1 FROM {I} WHERE person_id = %s AND flow_identifier = %s",
            [person_id, flow_identifier],
        )
        return c.fetchone() is not None


def insert_instance(
    person_id: int, instance: InstanceRow, steps: list[StepRow], now: datetime
) -> None:
    instance_id = db_uuid(instance.id)
    created = db_datetime(now)
    with cursor() as c:
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
        adapt = db_datetime
        _insert(
            c,
            S,
            "id, instance_id, identifier, name, position, state, flow_id, activated_at, "
            "seconds_to_complete, last_activated_at",
            [
                [
                    db_uuid(s.id),
                    instance_id,
                    s.identifier,
                    s.name,
                    s.position,
                    s.state,
                    instance.flow_id,
                    adapt(s.activated_at),
                    s.seconds_to_complete,
                    adapt(s.last_activated_at),
                ]
                for s in sorted(steps, key=_by_identifier)  # the order of update_states
            ],
        )


def update_states(instance: InstanceRow | None, steps: list[StepRow]) -> None:
    """Writes changed states: the instance first, then its steps by identifier.

    The order is the order in which the counter triggers lock their rows (the
    flow's row has identifier ''), so two people's writes on one flow lock
    shared counters in one order and cannot deadlock on them. A step's analytics
    columns (StepRow.move) are written with its state.
    """
    adapt = db_datetime
    set_flow = f"UPDATE {I} SET state = %s WHERE id = %s"
    set_step = (
        f"UPDATE {S} SET state = %s, activated_at = %s, seconds_to_complete = %s, "
        "last_activated_at = %s WHERE id = %s"
    )
    flow_params = [] if instance is None else [[instance.state, db_uuid(instance.id)]]
    step_params = [
        [
            s.state,
            adapt(s.activated_at),
            s.seconds_to_complete,
            adapt(s.last_activated_at),
            db_uuid(s.id),
        ]
        for s in sorted(steps, key=_by_identifier)
    ]
    with cursor() as c:
        if c.postgres:
            # One round trip: with psycopg's client-side binding a query may hold several
            # statements, run in their order (executemany's pipeline cost more here).
            statements = [set_flow] * len(flow_params) + [set_step] * len(step_params)
            params = flow_params + step_params
            for first in range(0, len(statements), _INSERT_CHUNK):
                c.execute(
                    "; ".join(statements[first : first + _INSERT_CHUNK]),
                    [value for row in params[first : first + _INSERT_CHUNK] for value in row],
                )
            return
        if flow_params:
            c.execute(set_flow, flow_params[0])
        if step_params:
            c.executemany(set_step, step_params)


def _by_identifier(step: StepRow) -> str:
    return step.identifier


def append_log(person: PersonRow, rows: list[Change]) -> None:
    """Inserts log rows (already numbered) and moves the person's last_seq past them.

    On PostgreSQL each row
    also gets its change-feed key `xid` (stepstream/engine/feed.py): this
    transaction's id, raised to the person's previous key if that is higher,
    so a person's keys never go down even if this transaction got its id
    before an earlier writer of the same person did.
    """
    adapt = db_datetime
    cause = _cause_field.get_db_prep_value
    columns = (
        "person_id, seq, entity, object_id, identifier, state, previous_state, "
        "flow_identifier, flow_instance_id, occurred_at, cause"
    )
    values = [
        [
            person.pk,
            c.seq,
            c.entity,
            db_uuid(c.object_id),
            c.identifier,
            c.state,
            c.previous_state,
            c.flow,
            db_uuid(c.flow_id),
            adapt(cast(datetime, c.occurred_at)),  # the recorder's changes: datetimes, not text
            cause(c.cause, connection),
        ]
        for c in rows
    ]
    with cursor() as c:
        if c.postgres:
            moved = (
                f"{P} SET last_seq = %s WHERE id = %s RETURNING GREATEST("
                f"pg_current_xact_id()::text::bigint, (SELECT l.xid FROM {L} l "
                "WHERE l.person_id = %s AND l.seq = %s)) AS xid"
            )
            moved_params = [person.last_seq, person.pk, person.pk, rows[0].seq - 1]
            if len(values) <= _INSERT_CHUNK:  # one round trip: the key is read where it is made
                row = "(" + ", ".join(["%s"] * len(values[0])) + ", (SELECT xid FROM moved))"
                c.execute(
                    f"WITH moved AS (UPDATE {moved}) INSERT INTO {L} ({columns}, xid) VALUES "
                    + ", ".join([row] * len(values)),
                    moved_params + [value for v in values for value in v],
                )
                return
            c.execute(f"UPDATE {moved}", moved_params)
            key = c.fetchone()[0]
            _insert(c, L, columns + ", xid", [v + [key] for v in values])
            return
        _insert(c, L, columns, values)
        c.execute(f"UPDATE {P} SET last_seq = %s WHERE id = %s", [person.last_seq, person.pk])
