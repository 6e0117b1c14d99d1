"""The OpenAPI document itself: well formed, its examples valid, every route in it, and served."""

import hashlib
import re
from pathlib import Path

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.urls import Resolver404, resolve
from jsonschema import Draft202012Validator

from stepstream.http.api import urls as api_urls
from stepstream.http.api.reference import document
from tests.openapi import DOC_URI, _registry
from tests.test_schemathesis import NOT_BUILT_YET, _concrete

BASE = "/api/v1"
METHODS = ("get", "put", "post", "delete", "patch")


def operations():
    for path, item in document()["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def _validate_at(pointer: str, value) -> list[str]:
    validator = Draft202012Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=_registry())
    return [f"{pointer}: {e.message}" for e in validator.iter_errors(value)]


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


@pytest.mark.slow
def test_the_document_is_a_valid_openapi_3_1_document():
    import schemathesis

    schema = schemathesis.openapi.from_dict(document())
    labels = [result.ok().label for result in schema.get_all_operations()]
    assert len(labels) == len(list(operations())) >= 40
    assert document()["openapi"] == "3.1.0"


def test_every_operation_is_complete():
    """An id, a summary, a tag, responses with bodies where there are bodies, and auth."""
    ids = set()
    for method, path, op in operations():
        where = f"{method.upper()} {path}"
        assert op.get("operationId") and op["operationId"] not in ids, where
        ids.add(op["operationId"])
        assert op.get("summary") and op.get("tags"), where
        statuses = set(op["responses"])
        assert statuses and all(re.fullmatch(r"[1-5][0-9][0-9]", s) for s in statuses), where
        secured = op.get("security", document()["security"]) not in ([], [{}])
        if secured and path.startswith(BASE):
            assert "401" in statuses, f"{where}: needs the secret key, so it answers 401"
        if "requestBody" in op:
            assert {"413", "415", "400"} <= statuses, f"{where}: takes a body"
        if method in ("post", "put"):
            assert {"200", "201"} & statuses, where
        creates = method == "put" or path.endswith("/track")  # the object named is made
        if re.search(r"\{(person_key|flow|identifier|webhook_id|key_id)\}", path) and not creates:
            assert "404" in statuses, f"{where}: names an object"


def test_every_example_matches_its_schema():
    doc, problems, checked = document(), [], 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            at = f"/paths/{_escape(path)}/{method}"
            media = [(f"{at}/requestBody", op.get("requestBody", {}))]
            media += [(f"{at}/responses/{s}", r) for s, r in op["responses"].items()]
            for pointer, holder in media:
                for media_type, m in holder.get("content", {}).items():
                    if "example" in m:
                        checked += 1
                        mp = f"{pointer}/content/{_escape(media_type)}/schema"
                        problems += _validate_at(mp, m["example"])
    for name, response in doc["components"]["responses"].items():
        for media_type, m in response.get("content", {}).items():
            if "example" in m:
                checked += 1
                mp = f"/components/responses/{name}/content/{_escape(media_type)}/schema"
                problems += _validate_at(mp, m["example"])
    for name, schema in doc["components"]["schemas"].items():
        if "example" in schema:
            checked += 1
            problems += _validate_at(f"/components/schemas/{name}", schema["example"])
    problems += _validate_at(
        "/components/schemas/Instance", doc["components"]["examples"]["Instance"]["value"]
    )
    assert checked >= 25 and not problems, problems


def test_every_route_is_documented_and_every_documented_path_is_routed():
    """A new endpoint cannot ship undocumented; a documented one not served must be listed."""
    documented_routes = set()
    for path in document()["paths"]:
        if not path.startswith(BASE):
            continue
        try:
            match = resolve(_concrete(path))
        except Resolver404:
            assert path in NOT_BUILT_YET, f"{path} is documented but not served"
            continue
        documented_routes.add(match.route.removeprefix("api/v1/"))
    routes = {str(p.pattern).removeprefix("^") for p in api_urls.urlpatterns}
    assert routes == documented_routes, routes - documented_routes


@pytest.mark.django_db
def test_the_served_document_is_the_yaml_file(api):
    from importlib.resources import files

    response = api.get(f"{BASE}/openapi.json", HTTP_AUTHORIZATION="")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    text = files("stepstream.http.api").joinpath("openapi.yaml").read_text()
    assert response.json() == yaml.safe_load(text)


