"""`GET /api/v1/health`, `GET /api/v1/people/{key}` and transitions without Django's request.

Everything the health answer says (the hub's counters, the socket layer) lives
on the event loop already, and the database is not touched (that is
`/api/v1/ready`). Through Django it took a REST thread and about a millisecond
of a core; here, what a bare ASGI app takes (docs/performance-history.md, "REST at
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

`POST /api/v1/people/{key}/flows/{flow}/transitions` likewise, for a body sent
as `application/json` that names a transition as the view reads it (the same
parser, the same checks): the engine call runs on a database thread and its
answer, or its refusal (404, 409), is the view's. A body the view would refuse
goes to Django, replayed, which refuses it as before. Through Django, a
transition spent about a fifth of its server CPU in Django's and DRF's request
handling (docs/performance-history.md, "REST at full speed").
"""

import functools
import logging
import re
import time

import orjson
from django.conf import settings

from stepstream.errors import StepstreamError
from stepstream.http.convertors import Segment
from stepstream.http.health import health_report
from stepstream.metrics import REQUEST_DURATION
from stepstream.observability import access_log, new_request_id, request_id, sane_request_id

HEALTH_PATH = "/api/v1/health"
PERSON_PATH = re.compile(rf"/api/v1/people/({Segment.regex})")  # the route's own converter
TRANSITION_PATH = re.compile(
    rf"/api/v1/people/({Segment.regex})/flows/({Segment.regex})/transitions"
)
logger = logging.getLogger("stepstream.http")
_JSON_ACCEPTS = (b"*/*", b"application/json")
_BODY_HEADERS = (b"content-length", b"transfer-encoding")


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


def handles(scope) -> bool:
    """True for a plain `GET /api/v1/health` asking for JSON (or anything), with no body:
    it is answered before the body reader (stepstream.http.bodylimit)."""
    if scope["path"] != HEALTH_PATH or scope["method"] != "GET" or scope.get("query_string"):
        return False
    for name, value in scope["headers"]:
        if name == b"accept" and value.strip() not in _JSON_ACCEPTS:
            return False
        if name in _BODY_HEADERS:
            return False
    return True


# -- GET /api/v1/people/{key} ------------------------------------------------------------


def person_request(scope) -> tuple[str, str] | None:
    """(the key's path segment, the presented secret key) of a plain person read, or None."""
    if scope["method"] != "GET" or scope.get("query_string"):
        return None
    found = PERSON_PATH.fullmatch(scope["path"])
    if found is None:
        return None
    key = _bearer(scope)
    return None if key is None else (found.group(1), key)


def _bearer(scope) -> str | None:
    """The secret key of a request asking for JSON (or anything) with one plain Bearer
    Authorization header, or None: Django answers anything else."""
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
    return key


@functools.cache
def _renderer():
    """DRF's own JSON renderer (stateless: one serves every request)."""
    from rest_framework.renderers import JSONRenderer

    return JSONRenderer()


def _person_response(data) -> bytes:
    return _renderer().render(data, "application/json", {})


def _error(e: StepstreamError) -> tuple[int, bytes]:
    return e.status, _person_response({"errors": e.messages, "code": e.code})


def _read_person(memory, digest: str, entry, needs_check: bool, segment: str):
    """On a database thread: None when the key was revoked (Django answers: 401), else
    (status, body). The key's re-check, when needed, rides in the read's round trip."""
    from stepstream.engine import people, store
    from stepstream.strictjson import validate_person_key
    from stepstream.trust import keycache

    try:
        key = validate_person_key(Segment().to_python(segment))
    except StepstreamError as e:  # answered after the key is known good, as DRF does
        if needs_check and not memory.confirm(digest, "secret", entry):
            return None
        return _error(e)
    environment = entry.environment()
    if not needs_check:
        try:
            return 200, _person_response(people.describe_by_key(environment, key))
        except StepstreamError as e:
            return _error(e)
    check = (keycache.live_check_sql(), [entry.key_id])
    live, found = people.describe_by_key(environment, key, also=check)
    if not memory.confirmed(digest, "secret", entry, live is not None):
        return None
    if found is None:
        return _error(store.person_not_found(key))
    return 200, _person_response(found)


# -- POST /api/v1/people/{key}/flows/{flow}/transitions -----------------------------------


def transition_request(scope) -> tuple[str, str, str] | None:
    """(the person's and the flow's path segments, the secret key) of a plain transition call
    with a JSON body, or None."""
    if scope["method"] != "POST" or scope.get("query_string"):
        return None
    found = TRANSITION_PATH.fullmatch(scope["path"])
    if found is None:
        return None
    types = [value for name, value in scope["headers"] if name == b"content-type"]
    if types != [b"application/json"]:
        return None
    key = _bearer(scope)
    return None if key is None else (found.group(1), found.group(2), key)


