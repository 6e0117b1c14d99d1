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

from stepstream import dbthreads, tenants
from stepstream.delivery import runtime
from stepstream.observability import request_id
from stepstream.ws import protocol
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
        environment = await dbthreads.run(tenants.environment_for_key, key, "publishable")
    except Exception:
        logger.warning("key lookup failed; refusing the connection for now")
        await send({"type": "websocket.close", "code": CLOSE_TRY_LATER})
        return
    if environment is None:
        await send({"type": "websocket.close", "code": CLOSE_BAD_KEY})
        return
    if open_per_environment[environment.pk] >= settings.STEPSTREAM["WS_MAX_CONNECTIONS_PER_KEY"]:
        await send({"type": "websocket.close", "code": CLOSE_TRY_LATER})
        return
    request_id.set("ws-" + uuid.uuid4().hex[:12])  # names this connection in log lines
    hub = await runtime.ensure_hub()
    await send({"type": "websocket.accept"})
    open_per_environment[environment.pk] += 1
    conn = Connection(send, environment, hub)
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
        open_per_environment[environment.pk] -= 1
        if open_per_environment[environment.pk] <= 0:
            del open_per_environment[environment.pk]
        await conn.finish()
