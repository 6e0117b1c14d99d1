"""The raw ASGI WebSocket endpoint at /ws.

It sits below Channels' consumer machinery on purpose: a consumer hops to a
thread before every handler and routes each message through a bounded
channel-layer queue, which costs most of the delivery rate (see
docs/performance-history.md). Here a socket is a receive loop plus a writer task.
"""

import itertools
import logging
import secrets
import weakref
from collections import Counter
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from django.conf import settings

from stepstream.dbthreads import DbThreads
from stepstream.models import ApiKey, Environment
from stepstream.observability import request_id
from stepstream.trust import origins, tenants
from stepstream.ws import AsgiMessage, Receive, Scope, Send, dispatch, guard
from stepstream.ws.batched import Batched
from stepstream.ws.connection import Connection
from stepstream.ws.handshake import forget_handshake
from stepstream.ws.positions import Positions

if TYPE_CHECKING:
    from stepstream.delivery import Node

logger = logging.getLogger("stepstream.ws")

CLOSE_BAD_KEY = 4401
CLOSE_REFUSED = guard.CLOSE_KEY_REVOKED  # a revoked key, or an Origin the allow-list refuses
CLOSE_TRY_LATER = 1013
# close reasons: at most 123 bytes (RFC 6455), plain sentences a browser can show
BAD_KEY_REASON = "Missing or wrong key: connect with the environment's publishable key."
ORIGIN_REASON = "This page's origin is not on the environment's allowed origins for this key."


async def _handle(conn: Connection, message: AsgiMessage) -> bool:
    """Answers one incoming message; False once the socket is gone.

    Its own function so an idle socket's frame holds no last message.
    """
    kind: str = message["type"]
    if kind == "websocket.receive":
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
        conn.push(await dispatch.handle(conn, text))
    return kind != "websocket.disconnect"


def _read_keys(keys: list[str]) -> dict[str, ApiKey]:
    """Each distinct key once: in a reconnect storm the sockets share a few keys."""
    return tenants.key_rows(keys, "publishable")


def _plausible(key: object) -> bool:
    return isinstance(key, str) and 0 < len(key) <= tenants.MAX_KEY_LENGTH


async def _close_after_accept(send: Send, code: int, reason: str = "") -> None:
    """A close code and reason a browser can read (a close before accept is only an HTTP 403).

    Nothing else is sent before it: the socket serves nothing.
    """
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})


class Gateway:
    """The /ws endpoint of one runtime (stepstream.http.runtime): its database threads,
    delivery hub and connection guard, the connects and subscribes being read in batches,
    and the sockets open per environment. Called as the ASGI WebSocket app."""

    def __init__(self, db: DbThreads, node: "Node", watch: guard.Guard) -> None:
        self.db = db
        self.node = node  # stepstream.delivery.Node: its hub is started with the runtime
        self.guard = watch
        self.positions = Positions(db)
        # connects waiting at the same moment share one job
        self._key_rows: Batched[str, ApiKey] = Batched(_read_keys, db)
        self._environments: weakref.WeakValueDictionary[int, Environment] = (
            weakref.WeakValueDictionary()
        )
        self.open_per_environment: Counter[int] = Counter()
        # names connections in log lines: unique per process (a runtime is made after the
        # fork of `serve --workers`) without a uuid4, an os.urandom call, per connection
        self._ids = itertools.count(1)
        self._prefix = f"ws-{secrets.token_hex(3)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        admitted = await self._admit(scope, receive, send)
        if admitted is None:
            return
        environment, key_id = admitted
        hub = self.node.hub
        assert hub is not None  # started with the runtime, before any socket
        await send({"type": "websocket.accept"})
        forget_handshake(scope, send)
        self.open_per_environment[environment.pk] += 1
        conn = Connection(send, environment, hub, key_id=key_id, gateway=self)
        self.guard.track(conn)
        try:
            while await _handle(conn, await receive()):
                pass
        finally:
            self.guard.untrack(conn)
            self.open_per_environment[environment.pk] -= 1
            if self.open_per_environment[environment.pk] <= 0:
                del self.open_per_environment[environment.pk]
            await conn.finish()

    async def _admit(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[Environment, int] | None:
        """(environment, key id) for a socket that may open, else None once it is refused.

        A function of its own so the key, its row and the parsed query are freed
        when it returns, not held for the socket's lifetime.
        """
        message = await receive()
        if message["type"] != "websocket.connect":
            return None
        if scope.get("path") != "/ws":
            await send({"type": "websocket.close", "code": 4404})
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        key = (query.get("key") or [None])[0]
        try:
            key_row = await self._key_rows.get(key) if _plausible(key) else None
        except Exception:
            logger.warning("key lookup failed; refusing the connection for now")
            await _close_after_accept(send, CLOSE_TRY_LATER, "The server cannot check keys now.")
            return None
        if key_row is None:
            await _close_after_accept(send, CLOSE_BAD_KEY, BAD_KEY_REASON)
            return None
        if key_row.revoked_at is not None:
            await _close_after_accept(send, CLOSE_REFUSED, guard.REVOKED_REASON)
            return None
        environment = self._shared(key_row.environment)
        if not origins.allowed(environment, scope):
            await _close_after_accept(send, CLOSE_REFUSED, ORIGIN_REASON)
            return None
        most = settings.STEPSTREAM["WS_MAX_CONNECTIONS_PER_ENVIRONMENT"]
        if self.open_per_environment[environment.pk] >= most:
            await _close_after_accept(
                send, CLOSE_TRY_LATER, "Too many connections to this environment; try again later."
            )
            return None
        request_id.set(f"{self._prefix}{next(self._ids):06x}")  # names it in log lines
        return environment, key_row.pk

    def _shared(self, fresh: Environment) -> Environment:
        """One Environment object for all of an environment's sockets in this process.

        Each new socket's freshly read row refreshes it, so a changed schema
        reaches the sockets already open too.
        """
        shared = self._environments.get(fresh.pk)
        if shared is None:
            self._environments[fresh.pk] = fresh
            return fresh
        for field in Environment._meta.concrete_fields:
            setattr(shared, field.attname, getattr(fresh, field.attname))
        return shared
