"""Each process's watch over its open WebSocket connections.

Every `STEPSTREAM_KEY_CHECK_INTERVAL` seconds (default 1) one task per server
process, in one database round trip of three small queries:

* closes with 4403 every connection whose publishable key was revoked (or
  deleted, with its environment): the key is re-checked by its row id, so
  every process notices a revocation made by any other one;
* re-reads the identity-verification mode and secret of the environments that
  have open connections (`stepstream.trust.identity`), so a switch to `enforce` or a
  new identity secret applies to open connections within the interval;
* adds the signed/unsigned request counts gathered since the last round to
  the environments' counters;
* ends (`subscription_ended`, status 401) every subscription whose person
  token lapsed: expired, signed with a secret since replaced, or missing now
  that verification is enforced. That check reads nothing and runs even when
  the database does not answer, so it holds the 5 s promise by itself.
"""

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

from django.conf import settings

from stepstream.dbthreads import DbThreads
from stepstream.models import ApiKey
from stepstream.trust import identity

if TYPE_CHECKING:
    from stepstream.ws.connection import Connection

logger = logging.getLogger("stepstream.ws")

CLOSE_KEY_REVOKED = 4403
REVOKED_REASON = "This publishable key was revoked: use the environment's new key."


def _read(
    key_ids: set[int], environment_ids: set[int], counts: "Counter[tuple[int, bool]]"
) -> tuple[set[int], dict[int, identity.Policy]]:
    if counts:
        identity.save_counts(counts)
    live = set(
        ApiKey.objects.filter(pk__in=list(key_ids), revoked_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    return key_ids - live, identity.load_policies(environment_ids)


class Guard:
    """The open connections of one runtime, what verification each environment enforces
    for them, and the task that re-checks both every interval."""

    def __init__(self, db: DbThreads) -> None:
        self.db = db
        self.connections: set[Connection] = set()
        self.policies = identity.Policies()
        self._task: asyncio.Task[None] | None = None

    def track(self, conn: "Connection") -> None:
        """Watches a new connection (its `key_id` and `environment` are set)."""
        assert conn.environment is not None  # a /ws socket's; only the dashboard's has none
        self.policies.remember(conn.environment)
        self.connections.add(conn)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    def untrack(self, conn: "Connection") -> None:
        self.connections.discard(conn)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def check_once(self) -> None:
        conns = list(self.connections)
        key_ids = {c.key_id for c in conns if c.key_id is not None}
        environment_ids = {c.environment.pk for c in conns if c.environment is not None}
        counts = self.policies.take_counts()
        try:
            revoked, policies = await self.db.run(_read, key_ids, environment_ids, counts)
        except Exception:
            self.policies.put_back(counts)  # kept for the next round
            raise
        self.policies.update(
            policies, {c.environment.pk for c in self.connections if c.environment is not None}
        )
        if revoked:
            closing = [c for c in self.connections if c.key_id in revoked]
            if closing:
                logger.info("closing %d connection(s) whose key was revoked", len(closing))
            for conn in closing:
                conn.close(CLOSE_KEY_REVOKED, REVOKED_REASON)

    def end_lapsed(self, now: float | None = None) -> int:
        """Ends the subscriptions whose token no longer lets them live; how many it ended."""
        now = time.time() if now is None else now
        ended = 0
        for conn in list(self.connections):
            if conn.environment is None:  # never: tracked sockets have one (track)
                continue
            found = self.policies.policy(conn.environment)
            if found.mode != "enforce" or conn.closed:
                continue
            for (person_key, entity), sub in list(conn.subscriptions.items()):
                reason = identity.lapsed(found, sub.grant, now)
                if reason is not None:
                    conn.end_subscription(person_key, entity, 401, [reason])
                    ended += 1
        return ended

    async def _watch(self) -> None:
        interval = settings.STEPSTREAM["KEY_CHECK_INTERVAL"]
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("could not re-check keys and verification settings", exc_info=True)
            try:
                self.end_lapsed()
            except Exception:
                logger.warning("could not end lapsed subscriptions", exc_info=True)
