"""REST at full speed (issue 15) changes how requests are served, never what they answer.

`GET /api/v1/health` is answered on the event loop (stepstream/http/fast.py);
everything else reaches Django through stepstream/http/bridge.py. Checked on a
real server: the same answer either way, the request id and access log line
kept, a file larger than the bridge holds in memory streamed whole.
"""

import os
import re
import uuid

import httpx
import rest_framework

from stepstream.testing.flows import LOOP_FLOW
from tests.trust import eventually

IGNORED = {"date", "x-request-id", "content-length"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


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


def test_a_transition_without_django_answers_and_records_as_django_does(server):
    """The same calls on two people with the same history, one answered on the event loop's
    path, one through Django (a query string): the same answers, the same log rows."""
    keys = server.init_project(f"fast-move-{uuid.uuid4().hex[:8]}")["environments"][0]

    def same(response) -> str:
        text = UUID.sub("ID", response.text)
        return text.replace("'fast'", "'P'").replace("'slow'", "'P'")

    with server.rest(keys["secret_key"]) as rest:
        assert rest.post("/flows", json=LOOP_FLOW).status_code == 201
        for who in ("fast", "slow"):
            assert rest.put(f"/people/{who}", json={"data": {}}).status_code == 201
            assert rest.post(f"/people/{who}/flows", json={"flow": "loop"}).status_code == 201
        calls = [
            ("loop", {"transition": "go"}),  # 200
            ("loop", {"transition": "flip"}),  # 200
            ("loop", {"transition": "go"}),  # 409: no active step has it
            ("none", {"transition": "go"}),  # 404: no such instance
            ("loop", {"transition": ""}),  # 400, answered by Django either way
            ("loop", ["flip"]),  # 400, answered by Django either way
        ]
        for flow, body in calls:
            path = "/people/{}/flows/" + flow + "/transitions"
            fast = rest.post(path.format("fast"), json=body, headers={"X-Request-ID": "fast-move"})
            django = rest.post(path.format("slow") + "?through=django", json=body)
            assert fast.status_code == django.status_code, (flow, body, fast.text)
            assert same(fast) == same(django), (flow, body)
            assert {k: v for k, v in fast.headers.items() if k not in IGNORED} == {
                k: v for k, v in django.headers.items() if k not in IGNORED
            }, (flow, body)
            assert fast.headers["x-request-id"] == "fast-move"
        logs = [rest.get(f"/people/{who}/events").json() for who in ("fast", "slow")]
        fields = ("seq", "entity", "identifier", "state", "previous_state", "cause")
        assert [[{f: e.get(f) for f in fields} for e in log] for log in logs] == [
            [{f: e.get(f) for f in fields} for e in logs[1]]
        ] * 2
        assert logs[0][-1]["cause"]["via"] == "rest"
        spare = rest.post("/keys", json={"kind": "secret"}).json()
    with server.rest(spare["key"]) as rest:
        old = next(k["id"] for k in rest.get("/keys").json() if k["hint"] in keys["secret_key"])
        assert rest.post(f"/keys/{old}/revoke").status_code == 200
        with server.rest(keys["secret_key"]) as revoked:
            flip = {"transition": "flip"}
            refused = revoked.post("/people/fast/flows/loop/transitions", json=flip)
            assert refused.status_code == 401
        assert rest.get("/people/fast/events").json() == logs[0]  # nothing was done
    line = "POST /api/v1/people/fast/flows/loop/transitions 200"
    eventually(lambda: any("fast-move" in x and line in x for x in server.log().splitlines()))