@pytest.mark.django_db
def test_the_reference_page_is_the_vendored_renderer_under_a_strict_csp(client):
    """Swagger UI from this server's static files over openapi.json: no outside asset,
    no inline script or style, and a CSP that lets the page call this server only.
    What it shows, and its "Try it out", are checked in a browser
    (tests/test_reference_browser.py)."""
    response = client.get(f"{BASE}/docs")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    csp = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'", csp
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'", csp
    assert "unsafe" not in response["Content-Security-Policy"]
    page = response.content.decode()
    assert 'data-openapi="/api/v1/openapi.json"' in page
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert not [a for a in assets if re.match(r"(https?:)?//", a)], "the page must work offline"
    assert re.findall(r"<script[^>]*>", page) == [
        '<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js">',
        '<script src="/static/api-docs/reference.js">',
    ]
    assert "<style" not in page and " style=" not in page
    for asset in assets:
        if asset.startswith("/static/"):
            assert finders.find(asset.removeprefix("/static/")), f"{asset} is not a static file"
    assert '<link rel="icon" href="data:,">' in page  # no request for /favicon.ico, a 404


VENDORED = Path(__file__).resolve().parent.parent / "stepstream/static/vendor/swagger-ui"
VENDORED_SHA256 = {  # swagger-ui-dist 5.36.0's package/ files, as its README.md says
    "swagger-ui-bundle.js": "b164c5a22535e40dae08c00271674a67e437ec195098c55fcedf8ffac7ac3c88",
    "swagger-ui.css": "7eb9f5a125e4bc9b3f0b71869b66d1a3d7c501f972f53d44ef91c2ae6c5bda5e",
    "LICENSE": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
    "NOTICE": "0d20d1adef18aee3f40dd258172155521ce702ac445cb5f7b7d60ed32dad2fb2",
    "swagger-ui-bundle.js.LICENSE.txt": (
        "37eb6e7e59aed57b2c1acf076574b818ea07b74265717e0bd67b59e0baf9abbb"
    ),
}


def test_the_vendored_renderer_is_the_version_its_readme_names():
    """The files are the package's, unchanged, with its licence; the README says which."""
    readme = (VENDORED / "README.md").read_text()
    assert "`swagger-ui-dist` 5.36.0" in readme and "Apache-2.0" in readme
    for name, digest in VENDORED_SHA256.items():
        assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == digest, name
    assert 'PACKAGE_VERSION:"5.36.0"' in (VENDORED / "swagger-ui-bundle.js").read_text()
    assert "Apache License" in (VENDORED / "LICENSE").read_text()
    expected = {*VENDORED_SHA256, "README.md"}
    assert {p.name for p in VENDORED.iterdir()} == expected, "a file the README does not list"


def test_the_validator_refuses_what_the_document_does_not_say():
    from tests.openapi import ResponseMismatch, validate_response

    person = b'{"person_key": "a/b", "data": {}}'
    validate_response("GET", "/api/v1/people/a%2Fb", 200, person, "application/json")
    validate_response("DELETE", "/api/v1/people/a", 204, b"", "")
    wrong = [
        ("POST", "/api/v1/flows", 200, b"{}"),  # a publish answers 201
        ("GET", "/api/v1/people/a", 200, b'{"person_key": "a"}'),  # data missing
        ("GET", "/api/v1/people/a", 200, b'{"person_key": "a", "data": {}, "x": 1}'),
        ("GET", "/api/v1/people/a", 418, b"{}"),
        ("PATCH", "/api/v1/people/a", 200, person),  # undocumented method: 405
        ("GET", "/api/v1/no-such-route", 200, b"{}"),
        ("GET", "/api/v1/people/a", 404, b'{"errors": []}'),  # an error needs a sentence and a code
    ]
    for method, path, status, body in wrong:
        with pytest.raises(ResponseMismatch):
            validate_response(method, path, status, body, "application/json")
    with pytest.raises(ResponseMismatch):
        validate_response("GET", "/api/v1/people/a", 200, person, "text/html")
