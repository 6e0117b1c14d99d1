"""Django (WSGI) served from a pool of threads with one hand-over each way per request.

a2wsgi, used before, handed each response over in three steps (start, body,
end), each a round trip from the thread to the event loop and back while the
thread waited; the request body was read from the thread the same way. A
profile put more time in those hand-overs than in Django's own work for a
`GET /people/{key}` (docs/performance-history.md, "REST at full speed"). Here the
body is already whole (stepstream.http.bodylimit reads it on the loop), the
thread runs Django and collects the response, and the loop sends it.

A response larger than `STREAM_AFTER` bytes (a big static file, say) is not
held whole: past that size the thread sends it on chunk by chunk, waiting
for each send, as a2wsgi did, so a slow reader holds one chunk, not the file.
"""

import asyncio
import contextvars
import io
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

from stepstream.http.error_bodies import send_error
from stepstream.http.health import RUNTIME_KEY

logger = logging.getLogger("stepstream.http")

STREAM_AFTER = 256 * 1024


_CGI_NAMES = {b"content-length": "CONTENT_LENGTH", b"content-type": "CONTENT_TYPE"}


def wsgi_environ(scope, body: io.BytesIO) -> dict:
    """The WSGI environ (PEP 3333) of an ASGI HTTP request whose whole body is `body`.

    Strings are "native": the request's bytes read as latin-1 (the path, already
    percent-decoded by the server, as its UTF-8 bytes); a repeated header is
    joined with commas, as the CGI variables of WSGI servers are.
    """
    script_name = scope.get("root_path", "").encode("utf-8").decode("latin-1")
    path_info = scope["path"].encode("utf-8").decode("latin-1")
    if script_name and path_info.startswith(script_name):
        path_info = path_info[len(script_name) :]
    server_name, server_port = scope.get("server") or ("localhost", 80)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port or 0),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = _CGI_NAMES.get(raw_name)
        if name is None:
            name = "HTTP_" + raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        environ[name] = f"{environ[name]},{value}" if name in environ else value
    return environ


class _Response:
    """What one WSGI call answered, collected on the thread."""

    __slots__ = ("loop", "send", "status", "headers", "chunks", "size", "streaming")

    def __init__(self, loop, send):
        self.loop, self.send = loop, send
        self.status, self.headers = None, []
        self.chunks: list[bytes] = []
        self.size = 0
        self.streaming = False

    def start_response(self, status: str, headers, exc_info=None):
        if exc_info is not None and self.streaming:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status = int(status.split(" ", 1)[0])
        self.headers = [
            (name.strip().encode("latin-1").lower(), value.strip().encode("latin-1"))
            for name, value in headers
        ]
        return self._write

    def _send_now(self, message) -> None:
        asyncio.run_coroutine_threadsafe(self.send(message), self.loop).result()

    def _write(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self.streaming:
            self.chunks.append(chunk)
            self.size += len(chunk)
            if self.size <= STREAM_AFTER:
                return
            self.streaming = True
            start = {"type": "http.response.start", "status": self.status, "headers": self.headers}
            self._send_now(start)
            chunk, self.chunks = b"".join(self.chunks), []
        self._send_now({"type": "http.response.body", "body": chunk, "more_body": True})

    def run(self, app, environ) -> None:
        iterable = app(environ, self.start_response)
        try:
            for chunk in iterable:
                self._write(chunk)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        if self.streaming:
            self._send_now({"type": "http.response.body", "body": b""})


# What the REST API (secret key in a header, JSON both ways, no cookies) never uses:
# each still cost its share of every API request (a session store, a lazy user, a
# message store made and put away). The dashboard, admin and pages keep them all.
API_SKIPS = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
)
API_PREFIX = "/api/v1/"
API_PAGES = ("/api/v1/docs",)  # an HTML page rendered with the templates' context processors


class ApiHandler(WSGIHandler):
    """Django's handler with the middleware the REST API needs: settings.MIDDLEWARE less
    API_SKIPS (request id and log line, metrics, security headers, CSRF, common)."""

    def load_middleware(self, is_async=False):
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = [m for m in full if m not in API_SKIPS]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


def is_api(path: str) -> bool:
    return path.startswith(API_PREFIX) and path not in API_PAGES


class DjangoBridge:
    """An ASGI app calling a WSGI app on `threads` threads (`api_app` for REST API paths),
    each request's environ carrying the runtime (stepstream.http.runtime) under
    RUNTIME_KEY. Made and shut down by the runtime."""

    def __init__(self, app, threads: int, api_app=None, runtime=None):
        self.app = app
        self.api_app = api_app or app
        self.runtime = runtime
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="WSGI")

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope, receive, send):
        chunks = []
        while True:  # one message when stepstream.http.bodylimit has read the body
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        environ = wsgi_environ(scope, io.BytesIO(b"".join(chunks)))
        environ[RUNTIME_KEY] = self.runtime
        del chunks
        loop = asyncio.get_running_loop()
        response = _Response(loop, send)
        context = contextvars.copy_context()
        app = self.api_app if is_api(scope["path"]) else self.app
        try:
            await loop.run_in_executor(self.executor, context.run, response.run, app, environ)
        except Exception:
            if response.streaming:
                raise
            logger.exception("the WSGI application failed")
            return await send_error(
                send, 500, "internal", "The server failed to answer; it has been logged."
            )
        if not response.streaming:
            body = b"".join(response.chunks)
            start = {"status": response.status, "headers": response.headers}
            await send({"type": "http.response.start", **start})
            await send({"type": "http.response.body", "body": body})
