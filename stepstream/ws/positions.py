"""Where each subscribed person's log stands: read for many subscribes in one database job.

A subscribe needs the person's row id and latest `seq`. Read one at a time,
that was a thread-pool hop and a query per subscribe, two per reconnecting
browser (it subscribes to `flow` and to `step`): after a server restart,
thousands of them at once queued behind each other in the database threads.
Here the subscribes waiting at the same moment share one job: the first one
starts it, those that arrive while it runs wait for the next, so under load a
job serves hundreds of them, and alone a subscribe waits for one job as
before. Each read still happens after its request arrived, so what a
subscription starts from is what it was before (docs/architecture.md).
"""

import asyncio
import logging

from django.db import connection

from stepstream import dbthreads
from stepstream.engine.store import person_not_found
from stepstream.models import Person

logger = logging.getLogger("stepstream.ws")

CHUNK = 500  # people per query (SQLite's bound parameters stay well under its limit)

_waiting: dict[int, dict[str, list[asyncio.Future]]] = {}  # environment id -> key -> waiters
_draining: asyncio.Task | None = None
_loop: asyncio.AbstractEventLoop | None = None  # the loop the two above belong to


async def position(environment, person_key: str) -> tuple[int, int]:
    """(person id, last seq) of the environment's person; NotFound when there is none."""
    global _draining, _loop, _waiting
    loop = asyncio.get_running_loop()
    if _loop is not loop:  # a new event loop (tests run several): nothing carries over
        _loop, _waiting, _draining = loop, {}, None
    future = loop.create_future()
    _waiting.setdefault(environment.pk, {}).setdefault(person_key, []).append(future)
    if _draining is None or _draining.done():
        _draining = loop.create_task(_drain(_waiting))
    return await future


def _read(batch: dict[int, list[str]]) -> dict[tuple[int, str], tuple[int, int]]:
    """One indexed query per 500 people. Plain SQL: building the ORM's IN (...) of
    hundreds of values cost more than running it."""
    found = {}
    table = connection.ops.quote_name(Person._meta.db_table)
    with connection.cursor() as cursor:
        for environment_id, keys in batch.items():
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start : start + CHUNK]
                marks = ", ".join(["%s"] * len(chunk))
                cursor.execute(
                    f"SELECT person_key, id, last_seq FROM {table} "  # noqa: S608 - no input
                    f"WHERE environment_id = %s AND person_key IN ({marks})",
                    [environment_id, *chunk],
                )
                for key, pk, last_seq in cursor.fetchall():
                    found[(environment_id, key)] = (pk, last_seq)
    return found


async def _drain(waiting: dict) -> None:
    """Serves the waiting subscribes, one database job per round, until none waits."""
    while waiting:
        batch = dict(waiting)
        waiting.clear()
        try:
            found = await dbthreads.run(_read, {e: list(keys) for e, keys in batch.items()})
        except Exception as error:  # e.g. the database is down: each waiter answers 503
            for keys in batch.values():
                for futures in keys.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(error)
            continue
        for environment_id, keys in batch.items():
            for key, futures in keys.items():
                row = found.get((environment_id, key))
                for future in futures:
                    if future.done():  # its connection went away meanwhile
                        continue
                    if row is None:
                        future.set_exception(person_not_found(key))
                    else:
                        future.set_result(row)
