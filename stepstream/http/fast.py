"""`GET /api/v1/health` and `GET /api/v1/people/{key}` answered without Django's request.

Everything the health answer says (the hub's counters, the socket layer) lives
on the event loop already, and the database is not touched (that is
`/api/v1/ready`). Through Django it took a REST thread and about a millisecond
of a core; here, what a bare ASGI app takes (docs/performance.md, "REST at
full speed"). The answer is the one Django's view gave, byte for byte, with
the same headers (Allow, the security headers, X-Request-ID), the same access
log line and the same request-duration metric. Anything unusual (another
method, an Accept header asking for something else, a query string) goes to
Django, which answers it as before (405, 406, OPTIONS).

`GET /api/v1/people/{key}` with a secret key this process remembers
(stepstream.trust.keycache) is answered here too: the key re-check (when
needed) and the one query run on a database thread (stepstream.dbthreads), the
answer rendered by DRF's own JSON renderer with the headers the DRF view gave.
A key not remembered (or found revoked), a missing or odd Authorization, a
query string or an unusual Accept: Django answers, as before, and the key is
remembered for the next request.
"""

import logging
import re
import time

import orjson
from django.conf import settings
from django.db import connections

from stepstream import dbthreads, delivery
from stepstream.errors import StepstreamError
from stepstream.http.convertors import Segment
from stepstream.metrics import REQUEST_DURATION
from stepstream.observability import access_log, new_request_id, request_id, sane_request_id
from stepstream.ws import serving

HEALTH_PATH = "/api/v1/health"
PERSON_PATH = re.compile(rf"/api/v1/people/({Segment.regex})")  # the route's own converter
logger = logging.getLogger("stepstream.http")
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


# -- GET /api/v1/people/{key} ------------------------------------------------------------


def person_request(scope) -> tuple[str, str] | None:
    """(the key's path segment, the presented secret key) of a plain person read, or None."""
    if scope["method"] != "GET" or scope.get("query_string"):
        return None
    found = PERSON_PATH.fullmatch(scope["path"])
    if found is None:
        return None
    authorization = None
    for name, value in scope["headers"]:
        if name == b"accept" and value.strip() not in _JSON_ACCEPTS:
            return None
        if name == b"authorization":
            if authorization is not None:
                return None  # repeated: Django joins them; let it answer
            authorization = value.decode("latin-1")
    if authorization is None:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > 200:
        return None
    return found.group(1), key


_person_headers: list | None = None
_renderer = None


def _person_response(data) -> bytes:
    global _renderer
    if _renderer is None:
        from rest_framework.renderers import JSONRenderer

        _renderer = JSONRenderer()
    return _renderer.render(data, "application/json", {})


def _error(e: StepstreamError) -> tuple[int, bytes]:
    return e.status, _person_response({"errors": e.messages, "code": e.code})


def _read_person(digest: str, entry: tuple, needs_check: bool, segment: str):
    """On a database thread: None when the key was revoked (Django answers: 401), else
    (status, body). The key's re-check, when needed, rides in the read's round trip."""
    from stepstream.engine import people, store
    from stepstream.text import validate_person_key
    from stepstream.trust import keycache

    try:
        key = validate_person_key(Segment().to_python(segment))
    except StepstreamError as e:  # answered after the key is known good, as DRF does
        if needs_check and not keycache.confirm(digest, "secret", entry):
            return None
        return _error(e)
    environment = keycache.environment_of(entry)
    if not needs_check:
        try:
            return 200, _person_response(people.describe_by_key(environment, key))
        except StepstreamError as e:
            return _error(e)
    check = (keycache.live_check_sql(), [entry[0]])
    live, found = people.describe_by_key(environment, key, also=check)
    if not keycache.confirmed(digest, "secret", entry, live is not None):
        return None
    if found is None:
        return _error(store.person_not_found(key))
    return 200, _person_response(found)


async def person(scope, send, segment: str, key: str) -> bool:
    """Answers the read, or returns False (nothing sent) for Django to answer it."""
    global _person_headers
    from stepstream.trust import keycache, tenants

    digest = tenants.digest(key)
    found = keycache.remembered(digest, "secret")
    if found is None:
        return False
    started = time.perf_counter()
    given = [value for name, value in scope["headers"] if name == b"x-request-id"]
    incoming = b",".join(given).decode("latin-1")
    rid = incoming if sane_request_id(incoming) else new_request_id()
    token = request_id.set(rid)
    try:
        try:
            answer = await dbthreads.run(_read_person, digest, *found, segment)
        except StepstreamError as e:  # the database is unavailable (dbthreads)
            answer = _error(e)
        except Exception:  # as Django's handler500 would: logged, a JSON 500
            logger.exception("GET person failed")
            sentence = "The server failed to answer; it has been logged."
            answer = 500, _person_response({"errors": [sentence], "code": "internal"})
        if answer is None:
            return False
        status, body = answer
        if _person_headers is None:
            from stepstream.http.api.views import person as view

            allow = ", ".join(view.cls().allowed_methods).encode()
            _person_headers = [(b"content-type", b"application/json"), (b"allow", allow)]
            _person_headers += _security_headers()
        headers = [
            *_person_headers,
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        path = scope["path"]
        duration = round((time.perf_counter() - started) * 1000, 2)
        access_log.info(
            "%s %s %s %.2fms",
            "GET",
            path,
            status,
            duration,
            extra={"method": "GET", "path": path, "status": status, "duration_ms": duration},
        )
        REQUEST_DURATION.observe(time.perf_counter() - started)
        return True
    finally:
        request_id.reset(token)
