"""Webhook delivery inside `stepstream serve`: one `Deliverer` per process, one task per webhook.

* Who sends: a lease on the webhook row (`lease_owner`, `lease_until`),
  taken and renewed by one UPDATE every second. A lease, not an advisory lock:
  PostgreSQL's session advisory locks belong to a connection, and this
  server's connections come from a pool and are shared by its database
  threads, so the lock would outlive or escape the worker; a lease is a row
  that works the same on SQLite, expires by itself when its process dies
  (STEPSTREAM_WEBHOOK_LEASE_SECONDS), and fences the position: a worker
  saves its position only while it still holds the lease.
* How: aiohttp (client.py, imported when the first webhook is claimed), with
  a resolver that refuses non-public addresses at connect time, timeouts, no
  redirects, a bounded read of each answer, at most STEPSTREAM_WEBHOOK_CONCURRENCY connections.
* What to send: the change feed (stepstream/engine/feed.py) from the webhook's
  durable position, a batch at a time. A batch is split into one lane per
  person; lanes run side by side (at most STEPSTREAM_WEBHOOK_CONCURRENCY
  requests at once) and each sends its person's events one after the other,
  each only after the previous one was acknowledged (2xx). When the whole
  batch is acknowledged the position moves past it, in the database. A
  server killed at any moment resends at most one batch: at least once.
* Failures: retried with exponential backoff and equal jitter (`retry_delay`:
  retry n waits 0.5 to 1 times STEPSTREAM_WEBHOOK_RETRY_BASE_SECONDS x 2^(n-1),
  capped at ..._MAX_SECONDS);
  `failing_since` is kept on the row, and once it is older than
  STEPSTREAM_WEBHOOK_RETRY_HOURS the webhook is disabled, its position still
  before the event that failed, so `enable` resumes exactly there.
"""

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, TypedDict

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from stepstream.dbthreads import DbThreads
from stepstream.delivery.webhooks import signing
from stepstream.delivery.webhooks.addresses import literal_refused
from stepstream.engine import feed
from stepstream.metrics import WEBHOOK_DELIVERIES
from stepstream.models import Webhook, WebhookAttempt

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger("stepstream.delivery.webhooks")

BATCH = 500  # events read from the feed at a time
WINDOW = 5000  # events read ahead of the saved position, at most
SAVE_INTERVAL = 0.2  # seconds between position saves while events flow
KEEP_ATTEMPTS = 1000  # per webhook: the log of recent attempts
MAX_RESPONSE_BYTES = 64 * 1024  # read (and ignored) from an answer, so the connection is reused
SCAN_INTERVAL = 1.0


_Seconds = Literal[
    "WEBHOOK_LEASE_SECONDS",
    "WEBHOOK_RETRY_HOURS",
    "WEBHOOK_RETRY_BASE_SECONDS",
    "WEBHOOK_RETRY_MAX_SECONDS",
    "WEBHOOK_TIMEOUT_SECONDS",
    "WEBHOOK_POLL_INTERVAL",
]


def _conf(name: _Seconds) -> float:
    return settings.STEPSTREAM[name]


