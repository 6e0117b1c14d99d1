"""REST at full speed (issue 15) changes how requests are served, never what they answer.

`GET /api/v1/health` is answered on the event loop (stepstream/http/fast.py);
everything else reaches Django through stepstream/http/bridge.py. Checked on a
real server: the same answer either way, the request id and access log line
kept, a file larger than the bridge holds in memory streamed whole.
"""

import os
import uuid

import httpx
import rest_framework

from tests.trust import eventually

IGNORED = {"date", "x-request-id", "content-length"}


def test_health_on_the_event_loop_answers_as_django_does(server):
    fast = httpx.get(server.url + "/api/v1/health")
    # a query string sends the same request through Django's view
    django = httpx.get(server.url + "/api/v1/health?through=django")
    assert fast.status_code == django.status_code == 200
    assert fast.json().keys() == django.json().keys()
    assert fast.json()["status"] == "ok"
    assert fast.json()["database"] == django.json()["database"]
    assert {k: v for k, v in fast.headers.items() if k not in IGNORED} == {
        k: v for k, v in django.headers.items() if k not in IGNORED
    }
    assert len(fast.headers["x-request-id"]) == 32


def test_health_keeps_the_request_id_and_the_access_log_line(server):
    rid = f"probe-{uuid.uuid4().hex[:12]}"
    response = httpx.get(server.url + "/api/v1/health", headers={"X-Request-ID": rid})
    assert response.headers["x-request-id"] == rid
    # the line is written just after the answer is sent: the client may read it first
    eventually(
        lambda: any(
            rid in line and "GET /api/v1/health 200" in line for line in server.log().splitlines()
        )
    )
    odd = httpx.get(server.url + "/api/v1/health", headers={"X-Request-ID": "no spaces allowed"})
    assert odd.headers["x-request-id"] != "no spaces allowed"


def test_health_refusals_are_still_django_s(server):
    post = httpx.post(server.url + "/api/v1/health")
    assert post.status_code == 405
    assert set(post.headers["allow"].split(", ")) == {"GET", "OPTIONS"}
    html = httpx.get(server.url + "/api/v1/health", headers={"Accept": "text/html"})
    assert html.status_code == 406 and html.json()["code"] == "not_acceptable"


def test_a_file_larger_than_the_bridge_holds_is_streamed_whole(server):
    name = "rest_framework/css/bootstrap.min.css.map"
    path = os.path.join(os.path.dirname(rest_framework.__file__), "static", name)
    with open(path, "rb") as f:
        expected = f.read()
    assert len(expected) > 256 * 1024
    response = httpx.get(f"{server.url}/static/{name}")
    assert response.status_code == 200
    assert response.content == expected


def test_a_person_read_without_django_answers_as_django_does(server):
    keys = server.init_project(f"fast-{uuid.uuid4().hex[:8]}")["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        data = {"name": "Zoë ✓", "n": 12.5, "big": 12345678901234, "nested": [1, None, True]}
        assert rest.put("/people/a%2Fb", json={"data": data}).status_code == 201
        assert rest.get("/flows").status_code == 200  # the key is remembered from here on
        for path in ("/people/a%2Fb", "/people/nobody", "/people/%00x", "/people/%C3%A9"):
            fast = rest.get(path, headers={"X-Request-ID": "fast-read"})
            # a query string sends the same read through Django
            django = rest.get(path + "?through=django")
            assert fast.status_code == django.status_code, path
            assert fast.content == django.content, path
            assert {k: v for k, v in fast.headers.items() if k not in IGNORED} == {
                k: v for k, v in django.headers.items() if k not in IGNORED
            }, path
            assert fast.headers["x-request-id"] == "fast-read"
        assert rest.get("/people/a%2Fb").json() == {"person_key": "a/b", "data": data}
    line = "GET /api/v1/people/nobody 404"
    eventually(lambda: any("fast-read" in x and line in x for x in server.log().splitlines()))
