"""The per-process hub: one channel per subscribed person, fanned out to sockets.

How a record reaches a socket (docs/architecture.md has the whole story):

* Records arrive from any source, in any order, possibly twice: this
  process's commits, the broker, the log tail. A `PersonChannel` passes them
  on strictly in `seq` order; a record ahead of a gap waits while the gap is
  read from the log.
* Each `Subscription` keeps a cursor: the last seq it has accounted for.
  A record at or below it is a duplicate and is dropped; a record beyond
  cursor + 1 means the subscription is behind (it resumed with `since_seq`),
  so it catches up from the log, then goes live again with no await between
  the last read and going live: nothing can slip through the seam.
* Event text is built by concatenation: the data is encoded once per change
  and each subscription has its `request_id` prefix ready. Subscriptions
  with the same prefix share one `Message`, so its bytes and WebSocket frame
  are built once per change, not once per socket.
"""

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from django.conf import settings

from stepstream.dbthreads import DbThreads
from stepstream.delivery.message import Message
from stepstream.engine import log
from stepstream.engine.log import Record
from stepstream.metrics import EVENTS_DELIVERED

if TYPE_CHECKING:
    from stepstream.delivery.broker import Broker
    from stepstream.trust.identity import Grant

logger = logging.getLogger("stepstream.delivery")

_EVENT = '{"event":"state_change","request_id":'
DELETED = (
    "This person was deleted, and their log with them. Read their state again "
    "(get_state or identify) and subscribe again to follow a person created with this key."
)
BACKLOG_PAGE = 500
FILL_PAGE = 1000
RESTART_DELAY = 1.0  # seconds before a crashed background loop runs again


class Subscriber(Protocol):
    """What a subscription is delivered to: a socket (stepstream.ws.connection.Connection)."""

    @property
    def closed(self) -> bool: ...

    def push(self, message: Message) -> None: ...

    async def room(self) -> None: ...

    def close(self, code: int) -> None: ...

    def end(self, sub: "Subscription", status: int, errors: list[str]) -> None: ...


class Subscription:
    __slots__ = (
        "conn",
        "person_id",
        "entity",
        "prefix",
        "cursor",
        "floor",
        "catching_up",
        "ended",
        "grant",
    )

    def __init__(
        self, conn: Subscriber, person_id: int, entity: str, request_id: object, cursor: int
    ) -> None:
        self.conn = conn
        self.person_id = person_id
        self.entity = entity
        rid = orjson.dumps(request_id).decode()
        self.prefix = _EVENT + rid + ',"data":'
        self.cursor = cursor
        self.floor = cursor
        self.catching_up = False
        # set once it is unsubscribed or ended: a backlog page read meanwhile is dropped
        self.ended = False
        # the person token it lives by (stepstream.trust.identity.Grant), or None
        self.grant: Grant | None = None

    def end_message(self, person_key: str, status: int, errors: list[str]) -> Message:
        """`subscription_ended`, with the request_id of the request that made it."""
        rid = self.prefix[len(_EVENT) : -len(',"data":')]
        data = {"person_key": person_key, "entity": self.entity, "status": status, "errors": errors}
        return Message(
            '{"event":"subscription_ended","request_id":'
            + rid
            + ',"data":'
            + orjson.dumps(data).decode()
            + "}"
        )

    def event(self, record: Record) -> Message:
        return Message(self.prefix + record.data + "}")

    def send(self, record: Record) -> None:
        self.conn.push(self.event(record))


class PersonChannel:
    __slots__ = ("person_id", "head", "pending", "subs", "filling")

    def __init__(self, person_id: int, head: int) -> None:
        self.person_id = person_id
        self.head = head
        self.pending: dict[int, Record] = {}
        self.subs: set[Subscription] = set()
        self.filling = False


