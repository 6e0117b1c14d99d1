"""Every REST response of the suite, checked against the OpenAPI document.

As Zulip's `validate_against_openapi_schema`: the test clients (the `api`
fixture's APIClient and `Server.rest`'s httpx client) call
`validate_response` on each answer, so the document cannot drift from what
the server does. A status the document does not list for the operation, or a
body its schema refuses, fails the test that made the request.
"""

import json
import re
from functools import cache

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from rest_framework.test import APIClient as DrfAPIClient

from stepstream.http.api.reference import document

DOC_URI = "urn:stepstream:openapi"
BASE = "/api/v1"


class ResponseMismatch(AssertionError):
    pass


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    return Registry().with_resource(DOC_URI, resource)


@cache
def _routes() -> list[tuple[re.Pattern, str]]:
    """(regex, template) per documented path; literal segments before parameters."""
    routes = []
    for template in document()["paths"]:
        parts = re.split(r"(\{[^}]+\})", template)
        regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        routes.append((re.compile(f"^{regex}$"), template))
    # /flows/{identifier} must not swallow /flows/x/analytics; fewer parameters first
    routes.sort(key=lambda r: r[1].count("{"))
    return routes


def find_template(path: str) -> str | None:
    for regex, template in _routes():
        if regex.match(path):
            return template
    return None


def _resolve(node: dict) -> dict:
    doc = document()
    while "$ref" in node:
        target = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _validate(body, where: str) -> None:
    validator = Draft202012Validator(
        {"$ref": f"{DOC_URI}#/{where}"}, registry=_registry(), format_checker=None
    )
    problems = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if problems:
        lines = [
            f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"[:300]
            for e in problems[:5]
        ]
        raise ResponseMismatch(
            f"{where}: the body does not match the document:\n" + "\n".join(lines)
        )


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def validate_response(
    method: str, path: str, status: int, body: bytes | str | None, content_type: str = ""
) -> None:
    """Raises ResponseMismatch unless the answer is one the document describes.

    `path` is the request path without its query, percent-encoded or not (a
    %2F stays inside its segment). Paths outside /api/v1 and /metrics are not
    part of the REST API and pass.
    """
    method = method.lower()
    if not (path.startswith(BASE + "/") or path == "/metrics"):
        return
    template = find_template(path)
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    is_json = "json" in (content_type or "").lower()
    if template is None:
        # an unknown route: the contract makes it a 404 with the error body
        if status != 404:
            raise ResponseMismatch(f"{method.upper()} {path}: no such route, yet {status}")
        if is_json:
            _validate(json.loads(body), _pointer("components", "schemas", "Error"))
        return
    item = document()["paths"][template]
    if method in ("head", "options"):
        return  # served by the framework for every route; not part of the contract
    operation = item.get(method)
    if operation is None:
        if status != 405:
            raise ResponseMismatch(
                f"{method.upper()} {template}: method not documented, yet {status} (want 405)"
            )
        if is_json:
            _validate(json.loads(body), _pointer("components", "schemas", "Error"))
        return
    responses = operation["responses"]
    key = str(status)
    if key not in responses:
        raise ResponseMismatch(
            f"{method.upper()} {template}: status {status} is not documented "
            f"(documented: {', '.join(responses)}); body: {str(body)[:300]}"
        )
    response = _resolve(responses[key])
    content = response.get("content")
    if not content:
        if body:
            raise ResponseMismatch(f"{method.upper()} {template} {status}: a body, none documented")
        return
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in content:
        raise ResponseMismatch(
            f"{method.upper()} {template} {status}: content type {content_type!r}, "
            f"documented: {', '.join(content)}"
        )
    if media_type != "application/json":
        return
    ref = responses[key].get("$ref")
    if ref:
        where = _pointer(*ref.lstrip("#/").split("/"), "content", media_type, "schema")
    else:
        where = _pointer(
            "paths", template, method, "responses", key, "content", media_type, "schema"
        )
    _validate(json.loads(body) if body else None, where)


# -- the suite's REST clients, validating every answer -------------------------


class APIClient(DrfAPIClient):
    """DRF's test client; each answer is checked against the document."""

    def request(self, **kwargs):
        response = super().request(**kwargs)
        if not response.streaming:
            environ = response.request
            validate_response(
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
                response.status_code,
                response.content,
                response.get("Content-Type", ""),
            )
        return response


def check_httpx_response(response: httpx.Response) -> None:
    """An httpx response event hook (Server.rest): reads the body and validates it."""
    response.read()
    validate_response(
        response.request.method,
        response.request.url.raw_path.split(b"?", 1)[0].decode("ascii"),
        response.status_code,
        response.content,
        response.headers.get("content-type", ""),
    )
