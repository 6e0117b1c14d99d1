"""Runs blocking ORM work off the event loop, in a small pool of database threads.

Each thread keeps its database connection from one job to the next: on
PostgreSQL, Django's end-of-request close would hand it back to the pool and
take one again, a sixth of a person read's server CPU (docs/performance-history.md,
"REST at full speed"). So a thread holds at most one connection
(`STEPSTREAM_DB_POOL_SIZE` covers them all). A job that meets a broken
connection closes it and fails alone (503), and every job first drops a
connection that an error left unusable or outside autocommit, so a restarted
database costs one failed job per thread, not a stuck server.
"""

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections

from stepstream.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")


def _usable_connections() -> None:
    """Django's close_if_unusable_or_obsolete without the age: the connection is kept."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"] or (
            conn.errors_occurred and not conn.is_usable()
        ):
            conn.close()
        conn.errors_occurred = False


def _job(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    _usable_connections()
    try:
        return fn(*args, **kwargs)
    except (OperationalError, InterfaceError) as e:
        for conn in connections.all(initialized_only=True):
            conn.close()
        if "locked" in str(e):
            raise
        raise Unavailable("The database is unavailable; retry shortly.") from e


class DbThreads:
    """The database threads of one runtime (stepstream.http.runtime), made when it starts
    and shut down with it; a hub made on its own (tests) has its own."""

    def __init__(self, threads: int | None = None) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=threads or settings.STEPSTREAM["DB_THREADS"],
            thread_name_prefix="stepstream-db",
        )

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on a database thread, in the caller's context (its request
        id)."""
        loop = asyncio.get_running_loop()
        job = functools.partial(contextvars.copy_context().run, _job, fn, args, kwargs)
        return await loop.run_in_executor(self._executor, job)

    def shutdown(self) -> None:
        """Ends the threads, each first closing the connection it kept (on PostgreSQL a
        pooled one: kept by a thread that ends, it would be lost to the pool)."""
        started = len(self._executor._threads)
        if started:
            barrier = threading.Barrier(started)  # one closing job for each thread

            def close() -> None:
                connections.close_all()
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait(timeout=5)

            for _ in range(started):
                self._executor.submit(close)
        self._executor.shutdown(wait=False)
