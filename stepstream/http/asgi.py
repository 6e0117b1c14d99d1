"""The ASGI application: Django for HTTP, the raw endpoint for /ws, the hub on lifespan."""

import asyncio
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import StaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousFileOperation  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import Http404  # noqa: E402


class StaticFiles(StaticFilesHandler):
    """Django's static files, for anyone: any origin may load them (the SDK is imported
    as a JS module from customers' pages), a path that climbs out of the static
    directories is a 404 (Django raised SuspiciousFileOperation: a 500), and
    methods other than GET and HEAD are 405."""

    def serve(self, request):
        from stepstream.http.views import error_response  # once Django is set up

        if request.method not in ("GET", "HEAD"):
            return error_response(
                405,
                "method_not_allowed",
                f"The method {request.method} is not allowed here; use GET, HEAD.",
                Allow="GET, HEAD",
            )
        try:
            response = super().serve(request)
        except SuspiciousFileOperation:
            raise Http404("outside the static directories") from None
        response["Access-Control-Allow-Origin"] = "*"
        return response


# Django's views are synchronous. Its ASGI handler runs every one of them on a
# single thread (asgiref's thread-sensitive executor), so one request waiting
# on the database held up all the others: REST did 150 requests/s whether 1
# or 16 callers. Served as WSGI from a pool of threads, requests run side by
# side, each thread keeping its database connection (docs/performance.md);
# stepstream.http.bridge hands each request over once each way.
from stepstream.http.bridge import ApiHandler, DjangoBridge  # noqa: E402

django_app = DjangoBridge(
    StaticFiles(get_wsgi_application()),
    threads=settings.STEPSTREAM["HTTP_THREADS"],
    api_app=ApiHandler(),
)

from stepstream.config import is_first_worker  # noqa: E402
from stepstream.delivery import runtime  # noqa: E402
from stepstream.delivery.webhooks import worker as webhook_worker  # noqa: E402
from stepstream.http import fast, metrics  # noqa: E402
from stepstream.http.bodylimit import limit_body, replaying  # noqa: E402
from stepstream.http.convertors import NotUtf8, routing_path  # noqa: E402
from stepstream.http.errors import send_error  # noqa: E402
from stepstream.trust import keycache, keywatch  # noqa: E402
from stepstream.ws.endpoint import websocket_app  # noqa: E402


async def http_app(scope, receive, send):
    """Routes on the raw path with `%2F` and `%25` kept (stepstream.http.convertors).

    `GET /api/v1/health` (see `_http`), and `GET /api/v1/people/{key}` and a transition
    call with a remembered key, are answered without Django (stepstream.http.fast).
    """
    raw = scope.get("raw_path")
    if raw and b"%" in raw:
        try:
            scope = dict(scope, path=routing_path(raw))
        except NotUtf8 as e:
            return await send_error(send, 400, "invalid", str(e))
    read = fast.person_request(scope)
    if read is not None and await fast.person(scope, send, *read):
        return
    call = fast.transition_request(scope)
    if call is not None:
        message = await receive()  # the whole body: stepstream.http.bodylimit read it
        if message["type"] != "http.request":
            return
        if await fast.transition(scope, send, call[:2], call[2], message.get("body", b"")):
            return
        receive = replaying(message, receive)  # Django reads the body again
    await django_app(scope, receive, send)


async def lifespan(scope, receive, send):
    gauges = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await runtime.ensure_hub()
                keywatch.start(keycache.forget)
                if is_first_worker():  # once per server, not in each of --workers N
                    await webhook_worker.start()
                if metrics.MULTIPROCESS:  # serve --workers N: gauges shared through files
                    gauges = asyncio.get_running_loop().create_task(metrics.write_live_gauges())
            except Exception as e:  # noqa: BLE001
                await send({"type": "lifespan.startup.failed", "message": str(e)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if gauges is not None:
                gauges.cancel()
            await webhook_worker.stop()
            await asyncio.to_thread(keywatch.stop)
            await runtime.stop_hub()
            await send({"type": "lifespan.shutdown.complete"})
            return


_with_body = limit_body(http_app)


def _http(scope, receive, send):
    """A plain `GET /api/v1/health` (no body) is answered at once, without the body reader."""
    if scope["path"] == fast.HEALTH_PATH and fast.handles(scope):
        return fast.health(scope, receive, send)
    return _with_body(scope, receive, send)


_apps = {"http": _http, "websocket": websocket_app, "lifespan": lifespan}

from stepstream.http.dashboard.live import dashboard_socket  # noqa: E402


def _websocket(scope, receive, send):
    """/dashboard/live (staff session) beside /ws (publishable key); no extra frame per socket."""
    if scope.get("path") == "/dashboard/live":
        return dashboard_socket(scope, receive, send)
    return websocket_app(scope, receive, send)


_apps["websocket"] = _websocket


def application(scope, receive, send):
    """Dispatches on the scope type by returning the app's coroutine, not awaiting it.

    An `async def` router would keep one more coroutine frame alive for the
    whole life of every socket (serve passes interface="asgi3" to uvicorn).
    """
    return _apps[scope["type"]](scope, receive, send)
