"""Runs blocking ORM work off the event loop, in a small pool of database threads.

Every job first drops a connection that failed or went stale, so a restarted
database costs one failed job per thread, not a stuck server.
"""

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections

from stepstream.errors import Unavailable

_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=settings.STEPSTREAM["DB_THREADS"], thread_name_prefix="stepstream-db"
        )
    return _executor


def _job(fn, args, kwargs):
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    except (OperationalError, InterfaceError) as e:
        for conn in connections.all(initialized_only=True):
            conn.close()
        if "locked" in str(e):
            raise
        raise Unavailable("The database is unavailable; retry shortly.") from e


async def run(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` on a database thread, in the caller's context (its request id)."""
    loop = asyncio.get_running_loop()
    job = functools.partial(contextvars.copy_context().run, _job, fn, args, kwargs)
    return await loop.run_in_executor(_pool(), job)
