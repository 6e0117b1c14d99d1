"""The environment change feed: every committed state change exactly once, in commit order.

A position is `(xid, id)`: the log row's writing transaction id and its row id.

* PostgreSQL assigns row ids when a row is inserted, not when its transaction
  commits, so with several writers a reader following ids would skip a row
  whose transaction commits after a higher id was already read. Each log row
  carries a key `xid`: its writing transaction's id (`pg_current_xact_id()`),
  raised to the person's previous key if that is higher (store.append_log),
  so a key is never below its writer's id and never goes down for a person.
  A page reads only rows whose key is below the horizon
  `pg_snapshot_xmin(pg_current_snapshot())`, taken in a statement before the
  page's own: every transaction below it has finished, so no row can ever
  appear below it again. Rows are read in `(xid, id)` order, so each person's
  rows come in `seq` order.
* SQLite has one writer at a time and ids are assigned under its write lock,
  so id order is commit order: `xid` is 0 there and the position is the id.

The cursor is opaque: the environment's id and the position, with a short
keyed digest so a mangled or foreign cursor is a clear 400 (docs/architecture.md).
"""

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.conf import settings
from django.db import connection

from stepstream.engine import log
from stepstream.engine.changes import Change
from stepstream.errors import Invalid
from stepstream.models import Person, StateChange

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
L = StateChange._meta.db_table
P = Person._meta.db_table


@dataclass(frozen=True, slots=True)
class Item:
    """One change as the feed gives it: its position and its event data."""

    xid: int
    id: int
    person_id: int
    data: dict[str, Any]


def _digest(text: str) -> str:
    key = ("stepstream-feed-cursor:" + settings.SECRET_KEY).encode()
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:16]


def encode_cursor(environment_id: int, xid: int, row_id: int) -> str:
    text = f"{environment_id}.{xid}.{row_id}"
    raw = f"{text}.{_digest(text)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(environment_id: int, cursor: str | None) -> tuple[int, int]:
    """The position a cursor names; 400 when it is malformed or another environment's."""
    if cursor is None or cursor == "":
        return 0, 0
    bad = Invalid("The cursor 'after' is malformed: pass a 'next' value this feed gave.")
    if len(cursor) > 200:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        env, xid, row_id, digest = raw.split(".")
        text = f"{env}.{xid}.{row_id}"
        if not hmac.compare_digest(digest, _digest(text)):
            raise ValueError
        position = int(env), int(xid), int(row_id)
    except (ValueError, UnicodeDecodeError):
        raise bad from None
    if position[0] != environment_id:
        raise Invalid("The cursor 'after' belongs to another environment.")
    return position[1], position[2]


def horizon() -> int | None:
    """The xid below which every transaction has finished (PostgreSQL); None on SQLite.

    A statement of its own, before the page's read: the page's statement then
    takes a later snapshot, which sees every commit below this horizon.
    """
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as c:
        c.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        horizon: int = c.fetchone()[0]
    return horizon


_COLUMNS = (
    "l.xid, l.id, l.person_id, p.person_key, l.seq, l.entity, {oid}, l.identifier, l.state, "
    "l.previous_state, l.flow_identifier, {fid}, {at}, l.cause"
)
_PG_SELECT = _COLUMNS.format(
    oid="l.object_id::text",
    fid="l.flow_instance_id::text",
    at="to_char(l.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
)
_SQLITE_SELECT = _COLUMNS.format(oid="l.object_id", fid="l.flow_instance_id", at="l.occurred_at")


def _json(value: object) -> Any:
    """A JSON column as read raw: text on SQLite, and on PostgreSQL too (Django leaves
    jsonb undecoded for its own fields to parse)."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _dashed(hex32: str) -> str:
    """A UUID as SQLite stores it (32 hex digits) in its usual text form."""
    h = hex32.replace("-", "")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _sqlite_timestamp(value: datetime | str) -> str:
    """occurred_at as SQLite gives it back (a naive UTC datetime, or its text) in event form."""
    if isinstance(value, str):
        date, _, time = value.replace("T", " ").partition(" ")
        if "." not in time:
            time += ".000000"
        return f"{date}T{time[:15]}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read(environment_id: int, xid: int, row_id: int, limit: int) -> list[Item]:
    """Up to `limit` changes after position (xid, row_id), in commit order.

    Plain SQL and ready-made text (ids, timestamps) into `Change.event_data`, the
    one event shape: the ORM spent about 200 µs a row here (docs/performance-history.md).
    """
    below = horizon()
    with connection.cursor() as c:
        if below is None:
            c.execute(
                f"SELECT {_SQLITE_SELECT} FROM {L} l JOIN {P} p ON p.id = l.person_id "
                "WHERE p.environment_id = %s AND l.id > %s ORDER BY l.id LIMIT %s",
                [environment_id, row_id, limit],
            )
            rows = [
                (
                    *r[:6],
                    _dashed(r[6]),
                    *r[7:11],
                    _dashed(r[11]),
                    _sqlite_timestamp(r[12]),
                    _json(r[13]),
                )
                for r in c.fetchall()
            ]
        else:
            c.execute(
                f"SELECT {_PG_SELECT} FROM {L} l JOIN {P} p ON p.id = l.person_id "
                "WHERE p.environment_id = %s AND l.xid < %s AND (l.xid, l.id) > (%s, %s) "
                "ORDER BY l.xid, l.id LIMIT %s",
                [environment_id, below, xid, row_id, limit],
            )
            rows = [(*r[:13], _json(r[13])) for r in c.fetchall()]
    epoch = log.epoch
    return [
        Item(xid_, id_, pid, Change(*change).event_data(key, epoch(pid)))
        for xid_, id_, pid, key, *change in rows
    ]


def page(environment_id: int, after: str | None, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """One page of the feed: {"events": [event data...], "next": cursor}."""
    xid, row_id = decode_cursor(environment_id, after)
    items = read(environment_id, xid, row_id, limit)
    if items:
        xid, row_id = items[-1].xid, items[-1].id
    return {
        "events": [item.data for item in items],
        "next": encode_cursor(environment_id, xid, row_id),
    }
