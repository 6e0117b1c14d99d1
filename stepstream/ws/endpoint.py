"""The raw ASGI WebSocket endpoint at /ws.

It sits below Channels' consumer machinery on purpose: a consumer hops to a
thread before every handler and routes each message through a bounded
channel-layer queue, which costs most of the delivery rate (see
docs/performance.md). Here a socket is a receive loop plus a writer task.
"""

import itertools
import logging
import os
import secrets
import weakref
from collections import Counter
from urllib.parse import parse_qs

from django.conf import settings

from stepstream.delivery import runtime
from stepstream.models import ApiKey, Environment
from stepstream.observability import request_id
from stepstream.trust import origins, tenants
from stepstream.ws import AsgiMessage, Receive, Scope, Send, guard, protocol
from stepstream.ws.batched import Batched
from stepstream.ws.connection import Connection
from stepstream.ws.frames import forget_handshake

logger = logging.getLogger("stepstream.ws")

CLOSE_BAD_KEY = 4401
CLOSE_REFUSED = guard.CLOSE_KEY_REVOKED  # a revoked key, or an Origin the allow-list refuses
CLOSE_TRY_LATER = 1013
# close reasons: at most 123 bytes (RFC 6455), plain sentences a browser can show
BAD_KEY_REASON = "Missing or wrong key: connect with the environment's publishable key."
ORIGIN_REASON = "This page's origin is not on the environment's allowed origins for this key."

open_per_environment: Counter[int] = Counter()
_connection_ids = itertools.count(1)
_prefix: tuple[int, str] = (0, "")  # (pid, random prefix): a forked worker makes its own


def _connection_name() -> str:
    """Names a connection in log lines: unique per process (a random prefix, renewed in a
    forked child) without a uuid4, an os.urandom call, per connection."""
    global _prefix
    pid = os.getpid()
    if _prefix[0] != pid:
        _prefix = (pid, secrets.token_hex(3))
    return f"ws-{_prefix[1]}{next(_connection_ids):06x}"


async def websocket_app(scope: Scope, receive: Receive, send: Send) -> None:
    admitted = await _admit(scope, receive, send)
    if admitted is None:
        return
    environment, key_id = admitted
    hub = await runtime.ensure_hub()
    await send({"type": "websocket.accept"})
    forget_handshake(scope, send)
    open_per_environment[environment.pk] += 1
    conn = Connection(send, environment, hub, key_id=key_id)
    guard.track(conn)
    try:
        while await _handle(conn, await receive()):
            pass
    finally:
        guard.untrack(conn)
        open_per_environment[environment.pk] -= 1
        if open_per_environment[environment.pk] <= 0:
            del open_per_environment[environment.pk]
        await conn.finish()


async def _handle(conn: Connection, message: AsgiMessage) -> bool:
    """Answers one incoming message; False once the socket is gone.

    Its own function so an idle socket's frame holds no last message.
    """
    kind: str = message["type"]
    if kind == "websocket.receive":
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
        conn.push(await protocol.handle(conn, text))
    return kind != "websocket.disconnect"


def _read_keys(keys: list[str]) -> dict[str, ApiKey]:
    """Each distinct key once: in a reconnect storm the sockets share a few keys."""
    return tenants.key_rows(keys, "publishable")


# connects waiting at the same moment share one job
_key_rows: Batched[str, ApiKey] = Batched(_read_keys)


def _plausible(key: object) -> bool:
    return isinstance(key, str) and 0 < len(key) <= tenants.MAX_KEY_LENGTH


async def _admit(scope: Scope, receive: Receive, send: Send) -> tuple[Environment, int] | None:
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
        key_row = await _key_rows.get(key) if _plausible(key) else None
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
    environment = _shared(key_row.environment)
    if not origins.allowed(environment, scope):
        await _close_after_accept(send, CLOSE_REFUSED, ORIGIN_REASON)
        return None
    limit = settings.STEPSTREAM["WS_MAX_CONNECTIONS_PER_ENVIRONMENT"]
    if open_per_environment[environment.pk] >= limit:
        await _close_after_accept(
            send, CLOSE_TRY_LATER, "Too many connections to this environment; try again later."
        )
        return None
    request_id.set(_connection_name())  # names this connection in log lines
    return environment, key_row.pk


_environments: "weakref.WeakValueDictionary[int, Environment]" = weakref.WeakValueDictionary()


def _shared(fresh: Environment) -> Environment:
    """One Environment object for all of an environment's sockets in this process.

    Each new socket's freshly read row refreshes it, so a changed schema
    reaches the sockets already open too.
    """
    shared = _environments.get(fresh.pk)
    if shared is None:
        _environments[fresh.pk] = fresh
        return fresh
    for field in Environment._meta.concrete_fields:
        setattr(shared, field.attname, getattr(fresh, field.attname))
    return shared


async def _close_after_accept(send: Send, code: int, reason: str = "") -> None:
    """A close code and reason a browser can read (a close before accept is only an HTTP 403).

    Nothing else is sent before it: the socket serves nothing.
    """
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})
