"""`GET /api/v1/health` answered on the event loop: no thread, no Django request.

Everything the health answer says (the hub's counters, the socket layer) lives
on the event loop already, and the database is not touched (that is
`/api/v1/ready`). Through Django it took a REST thread and about a millisecond
of a core; here, what a bare ASGI app takes (docs/performance.md, "REST at
full speed"). The answer is the one Django's view gave, byte for byte, with
the same headers (Allow, the security headers, X-Request-ID), the same access
log line and the same request-duration metric. Anything unusual (another
method, an Accept header asking for something else, a query string) goes to
Django, which answers it as before (405, 406, OPTIONS).
"""

import time

import orjson
from django.conf import settings
from django.db import connections

from stepstream import delivery
from stepstream.metrics import REQUEST_DURATION
from stepstream.observability import access_log, new_request_id, request_id, sane_request_id
from stepstream.ws import serving

HEALTH_PATH = "/api/v1/health"
_JSON_ACCEPTS = (b"*/*", b"application/json")


def _security_headers() -> list[tuple[bytes, bytes]]:
    """The headers django.middleware.security.SecurityMiddleware adds to a plain-HTTP answer."""
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        if not isinstance(policy, str):
            policy = ",".join(policy)
        headers.append((b"referrer-policy", policy.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(
            (b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode())
        )
    return headers


def _allow() -> bytes:
    """DRF's Allow header of the view, in its order (a set's: it varies between processes)."""
    from stepstream.http.api.views import health

    return ", ".join(health.cls().allowed_methods).encode()


_headers: list | None = None
_vendor: str | None = None


def handles(scope) -> bool:
    """True for a plain `GET /api/v1/health` asking for JSON (or anything)."""
    if scope["path"] != HEALTH_PATH or scope["method"] != "GET" or scope.get("query_string"):
        return False
    for name, value in scope["headers"]:
        if name == b"accept" and value.strip() not in _JSON_ACCEPTS:
            return False
    return True


def health_body() -> bytes:
    global _vendor
    if _vendor is None:
        _vendor = connections["default"].vendor
    hub = delivery.current_hub()
    return orjson.dumps(
        {
            "status": "ok",
            "database": _vendor,
            "broker": type(delivery.broker()).__name__,
            "delivered": dict(hub.stats) if hub else {},
            "hub": {"healthy": hub.healthy, "errors": dict(hub.errors)} if hub else None,
            "websocket": serving.report(),
        }
    )


async def health(scope, receive, send) -> None:
    global _headers
    started = time.perf_counter()
    given = [value for name, value in scope["headers"] if name == b"x-request-id"]
    incoming = b",".join(given).decode("latin-1")  # as Django joins repeated headers
    rid = incoming if sane_request_id(incoming) else new_request_id()
    token = request_id.set(rid)
    try:
        if _headers is None:
            _headers = [(b"content-type", b"application/json"), (b"allow", _allow())]
            _headers += _security_headers()
        body = health_body()
        headers = [
            *_headers,
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        duration = round((time.perf_counter() - started) * 1000, 2)
        access_log.info(
            "%s %s %s %.2fms",
            "GET",
            HEALTH_PATH,
            200,
            duration,
            extra={"method": "GET", "path": HEALTH_PATH, "status": 200, "duration_ms": duration},
        )
    finally:
        request_id.reset(token)
        REQUEST_DURATION.observe(time.perf_counter() - started)
