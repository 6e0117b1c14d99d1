"""The firing loop of one server process: due timers and deferred starts, run once each.

It sleeps until the earliest due time it knows of, and at most IDLE seconds,
so pending timers cost nothing while they wait: an idle server reads the
next due time once per IDLE, however many are pending. It hears of rows
written elsewhere without looking: a write of this process that commits a
row due sooner than the loop's next look wakes it at once (engine.commits'
due listeners); on PostgreSQL a trigger notifies CHANNEL for every
statement that writes a timer or moves a due time, whoever runs it, and
every server process's loop hears it on the key listener's connection
(stepstream.trust.keywatch) and looks again. Without that (SQLite, or
STEPSTREAM_KEY_NOTIFY=false) a row written by another process fires on
time when a server wrote it (its own loop heard it), else within IDLE.
Each person with something due is run by `do_fire` under their lock: two
processes picking up the same timer fire it once (the second finds nothing
due). A server that starts runs what is overdue at once.
"""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import OperationalError
from django.utils import timezone

from stepstream.dbthreads import DbThreads
from stepstream.engine import clock, commits, db, timers
from stepstream.engine.actions.timers import do_fire
from stepstream.models import Environment

logger = logging.getLogger(__name__)

IDLE = 30.0  # seconds: the longest sleep (rows written where no loop heard them)
CHANNEL = "stepstream_timers"
_TABLE = "stepstream_pendingtimer"
_FUNCTION = "stepstream_timers_written"
INSTALL = [
    f"CREATE OR REPLACE FUNCTION {_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$",
    f"DROP TRIGGER IF EXISTS {_FUNCTION} ON {_TABLE}",
    f"CREATE TRIGGER {_FUNCTION} AFTER INSERT OR UPDATE OF due_at ON {_TABLE} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {_FUNCTION}()",
]
UNINSTALL = [
    f"DROP TRIGGER IF EXISTS {_FUNCTION} ON {_TABLE}",
    f"DROP FUNCTION IF EXISTS {_FUNCTION}()",
]


def install(apps: Any, schema_editor: Any) -> None:
    """Migration 0017: PostgreSQL notifies the loops of every timer written."""
    if schema_editor.connection.vendor == "postgresql":
        for statement in INSTALL:
            schema_editor.execute(statement)


def uninstall(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for statement in UNINSTALL:
            schema_editor.execute(statement)


BATCH = 100  # people run per pass, in one transaction
BUSY = 0.05  # seconds: the sleep when everything due is being fired by another process
RETRY = 1.0  # seconds: the sleep after a pass failed as a whole
_DURING_A_PASS = datetime.max.replace(tzinfo=UTC)


def fire_due(batch: int = BATCH) -> tuple[int, datetime | None]:
    """Runs the people due now (at most `batch`); (how many, the next due time).

    Idle, it only reads the next due time: no write (on SQLite no write lock) is taken
    until something is due. A pass is one transaction: the people are locked
    (timers.lock_due), their rows read in one query, each person fired in a
    savepoint of their own, and the batch committed once, each firing's log
    rows with it. A person whose firing fails is rolled back alone and held
    back a while (timers.hold_back); the others commit.
    """
    now = clock.now()
    first = timers.next_due(now)
    if first is None or first > now:
        return 0, first
    with db.writing():
        people = timers.lock_due(now, batch)
        read = timers.of_people([p.id for p in people])
        envs = {
            e.pk: e for e in Environment.objects.filter(pk__in={p.environment_id for p in people})
        }
        for person in people:
            environment = envs.get(person.environment_id)
            if environment is None:
                continue
            try:
                with db.job_savepoint():  # on the driver: Django's costs about as much again
                    do_fire(environment, person.person_key, read[person.id])
            except Exception as e:
                if isinstance(e, OperationalError) and db.retryable(e):
                    # a deadlock's victim (PostgreSQL): rolled back to its savepoint; the
                    # next pass runs it again
                    logger.info("firing a timer met a deadlock; run again at the next pass")
                    continue
                logger.warning(
                    "firing a timer failed; it is tried again in %s s",
                    timers.HOLD_SECONDS,
                    exc_info=True,
                )
                timers.hold_back(person.id, now)
    return len(people), timers.next_due(clock.now())


class Firing:
    """The loop, started and stopped by the server's runtime."""

    def __init__(self, db: DbThreads, poll: float = IDLE) -> None:
        self.db = db
        self.poll = poll
        self.task: asyncio.Task[None] | None = None
        self.fired = 0
        self.wakeups = 0  # times a write of this process woke the loop early
        self._loop_ref: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._next_look: datetime | None = None  # when the sleeping loop looks again

    async def start(self) -> None:
        self._loop_ref = asyncio.get_running_loop()
        commits.listen_due(self._written)
        self.task = self._loop_ref.create_task(self._loop())

    def _written(self, due_at: datetime) -> None:
        """After a commit, on whichever thread committed: wakes the loop when the row is
        due before it would look again."""
        loop, next_look = self._loop_ref, self._next_look
        if loop is None or loop.is_closed():  # stopped without stop() (a test's loop ended)
            return
        if next_look is not None and due_at < next_look:
            self._next_look = None  # one wake-up is enough
            loop.call_soon_threadsafe(self._wake_up)

    def heard(self) -> None:
        """Another process wrote a timer (PostgreSQL's notification, on the listener's
        thread), or the listener connected: the loop looks again."""
        loop = self._loop_ref
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def _wake_up(self) -> None:
        self.wakeups += 1
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            delay = self.poll
            self._wake.clear()
            self._next_look = _DURING_A_PASS  # a row written meanwhile may be missed: look again
            try:
                count, next_due = await self.db.run(fire_due)
                self.fired += count
                if count >= BATCH:
                    continue  # more are due
                if next_due is not None:
                    delay = min(self.poll, max((next_due - timezone.now()).total_seconds(), 0.0))
                    if count == 0:  # due, but each such person is another process's to fire
                        delay = max(delay, BUSY)
            except Exception:  # the database away or busy: look again soon, not after IDLE
                logger.warning("the timer loop failed; retrying", exc_info=True)
                delay = min(self.poll, RETRY)
            if self._next_look is not None:  # else a write woke it during the pass
                self._next_look = timezone.now() + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._next_look = None

    async def stop(self) -> None:
        commits.unlisten_due(self._written)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
