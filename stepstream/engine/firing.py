"""The firing loop of one server process: due timers and deferred starts, run once each.

It sleeps until the earliest due time it knows of, and at most POLL seconds
(which is how it hears of rows other processes wrote), so an idle server
costs one indexed read a second. A write of this process that commits a row
due sooner than the loop's next look wakes it at once (engine.commits'
due listeners), so such a timer fires on time, not up to a poll late.
Each person with something due is run by `do_fire` under their lock: two
processes picking up the same timer fire it once (the second finds nothing
due). A server that starts runs what is overdue at once.
"""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.utils import timezone

from stepstream.dbthreads import DbThreads
from stepstream.engine import clock, commits, db, timers
from stepstream.engine.actions.timers import do_fire
from stepstream.models import Environment

logger = logging.getLogger(__name__)

POLL = 1.0  # seconds: the longest sleep, so rows written elsewhere fire within ~2 s
BATCH = 200  # people run per pass
_DURING_A_PASS = datetime.max.replace(tzinfo=UTC)


def fire_due(batch: int = BATCH) -> tuple[int, datetime | None]:
    """Runs the people due now (at most `batch`); (how many, the next due time).

    Idle, it only reads the next due time: no write (on SQLite no write lock) is taken
    until something is due."""
    now = clock.now()
    first = timers.next_due(now)
    if first is None or first > now:
        return 0, first
    people = timers.claim_due(now, batch)
    envs = {e.pk: e for e in Environment.objects.filter(pk__in={env for env, _ in people})}
    # SQLite: the pass is one transaction (each person's firing in a savepoint of its own),
    # one commit for the batch; PostgreSQL: a transaction per person, no lock held longer
    together = db.writing() if connection.vendor == "sqlite" else contextlib.nullcontext()
    with together:
        for env_id, person_key in people:
            environment = envs.get(env_id)
            if environment is None:
                continue
            try:
                do_fire(environment, person_key)
            except Exception:
                logger.warning(
                    "firing a timer failed; retried once its claim lapses", exc_info=True
                )
    return len(people), timers.next_due(clock.now())


class Firing:
    """The loop, started and stopped by the server's runtime."""

    def __init__(self, db: DbThreads, poll: float = POLL) -> None:
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
        if loop is not None and next_look is not None and due_at < next_look:
            self._next_look = None  # one wake-up is enough
            loop.call_soon_threadsafe(self._wake_up)

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
            except Exception:
                logger.warning("the timer loop failed; retrying", exc_info=True)
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
