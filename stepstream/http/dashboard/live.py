"""The dashboard's live channel: a WebSocket at /dashboard/live, opened with the staff session.

No publishable or secret key is involved: the socket is admitted by the
Django session cookie of a signed-in, active staff user (checked again every
few seconds, so signing out or losing staff status closes it with 4401), and
only from a page of the same origin (a cross-site page gets 4403).

Two things can be watched (one JSON message each, answered at once):

* `{"action": "watch_flow", "environment": ID, "flow": IDENTIFIER, "version": N}`:
  the socket gets `{"event": "counts", "flow", "active": {step: n}, "steps":
  {step: {"reached", "completed"}}, "instances": {state: n, "total"}}`
  at once and whenever the counts change. Counts are absolute, recomputed
  from the trigger-kept counters (`queries.state_counts`, a few rows) when
  the log shows a change to that flow, so a reconnect simply gets the right numbers again:
  there is no client-side arithmetic to drift. The log is followed by id
  (as the hub's log path does) for the environments watched, plus a full
  recount every few seconds that catches rows committed out of id order on
  PostgreSQL and people deleted.
* `{"action": "watch_person", "environment": ID, "person_key": KEY, "since_seq": N}`:
  the person's state changes after `since_seq`, flow and step, through the
  same hub subscription as every WebSocket client (`hub.subscribe`), with
  its guarantee: backlog then live, each change once, in `seq` order. Events
  are the usual `{"event": "state_change", "request_id": "flow"|"step", "data"}`.
  A `since_seq` beyond the person's log (deleted and created again) answers
  `{"event": "restarted"}`: the page reloads.
"""

import asyncio
import contextlib
import logging
import time
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

import orjson
from django.conf import settings

from stepstream.dbthreads import DbThreads
from stepstream.http.dashboard import queries
from stepstream.ws.connection import Connection

logger = logging.getLogger("stepstream.http.dashboard")

CLOSE_SIGNED_OUT = 4401
CLOSE_FORBIDDEN = 4403
MAX_MESSAGE = 4096
MAX_WATCHES = 20
SESSION_CHECK_INTERVAL = 5.0
POLL_INTERVAL = 0.2
FULL_RECOUNT_INTERVAL = 5.0


def staff_user_id(session_key: str | None) -> int | None:
    """The id of the active staff user this session belongs to, or None.

    Goes through `django.contrib.auth.get_user`, which also checks the
    session's password hash: changing the password signs the socket out.
    """
    if not session_key or len(session_key) > 100:
        return None
    from importlib import import_module

    from django.contrib.auth import get_user
    from django.http import HttpRequest

    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(request)
    if user.is_authenticated and user.is_active and user.is_staff:
        return user.pk
    return None


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _session_key(scope) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    cookie = SimpleCookie()
    try:
        cookie.load(raw)
    except Exception:  # noqa: BLE001 - a malformed cookie header is no session
        return None
    morsel = cookie.get(settings.SESSION_COOKIE_NAME)
    return morsel.value if morsel else None


def _same_origin(scope) -> bool:
    """Browsers always send Origin on a WebSocket handshake; it must be this host."""
    origin, host = _header(scope, b"origin"), _header(scope, b"host")
    if origin is None:
        return True  # not a browser: a cookie still has to be presented
    return bool(host) and urlsplit(origin).netloc == host


async def _refuse(send, code: int, reason: str) -> None:
    """Accepts, then closes with a code the page can read (a refused handshake hides it)."""
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})


