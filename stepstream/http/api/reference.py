"""The REST reference: the hand-written OpenAPI document, served as JSON and as a page.

openapi.yaml is written by hand (as Zulip does) rather than generated from the
views, so it says what the contract promises, statuses, bodies and errors
included; the tests hold the server to it (tests/openapi.py validates every
REST response of the suite, tests/test_schemathesis.py fuzzes a live server).
It is read and encoded once per process.
"""

import json
import re
from functools import cache
from importlib.resources import files

import orjson
from django.http import HttpResponse
from django.shortcuts import render
from django.utils.html import escape
from django.utils.safestring import mark_safe
from rest_framework.decorators import api_view, authentication_classes, permission_classes

METHODS = ("get", "put", "post", "delete", "patch")


@cache
def document() -> dict:
    """The OpenAPI document as a dict (parsed once; callers must not change it).

    Read from openapi.json, the copy of openapi.yaml that `python -m tests.openapi_json`
    writes (tests/test_dependencies.py checks it is exact): no YAML parser at run time.
    """
    return orjson.loads(files("stepstream.http.api").joinpath("openapi.json").read_bytes())


@cache
def _encoded() -> bytes:
    return orjson.dumps(document())


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def openapi_json(request):
    return HttpResponse(_encoded(), content_type="application/json")


def _pretty(value) -> str:
    """JSON, indented and escaped, each schema $ref a link to the schema on the page."""
    text = escape(json.dumps(value, indent=2, ensure_ascii=False))
    return mark_safe(  # noqa: S308 - escaped above; only our own anchors are added
        _SCHEMA_REF.sub(r'<a href="#schema-\1">&quot;#/components/schemas/\1&quot;</a>', text)
    )


def _prose(text: str) -> str:
    """A description: lines of a paragraph joined, escaped, `code` and **bold** kept as such.

    The same few Markdown marks the YAML uses, so none shows as raw asterisks or backticks.
    """
    text = re.sub(r"(?<!\n)\n(?!\n)", " ", text.strip())
    html = _CODE.sub(r"<code>\1</code>", escape(text))
    return mark_safe(_BOLD.sub(r"<strong>\1</strong>", html))  # noqa: S308 - escaped


_SCHEMA_REF = re.compile(r"&quot;#/components/schemas/([A-Za-z0-9_]+)&quot;")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _resolve(doc: dict, node: dict) -> dict:
    """Follows one local $ref (responses, parameters, examples)."""
    while isinstance(node, dict) and "$ref" in node:
        target = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _media(doc: dict, content: dict | None) -> list[dict]:
    shown = []
    for media_type, media in (content or {}).items():
        examples = [_resolve(doc, e)["value"] for e in (media.get("examples") or {}).values()]
        if "example" in media:
            examples.insert(0, media["example"])
        shown.append(
            {
                "type": media_type,
                "schema": _pretty(media.get("schema", {})),
                "examples": [_pretty(e) for e in examples],
            }
        )
    return shown


def _auth(security: list[dict]) -> str:
    names = [name for requirement in security for name in requirement]
    if not names:
        return "none"
    return " or ".join(names) + (" or none" if {} in security else "")


@cache
def _operations_by_tag() -> list[dict]:
    doc = document()
    tags = {t["name"]: {**t, "operations": []} for t in doc.get("tags", [])}
    for path, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = [_resolve(doc, p) for p in [*shared, *op.get("parameters", [])]]
            body = op.get("requestBody")
            security = op.get("security", doc.get("security"))
            entry = {
                "id": op["operationId"],
                "method": method.upper(),
                "path": path,
                "summary": op.get("summary", ""),
                "description": _prose(op.get("description", "")),
                "auth": _auth(security),
                "parameters": [
                    {
                        "name": p["name"],
                        "in": p["in"],
                        "required": p.get("required", False),
                        "description": _prose(p.get("description", "")),
                        "schema": _pretty(p.get("schema", {})),
                    }
                    for p in params
                ],
                "body": _media(doc, body["content"]) if body else [],
                "responses": [
                    {
                        "status": status,
                        "description": _prose(_resolve(doc, r).get("description", "")),
                        "media": _media(doc, _resolve(doc, r).get("content")),
                    }
                    for status, r in op["responses"].items()
                ],
            }
            for tag in op.get("tags", ["other"]):
                tags.setdefault(tag, {"name": tag, "description": "", "operations": []})
                tags[tag]["operations"].append(entry)
    return list(tags.values())


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def reference_page(request):
    """A readable reference rendered on the server: no script, no outside asset."""
    doc = document()
    context = {
        "info": {**doc["info"], "description": _prose(doc["info"]["description"])},
        "tags": [{**t, "description": _prose(t["description"])} for t in _operations_by_tag()],
        "schemas": [
            {"name": name, "schema": _pretty(schema)}
            for name, schema in doc["components"]["schemas"].items()
        ],
        "security": {
            name: {**scheme, "description": _prose(scheme.get("description", ""))}
            for name, scheme in doc["components"]["securitySchemes"].items()
        },
    }
    return render(request, "stepstream/api_reference.html", context)
