"""The delivery hub and the admin, in-process: no server needed to show these."""

import asyncio

from stepstream.engine.log import Record


async def test_a_socket_closed_for_slowness_mid_dispatch_does_not_stall_the_others(settings):
    """Issue 10, item 9: a 4408 in the middle of a dispatch changed the set being walked."""
    from stepstream.delivery.broker_memory import MemoryBroker
    from stepstream.delivery.hub import Hub
    from stepstream.ws.connection import Connection

    settings.STEPSTREAM = {**settings.STEPSTREAM, "WS_OUTBOX_LIMIT": 3}
    hub = Hub(MemoryBroker())
    never = asyncio.Event()

    async def stuck(message):  # a client that never reads
        await never.wait()

    received: dict[int, list] = {}

    def reader(n):
        async def send(message):
            received.setdefault(n, []).append(message)

        return send

    slow = [Connection(stuck, None, hub) for _ in range(10)]
    fast = [Connection(reader(n), None, hub) for n in range(10)]
    for conn in slow + fast:
        conn.subscriptions[("p", "step")] = hub.subscribe(conn, 1, 0, "step", 7, None)
    records = [Record(1, seq, "step", f'{{"seq":{seq}}}') for seq in range(1, 6)]
    for record in records:  # the 4th overflows the slow ones mid-dispatch
        hub.feed([record])  # raised "Set changed size during iteration"
        await asyncio.sleep(0.01)
    assert all(conn.close_code == 4408 for conn in slow)
    assert hub.channels[1].head == 5
    assert len(hub.channels[1].subs) == len(fast)
    for n in range(10):
        assert [m["text"] for m in received[n] if m["type"] == "websocket.send"] == [
            f'{{"event":"state_change","request_id":7,"data":{{"seq":{seq}}}}}'
            for seq in range(1, 6)
        ]
    never.set()
    for conn in slow + fast:
        await conn.finish()


def test_the_log_cannot_be_deleted_row_by_row_in_the_admin(admin_client, env, linear_flow):
    """Issue 10, item 14: a deleted log row would be a gap clients can never fill."""
    from stepstream import engine
    from stepstream.engine import people
    from stepstream.models import StateChange

    people.merge(env, "alice", {})
    engine.do_start_flow(env, "alice", "onboarding")
    row = StateChange.objects.filter(person__person_key="alice").first()
    listing = admin_client.get("/admin/stepstream/statechange/")
    assert listing.status_code == 200
    assert "delete_selected" not in listing.content.decode()
    assert admin_client.get(f"/admin/stepstream/statechange/{row.pk}/delete/").status_code == 403
    gone = admin_client.post(f"/admin/stepstream/statechange/{row.pk}/delete/", {"post": "yes"})
    assert gone.status_code == 403
    bulk = admin_client.post(
        "/admin/stepstream/statechange/",
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert StateChange.objects.filter(pk=row.pk).exists()
