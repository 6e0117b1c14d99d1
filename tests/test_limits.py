"""Abuse limits, each hit on purpose on a real server with low limits: each answers as
documented and leaves other clients alone. Every limit is a setting with a documented
default."""

import re
import socket
import time
import uuid
from pathlib import Path

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from stepstream.testing.flows import LINEAR_FLOW
from stepstream.testing.servers import Server
from tests.trust import eventually
from tests.wsclient import WsClient, refused

ROOT = Path(__file__).resolve().parent.parent
LIMITS = {
    "STEPSTREAM_WS_RATE_PER_SECOND": 20,
    "STEPSTREAM_WS_RATE_BURST": 20,
    "STEPSTREAM_WS_MAX_SUBSCRIPTIONS": 3,
    "STEPSTREAM_WS_MAX_CONNECTIONS_PER_KEY": 4,
    "STEPSTREAM_WS_MAX_MESSAGE_BYTES": 2048,
    "STEPSTREAM_MAX_FLOW_STEPS": 5,
    "STEPSTREAM_MAX_FLOW_TRANSITIONS": 4,
    "STEPSTREAM_MAX_BODY_BYTES": 8192,
    "STEPSTREAM_DATA_MAX_STRING": 8192,  # the body limit is the one these tests reach
}


@pytest.fixture(scope="module")
def limited(request, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("limits"), **LIMITS)
    request.addfinalizer(srv.stop)
    srv.start()
    project = srv.init_project("limits")
    dev, prod = project["environments"]
    with srv.rest(dev["secret_key"]) as rest:
        assert rest.post("/flows", json=LINEAR_FLOW).status_code == 201
        for person in ("p1", "p2", "p3", "p4", "p5"):
            assert rest.put(f"/people/{person}", json={"data": {}}).status_code == 201
    return srv, dev, prod


@pytest.fixture
def clients(limited):
    srv, dev, prod = limited
    opened = []

    def open_client(key=None, **kw):
        client = WsClient(srv.ws_url, key or dev["publishable_key"], **kw)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def assert_unaffected(client: WsClient) -> None:
    for _ in range(3):
        assert client.request("ping")["status"] == 200
    assert client.request("get_state", {"person_key": "p1"})["status"] == 200


# -- WebSocket ------------------------------------------------------------------


@pytest.mark.slow
def test_request_rate_per_connection_is_429_then_recovers(clients):
    flooder, bystander = clients(), clients()
    for n in range(60):
        flooder.ws.send(orjson.dumps({"action": "ping", "request_id": n}).decode())
    responses = [flooder.next_response() for _ in range(60)]
    assert [r["request_id"] for r in responses] == list(range(60))  # one answer each, in order
    limited = [r for r in responses if r["status"] == 429]
    assert 20 <= len(responses) - len(limited) <= 30
    assert limited and all(r["code"] == "rate_limited" for r in limited)
    assert "slow down" in limited[0]["errors"][0]
    assert_unaffected(bystander)
    time.sleep(1.1)  # the behaviour under test: the rate's second refills the bucket
    assert flooder.request("ping")["status"] == 200


def test_subscriptions_per_connection_are_capped_with_429(clients):
    client, bystander = clients(), clients()
    for person in ("p1", "p2", "p3"):
        assert client.subscribe(person, "step")["status"] == 200
    refused = client.subscribe("p4", "step")
    assert refused["status"] == 429 and "at most 3" in refused["errors"][0]
    assert client.subscribe("p1", "step")["status"] == 200  # an existing one is no new one
    assert (
        client.request("unsubscribe_state_change", {"person_key": "p1", "entity": "step"})["status"]
        == 200
    )
    assert client.subscribe("p4", "step")["status"] == 200
    for person in ("p1", "p2", "p3"):
        assert bystander.subscribe(person, "flow")["status"] == 200
    assert_unaffected(bystander)


def test_a_message_over_the_size_limit_is_413_and_the_connection_stays(clients):
    client, bystander = clients(), clients()
    head = orjson.dumps({"action": "ping", "request_id": 7, "data": {"pad": ""}}).decode()
    at_limit = head.replace('"pad":""', '"pad":"' + "x" * (2048 - len(head)) + '"')
    assert len(at_limit.encode()) == 2048
    assert client.send_raw(at_limit)["status"] == 200
    over = at_limit.replace('"pad":"', '"pad":"x')
    response = client.send_raw(over)
    assert response["status"] == 413 and response["code"] == "too_large"
    assert response["request_id"] is None and "2048" in response["errors"][0]
    assert client.send_raw("y" * 1_000_000)["status"] == 413
    assert_unaffected(client)
    assert_unaffected(bystander)


def test_connections_per_key_are_capped_and_the_close_says_try_later(limited):
    srv, _, _ = limited
    project = srv.init_project(f"cap-{uuid.uuid4().hex[:6]}")
    dev, prod = project["environments"]
    full = [WsClient(srv.ws_url, dev["publishable_key"]) for _ in range(4)]
    others = []
    try:
        for client in full:
            assert client.request("ping")["status"] == 200
        with ws_connect(f"{srv.ws_url}/ws?key={dev['publishable_key']}", open_timeout=5) as extra:
            with pytest.raises(ConnectionClosed) as closed:
                extra.recv(timeout=5)
            assert closed.value.rcvd.code == 1013
        # other environments, and the open connections, are unaffected
        others.append(WsClient(srv.ws_url, prod["publishable_key"]))
        assert others[0].request("ping")["status"] == 200
        for client in full:
            assert client.request("ping")["status"] == 200
        # a closed connection frees its place
        full.pop().close()

        def admitted():
            """a new connection is served again"""
            client = WsClient(srv.ws_url, dev["publishable_key"])
            others.append(client)
            try:
                return client.request("ping", timeout=2)["status"] == 200
            except (ConnectionClosed, TimeoutError):
                return False

        eventually(admitted, timeout=5)
    finally:
        for client in full + others:
            client.close()


