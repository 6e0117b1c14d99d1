"""The state-change log: written with each change, read for backlog and resume.

Every change gets the person's next `seq` inside the engine's transaction, so
the log is gap-free and only committed rows exist. After commit the rows are
handed to `stepstream.delivery` already encoded, so fan-out never re-encodes.
See docs/architecture.md.
"""

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from uuid import UUID

import orjson
from django.conf import settings
from django.db import connection

from stepstream import rows
from stepstream.engine import clock, commits, store
from stepstream.engine.changes import Change
from stepstream.metrics import STATE_CHANGES
from stepstream.models import Person, StateChange


@dataclass(frozen=True, slots=True)
class Record:
    """A committed change as delivery sees it: routing fields plus the encoded event data."""

    person_id: int
    seq: int
    entity: str
    data: str  # JSON text of the event's `data` object


def epoch(person_id: int) -> str:
    """Names one life of a person's log: it changes when the log restarts at 1.

    A person deleted and created again gets a new row id (ids are never
    reused: AUTOINCREMENT on SQLite, a sequence on PostgreSQL), so the epoch
    is derived from it, keyed with the server secret so it reveals nothing
    (not how many people exist). A client resuming with `since_seq` sends the
    epoch it knows, and learns that the log restarted instead of silently
    replaying another history.
    """
    return _epoch(settings.SECRET_KEY, person_id)


@lru_cache(maxsize=65536)
def _epoch(secret: str, person_id: int) -> str:
    """Memoized with the secret it is keyed with: a changed SECRET_KEY is never served
    an epoch made with the old one."""
    return hmac.new(secret.encode(), b"epoch:%d" % person_id, hashlib.sha256).hexdigest()[:16]


def row_event_data(row: StateChange, person_key: str) -> dict[str, Any]:
    return Change(
        row.seq,
        row.entity,
        row.object_id,
        row.identifier,
        row.state,
        row.previous_state,
        row.flow_identifier,
        row.flow_instance_id,
        row.occurred_at,
        row.cause,
    ).event_data(person_key, epoch(row.person_id))


class Recorder:
    """Collects one transaction's changes for a person locked by the caller."""

    def __init__(self, person: store.PersonRow) -> None:
        self.person = person
        self.rows: list[Change] = []
        self.now = clock.now()
        self.cause: dict[str, Any] = {}  # set by the engine before each change: why it happens

    def change(
        self,
        entity: str,
        object_id: UUID,
        identifier: str,
        previous: str,
        state: str,
        flow_identifier: str,
        flow_id: UUID,
    ) -> None:
        seq = self.person.last_seq + len(self.rows) + 1
        self.rows.append(
            Change(
                seq,
                entity,
                object_id,
                identifier,
                state,
                previous,
                flow_identifier,
                flow_id,
                self.now,
                self.cause,
            )
        )

    def save(self) -> int:
        """Writes the rows and the person's new seq; delivery runs only after commit."""
        if not self.rows:
            return self.person.last_seq
        self.person.last_seq += len(self.rows)
        store.append_log(self.person, self.rows)
        key, pid = self.person.person_key, self.person.pk
        life = epoch(pid)
        records = [
            Record(pid, c.seq, c.entity, orjson.dumps(c.event_data(key, life)).decode())
            for c in self.rows
        ]
        commits.send_on_commit(records)
        return self.person.last_seq


def count_changes(records: list[Record]) -> None:
    """A commit's changes into `stepstream_state_changes_total`: listened to by the runtime."""
    STATE_CHANGES.inc(len(records))


def read_since(person: Person, since_seq: int, limit: int = 1000) -> list[dict[str, Any]]:
    rows = StateChange.objects.filter(person=person, seq__gt=since_seq).order_by("seq")[:limit]
    return [row_event_data(row, person.person_key) for row in rows]


def read_records(
    person_id: int,
    after: int,
    upto: int | None = None,
    entity: str | None = None,
    limit: int = 1000,
) -> list[Record]:
    """Committed records of one person with after < seq <= upto, oldest first, at most `limit`."""
    where = ["c.person_id = %s", "c.seq > %s"]
    params: list[int | str] = [person_id, after]
    if upto is not None:
        where.append("c.seq <= %s")
        params.append(upto)
    if entity is not None:
        where.append("c.entity = %s")
        params.append(entity)
    return [record for _, record in _records(where, params, "c.seq", limit)]


def read_new(after_id: int, limit: int = 5000) -> tuple[int, list[Record]]:
    """Rows with a log id above `after_id`: the tail the delivery hub follows."""
    found = _records(["c.id > %s"], [after_id], "c.id", limit)
    return (found[-1][0] if found else after_id), [record for _, record in found]


_RECORD_FIELDS = ["id", "person_id", "seq", "entity", "object_id", "identifier", "state"]
_RECORD_FIELDS += ["previous_state", "flow_identifier", "flow_instance_id", "occurred_at", "cause"]


def _records(
    where: list[str], params: list[Any], order: str, limit: int
) -> list[tuple[int, Record]]:
    """(log id, record) of the rows matching, in plain SQL: a resumed subscription's
    catch-up read through the ORM cost more to build than to run (a reconnect storm)."""
    fields = [StateChange._meta.get_field(name) for name in _RECORD_FIELDS]
    qn = connection.ops.quote_name
    sql = (
        f"SELECT {rows.columns('c', fields)}, p.person_key "  # noqa: S608 - no input in the text
        f"FROM {qn(StateChange._meta.db_table)} c JOIN {qn(Person._meta.db_table)} p "
        f"ON p.id = c.person_id WHERE {' AND '.join(where)} ORDER BY {order} LIMIT %s"
    )
    steps = rows.converters(fields)
    found = []
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        for values in cursor.fetchall():
            log_id, person_id, *change = rows.convert(values[:-1], steps)
            data = Change(*change).event_data(values[-1], epoch(person_id))
            seq, entity = change[0], change[1]
            found.append((log_id, Record(person_id, seq, entity, orjson.dumps(data).decode())))
    return found


def last_id() -> int:
    row = StateChange.objects.order_by("-id").values_list("id", flat=True).first()
    return row or 0
