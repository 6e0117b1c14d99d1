"""The ASGI application: Django for HTTP, the raw endpoint for /ws, the hub on lifespan."""

import os
from urllib.parse import unquote

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")

from a2wsgi import WSGIMiddleware  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import StaticFilesHandler  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

# Django's views are synchronous. Its ASGI handler runs every one of them on a
# single thread (asgiref's thread-sensitive executor), so one request waiting
# on the database held up all the others: REST did 150 requests/s whether 1
# or 16 callers. Served as WSGI from a pool of threads, requests run side by
# side, each thread keeping its database connection (docs/performance.md).
django_app = WSGIMiddleware(
    StaticFilesHandler(get_wsgi_application()), workers=settings.STEPSTREAM["HTTP_THREADS"]
)

from stepstream.bodylimit import limit_body  # noqa: E402
from stepstream.delivery import runtime  # noqa: E402
from stepstream.ws.endpoint import websocket_app  # noqa: E402

# A "/" inside a person_key arrives as %2F; servers decode it before routing,
# so it is swapped for a character no path segment uses and swapped back in
# the view (stepstream.api.views.person_key).
SLASH_STAND_IN = "\uffff"


async def http_app(scope, receive, send):
    raw = scope.get("raw_path")
    if raw and b"%2f" in raw.lower():
        text = raw.decode("latin-1").replace("%2F", "%EF%BF%BF").replace("%2f", "%EF%BF%BF")
        scope = dict(scope, path=unquote(text))
    await django_app(scope, receive, send)


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await runtime.ensure_hub()
            except Exception as e:  # noqa: BLE001
                await send({"type": "lifespan.startup.failed", "message": str(e)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.stop_hub()
            await send({"type": "lifespan.shutdown.complete"})
            return


_apps = {"http": limit_body(http_app), "websocket": websocket_app, "lifespan": lifespan}

from stepstream.dashboard.live import dashboard_socket  # noqa: E402


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
