"""Delivery from the log: only committed changes, from any writer, resumable without loss."""

import threading

import httpx
import pytest

from tests.rawws import RawWs
from tests.wsclient import WsClient

SK_PLACEHOLDER = "__SECRET_KEY__"


def _in_another_process(server, secret_key: str, body: str) -> None:
    code = (
        "from django.db import transaction\n"
        "from stepstream import engine\nfrom stepstream.trust import tenants\n"
        f"env = tenants.environment_for_key({secret_key!r}, 'secret')\n" + body
    )
    server.shell(code)


def test_a_change_from_another_process_reaches_the_subscriber(ws, server, tenant, rest, person_key):
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
    ws.subscribe(person_key, "step")
    _in_another_process(
        server,
        tenant["dev"]["secret_key"],
        f"engine.do_transition(env, {person_key!r}, 'onboarding', 'next')\n",
    )
    events = ws.wait_events(2, timeout=5)
    assert [(e["data"]["identifier"], e["data"]["state"]) for e in events] == [
        ("welcome", "completed"),
        ("profile", "active"),
    ]


def test_a_rolled_back_change_sends_nothing(ws, server, tenant, rest, person_key):
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
    ws.subscribe(person_key, "flow")
    ws.subscribe(person_key, "step")
    _in_another_process(
        server,
        tenant["dev"]["secret_key"],
        "try:\n"
        "    with transaction.atomic():\n"
        f"        engine.do_flow_action(env, {person_key!r}, 'onboarding', 'pause')\n"
        "        raise RuntimeError('roll back')\n"
        "except RuntimeError:\n"
        "    pass\n"
        f"engine.do_transition(env, {person_key!r}, 'onboarding', 'next')\n",
    )
    ws.wait_events(2, timeout=5)
    ws.quiet(0.5)
    assert [(e["data"]["seq"], e["data"]["entity"], e["data"]["state"]) for e in ws.events] == [
        (3, "step", "completed"),
        (4, "step", "active"),
    ]


def test_since_seq_beyond_the_log_is_409(ws, rest, person_key):
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
    response = ws.subscribe(person_key, "step", since_seq=99)
    assert response["status"] == 409
    assert "get_state" in response["errors"][0]
    rest.delete(f"/people/{person_key}")
    rest.put(f"/people/{person_key}", json={"data": {}})
    assert ws.subscribe(person_key, "step", since_seq=2)["status"] == 409


def test_since_seq_sends_backlog_then_live_with_concurrent_writes(server, tenant, rest, person_key):
    rest.post(f"/people/{person_key}/flows", json={"flow": "loop"})
    rest.post(f"/people/{person_key}/flows/loop/transitions", json={"transition": "go"})
    calls = 150
    errors = []

    def writer():
        with server.rest(tenant["dev"]["secret_key"]) as client:
            for _ in range(calls):
                r = client.post(
                    f"/people/{person_key}/flows/loop/transitions", json={"transition": "flip"}
                )
                if r.status_code != 200:
                    errors.append(r.text)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with WsClient(server.ws_url, tenant["dev"]["publishable_key"]) as client:
            # subscribe while the writer is running: the seam between backlog and live
            # is crossed with changes being committed
            assert client.subscribe(person_key, "step", since_seq=0)["status"] == 200
            assert client.subscribe(person_key, "flow", since_seq=0)["status"] == 200
            thread.join(timeout=60)
            final = rest.get(f"/people/{person_key}/flows").json()[0]["seq"]
            client.wait_seq(final, timeout=10)
            client.quiet(0.5)
            seqs = client.seqs()
    finally:
        thread.join(timeout=60)
    assert not errors
    assert final == 1 + 1 + 2 + 2 * calls  # flow + begin, go (2), flips (2 each)
    assert sorted(seqs) == list(range(1, final + 1))
    assert client.seqs("step") == sorted(client.seqs("step"))


def test_resubscribing_with_an_earlier_since_seq_sends_only_what_was_not_sent(ws, rest, person_key):
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
    ws.subscribe(person_key, "step")  # live from seq 2
    rest.post(f"/people/{person_key}/flows/onboarding/transitions", json={"transition": "next"})
    ws.wait_events(2)
    assert ws.subscribe(person_key, "step", since_seq=0)["status"] == 200
    ws.wait_events(3)
    ws.quiet(0.5)
    assert sorted(ws.seqs()) == [2, 3, 4]  # seq 1 is the flow's: not a step event
    assert len(ws.seqs()) == len(set(ws.seqs()))