class Hub:
    def __init__(self, broker: "Broker", db: DbThreads | None = None) -> None:
        self.broker = broker
        # the runtime's database threads; a hub made on its own (tests) has its own
        self._own_db = db is None
        self.db = db if db is not None else DbThreads()
        self.channels: dict[int, PersonChannel] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        # every task the hub starts, so stop() can cancel them all and none is lost
        self.tasks: set[asyncio.Task[None]] = set()
        self.stats: defaultdict[str, int] = defaultdict(int)
        self.errors: Counter[str] = Counter()  # crashes per task name, reported by /health
        self._last_id = 0

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            self._last_id = await self.db.run(log.last_id)
        except Exception:  # the database may be down at start; the tail retries
            logger.warning("could not read the log position at start", exc_info=True)
        self._spawn(self._supervise("tail", self._follow_log), "tail")
        self._spawn(self._supervise("reconcile", self._reconcile_loop), "reconcile")
        self._spawn(
            self._supervise(
                "broker", lambda: self.broker.listen(self._from_broker, self._on_broker_gap)
            ),
            "broker",
        )

    async def stop(self) -> None:
        """Cancels every task the hub started and waits for them to end."""
        while self.tasks:
            tasks = list(self.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.tasks.difference_update(tasks)
        if self._own_db:
            self.db.shutdown()

    @property
    def healthy(self) -> bool:
        """False once any hub task has crashed: /health says so (the loops restart anyway)."""
        return not self.errors

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Starts a task the hub owns: kept until done, cancelled by stop(), its crash logged."""
        task = asyncio.get_running_loop().create_task(coro, name=f"hub-{name}")
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._crashed(task.get_name().removeprefix("hub-"), exc)

    def _crashed(self, name: str, exc: BaseException) -> None:
        self.errors[name] += 1
        logger.error("delivery hub task %r crashed", name, exc_info=exc)

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Runs a background loop for the hub's lifetime, restarting it if it crashes or ends."""
        while True:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._crashed(name, exc)
            else:
                logger.error("delivery hub task %r ended; restarting it", name)
                self.errors[name] += 1
            await asyncio.sleep(RESTART_DELAY)

    # -- input -----------------------------------------------------------

    def feed_threadsafe(self, records: Iterable[Record]) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.feed, records, "local")

    def _from_broker(self, records: Iterable[Record]) -> None:
        self.feed(records, "broker")

    def _on_broker_gap(self) -> None:
        for channel in self.channels.values():
            self._schedule_fill(channel, None)

    def feed(self, records: Iterable[Record], source: str = "local") -> None:
        for record in records:
            channel = self.channels.get(record.person_id)
            if channel is None or record.seq <= channel.head:
                continue
            if record.seq == channel.head + 1:
                self.stats[source] += 1
                self._advance(channel, record)
            else:
                channel.pending[record.seq] = record
                self._schedule_fill(channel, None)

    def _advance(self, channel: PersonChannel, record: Record) -> None:
        self._dispatch(channel, record)
        channel.head = record.seq
        pending = channel.pending
        while pending:
            following = pending.pop(channel.head + 1, None)
            if following is None:
                for seq in [s for s in pending if s <= channel.head]:
                    del pending[seq]
                break
            self._dispatch(channel, following)
            channel.head = following.seq

    def _dispatch(self, channel: PersonChannel, record: Record) -> None:
        shared: dict[str, Message] = {}
        sent = 0
        # a copy: a push may close a slow socket (4408), which leaves this channel
        for sub in tuple(channel.subs):
            if sub.ended or sub.catching_up or record.seq <= sub.cursor:
                continue
            if record.seq == sub.cursor + 1:
                sub.cursor = record.seq
                if record.entity == sub.entity:
                    message = shared.get(sub.prefix)
                    if message is None:
                        message = shared[sub.prefix] = sub.event(record)
                    sub.conn.push(message)
                    sent += 1
            else:
                self._start_catch_up(channel, sub)
        if sent:
            EVENTS_DELIVERED.inc(sent)

    # -- gaps: read what is missing from the log ------------------------

    def _schedule_fill(self, channel: PersonChannel, upto: int | None) -> None:
        if not channel.filling:
            channel.filling = True
            self._spawn(self._fill(channel, upto), "fill")

    async def _fill(self, channel: PersonChannel, upto: int | None) -> None:
        try:
            await asyncio.sleep(0.02)  # out-of-order arrivals usually close the gap alone
            for attempt in range(1000):
                if self.channels.get(channel.person_id) is not channel:
                    return
                target = max(channel.pending, default=upto)
                if target is not None and target <= channel.head:
                    return
                try:
                    records = await self.db.run(
                        log.read_records, channel.person_id, channel.head, None, None, FILL_PAGE
                    )
                except Exception:
                    logger.warning("reading a gap from the log failed (try %d)", attempt + 1)
                    await asyncio.sleep(0.5)
                    continue
                self.feed(records, "log")
                if len(records) < FILL_PAGE:
                    return
        finally:
            channel.filling = False

    async def _follow_log(self) -> None:
        """Follows the log by id: the path for changes committed by other processes."""
        interval = settings.STEPSTREAM["LOG_POLL_INTERVAL"]
        while True:
            await asyncio.sleep(interval)
            try:
                if self.broker.cross_process and self.broker.healthy:
                    continue  # the broker is fast; reconciliation is the safety net
                if not self.channels:
                    self._last_id = await self.db.run(log.last_id)
                    continue
                self._last_id, records = await self.db.run(log.read_new, self._last_id)
                if records:
                    self.feed(records, "tail")
            except Exception:
                logger.warning("following the log failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)

    async def _reconcile_loop(self) -> None:
        """Compares each channel with its person's last seq: catches what every other path lost."""
        interval = settings.STEPSTREAM["RECONCILE_INTERVAL"]
        while True:
            await asyncio.sleep(interval)
            try:
                ids = list(self.channels)
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    latest = await self.db.run(_last_seqs, chunk)
                    for person_id, last_seq in latest:
                        channel = self.channels.get(person_id)
                        if channel is not None and last_seq > channel.head:
                            self._schedule_fill(channel, last_seq)
                    alive = {person_id for person_id, _ in latest}
                    for person_id in chunk:
                        if person_id not in alive:  # ids are never reused: deleted
                            self._person_deleted(person_id)
            except Exception:
                logger.warning("reconciling with the log failed; retrying", exc_info=True)

    def _person_deleted(self, person_id: int) -> None:
        """Ends the subscriptions to a deleted person: their log ended, and never goes on.

        Without this they would wait in silence for ever, even once a person
        with the same key is created again (a new log, a new epoch).
        """
        channel = self.channels.get(person_id)
        if channel is None:
            return
        for sub in tuple(channel.subs):
            sub.conn.end(sub, 404, [DELETED])
        self.channels.pop(person_id, None)

    # -- subscriptions ---------------------------------------------------

    def subscribe(
        self,
        conn: Subscriber,
        person_id: int,
        last_seq: int,
        entity: str,
        request_id: object,
        since_seq: int | None,
    ) -> Subscription:
        """Registers a subscription; its backlog (if any) is sent after the caller's response."""
        channel = self.channels.get(person_id)
        if channel is None:
            channel = self.channels[person_id] = PersonChannel(person_id, last_seq)
        cursor = since_seq if since_seq is not None else last_seq
        sub = Subscription(conn, person_id, entity, request_id, cursor)
        channel.subs.add(sub)
        if cursor < channel.head:
            self._start_catch_up(channel, sub)
        return sub

    def resend_since(self, sub: Subscription, since_seq: int) -> None:
        """A repeated subscribe with an earlier since_seq: sends what this one never sent."""
        if since_seq < sub.floor:
            start, end = since_seq, sub.floor
            sub.floor = since_seq
            self._spawn(self._send_backlog(sub, start, end, False), "backlog")

    async def _send_backlog(self, sub: Subscription, after: int, upto: int, advance: bool) -> None:
        """Sends a subscription's records in (after, upto] page by page, at the client's pace.

        With `advance`, the cursor follows each page, so a retry after a failed
        read never sends a record twice.
        """
        while after < upto and not sub.conn.closed and not sub.ended:
            records = await self.db.run(
                log.read_records, sub.person_id, after, upto, sub.entity, BACKLOG_PAGE
            )
            if sub.ended or sub.conn.closed:
                return  # unsubscribed while the page was read: nothing more of it is sent
            self.stats["backlog"] += len(records)
            EVENTS_DELIVERED.inc(len(records))
            for record in records:
                sub.send(record)
            after = upto if len(records) < BACKLOG_PAGE else records[-1].seq
            if advance:
                sub.cursor = max(sub.cursor, after)
            await sub.conn.room()

    def unsubscribe(self, sub: Subscription) -> None:
        sub.ended = True
        channel = self.channels.get(sub.person_id)
        if channel is None:
            return
        channel.subs.discard(sub)
        if not channel.subs:
            del self.channels[sub.person_id]

    def _start_catch_up(self, channel: PersonChannel, sub: Subscription) -> None:
        sub.catching_up = True
        self._spawn(self._catch_up(channel, sub), "catch-up")

    async def _catch_up(self, channel: PersonChannel, sub: Subscription) -> None:
        try:
            await self._catching_up(channel, sub)
        except Exception:
            # a bug, not a failed read: without this the subscription would wait in
            # silence for ever; the client resumes with since_seq (the crash is logged)
            sub.conn.close(1011)
            raise

    async def _catching_up(self, channel: PersonChannel, sub: Subscription) -> None:
        failures = 0
        try:
            while sub in channel.subs:
                target = channel.head
                if sub.cursor >= target:
                    sub.catching_up = False  # live from here: no await since the check
                    return
                try:
                    await self._send_backlog(sub, sub.cursor, target, advance=True)
                except Exception:
                    failures += 1
                    if failures > 20:
                        logger.warning("catch-up failed repeatedly; closing the connection")
                        sub.conn.close(1012)
                        return
                    await asyncio.sleep(0.5)
                    continue
        finally:
            if sub.catching_up and sub not in channel.subs:
                sub.catching_up = False


def _last_seqs(person_ids: list[int]) -> list[tuple[int, int]]:
    """(id, last seq) of these people: plain SQL, as building the ORM's IN (...) of 500 ids
    cost more than running it, twice a second for every subscribed person."""
    from django.db import connection

    from stepstream.models import Person

    if not person_ids:
        return []
    table = connection.ops.quote_name(Person._meta.db_table)
    marks = ", ".join(["%s"] * len(person_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, last_seq FROM {table} WHERE id IN ({marks})",  # noqa: S608 - no input
            list(person_ids),
        )
        rows: list[tuple[int, int]] = cursor.fetchall()
    return rows
