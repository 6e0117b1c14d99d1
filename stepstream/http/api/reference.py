"""The REST reference: the hand-written OpenAPI document, served as JSON and as a page.

openapi.yaml is written by hand (as Zulip does) rather than generated from the
views, so it says what the contract promises, statuses, bodies and errors
included; the tests hold the server to it (tests/openapi.py validates every
REST response of the suite, tests/test_schemathesis.py fuzzes a live server).
It is read and encoded once per process. The page is Swagger UI, vendored as
static files (no CDN), under a CSP that lets it load and call this server only.
"""

from functools import cache
from importlib.resources import files

import orjson
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from rest_framework.decorators import api_view, authentication_classes, permission_classes

# Swagger UI needs no inline script or style; its icons are data: images, and "Try it
# out" calls this server only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; form-action 'none'; "
    "base-uri 'none'"
)


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


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def reference_page(request):
    """Swagger UI (vendored under static/vendor/swagger-ui/, see its README.md) over
    openapi.json: schemas with their $refs resolved, and "Try it out" against this
    server with the secret key the reader types, held by the page alone."""
    context = {"title": document()["info"]["title"], "openapi_url": reverse("openapi")}
    response = render(request, "stepstream/api_reference.html", context)
    response["Content-Security-Policy"] = CSP
    return response
