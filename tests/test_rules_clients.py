"""The Python client's track() and restart() against a real server, with causes in events."""

import time

import pytest

from stepstream_client import StepstreamError, connect

CHECKLIST = {
    "identifier": "checklist",
    "start_when": "has(events.signed_up)",
    "steps": [{"identifier": "invite"}, {"identifier": "done"}],
    "transitions": [
        {
            "identifier": "invited",
            "from": "invite",
            "to": "done",
            "type": "automatic",
            "condition": "has(events.invited_teammate)",
        }
    ],
}


@pytest.fixture
def rules_tenant(server):
    keys = server.init_project(f"rules-clients-{time.monotonic_ns()}")["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        assert rest.post("/flows", json=CHECKLIST).status_code == 201
    return keys


async def test_client_tracks_restarts_and_sees_causes(server, rules_tenant):
    seen = []
    async with connect(server.url, rules_tenant["publishable_key"], "cl") as client:
        client.on_event(seen.append)
        answer = await client.track("signed_up", {"plan": "pro"})
        assert answer["event"] == "signed_up" and answer["count"] == 1
        await client.wait_for(lambda c: c.step("checklist", "invite") is not None, 10)
        await client.wait_for(lambda c: c.step("checklist", "invite").state == "active", 10)
        assert (await client.track("invited_teammate"))["seq"] == answer["seq"] + 4
        await client.wait_for(lambda c: c.flow("checklist").state == "completed", 10)
        first = client.flow("checklist").id
        # the new instance starts, and its checklist item is already done: the person's
        # events are their whole history, not the instance's
        flow = await client.restart("checklist")
        assert flow.id != first and flow.state == "completed"
        assert client.flow("checklist").id == flow.id
        with pytest.raises(StepstreamError) as missing:
            await client.restart("nope")
        assert missing.value.status == 404
        await client.wait_for(lambda c: len(seen) >= 12, 10)
    causes = [e["cause"] for e in seen]
    assert causes[0] == {"kind": "start_when", "event": "signed_up"}
    assert {"kind": "automatic", "transition": "invited", "event": "invited_teammate"} in causes
    restart = {"kind": "call", "via": "websocket", "action": "restart"}
    assert causes[6:8] == [restart, restart]
    assert causes[8:] == [{"kind": "automatic", "transition": "invited"}] * 4
