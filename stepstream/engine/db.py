"""The engine's write transaction and what its SQL needs from the database layer.

`writing()` is every engine write's transaction (on SQLite, this process's
writers take turns on a lock first); `retried` runs a deadlock's victim
again; `job_savepoint` is one group-commit job; `cursor()` is the driver's
own cursor with Django's error classes; and values are converted as the
models' fields convert them. The SQL itself is in stepstream/engine/store.py.
"""

import functools
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections, transaction

from stepstream.models import StepInstance

_uuid_field = StepInstance._meta.pk
_Params = ParamSpec("_Params")
_R = TypeVar("_R")


# this process's SQLite writer lock: writes take turns on it (db.writing); set once at
# start, never swapped while writes run
_writers: list[Any] = [threading.Lock()]  # a Lock, or a file lock of the same shape
_jobs = threading.local()


def share_writer_lock(lock: Any) -> None:  # a Lock, or a file lock of the same shape
    """Replaces this process's SQLite writer lock, e.g. by one held across processes.

    `serve --workers` passes a file lock so that workers take turns as threads
    do (db.writing); SQLite's busy handler alone lets one process starve.
    Called once, before the worker serves.
    """
    _writers[0] = lock


_QMARK = re.compile(r"(?<!%)%s")  # Django's own conversion to SQLite's placeholders
_qmarked: dict[str, str] = {}


class Cursor:
    """The driver's cursor, taking Django's `%s` placeholders on either database."""

    __slots__ = ("raw", "postgres")

    def __init__(self, raw: Any, postgres: bool) -> None:  # the driver's cursor
        self.raw = raw
        self.postgres = postgres

    def _sql(self, sql: str) -> str:
        if self.postgres:
            return sql
        converted = _qmarked.get(sql)
        if converted is None:
            if len(_qmarked) >= 1024:  # statements with IN lists vary: keep it bounded
                _qmarked.clear()
            converted = _qmarked[sql] = _QMARK.sub("?", sql).replace("%%", "%")
        return converted

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.raw.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.raw.executemany(self._sql(sql), rows)

    def fetchone(self) -> Any:
        return self.raw.fetchone()

    def fetchall(self) -> Any:
        return self.raw.fetchall()

    def nextset(self) -> Any:
        return self.raw.nextset()


@contextmanager
def cursor() -> Iterator[Cursor]:
    """A cursor of the driver's own, with Django's error classes, for this module's statements.

    Django's cursor passes each statement through several layers (the
    connection proxy and asgiref's locals, thread and event-loop checks, the
    placeholder conversion, the error wrapper), about a fifth of the CPU of a
    change (docs/performance-history.md, "Group commit"). The statements run on the
    same connection and in the same transaction; a driver error is raised as
    Django's (IntegrityError, OperationalError with the driver's as its
    cause), as Django's cursor would. Not seen by Django's query log.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.connection is None:
        conn.ensure_connection()
    with conn.wrap_database_errors:
        raw = conn.connection.cursor()
        try:
            yield Cursor(raw, _postgres())
        finally:
            raw.close()


@contextmanager
def job_savepoint() -> Iterator[None]:
    """One group-commit job (stepstream/engine/groupcommit.py): a savepoint of the batch.

    Issued on the driver's connection directly: Django's savepoint costs two
    trips through its cursor wrappers, about as much as the commit a batch
    saves. What Django's would also do is done here: on an error the job's
    `on_commit` callbacks are dropped with its rows, and the transaction is
    usable again. The `writing()` blocks inside add no savepoint of their own.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    raw = conn.connection
    callbacks = len(conn.run_on_commit)
    raw.execute("SAVEPOINT stepstream_job")
    _jobs.active = True
    try:
        yield
    except BaseException:
        raw.execute("ROLLBACK TO SAVEPOINT stepstream_job")
        raw.execute("RELEASE SAVEPOINT stepstream_job")
        del conn.run_on_commit[callbacks:]
        conn.needs_rollback = False
        raise
    else:
        raw.execute("RELEASE SAVEPOINT stepstream_job")
    finally:
        _jobs.active = False


@contextmanager
def writing() -> Iterator[None]:
    """A write transaction; on SQLite, this process's writers first take turns on a lock.

    SQLite has one write lock per file. A thread that finds it taken sleeps in
    SQLite's busy handler, whose sleeps grow to 100 ms whenever the lock
    frees, so eight database threads contending for it made p99 latency
    reach seconds (docs/performance-history.md). Queueing on a Python lock hands the
    write lock over at once. Other processes still meet the busy timeout.
    Inside an enclosing transaction the lock is not taken: that transaction
    may already hold the write lock, and waiting here could deadlock on it.
    """
    if _postgres() or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        with transaction.atomic(savepoint=not getattr(_jobs, "active", False)):
            yield
        return
    with _writers[0], transaction.atomic():
        yield


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was
# rolled back whole and can simply run again.
_RETRYABLE = {"40P01", "40001"}
ATTEMPTS = 3


def retryable(error: OperationalError) -> bool:
    """A deadlock's victim or a serialization failure: rolled back whole, safe to run again."""
    return getattr(error.__cause__, "sqlstate", None) in _RETRYABLE


def retried(write: Callable[_Params, _R]) -> Callable[_Params, _R]:
    """Runs a write again (up to 3 times) when PostgreSQL made it a deadlock's victim.

    Each person's writes are serialized by their row lock, but two people's
    writes meet on shared rows: the counters kept by triggers
    (stepstream/engine/counters.py). Writes take those in one order
    (update_states), which removes the common cycles, not every one (a restart,
    two completions in one write). PostgreSQL breaks a cycle by aborting one
    transaction; nothing of it was committed or sent (on-commit callbacks are
    dropped with it), so running it again is safe. Inside an enclosing
    transaction nothing is retried: that one is lost too.
    """

    @functools.wraps(write)
    def run(*args: _Params.args, **kwargs: _Params.kwargs) -> _R:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return write(*args, **kwargs)
            except OperationalError as e:
                if not retryable(e) or attempt == ATTEMPTS or connection.in_atomic_block:
                    raise
                time.sleep(random.uniform(0, 0.02 * attempt))  # let the winner commit first
        raise AssertionError("unreachable: the last attempt returned or raised")

    return run


@functools.cache
def _postgres() -> bool:
    """The database of this process: PostgreSQL (native UUIDs, aware datetimes) or SQLite."""
    return connections[DEFAULT_DB_ALIAS].vendor == "postgresql"


def db_uuid(value: uuid.UUID | str) -> Any:
    """A UUID as the model's field stores it: itself on PostgreSQL, 32 hex digits on SQLite."""
    if not isinstance(value, uuid.UUID):
        return _uuid_field.get_db_prep_value(value, connection, prepared=False)
    return value if _postgres() else value.hex


def db_datetime(value: datetime | None) -> datetime | str | None:
    """A datetime as Django stores it: itself on PostgreSQL, naive UTC text on SQLite."""
    if value is None or _postgres():
        return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return str(value)


def py_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