def transition_named(body: bytes) -> str | None:
    """The transition a body names, as the view reads it, or None: Django answers the refusal."""
    from stepstream import strictjson
    from stepstream.http.api.views import transition_of

    try:
        return transition_of(strictjson.loads(body, "The request body"))
    except StepstreamError:
        return None


def _transition(memory, digest, entry, needs_check, segment: str, flow: str, transition: str):
    """On a database thread: None when the key was revoked (Django answers: 401), else
    (status, body)."""
    from stepstream import engine
    from stepstream.strictjson import validate_person_key

    if needs_check and not memory.confirm(digest, "secret", entry):
        return None
    environment = entry.environment()
    try:
        key = validate_person_key(Segment().to_python(segment))
        flow = Segment().to_python(flow)
        done = engine.do_transition(environment, key, flow, transition, via="rest")
    except StepstreamError as e:
        return _error(e)
    return 200, _person_response(done)


# -- both --------------------------------------------------------------------------------


class FastPath:
    """The answers made without Django, for one runtime: its database threads, and the
    headers each view answers with, found once."""

    def __init__(self, runtime):
        self.runtime = runtime
        self._health_headers: list | None = None
        self._view_headers: dict = {}

    async def health(self, scope, receive, send) -> None:
        started = time.perf_counter()
        given = [value for name, value in scope["headers"] if name == b"x-request-id"]
        incoming = b",".join(given).decode("latin-1")  # as Django joins repeated headers
        rid = incoming if sane_request_id(incoming) else new_request_id()
        token = request_id.set(rid)
        try:
            if self._health_headers is None:
                self._health_headers = [
                    (b"content-type", b"application/json"),
                    (b"allow", _allow()),
                    *_security_headers(),
                ]
            body = orjson.dumps(health_report(self.runtime))
            headers = [
                *self._health_headers,
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
                extra={
                    "method": "GET",
                    "path": HEALTH_PATH,
                    "status": 200,
                    "duration_ms": duration,
                },
            )
        finally:
            request_id.reset(token)
            REQUEST_DURATION.observe(time.perf_counter() - started)

    async def person(self, scope, send, segment: str, key: str) -> bool:
        """Answers the read, or returns False (nothing sent) for Django to answer it."""
        from stepstream.http.api.views import person as view

        return await self._answer(scope, send, view, key, _read_person, segment)

    async def transition(
        self, scope, send, segments: tuple[str, str], key: str, body: bytes
    ) -> bool:
        """Makes the transition, or returns False (nothing sent, nothing done) for Django."""
        from stepstream.http.api.views import person_transition as view

        named = transition_named(body)
        if named is None:
            return False
        return await self._answer(scope, send, view, key, _transition, *segments, named)

    async def _answer(self, scope, send, view, key: str, work, *args) -> bool:
        """Runs `work(memory, digest, entry, needs_check, *args)` on a database thread for a secret
        key this process remembers and sends its (status, body) as the DRF `view` would,
        with its headers, request id, access log line and duration metric; False (nothing
        sent) when the key is not remembered or `work` found it revoked: Django answers."""
        from stepstream.trust import tenants

        digest = tenants.digest(key)
        memory = self.runtime.keys
        found = memory.remembered(digest, "secret")
        if found is None:
            return False
        started = time.perf_counter()
        given = [value for name, value in scope["headers"] if name == b"x-request-id"]
        incoming = b",".join(given).decode("latin-1")
        rid = incoming if sane_request_id(incoming) else new_request_id()
        token = request_id.set(rid)
        method = scope["method"]
        try:
            try:
                answer = await self.runtime.db.run(work, memory, digest, *found, *args)
            except StepstreamError as e:  # the database is unavailable (dbthreads)
                answer = _error(e)
            except Exception:  # as Django's handler500 would: logged, a JSON 500
                logger.exception("%s %s failed", method, scope["path"])
                sentence = "The server failed to answer; it has been logged."
                answer = 500, _person_response({"errors": [sentence], "code": "internal"})
            if answer is None:
                return False
            status, body = answer
            view_headers = self._view_headers.get(view)
            if view_headers is None:
                allow = ", ".join(view.cls().allowed_methods).encode()
                view_headers = [(b"content-type", b"application/json"), (b"allow", allow)]
                view_headers = self._view_headers[view] = view_headers + _security_headers()
            headers = [
                *view_headers,
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", rid.encode()),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            path = scope["path"]
            duration = round((time.perf_counter() - started) * 1000, 2)
            access_log.info(
                "%s %s %s %.2fms",
                method,
                path,
                status,
                duration,
                extra={"method": method, "path": path, "status": status, "duration_ms": duration},
            )
            REQUEST_DURATION.observe(time.perf_counter() - started)
            return True
        finally:
            request_id.reset(token)
