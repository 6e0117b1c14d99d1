"""The Python client (stepstream_client) against real `stepstream serve` processes.

What a user of the client relies on: it shows the person's state as the
server has it, moves on when a transition is called from anywhere, and, when
the server dies and comes back, picks up where it was with no change missed
or repeated.
"""

import asyncio
import time

import pytest

from stepstream.testing.flows import states
from stepstream.testing.servers import Server
from stepstream_client import Client, StepstreamError, connect
from tests.conftest import LOOP_FLOW


def rest_states(rest, person_key: str) -> dict:
    response = rest.get(f"/people/{person_key}/flows")
    assert response.status_code == 200, response.text
    return {i["flow"]: states(i) for i in response.json()}


def client_states(client: Client) -> dict:
    return {
        name: {"flow": flow.state, **{s.identifier: s.state for s in flow.steps}}
        for name, flow in client.flows.items()
    }


@pytest.mark.slow
async def test_snapshot_then_live_changes_from_rest_and_from_the_client(server, tenant, rest):
    person_key = f"client-{time.monotonic_ns()}"
    seen = []
    async with connect(server.url, tenant["dev"]["publishable_key"], person_key) as client:
        client.on_event(seen.append)
        # identify created the person: they exist for the REST API, with no flows yet
        assert rest.get(f"/people/{person_key}").status_code == 200
        assert client.flows == {}
        # a flow started from the server side appears, with all its steps
        assert rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"}).is_success
        await client.wait_for(lambda c: c.step("onboarding", "welcome") is not None, 10)
        await client.wait_for(lambda c: c.step("onboarding", "welcome").state == "active", 10)
        assert client.flow("onboarding").state == "active"
        assert [s.identifier for s in client.flow("onboarding").steps] == [
            "welcome",
            "profile",
            "done",
        ]
        # a transition from the client is applied by the time it returns
        flow = await client.transition("onboarding", "next")
        assert flow.step("welcome").state == "completed"
        assert client.step("onboarding", "profile").state == "active"
        # one no active step has: a 409 naming it, and nothing changes
        with pytest.raises(StepstreamError) as refused:
            await client.transition("onboarding", "no-such-transition")
        assert refused.value.status == 409
        assert client.step("onboarding", "profile").state == "active"
        # a change through REST shows up live
        assert rest.post(
            f"/people/{person_key}/flows/onboarding/transitions", json={"transition": "next"}
        ).is_success
        await client.wait_for(lambda c: c.flow("onboarding").state == "completed", 10)
        assert client_states(client) == rest_states(rest, person_key)
        log = rest.get(f"/people/{person_key}/events").json()
        await client.wait_for(lambda c: len(seen) == len(log), 10)
    assert sorted(seen, key=lambda e: e["seq"]) == log  # every change once, as recorded
    assert client.status == "closed"


async def test_events_iterator_and_identify_merges_data(server, tenant, rest, person_key):
    rest.post(f"/people/{person_key}/flows", json={"flow": "loop"})
    async with connect(
        server.url, tenant["dev"]["publishable_key"], person_key, data={"plan": "pro"}
    ) as client:
        assert client.person_data == {"plan": "pro"}
        stream = client.events()
        rest.post(f"/people/{person_key}/flows/loop/transitions", json={"transition": "go"})
        received = []
        async with asyncio.timeout(10):
            async for change in stream:
                received.append((change["identifier"], change["state"]))
                if len(received) == 2:
                    break
        assert received == [("begin", "completed"), ("a", "active")]
        assert await client.identify({"seats": 3}) == {"plan": "pro", "seats": 3}
    assert rest.get(f"/people/{person_key}").json()["data"] == {"plan": "pro", "seats": 3}


async def test_a_wrong_key_fails_at_once_and_clearly(server, tenant):
    began = time.monotonic()
    with pytest.raises(StepstreamError) as failed:
        async with connect(server.url, "pk_not-a-key", "someone"):
            pass
    assert time.monotonic() - began < 10
    assert failed.value.code == "invalid_key"
    assert "key" in str(failed.value)
    # the secret key is not for the WebSocket either
    with pytest.raises(StepstreamError):
        async with connect(server.url, tenant["dev"]["secret_key"], "someone"):
            pass


async def test_watching_an_unknown_person_without_identify_is_a_404(server, tenant, rest):
    client = Client(server.url, tenant["dev"]["publishable_key"], "nobody-here", identify=False)
    with pytest.raises(StepstreamError) as failed:
        await client.start(timeout=10)
    assert failed.value.status == 404
    assert client.status == "closed"
    await client.close()
    assert rest.get("/people/nobody-here").status_code == 404  # not created


def _flip_in_another_process(server: Server, secret_key: str, person_key: str, times: int):
    """Transitions made by a separate process writing the database (an admin script, say)."""
    server.shell(
        "from stepstream import engine\nfrom stepstream.trust import tenants\n"
        f"env = tenants.environment_for_key({secret_key!r}, 'secret')\n"
        f"for _ in range({times}):\n"
        f"    engine.do_transition(env, {person_key!r}, 'loop', 'flip')\n"
    )