def retry_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before retry `attempt` (1 first): exponential backoff with equal jitter,
    a random time between half and all of `min(cap, base * 2**(attempt - 1))`.

    Equal rather than full jitter (docs/webhooks.md): a retry never follows its
    failure at once (full jitter's random(0, x) may wait nothing), and the first
    comes after 1 to 2 s at the default base of 2 s, well within the 10 s the
    contract promises. One sender per webhook retries, not a crowd, so spreading
    retries over the whole window matters less than for reconnecting clients
    (whose backoff is full jitter: stepstream_client.backoff_delay).
    """
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 30))
    return ceiling * (0.5 + 0.5 * rand())


class HookRow(TypedDict):
    """A claimed webhook, as claim() reads it."""

    id: int
    environment_id: int
    url: str
    secret: str
    position_xid: int
    position_id: int


# -- database jobs (run on the database threads) ----------------------------


def claim(owner: str) -> list[HookRow]:
    """Takes or renews the leases of enabled webhooks that no live process holds."""
    now = timezone.now()
    until = now + timedelta(seconds=_conf("WEBHOOK_LEASE_SECONDS"))
    free = Q(lease_owner=owner) | Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    Webhook.objects.filter(free, state="enabled").update(lease_owner=owner, lease_until=until)
    return list(
        Webhook.objects.filter(state="enabled", lease_owner=owner, lease_until=until).values(
            "id", "environment_id", "url", "secret", "position_xid", "position_id"
        )
    )


def release(owner: str) -> None:
    Webhook.objects.filter(lease_owner=owner).update(lease_until=None)


def _save_attempts(hook_id: int, attempts: list[WebhookAttempt], prune: bool) -> None:
    if attempts:
        WebhookAttempt.objects.bulk_create(attempts)
    if prune:
        cutoff = (
            WebhookAttempt.objects.filter(webhook_id=hook_id)
            .order_by("-id")
            .values_list("id", flat=True)[KEEP_ATTEMPTS : KEEP_ATTEMPTS + 1]
        )
        if cutoff:
            WebhookAttempt.objects.filter(webhook_id=hook_id, id__lte=cutoff[0]).delete()


def save_position(
    hook_id: int,
    owner: str,
    xid: int,
    row_id: int,
    attempts: list[WebhookAttempt],
    prune: bool,
    recovered: bool,
) -> bool:
    """Moves the position past an acknowledged batch, if this process still holds the lease."""
    with transaction.atomic():
        changes: dict[str, int | None] = {"position_xid": xid, "position_id": row_id}
        if recovered:
            changes["failing_since"] = None
        moved = Webhook.objects.filter(
            pk=hook_id, lease_owner=owner, state="enabled", lease_until__gt=timezone.now()
        ).update(**changes)
        if moved:  # the row is locked now: a concurrent delete waits for this commit
            _save_attempts(hook_id, attempts, prune)
    return bool(moved)


def note_failure(hook_id: int, attempts: list[WebhookAttempt]) -> bool:
    """Records a failure; True when the retry window is over and the webhook is now disabled."""
    now = timezone.now()
    window = timedelta(hours=_conf("WEBHOOK_RETRY_HOURS"))
    with transaction.atomic():
        if not Webhook.objects.select_for_update().filter(pk=hook_id).exists():
            return False  # deleted meanwhile: nothing to record
        _save_attempts(hook_id, attempts, False)
        Webhook.objects.filter(pk=hook_id, failing_since__isnull=True).update(failing_since=now)
        disabled = Webhook.objects.filter(
            pk=hook_id, state="enabled", failing_since__lt=now - window
        ).update(state="disabled", lease_until=None)
    if disabled:
        logger.warning("webhook %s disabled: failing for longer than the retry window", hook_id)
    return bool(disabled)


def still_enabled(hook_id: int, owner: str) -> bool:
    return Webhook.objects.filter(pk=hook_id, state="enabled", lease_owner=owner).exists()


# -- one webhook ------------------------------------------------------------


class Stop(Exception):
    """The webhook was disabled, deleted or handed to another process."""


class _Entry:
    __slots__ = ("item", "acked")

    def __init__(self, item: feed.Item) -> None:
        self.item = item
        self.acked = False


class HookWorker:
    def __init__(self, row: HookRow, owner: str, db: DbThreads) -> None:
        self.db = db
        self.id = row["id"]
        self.environment_id = row["environment_id"]
        self.url = row["url"]
        self.secret = row["secret"]
        self.xid, self.row_id = row["position_xid"], row["position_id"]
        self.owner = owner
        self.attempts: list[WebhookAttempt] = []
        self.failing = False
        self.recovered = False
        self.saves = 0
        self.limit = asyncio.Semaphore(settings.STEPSTREAM["WEBHOOK_CONCURRENCY"])
        self.refused = literal_refused(self.url)
        self.client: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        from stepstream.delivery.webhooks import client

        self.client = client.session(
            settings.STEPSTREAM["WEBHOOK_CONCURRENCY"], _conf("WEBHOOK_TIMEOUT_SECONDS")
        )
        try:
            async with asyncio.TaskGroup() as lanes:
                await self._follow(lanes)
        except* Stop:
            pass  # disabled, deleted or handed to another process
        except* Exception as group:  # the deliverer starts it again from the saved position
            logger.warning("webhook %s stopped on an error: %r", self.id, group.exceptions[0])
        finally:
            await self.client.close()

    async def _follow(self, lanes: asyncio.TaskGroup) -> None:
        """Reads the feed ahead into per-person lanes; saves the acknowledged prefix.

        `window` holds the events read and not yet covered by the saved
        position, in feed order; each person's lane sends theirs one after
        the other. The position moves past the longest acknowledged prefix of
        the window, so it never passes an event still unacknowledged.
        """
        window: deque[_Entry] = deque()
        queues: dict[int, deque[_Entry]] = {}
        read_xid, read_id = self.xid, self.row_id
        saved_at = 0.0
        while True:
            last = None
            while window and window[0].acked:
                last = window.popleft()
            if last is not None and (time.monotonic() - saved_at > SAVE_INTERVAL or not window):
                await self._save(last.item)
                saved_at = time.monotonic()
            elif last is not None:
                window.appendleft(last)  # saved with the next round
            room = WINDOW - len(window)
            items = []
            if room >= BATCH:
                try:
                    items = await self.db.run(
                        feed.read, self.environment_id, read_xid, read_id, BATCH
                    )
                except Exception:
                    logger.warning("webhook %s: reading the feed failed; retrying", self.id)
                    await asyncio.sleep(1.0)
                    continue
            for item in items:
                entry = _Entry(item)
                window.append(entry)
                queue = queues.get(item.person_id)
                if queue is None:
                    queue = queues[item.person_id] = deque()
                    lanes.create_task(self._lane(item.person_id, queue, queues))
                queue.append(entry)
            if items:
                read_xid, read_id = items[-1].xid, items[-1].id
            if len(items) < BATCH:
                await asyncio.sleep(_conf("WEBHOOK_POLL_INTERVAL"))

    async def _save(self, last: feed.Item) -> None:
        attempts, self.attempts = self.attempts, []
        self.saves += 1
        recovered, self.recovered = self.recovered, False
        for tries in range(1000):
            try:
                moved = await self.db.run(
                    save_position,
                    self.id,
                    self.owner,
                    last.xid,
                    last.id,
                    attempts,
                    self.saves % 20 == 0,
                    recovered,
                )
                break
            except Exception:
                logger.warning("webhook %s: saving the position failed (try %d)", self.id, tries)
                await asyncio.sleep(1.0)
        else:
            raise Stop
        if not moved:
            raise Stop
        self.xid, self.row_id = last.xid, last.id

    async def _lane(
        self, person_id: int, queue: deque[_Entry], queues: dict[int, deque[_Entry]]
    ) -> None:
        """One person's events, each sent only after the previous one was acknowledged."""
        while queue:
            entry = queue[0]
            await self._deliver(entry.item)
            entry.acked = True
            queue.popleft()
        del queues[person_id]

    async def _deliver(self, item: feed.Item) -> None:
        """Sends one event until it is acknowledged (or the webhook stops)."""
        message_id = f"msg_{self.id}_{item.id}"
        body = orjson.dumps(
            {"type": "state_change", "timestamp": item.data["occurred_at"], "data": item.data}
        )
        attempt = 0
        while True:
            attempt += 1
            async with self.limit:
                status, error = await self._post(message_id, body)
            record = WebhookAttempt(
                webhook_id=self.id,
                message_id=message_id,
                person_key=item.data["person_key"],
                seq=item.data["seq"],
                attempt=attempt,
                status_code=status,
                error=error,
                at=timezone.now(),
            )
            if error is None:
                WEBHOOK_DELIVERIES.labels("success").inc()
                self.attempts.append(record)
                if self.failing:
                    self.failing, self.recovered = False, True
                return
            WEBHOOK_DELIVERIES.labels("failure").inc()
            self.failing = True
            try:
                disabled = await self.db.run(note_failure, self.id, [record])
            except Exception:
                disabled = False
            if disabled:
                raise Stop
            base, cap = _conf("WEBHOOK_RETRY_BASE_SECONDS"), _conf("WEBHOOK_RETRY_MAX_SECONDS")
            await asyncio.sleep(retry_delay(attempt, base, cap))
            try:
                enabled = await self.db.run(still_enabled, self.id, self.owner)
            except Exception:
                enabled = True  # the database is away; keep trying
            if not enabled:
                raise Stop

    async def _post(self, message_id: str, body: bytes) -> tuple[int | None, str | None]:
        if self.refused:
            return None, "refused: the URL's address is not public"
        headers = signing.headers(self.secret, message_id, int(time.time()), body)
        assert self.client is not None  # made by run(), before any post
        from stepstream.delivery.webhooks import client

        return await client.post(self.client, self.url, body, headers, MAX_RESPONSE_BYTES)


# -- the process's deliverer --------------------------------------------------


class Deliverer:
    """Claims webhooks (leases) every second and runs one HookWorker per claimed webhook."""

    def __init__(self, db: DbThreads) -> None:
        self.db = db
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.workers: dict[int, asyncio.Task[None]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._scan())

    async def _scan(self) -> None:
        while True:
            try:
                rows = await self.db.run(claim, self.owner)
                owned = {row["id"]: row for row in rows}
                for hook_id, task in list(self.workers.items()):
                    if hook_id not in owned or task.done():
                        task.cancel()
                        del self.workers[hook_id]
                for hook_id, row in owned.items():
                    if hook_id not in self.workers:
                        worker = HookWorker(row, self.owner, self.db)
                        self.workers[hook_id] = asyncio.create_task(worker.run())
            except Exception:
                logger.warning("claiming webhooks failed; retrying", exc_info=True)
            await asyncio.sleep(SCAN_INTERVAL)

    async def stop(self) -> None:
        tasks = [t for t in (self.task, *self.workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.workers.clear()
        try:
            await self.db.run(release, self.owner)  # a restarted server takes over at once
        except Exception:
            logger.warning("could not release webhook leases", exc_info=True)
