"""The raw ASGI WebSocket endpoint at /ws.

It sits below Channels' consumer machinery on purpose: a consumer hops to a
thread before every handler and routes each message through a bounded
channel-layer queue, which costs most of the delivery rate (see
docs/performance.md). Here a socket is a receive loop plus a writer task.
"""

import logging
import uuid
from collections import Counter
from urllib.parse import parse_qs

from django.conf import settings

from stepstream import dbthreads, origins, tenants
from stepstream.delivery import runtime
from stepstream.observability import request_id
from stepstream.ws import guard, protocol
from stepstream.ws.connection import Connection

logger = logging.getLogger("stepstream.ws")

CLOSE_BAD_KEY = 4401
CLOSE_TRY_LATER = 1013

open_per_environment: Counter = Counter()


async def websocket_app(scope, receive, send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if scope.get("path") != "/ws":
        await send({"type": "websocket.close", "code": 4404})
        return
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    key = (query.get("key") or [None])[0]
    try:
        key_row = await dbthreads.run(tenants.key_row, key, "publishable")
    except Exception:
        logger.warning("key lookup failed; refusing the connection for now")
        await _close_after_accept(send, CLOSE_TRY_LATER)
        return
    if key_row is None:
        await send({"type": "websocket.close", "code": CLOSE_BAD_KEY})
        return
    environment = key_row.environment
    if not origins.allowed(environment, scope):
        await origins.refuse(scope, send)  # HTTP 403
        return
    if open_per_environment[environment.pk] >= settings.STEPSTREAM["WS_MAX_CONNECTIONS_PER_KEY"]:
        await _close_after_accept(send, CLOSE_TRY_LATER)
        return
    request_id.set("ws-" + uuid.uuid4().hex[:12])  # names this connection in log lines
    hub = await runtime.ensure_hub()
    await send({"type": "websocket.accept"})
    open_per_environment[environment.pk] += 1
    conn = Connection(send, environment, hub, key_id=key_row.pk)
    guard.track(conn)
    try:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if text is None:
                    raw = message.get("bytes") or b""
                    text = raw.decode("utf-8", errors="replace")
                conn.push(await protocol.handle(conn, text))
            elif kind == "websocket.disconnect":
                break
    finally:
        guard.untrack(conn)
        open_per_environment[environment.pk] -= 1
        if open_per_environment[environment.pk] <= 0:
            del open_per_environment[environment.pk]
        await conn.finish()


async def _close_after_accept(send, code: int) -> None:
    """A close code the client can see (a close before accept is only an HTTP 403)."""
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code})