def _open_sockets(server) -> float:
    """The server's stepstream_connections gauge (/metrics needs no key from loopback)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics").text
    family = next(
        f for f in text_string_to_metric_families(text) if f.name == "stepstream_connections"
    )
    return family.samples[0].value


@pytest.fixture
def slow_server(tmp_path):
    from stepstream.testing.servers import Server

    srv = Server(tmp_path / "slow", STEPSTREAM_WS_OUTBOX_LIMIT=1000).start()
    yield srv
    srv.stop()


@pytest.mark.slow
def test_a_client_too_slow_is_closed_with_4408_and_resumes_without_loss(slow_server):
    keys = slow_server.init_project("slow")["environments"][0]
    chain = [{"identifier": f"s{i}"} for i in range(400)]
    flow = {
        "identifier": "long",
        "steps": chain,
        "transitions": [
            {"identifier": "auto", "from": f"s{i}", "to": f"s{i + 1}", "type": "automatic"}
            for i in range(399)
        ],
    }
    with slow_server.rest(keys["secret_key"]) as rest:
        rest.put("/people/slowpoke", json={"data": {}})
        reader = RawWs(slow_server.port, keys["publishable_key"])
        reader.send_json(
            {
                "action": "subscribe_state_change",
                "request_id": 1,
                "data": {"person_key": "slowpoke", "entity": "step"},
            }
        )
        reader.wait_first_message()  # subscribed (the answer stays for read_all below)
        # up to 30 x 800 step events, not read while they are sent, until the server lets
        # the socket go (about 3 MB fill the socket buffers, the transport and the outbox)
        for i in range(30):
            flow["identifier"] = f"long{i}"
            assert rest.post("/flows", json=flow).status_code == 201
            assert rest.post("/people/slowpoke/flows", json={"flow": f"long{i}"}).status_code == 201
            if i >= 3 and _open_sockets(slow_server) == 0:
                break
        total = rest.get("/people/slowpoke/flows").json()[0]["seq"]
    messages, close_code = reader.read_all()
    reader.close()
    assert messages[0]["status"] == 200
    # 4408 when the close frame got through; a client that reads nothing at all may have
    # its connection dropped with the close frame still queued behind unread events
    # (docs/protocol.md): either way it resumes without loss below
    assert close_code in (4408, None)
    seen = [m["data"]["seq"] for m in messages[1:]]
    with slow_server.rest(keys["secret_key"]) as rest:
        logged = []
        while len(logged) < total:
            page = rest.get(
                "/people/slowpoke/events", params={"since_seq": len(logged), "limit": 10000}
            ).json()
            logged += page
    expected = [e["seq"] for e in logged if e["entity"] == "step"]
    assert seen == expected[: len(seen)]  # in order, no gap, up to the close
    assert len(seen) < len(expected)
    with WsClient(slow_server.ws_url, keys["publishable_key"]) as again:
        again.subscribe("slowpoke", "step", since_seq=seen[-1])
        again.wait_seq(expected[-1], timeout=30)
        again.quiet(0.3)
        assert seen + again.seqs() == expected


def test_compression_is_declined_unless_switched_on(connect):
    """By default a client offering permessage-deflate (as browsers do) gets plain frames."""
    assert connect().ws.protocol.extensions == []


@pytest.mark.slow
def test_compressed_and_plain_sockets_receive_the_same_events(tmp_path):
    """With compression on, a plain socket gets the shared frame, a compressed one its own."""
    from stepstream.testing.flows import LINEAR_FLOW
    from stepstream.testing.servers import Server

    srv = Server(tmp_path / "deflate", STEPSTREAM_WS_COMPRESSION="true").start()
    try:
        keys = srv.init_project("deflate")["environments"][0]
        with srv.rest(keys["secret_key"]) as rest:
            rest.post("/flows", json=LINEAR_FLOW).raise_for_status()
            rest.put("/people/p", json={"data": {}}).raise_for_status()
            rest.post("/people/p/flows", json={"flow": "onboarding"}).raise_for_status()
            with (
                WsClient(srv.ws_url, keys["publishable_key"]) as compressed,
                WsClient(srv.ws_url, keys["publishable_key"], compression=None) as plain,
            ):
                assert compressed.ws.protocol.extensions and not plain.ws.protocol.extensions
                for client in (compressed, plain):
                    client.subscribe("p", "step", request_id="same")
                rest.post("/people/p/flows/onboarding/transitions", json={"transition": "next"})
                events = plain.wait_events(2, timeout=5)
                assert compressed.wait_events(2, timeout=5) == events
                assert [e["data"]["state"] for e in events] == ["completed", "active"]
    finally:
        srv.stop()


def test_a_backlog_event_equals_the_live_event(connect, rest, person_key):
    """Live events are encoded at commit, backlogs from stored rows: one shape for both."""
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
    live = connect()
    live.subscribe(person_key, "step", request_id="r")
    rest.post(f"/people/{person_key}/flows/onboarding/transitions", json={"transition": "next"})
    live_events = live.wait_events(2, timeout=5)
    late = connect()
    late.subscribe(person_key, "step", request_id="r", since_seq=live_events[0]["data"]["seq"] - 1)
    assert late.wait_events(2, timeout=5) == live_events