@pytest.mark.slow
async def test_resumes_after_the_server_is_killed_and_restarted(tmp_path):
    """SIGKILL the server, change states while it is down and right after it is back:
    the client reconnects by itself and ends with every change exactly once."""
    server = Server(tmp_path / "data")
    client = None
    try:
        await asyncio.to_thread(server.start)
        keys = (await asyncio.to_thread(server.init_project, "resume"))["environments"][0]
        with server.rest(keys["secret_key"]) as rest:
            assert rest.post("/flows", json=LOOP_FLOW).status_code == 201
            assert rest.put("/people/p", json={"data": {}}).status_code == 201
            assert rest.post("/people/p/flows", json={"flow": "loop"}).status_code == 201
            assert rest.post("/people/p/flows/loop/transitions", json={"transition": "go"})

            received = []
            statuses = []
            client = Client(
                server.url,
                keys["publishable_key"],
                "p",
                replay_from=0,  # the whole log, so "nothing missed" covers it all
                min_backoff=0.05,
                max_backoff=0.5,
            )
            client.on_event(received.append)
            client.on_status(statuses.append)
            await client.start(timeout=15)

            def flip(times: int) -> None:
                for _ in range(times):
                    response = rest.post(
                        "/people/p/flows/loop/transitions", json={"transition": "flip"}
                    )
                    assert response.status_code == 200, response.text

            await asyncio.to_thread(flip, 5)
            await client.wait_for(lambda c: c.step("loop", "b").state == "active", 10)

            await asyncio.to_thread(server.kill)  # SIGKILL: no goodbye to the client
            await client.wait_for(lambda c: c.status == "reconnecting", 10)
            # a transition asked for while the server is down waits to be live again
            pending = asyncio.create_task(client.transition("loop", "flip"))
            await asyncio.to_thread(_flip_in_another_process, server, keys["secret_key"], "p", 3)
            await asyncio.to_thread(server.start)  # same port, same data
            await asyncio.to_thread(flip, 4)  # right after the restart
            await asyncio.wait_for(pending, 20)

            log = rest.get("/people/p/events").json()
            last = log[-1]["seq"]
            assert last == 4 + 2 * (5 + 3 + 1 + 4)  # start (2), go (2), then 13 flips of 2
            await client.wait_for(lambda c: max(c.seq.values()) >= last, 20)
            await asyncio.sleep(0.3)  # anything repeated would arrive now

            seqs = [e["seq"] for e in received]
            assert sorted(seqs) == list(range(1, last + 1))  # none missed, none twice
            for entity in ("flow", "step"):
                mine = [e["seq"] for e in received if e["entity"] == entity]
                assert mine == sorted(mine)  # each stream in order
            assert sorted(received, key=lambda e: e["seq"]) == log
            assert client_states(client) == rest_states(rest, "p")
            assert statuses[:1] == ["live"] and "reconnecting" in statuses
            assert statuses[-1] == "live"
    finally:
        if client is not None:
            await client.close()
        server.stop()


@pytest.mark.slow
async def test_person_tokens_when_identity_verification_is_enforced(server):
    import jwt

    keys = (await asyncio.to_thread(server.init_project, "client identity"))["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        secret = rest.post("/identity-verification/secret").json()["identity_secret"]
        assert rest.put("/identity-verification", json={"mode": "enforce"}).status_code == 200
        assert rest.post("/flows", json=LOOP_FLOW).status_code == 201

        def token(person: str, seconds: int = 300) -> str:
            claims = {"sub": person, "exp": int(time.time()) + seconds}
            return jwt.encode(claims, secret, algorithm="HS256")

        pk = keys["publishable_key"]
        # no token: refused, and the client says why instead of retrying for ever
        with pytest.raises(StepstreamError) as refused:
            async with connect(server.url, pk, "alice"):
                pass
        assert refused.value.status == 401
        # a token for someone else: 403
        with pytest.raises(StepstreamError) as refused:
            async with connect(server.url, pk, "alice", person_token=token("bob")):
                pass
        assert refused.value.status == 403

        # a token source: called again after a 401 (here: an expired token first)
        handed_out = []

        async def fresh_token() -> str:
            handed_out.append(token("alice", -60 if not handed_out else 300))
            return handed_out[-1]

        async with connect(
            server.url, pk, "alice", person_token=fresh_token, min_backoff=0.05
        ) as client:
            assert len(handed_out) == 2
            assert rest.post("/people/alice/flows", json={"flow": "loop"}).status_code == 201
            await client.wait_for(lambda c: c.step("loop", "begin") is not None, 10)
            flow = await client.transition("loop", "go")
            assert flow.step("a").state == "active"
        assert states(rest.get("/people/alice/flows").json()[0])["a"] == "active"


@pytest.mark.slow
async def test_an_origin_allow_list_is_explained_and_can_be_met(server):
    keys = (await asyncio.to_thread(server.init_project, "client origins"))["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        allowed = {"origins": ["https://app.example.com"]}
        assert rest.put("/allowed-origins", json=allowed).status_code == 200
    pk = keys["publishable_key"]
    with pytest.raises(StepstreamError) as refused:
        async with connect(server.url, pk, "carol"):
            pass
    assert refused.value.status == 403
    assert "origin" in str(refused.value).lower()
    async with connect(server.url, pk, "carol", origin="https://app.example.com") as client:
        assert client.status == "live"


async def test_data_breaking_the_schema_stops_the_client_with_the_reason(server):
    keys = (await asyncio.to_thread(server.init_project, "client schema"))["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        schema = {"type": "object", "properties": {"plan": {"enum": ["free", "pro"]}}}
        assert rest.put("/schema/person", json=schema).status_code == 200
    began = time.monotonic()
    with pytest.raises(StepstreamError) as refused:
        async with connect(server.url, keys["publishable_key"], "dave", data={"plan": "gold"}):
            pass
    assert time.monotonic() - began < 10  # no retrying for ever
    assert refused.value.status == 400
    assert "plan" in str(refused.value)
