"""The Python client against a real server under issue 10's rules: refused keys stop it with
the reason, lapsed tokens are renewed, a restarted log is reloaded rather than resumed."""

import asyncio
import time
import uuid

import jwt
import pytest

from stepstream.testing.flows import states
from stepstream_client import Client, StepstreamError, connect
from stepstream_client import client as client_module
from tests.conftest import LOOP_FLOW


def rest_states(rest, person_key: str) -> dict:
    return {i["flow"]: states(i) for i in rest.get(f"/people/{person_key}/flows").json()}


def client_states(client: Client) -> dict:
    return {
        name: {"flow": flow.state, **{s.identifier: s.state for s in flow.steps}}
        for name, flow in client.flows.items()
    }


async def test_an_invalid_key_is_surfaced_and_not_retried(server, tenant):
    began = time.monotonic()
    client = Client(server.url, "pk_not-a-key", "someone", min_backoff=0.05)
    with pytest.raises(StepstreamError) as failed:
        await client.start(timeout=10)
    assert time.monotonic() - began < 5
    assert failed.value.code == "invalid_key"
    assert failed.value.status == 401
    assert "invalid key" in str(failed.value)
    assert "publishable key" in str(failed.value)  # the server's reason sentence
    assert client.status == "closed" and client.error is failed.value
    await client.close()