class LiveDashboard:
    """/dashboard/live for one runtime (stepstream.http.runtime): its database threads, its
    hub (people's timelines) and the live counts of the flows some page shows."""

    def __init__(self, db: DbThreads, node):
        self.db = db
        self.node = node
        self.flows = FlowCounts(db)

    async def __call__(self, scope, receive, send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if not _same_origin(scope):
            await _refuse(send, CLOSE_FORBIDDEN, "The dashboard only serves its own pages.")
            return
        session_key = _session_key(scope)
        try:
            user_id = await self.db.run(staff_user_id, session_key)
        except Exception:  # noqa: BLE001 - the database is down: try again later
            await _refuse(send, 1013, "The database is unavailable; retry shortly.")
            return
        if user_id is None or session_key is None:  # no key finds no user
            await _refuse(send, CLOSE_SIGNED_OUT, "Sign in at /dashboard/login/.")
            return
        await send({"type": "websocket.accept"})
        hub = self.node.hub
        assert hub is not None  # started with the runtime
        conn = Connection(send, None, hub)
        socket = DashboardSocket(conn, session_key, self.db, self.flows)
        checker = asyncio.get_running_loop().create_task(socket.check_session())
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message["type"] == "websocket.receive":
                    await socket.handle(message.get("text") or "")
        finally:
            checker.cancel()
            self.flows.unwatch_all(conn)
            await conn.finish()

    async def stop(self) -> None:
        await self.flows.stop()


class DashboardSocket:
    def __init__(self, conn: Connection, session_key: str, db: DbThreads, flows: "FlowCounts"):
        self.conn = conn
        self.db = db
        self.flows = flows
        self.session_key = session_key
        self.watches = 0

    def reply(self, **data) -> None:
        self.conn.push(orjson.dumps(data).decode())

    async def check_session(self) -> None:
        while not self.conn.closed:
            await asyncio.sleep(SESSION_CHECK_INTERVAL)
            with contextlib.suppress(Exception):  # a database hiccup is not a sign-out
                if await self.db.run(staff_user_id, self.session_key) is None:
                    self.conn.close(CLOSE_SIGNED_OUT)
                    return

    async def handle(self, text: str) -> None:
        if not self.conn.allow_request():  # the same token bucket as /ws
            return self.reply(event="error", errors=["Too many requests; slow down."])
        if len(text) > MAX_MESSAGE:
            return self.reply(event="error", errors=["The message is over 4 KiB."])
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            return self.reply(event="error", errors=["Send one JSON object."])
        action = request.get("action")
        if self.watches >= MAX_WATCHES and action in ("watch_flow", "watch_person"):
            return self.reply(event="error", errors=[f"At most {MAX_WATCHES} watches a socket."])
        env_id = request.get("environment")
        if not isinstance(env_id, int) or isinstance(env_id, bool):
            return self.reply(event="error", errors=["environment must be an environment id."])
        if action == "watch_flow":
            await self.watch_flow(env_id, request)
        elif action == "watch_person":
            await self.watch_person(env_id, request)
        else:
            self.reply(event="error", errors=[f"Unknown action {str(action)[:50]!r}."])

    async def watch_flow(self, env_id: int, request: dict) -> None:
        identifier, version = request.get("flow"), request.get("version")
        if not isinstance(identifier, str) or not isinstance(version, int | None):
            return self.reply(event="error", errors=["flow must be a flow identifier."])
        flow_pk = await self.db.run(_flow_pk, env_id, identifier, version)
        if flow_pk is None:
            return self.reply(event="error", errors=[f"No flow {identifier[:255]!r}."])
        self.watches += 1
        await self.flows.watch(self.conn, flow_pk, env_id, identifier)

    async def watch_person(self, env_id: int, request: dict) -> None:
        person_key, since = request.get("person_key"), request.get("since_seq", 0)
        if not isinstance(person_key, str) or not isinstance(since, int) or since < 0:
            return self.reply(event="error", errors=["person_key and since_seq are required."])
        found = await self.db.run(_person, env_id, person_key)
        if found is None:
            return self.reply(event="error", errors=["No such person."])
        person_id, last_seq = found
        if since > last_seq:
            return self.reply(event="restarted", person_key=person_key)
        self.watches += 1
        for entity in ("flow", "step"):
            key = (f"{env_id}:{person_key}", entity)
            old = self.conn.subscriptions.pop(key, None)
            if old is not None:
                self.conn.hub.unsubscribe(old)
            self.conn.subscriptions[key] = self.conn.hub.subscribe(
                self.conn, person_id, last_seq, entity, entity, since
            )
        self.reply(event="watching", person_key=person_key, seq=last_seq)


def _counts(flow_pk: int) -> dict:
    """What a flow page shows live: active per step, the funnel's numbers, instances by state."""
    by_step = queries.state_counts([flow_pk])[flow_pk]
    own = by_step.pop("", {})
    return {
        "active": {step: c["active"] for step, c in by_step.items() if c["active"]},
        "steps": {
            step: {"reached": c["active"] + c["completed"], "completed": c["completed"]}
            for step, c in by_step.items()
        },
        "instances": {**own, "total": sum(own.values())},
    }


def _flow_pk(env_id: int, identifier: str, version: int | None) -> int | None:
    from stepstream.models import Flow

    query = Flow.objects.filter(environment_id=env_id, identifier=identifier)
    if version is not None:
        query = query.filter(version=version)
    return query.order_by("-version").values_list("pk", flat=True).first()


def _person(env_id: int, person_key: str):
    from stepstream.models import Person

    return (
        Person.objects.filter(environment_id=env_id, person_key=person_key)
        .values_list("pk", "last_seq")
        .first()
    )


class _Watch:
    __slots__ = ("flow_pk", "env_id", "identifier", "version", "conns", "counts", "dirty")

    def __init__(self, flow_pk: int, env_id: int, identifier: str):
        self.flow_pk = flow_pk
        self.env_id = env_id
        self.identifier = identifier
        self.conns: set[Connection] = set()
        self.counts: dict | None = None
        self.dirty = True


class FlowCounts:
    """One per runtime: live step counts for every flow version some dashboard shows."""

    def __init__(self, db: DbThreads):
        self.db = db
        self.watches: dict[int, _Watch] = {}
        self.task: asyncio.Task | None = None
        self.last_id: int | None = None
        self.stats = {"recounts": 0, "polls": 0}

    async def watch(self, conn: Connection, flow_pk: int, env_id: int, identifier: str) -> None:
        watch = self.watches.get(flow_pk)
        if watch is None:
            watch = self.watches[flow_pk] = _Watch(flow_pk, env_id, identifier)
        watch.conns.add(conn)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._follow())
        # a fresh count for the newcomer: changes from here on mark the watch dirty
        counts = await self.db.run(_counts, flow_pk)
        conn.push(self._message(watch, counts))
        watch.dirty = True  # a recount racing this one may have pushed older numbers

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def unwatch_all(self, conn: Connection) -> None:
        for flow_pk in [pk for pk, w in self.watches.items() if conn in w.conns]:
            watch = self.watches[flow_pk]
            watch.conns.discard(conn)
            if not watch.conns:
                del self.watches[flow_pk]

    def _message(self, watch: _Watch, counts: dict) -> str:
        return orjson.dumps(
            {
                "event": "counts",
                "flow": watch.identifier,
                "flow_id": watch.flow_pk,
                **counts,
            }
        ).decode()

    async def _follow(self) -> None:
        last_full = time.monotonic()
        try:
            while self.watches:
                await asyncio.sleep(POLL_INTERVAL)
                try:
                    last_full = await self._poll(last_full)
                except Exception:
                    logger.warning("following the log for the dashboard failed", exc_info=True)
                    await asyncio.sleep(1)
        finally:
            self.task = None
            self.last_id = None

    async def _poll(self, last_full: float) -> float:
        self.stats["polls"] += 1
        position = await self.db.run(queries.log_position)
        if self.last_id is None:
            self.last_id = position
            for watch in self.watches.values():
                watch.dirty = True
        elif position > self.last_id:
            env_ids = {w.env_id for w in self.watches.values()}
            touched = await self.db.run(queries.touched_flows, self.last_id, position, env_ids)
            self.last_id = position
            for watch in self.watches.values():
                if (watch.env_id, watch.identifier) in touched:
                    watch.dirty = True
        if time.monotonic() - last_full >= FULL_RECOUNT_INTERVAL:
            last_full = time.monotonic()
            for watch in self.watches.values():
                watch.dirty = True
        for watch in list(self.watches.values()):
            if not watch.dirty:
                continue
            watch.dirty = False
            counts = await self.db.run(_counts, watch.flow_pk)
            self.stats["recounts"] += 1
            if counts != watch.counts:
                watch.counts = counts
                text = self._message(watch, counts)
                for conn in list(watch.conns):
                    conn.push(text)
        return last_full
