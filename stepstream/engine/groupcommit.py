"""Group commit: several people's engine writes in one transaction, each in its own savepoint.

One commit per change bounded the engine (docs/performance-history.md, "Group
commit"): each commit pays BEGIN, COMMIT, the WAL pages (on SQLite) or the
round trips and the WAL flush (on PostgreSQL) again. Here a caller's write (a
`do_*` action, decorated with `grouped`) becomes a job on a queue. One caller
at a time is the leader: in its own thread and on its own connection it takes
the jobs waiting (at most `GROUP_COMMIT_MAX_BATCH`), runs each inside a
savepoint of one transaction, commits once, and only then answers each
caller; the others wait, and the oldest one left leads the next batch. A lone
caller so runs its write itself, with no hand-off to another thread. So:

* each job is atomic on its own: one that raises is rolled back to its
  savepoint, its caller gets its own error, the others commit;
* nothing is answered or delivered before the batch is durable: log rows are
  handed to delivery by `transaction.on_commit`, which Django runs after the
  outer commit and drops for a savepoint rolled back;
* a person's order holds: the queue is first in, first out and one leader at
  a time runs the jobs in that order, so two jobs of one person run in the order they were
  submitted, within a batch and across batches; `seq` stays gap-free since a
  rolled-back job's log rows and `last_seq` go with its savepoint;
* a batch that fails as a whole (commit error, lost connection, a crash)
  commits nothing: every caller gets the error, as one transaction's would.
  A batch meeting a deadlock or serialization failure (PostgreSQL, with
  another process's writer) is rolled back and its jobs run again one per
  transaction, with the engine's usual retries.

A caller already inside a transaction (an enclosing `atomic`, as in tests)
runs its write inline: the committer's connection could not see its rows.
The queue is bounded (`GROUP_COMMIT_QUEUE`, then 503), and a job that waited
longer than `GROUP_COMMIT_WAIT` seconds before its batch started is refused
the same way, unwritten. Callers are threads (the database threads, the HTTP
threads), so the queue never holds more jobs than there are of them.
"""

import contextvars
import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, connections

from stepstream.engine import db
from stepstream.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")


class Job:
    """One caller's write: run by the leader of its batch, answered once the batch is durable."""

    __slots__ = (
        "fn",
        "args",
        "kwargs",
        "context",
        "queued_at",
        "wake",
        "finished",
        "result",
        "error",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs or {}
        self.context = contextvars.copy_context()  # the caller's request id, for log lines
        self.queued_at = time.monotonic()
        self.wake = threading.Event()  # set when finished, or when it is this caller's turn to lead
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        self.finished = True
        self.wake.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def _limits() -> tuple[int, int, float]:
    s = settings.STEPSTREAM
    return s["GROUP_COMMIT_MAX_BATCH"], s["GROUP_COMMIT_QUEUE"], s["GROUP_COMMIT_WAIT"]


class _Group:
    """The queue of jobs and the one leader at a time that commits them."""

    def __init__(self) -> None:
        self.queue: deque[Job] = deque()
        self.mutex = threading.Lock()  # guards the queue
        self.leader = threading.Lock()  # held by the caller committing a batch

    def run(self, job: Job) -> None:
        _, bound, _ = _limits()
        with self.mutex:
            if len(self.queue) >= bound:
                raise Unavailable("The server has too many writes queued; retry shortly.")
            self.queue.append(job)
        while not job.finished:
            if self.leader.acquire(blocking=False):
                try:
                    while not job.finished:
                        run_batch(self._take())
                finally:
                    self.leader.release()
                    self._hand_over()
                return
            job.wake.wait()
            job.wake.clear()  # a turn to lead: try again (finished is checked first)

    def _take(self) -> list[Job]:
        cap, _, _ = _limits()
        with self.mutex:
            return [self.queue.popleft() for _ in range(min(cap, len(self.queue)))]

    def _hand_over(self) -> None:
        """Wakes the oldest waiting caller to lead the next batch (after the lock is free)."""
        with self.mutex:
            head = self.queue[0] if self.queue else None
        if head is not None:
            head.wake.set()


_group = _Group()


def grouped(write: Callable[P, T]) -> Callable[P, T]:
    """Runs the `do_*` action `write` as a job of the next batch (inline inside a transaction)."""

    @functools.wraps(write)
    def submit(*args: P.args, **kwargs: P.kwargs) -> T:
        if not settings.STEPSTREAM["GROUP_COMMIT"] or connection.in_atomic_block:
            return write(*args, **kwargs)
        job = Job(write, args, kwargs)
        _group.run(job)
        result: T = job.outcome()
        return result

    return submit


def run_batch(jobs: list[Job]) -> None:
    """Runs `jobs` in one transaction, each in a savepoint; answers each once committed.

    On SQLite the transaction takes this process's writer lock (db.writing).
    """
    _, _, max_wait = _limits()
    now = time.monotonic()
    ready = []
    for job in jobs:
        if now - job.queued_at > max_wait:
            job.error = Unavailable("The server is too busy to write now; retry shortly.")
            job.finish()
        else:
            ready.append(job)
    if len(ready) <= 1:  # a lone job: its own transaction is its savepoint
        _one_by_one(ready)
        return
    try:
        with db.writing():
            for job in ready:
                _run_one(job)
    except _Retry:
        _one_by_one(ready)
        return
    except BaseException as e:  # nothing of the batch was committed: each caller learns it
        if isinstance(e, OperationalError) and db.retryable(e):
            _one_by_one(ready)
            return
        _broken(e)
        for job in ready:
            job.result, job.error = None, _batch_error(e)
            job.finish()
        return
    for job in ready:
        job.finish()


class _Retry(Exception):
    """A job met a deadlock or serialization failure: the batch is run again one by one."""


def _run_one(job: Job) -> None:
    try:
        with db.job_savepoint():
            job.result = job.context.run(job.fn, *job.args, **job.kwargs)
    except OperationalError as e:
        if db.retryable(e):
            raise _Retry from e
        job.error = e
    except Exception as e:  # the job's own error: its savepoint is rolled back, others go on
        job.error = e


def _one_by_one(jobs: list[Job]) -> None:
    """Each job in a transaction of its own, in order (the engine's retries apply)."""
    for job in jobs:
        try:
            job.result, job.error = job.context.run(job.fn, *job.args, **job.kwargs), None
        except BaseException as e:  # noqa: BLE001 - the caller gets it; the others still run
            _broken(e)
            job.result, job.error = None, _batch_error(e)
        job.finish()


def _broken(e: BaseException) -> None:
    """After a failed connection, the next batch starts with a new one (as dbthreads does)."""
    if isinstance(e, OperationalError | InterfaceError):
        for conn in connections.all(initialized_only=True):
            conn.close()


def _batch_error(e: BaseException) -> BaseException:
    if isinstance(e, Exception):
        return e
    return Unavailable("The write was interrupted; nothing of it was saved. Retry.")