def test_the_origin_allow_list_refuses_other_origins_at_the_handshake(limited, clients):
    srv, dev, prod = limited
    before = clients(origin="https://anywhere.example")  # no list yet: any origin
    with srv.rest(dev["secret_key"]) as rest:
        assert rest.get("/allowed-origins").json() == {"origins": []}
        response = rest.put(
            "/allowed-origins",
            json={
                "origins": [
                    "https://App.Example.com:443",
                    "http://localhost:3000",
                    "https://app.example.com",
                ]
            },
        )
        assert response.status_code == 200
        assert response.json() == {"origins": ["https://app.example.com", "http://localhost:3000"]}
        try:
            assert clients(origin="https://app.example.com").request("ping")["status"] == 200
            assert clients(origin="http://localhost:3000").request("ping")["status"] == 200
            for origin in (
                "https://evil.example",
                "http://app.example.com",
                "https://app.example.com:8443",
                None,
            ):
                kw = {"origin": origin} if origin else {}
                code, reason = refused(f"{srv.ws_url}/ws?key={dev['publishable_key']}", **kw)
                assert code == 4403, origin
                assert "allowed origins" in reason
            # other environments, and connections already open, are unaffected
            assert (
                clients(prod["publishable_key"], origin="https://evil.example").request("ping")[
                    "status"
                ]
                == 200
            )
            assert_unaffected(before)
        finally:
            assert rest.put("/allowed-origins", json={"origins": []}).status_code == 200
        assert clients(origin="https://evil.example").request("ping")["status"] == 200


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"origins": ["app.example.com"]}, "scheme"),
        ({"origins": ["ftp://app.example.com"]}, "scheme"),
        ({"origins": ["https://app.example.com/path"]}, "path"),
        ({"origins": ["https://"]}, "host"),
        ({"origins": ["https://app.example.com:99999"]}, "port"),
        ({"origins": [42]}, "origin"),
        ({"origins": "https://app.example.com"}, "origins"),
        ({}, "origins"),
        ({"origins": ["https://a.example"] * 101}, "100"),
    ],
    ids=repr,
)
def test_a_bad_allowed_origin_is_400_naming_it(limited, body, named):
    srv, dev, _ = limited
    with srv.rest(dev["secret_key"]) as rest:
        response = rest.put("/allowed-origins", json=body)
        assert response.status_code == 400
        assert named in " ".join(response.json()["errors"])
        assert rest.get("/allowed-origins").json() == {"origins": []}


# -- REST -------------------------------------------------------------------------


def test_flow_size_is_limited_on_publish(limited):
    srv, dev, _ = limited

    def flow(steps: int, transitions: int) -> dict:
        return {
            "identifier": f"big-{steps}-{transitions}",
            "steps": [{"identifier": f"s{n}"} for n in range(steps)],
            "transitions": [
                {"identifier": f"t{n}", "from": f"s{n}", "to": f"s{n + 1}"}
                for n in range(transitions)
            ],
        }

    with srv.rest(dev["secret_key"]) as rest:
        assert rest.post("/flows", json=flow(5, 4)).status_code == 201
        response = rest.post("/flows", json=flow(6, 4))
        assert response.status_code == 400
        assert "at most 5 steps" in " ".join(response.json()["errors"])
        big = flow(5, 4)
        big["transitions"].append({"identifier": "t9", "from": "s0", "to": "s4"})
        response = rest.post("/flows", json=big)
        assert response.status_code == 400
        assert "at most 4 transitions" in " ".join(response.json()["errors"])
        assert rest.get("/flows/big-6-4").status_code == 404


def test_a_rest_body_over_the_limit_is_413_in_json(limited):
    srv, dev, _ = limited
    with srv.rest(dev["secret_key"]) as rest:
        small = orjson.dumps({"data": {"pad": "x" * 8000}})
        assert (
            rest.put(
                "/people/padded", content=small, headers={"content-type": "application/json"}
            ).status_code
            == 201
        )
        big = orjson.dumps({"data": {"pad": "x" * 9000}})
        for content in (big, iter([big[:4000], big[4000:]])):  # declared length, then chunked
            response = rest.put(
                "/people/padded", content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code == 413
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {
                "errors": ["The request body is larger than the limit of 8192 bytes."],
                "code": "too_large",
            }
        assert rest.get("/people/padded").json()["data"]["pad"] == "x" * 8000
    # a huge declared body is refused at once, without waiting for it
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        raw.sendall(
            (
                "PUT /api/v1/people/padded HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {dev['secret_key']}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"
            ).encode()
        )
        answer = b""
        while chunk := raw.recv(65536):  # the server closes after answering
            answer += chunk
    head = answer.decode()
    assert head.startswith("HTTP/1.1 413"), head
    assert "too_large" in head
    with srv.rest(dev["secret_key"]) as rest:
        assert rest.get("/flows").status_code == 200


# -- every limit is a documented setting --------------------------------------------


def test_every_setting_is_documented_with_its_default():
    from django.conf import settings

    readme = (ROOT / "README.md").read_text()
    security = (ROOT / "docs" / "security.md").read_text()
    for name in settings.STEPSTREAM:
        if name == "REDIS_URL":
            continue
        variable = f"STEPSTREAM_{name}"
        assert re.search(rf"`{variable}`", readme), f"{variable} is not in README's table"
    for variable in [*LIMITS, "STEPSTREAM_KEY_CHECK_INTERVAL"]:
        assert f"`{variable}`" in security, f"{variable} is not in docs/security.md"
