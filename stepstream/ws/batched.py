"""Reads for the requests waiting at the same moment, in one database job.

After a server restart thousands of browsers reconnect at once; read one at
a time, each connect and each subscribe was a thread-pool hop and a query of
its own, and they queued behind each other in the database threads. Here
the requests waiting at the same moment share one job: the first one starts
it, those that arrive while it runs wait for the next, so under load a job
serves hundreds of them and alone a request waits for one job as before.
Each read still starts after its request arrived, so an answer is as fresh
as before (a key revoked before a connect arrived is seen revoked).
"""

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from stepstream.dbthreads import DbThreads

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Batched(Generic[K, V]):
    """`await batched.get(key)`: the value `read` gives for `key`, read with its neighbours.

    `read(keys)` runs on a database thread and returns {key: value} for the
    keys found; a key it leaves out gets `missing(key)` raised, or None.
    """

    def __init__(
        self,
        read: Callable[[list[K]], dict[K, V]],
        db: DbThreads,
        missing: Callable[[K], Exception] | None = None,
    ) -> None:
        self._read = read
        self._db = db
        self._missing = missing
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the two above belong to

    async def get(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests run several): nothing carries over
            self._loop, self._waiting, self._draining = loop, {}, None
        future: asyncio.Future[V | None] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._draining is None or self._draining.done():
            self._draining = loop.create_task(self._drain(self._waiting))
        return await future

    async def _drain(self, waiting: dict[K, list[asyncio.Future[V | None]]]) -> None:
        """Serves the waiting requests, one database job per round, until none waits."""
        while waiting:
            batch = dict(waiting)
            waiting.clear()
            try:
                found = await self._db.run(self._read, list(batch))
            except Exception as error:  # e.g. the database is down: each waiter answers so
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(error)
                continue
            for key, futures in batch.items():
                for future in futures:
                    if future.done():  # its connection went away meanwhile
                        continue
                    if key in found:
                        future.set_result(found[key])
                    elif self._missing is None:
                        future.set_result(None)
                    else:
                        future.set_exception(self._missing(key))
