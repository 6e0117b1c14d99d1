"""The ASGI application: the runtime built by the lifespan, Django for HTTP, /ws, the rest.

`application` is the one object uvicorn is given. Its lifespan builds this
process's runtime (stepstream.http.runtime) and stops it; every request and
socket is routed to the runtime's parts. Served without a lifespan (httpx's
ASGI transport in tests), the first request builds and starts one.
"""

import asyncio
import logging
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")

import django  # noqa: E402

django.setup(set_prefix=False)

from stepstream.http import fast  # noqa: E402
from stepstream.http.bodylimit import limit_body, replaying  # noqa: E402
from stepstream.http.convertors import NotUtf8, routing_path  # noqa: E402
from stepstream.http.error_bodies import send_error  # noqa: E402
from stepstream.http.runtime import Runtime  # noqa: E402

logger = logging.getLogger("stepstream.http")


class Application:
    """Routes each scope to the runtime's parts; owns the runtime between lifespan events."""

    def __init__(self):
        self.runtime: Runtime | None = None
        self._starting: asyncio.Lock | None = None
        self._with_body = limit_body(self._http)

    def __call__(self, scope, receive, send):
        """Dispatches on the scope type by returning the part's coroutine, not awaiting it.

        An `async def` router would keep one more coroutine frame alive for the
        whole life of every socket (serve passes interface="asgi3" to uvicorn).
        """
        kind = scope["type"]
        if kind == "lifespan":
            return self.lifespan(scope, receive, send)
        runtime = self.runtime
        if runtime is None:
            return self._first(scope, receive, send)
        if kind == "websocket":
            if scope.get("path") == "/dashboard/live":  # staff session, beside /ws
                return runtime.dashboard(scope, receive, send)
            return runtime.gateway(scope, receive, send)
        # a plain `GET /api/v1/health` (no body) is answered at once, without the body reader
        if scope["path"] == fast.HEALTH_PATH and fast.handles(scope):
            return runtime.fast.health(scope, receive, send)
        return self._with_body(scope, receive, send)

    async def _first(self, scope, receive, send):
        """Without a lifespan: the first request builds and starts the runtime."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.runtime is None:
                runtime = Runtime()
                await runtime.start()
                self.runtime = runtime
        await self(scope, receive, send)

    async def _http(self, scope, receive, send):
        """Routes on the raw path with `%2F` and `%25` kept (stepstream.http.convertors).

        `GET /api/v1/people/{key}` and a transition call with a remembered key are
        answered without Django (stepstream.http.fast).
        """
        runtime = self.runtime
        assert runtime is not None  # routed here only once it runs (__call__)
        raw = scope.get("raw_path")
        if raw and b"%" in raw:
            try:
                scope = dict(scope, path=routing_path(raw))
            except NotUtf8 as e:
                return await send_error(send, 400, "invalid", str(e))
        read = fast.person_request(scope)
        if read is not None and await runtime.fast.person(scope, send, *read):
            return
        call = fast.transition_request(scope)
        if call is not None:
            message = await receive()  # the whole body: stepstream.http.bodylimit read it
            if message["type"] != "http.request":
                return
            body = message.get("body", b"")
            if await runtime.fast.transition(scope, send, call[:2], call[2], body):
                return
            receive = replaying(message, receive)  # Django reads the body again
        await runtime.django(scope, receive, send)

    async def lifespan(self, scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    runtime = Runtime()
                    await runtime.start()
                except Exception as e:  # noqa: BLE001 - said to the server, which stops
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                self.runtime = runtime
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                running, self.runtime = self.runtime, None
                if running is not None:
                    await running.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Application()
