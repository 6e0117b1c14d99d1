"""The WebSocket Origin allow-list of an environment.

Browsers send an `Origin` header with every WebSocket handshake and scripts
cannot change it, so a list of allowed origins keeps other websites from
using an environment's publishable key from their visitors' browsers. An
empty list (the default) allows any origin. With a list set, a handshake
whose Origin is not on it, or has none, is refused with HTTP 403. Programs
other than browsers can send any Origin they like: the list is no
authentication, identity verification is (see docs/security.md).
"""

from urllib.parse import urlsplit

import orjson

from stepstream.errors import Invalid
from stepstream.models import Environment

MAX_ORIGINS = 100
DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize(origin) -> str:
    """`scheme://host[:port]`, lower case, without a default port; Invalid otherwise."""
    if not isinstance(origin, str) or not origin or len(origin) > 300:
        raise Invalid("Each origin must be a string like 'https://app.example.com'.")
    origin = origin.strip(" ")
    parts = urlsplit(origin)
    problem = None
    # urlsplit drops tabs and newlines anywhere (as browsers do in URLs), so
    # "https://app.exa\tmple.com" would match; an Origin header never has them
    if any(c.isspace() or not c.isprintable() for c in origin):
        problem = "it contains whitespace or control characters"
    elif parts.scheme.lower() not in DEFAULT_PORTS:
        problem = "its scheme must be http or https"
    elif not parts.hostname or parts.username or parts.password:
        problem = "it must name a host (and no user or password)"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "an origin has no path, query or fragment"
    else:
        try:
            port = parts.port
        except ValueError:
            port, problem = None, "its port is not a number from 0 to 65535"
    if problem:
        shown = origin[:100].encode("unicode_escape").decode("ascii")  # no raw control chars
        raise Invalid(f"'{shown}' is not an origin: {problem} (e.g. 'https://app.example.com').")
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def describe(environment: Environment) -> dict:
    return {"origins": list(environment.allowed_origins or [])}


def set_allowed(environment: Environment, body) -> dict:
    if not isinstance(body, dict) or not isinstance(body.get("origins"), list):
        raise Invalid(
            'The body must be {"origins": ["https://app.example.com", ...]} '
            "(an empty list allows any origin)."
        )
    raw = body["origins"]
    if len(raw) > MAX_ORIGINS:
        raise Invalid(f"At most {MAX_ORIGINS} origins may be listed.")
    problems, origins = [], []
    for entry in raw:
        try:
            origin = normalize(entry)
        except Invalid as e:
            problems.extend(e.messages)
            continue
        if origin not in origins:
            origins.append(origin)
    if problems:
        raise Invalid(*problems)
    Environment.objects.filter(pk=environment.pk).update(allowed_origins=origins)
    return {"origins": origins}


def handshake_origin(scope) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"origin":
            return value.decode("latin-1")
    return None


def allowed(environment: Environment, scope) -> bool:
    listed = environment.allowed_origins
    if not listed:
        return True
    origin = handshake_origin(scope)
    if origin is None:
        return False
    try:
        return normalize(origin) in listed
    except Invalid:
        return False


async def refuse(scope, send) -> None:
    """Refuses the handshake with HTTP 403, with a JSON body saying why when the server can."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 4403})  # an HTTP 403 before accept
        return
    body = orjson.dumps(
        {
            "errors": [
                "This origin may not open a WebSocket with this key: it is not on the "
                "environment's allowed origins."
            ],
            "code": "forbidden",
        }
    )
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