@pytest.mark.slow
async def test_a_revoked_key_is_surfaced_and_not_retried(server):
    keys = (await asyncio.to_thread(server.init_project, "client revoked"))["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        spare = rest.post("/keys", json={"kind": "publishable"}).json()
        async with connect(server.url, spare["key"], "ria", min_backoff=0.05) as client:
            assert rest.post(f"/keys/{spare['id']}/revoke").status_code == 200
            with pytest.raises(StepstreamError):
                await client.wait_for(lambda c: False, 10)
            assert client.status == "closed"
            assert client.error.code == "revoked"
            assert "revoked" in str(client.error)
        with pytest.raises(StepstreamError) as refused:
            async with connect(server.url, spare["key"], "ria", min_backoff=0.05):
                pass
        assert refused.value.code == "revoked"


@pytest.mark.slow
async def test_a_lapsed_token_is_renewed_from_the_callback_and_nothing_is_missed(server):
    keys = (await asyncio.to_thread(server.init_project, "client renew"))["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        secret = rest.post("/identity-verification/secret").json()["identity_secret"]
        assert rest.put("/identity-verification", json={"mode": "enforce"}).status_code == 200
        assert rest.post("/flows", json=LOOP_FLOW).status_code == 201
        assert rest.put("/people/ann", json={"data": {}}).status_code == 201
        assert rest.post("/people/ann/flows", json={"flow": "loop"}).status_code == 201
        assert rest.post("/people/ann/flows/loop/transitions", json={"transition": "go"}).is_success
        handed_out = []

        def fresh_token() -> str:  # short-lived tokens: each lives 3 s
            handed_out.append(time.time())
            return jwt.encode(
                {"sub": "ann", "exp": int(time.time()) + 3}, secret, algorithm="HS256"
            )

        async with connect(
            server.url, keys["publishable_key"], "ann", person_token=fresh_token
        ) as client:
            seen = []
            client.on_event(lambda change: seen.append(change["seq"]))
            start = client.seq["step"]
            # changes go on, each awaited by the client, until the first token lapsed and a
            # fresh one was asked for (the subscriptions ended and were renewed), and after
            renewed_for = 0
            deadline = time.monotonic() + 30
            while renewed_for < 5:
                assert time.monotonic() < deadline, "no token was asked for after the first"
                flipped = rest.post(
                    "/people/ann/flows/loop/transitions", json={"transition": "flip"}
                )
                assert flipped.is_success
                made = rest.get("/people/ann/flows").json()[0]["seq"]
                await client.wait_for(lambda c, made=made: c.seq["step"] >= made, 10)
                renewed_for += len(handed_out) >= 2
            last = rest.get("/people/ann/flows").json()[0]["seq"]
            await client.wait_for(lambda c: c.seq["step"] >= last, 10)
            assert client.status == "live"
            assert len(handed_out) >= 2, "no token was asked for after the first"
            steps = [s for s in seen if s > start]
            assert steps == list(range(start + 1, last + 1))  # every step change, once, in order
            assert client_states(client) == rest_states(rest, "ann")


@pytest.mark.slow
async def test_a_fixed_token_that_lapses_stops_the_client_with_the_reason(server):
    keys = (await asyncio.to_thread(server.init_project, "client fixed"))["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        secret = rest.post("/identity-verification/secret").json()["identity_secret"]
        assert rest.put("/identity-verification", json={"mode": "enforce"}).status_code == 200
        token = jwt.encode({"sub": "bo", "exp": int(time.time()) + 2}, secret, algorithm="HS256")
        async with connect(server.url, keys["publishable_key"], "bo", person_token=token) as client:
            with pytest.raises(StepstreamError):
                await client.wait_for(lambda c: False, 10)
            assert client.status == "closed"
            assert client.error.status == 401
            assert "expired" in str(client.error)


@pytest.mark.slow
async def test_a_restarted_log_is_reloaded_not_resumed(server, tenant, rest, monkeypatch):
    # the reconnect waits its whole window (2 s): the log restarts before it resumes
    monkeypatch.setattr(client_module, "_random", lambda: 1.0)
    person = f"reborn-{uuid.uuid4().hex[:8]}"
    assert rest.put(f"/people/{person}", json={"data": {}}).status_code == 201
    assert rest.post(f"/people/{person}/flows", json={"flow": "loop"}).status_code == 201
    client = Client(server.url, tenant["dev"]["publishable_key"], person, min_backoff=2.0)
    await client.start(timeout=10)
    try:
        old_epoch = client.epoch
        assert old_epoch and client.seq["step"] == 2
        await client._ws.close()  # a dropped connection: the client resumes after 2 s
        # meanwhile the person is deleted and created again, and their new log passes seq 2
        assert rest.delete(f"/people/{person}").status_code == 204
        assert rest.put(f"/people/{person}", json={"data": {}}).status_code == 201
        assert rest.post(f"/people/{person}/flows", json={"flow": "onboarding"}).status_code == 201
        moved = rest.post(
            f"/people/{person}/flows/onboarding/transitions", json={"transition": "next"}
        )
        assert moved.is_success
        await client.wait_for(lambda c: c.epoch != old_epoch and c.status == "live", 15)
        assert client_states(client) == rest_states(rest, person)
        assert "loop" not in client.flows  # the old life's flow is gone
        assert rest.post(
            f"/people/{person}/flows/onboarding/transitions", json={"transition": "next"}
        ).is_success
        await client.wait_for(lambda c: c.flow("onboarding").state == "completed", 10)
    finally:
        await client.close()


async def test_a_deleted_person_is_noticed(server, tenant, rest):
    watched, identified = (f"deleted-{n}-{uuid.uuid4().hex[:8]}" for n in range(2))
    for person in (watched, identified):
        assert rest.put(f"/people/{person}", json={"data": {}}).status_code == 201
    pk = tenant["dev"]["publishable_key"]
    watching = Client(server.url, pk, watched, identify=False)
    identifying = Client(server.url, pk, identified, min_backoff=0.05)
    await watching.start(timeout=10)
    await identifying.start(timeout=10)
    try:
        old_epoch = identifying.epoch
        for person in (watched, identified):
            assert rest.delete(f"/people/{person}").status_code == 204
        # a client that only watches stops, saying the person is gone
        with pytest.raises(StepstreamError) as gone:
            await watching.wait_for(lambda c: False, 10)
        assert gone.value.status == 404 and watching.status == "closed"
        # one that identifies starts over with the person it creates again
        await identifying.wait_for(lambda c: c.epoch != old_epoch and c.status == "live", 10)
        assert rest.post(f"/people/{identified}/flows", json={"flow": "onboarding"}).is_success
        await identifying.wait_for(lambda c: c.flow("onboarding") is not None, 10)
        assert client_states(identifying) == rest_states(rest, identified)
    finally:
        await watching.close()
        await identifying.close()
