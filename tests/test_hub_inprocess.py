"""The delivery hub and the admin, in-process: no server needed to show these."""

import asyncio
import logging

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from stepstream.engine.log import Record
from tests.waiting import until


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

    def sent_to_every_reader(seq: int) -> bool:
        return all(
            sum(m["type"] == "websocket.send" for m in received.get(n, [])) >= seq
            for n in range(10)
        )

    for record in records:  # the 4th overflows the slow ones mid-dispatch
        hub.feed([record])  # raised "Set changed size during iteration"
        await until(lambda seq=record.seq: sent_to_every_reader(seq), timeout=5)
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
    from stepstream.models import StateChange

    engine.do_identify(env, "alice", {})
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


# -- issue 14: the hub's ordering promise, property-tested in-process ---------------

PERSON = "hub-property"
FLIPS = 10  # the log: flow started, begin active, go, then FLIPS flips (2 rows each)


class Recorder:
    """A socket that reads everything: the seqs each subscription was sent, in order."""

    closed = False

    def __init__(self):
        self.seqs: list[int] = []

    def push(self, message) -> None:
        import orjson

        self.seqs.append(orjson.loads(message.text)["data"]["seq"])

    async def room(self) -> None:
        return None

    def close(self, code, reason="") -> None:
        self.closed = True

    def end(self, sub, status, errors) -> None:
        raise AssertionError(f"subscription ended: {status} {errors}")


@pytest.fixture
def logged_person(transactional_db, env):
    """A person whose real log holds a few dozen rows of both entities; its Records."""
    from stepstream import engine
    from stepstream.engine import flows, log
    from stepstream.models import Person
    from stepstream.testing.flows import LOOP_FLOW

    flows.publish(env, LOOP_FLOW)
    engine.do_identify(env, PERSON, {})
    person = Person.objects.get(environment=env, person_key=PERSON)
    engine.do_start_flow(env, PERSON, "loop")
    engine.do_transition(env, PERSON, "loop", "go")
    for _ in range(FLIPS):
        engine.do_transition(env, PERSON, "loop", "flip")
    records = log.read_records(person.pk, 0, None, None, 1000)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert {r.entity for r in records} == {"flow", "step"}
    return records


def _scenario(draw_records):
    """Strategies for one run: what arrives by which path, who subscribes when."""
    n = len(draw_records)
    seqs = st.integers(1, n)
    arrival = st.tuples(st.sampled_from(["local", "broker", "log"]), st.lists(seqs, max_size=4))
    subscribe = st.integers(0, n).flatmap(
        lambda last: st.tuples(
            st.just(last),  # the person's last seq as its subscribe read it
            st.one_of(st.none(), st.integers(0, last)),  # since_seq
            st.sampled_from(["flow", "step"]),
        )
    )
    step = st.tuples(
        st.one_of(arrival.map(lambda a: ("feed", a)), subscribe.map(lambda s: ("subscribe", s))),
        st.sampled_from([None, 0, 0.001]),  # run nothing, one loop turn, or a short wait
    )
    return st.lists(step, min_size=1, max_size=30).filter(
        lambda steps: any(kind == "subscribe" for (kind, _), _ in steps)
    )


async def _run(records, steps) -> list[tuple[list[int], list[int]]]:
    from stepstream.delivery.broker_memory import MemoryBroker
    from stepstream.delivery.hub import Hub

    hub = Hub(MemoryBroker())
    person_id, last = records[0].person_id, records[-1].seq
    by_seq = {r.seq: r for r in records}
    subs = []
    try:
        for (kind, what), pause in steps:
            if kind == "feed":
                source, seqs = what
                hub.feed([by_seq[s] for s in seqs], source)
            else:
                last_seq, since, entity = what
                conn = Recorder()
                sub = hub.subscribe(conn, person_id, last_seq, entity, 1, since)
                start = since if since is not None else last_seq
                expected = [r.seq for r in records if r.seq > start and r.entity == entity]
                subs.append((sub, conn, expected))
            if pause is not None:
                await asyncio.sleep(pause)  # the scenario's interleaving (none, a turn, a wait)
        # the reconcile loop: the log has rows up to `last`; it fills whatever was dropped
        channel = hub.channels[person_id]
        hub._schedule_fill(channel, last)

        def settled() -> bool:
            if all(s.cursor >= last and not s.catching_up for s, _, _ in subs) and not hub.tasks:
                return True
            if not channel.filling and channel.head < last:
                hub._schedule_fill(channel, last)
            return False

        await until(settled, timeout=5)
        assert not hub.errors
        return [(conn.seqs, expected) for _, conn, expected in subs]
    finally:
        await hub.stop()


@pytest.mark.slow
def test_every_subscription_gets_every_seq_once_in_order_whatever_the_paths_do(logged_person):
    """Records from the local, broker and log paths, permuted, duplicated and dropped,
    with subscriptions resuming (since_seq) while records flow: each one gets exactly
    the seqs after its start, of its entity, once each and in order."""
    records = logged_person

    @hypothesis_settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(_scenario(records))
    def check(steps):
        for got, expected in asyncio.run(_run(records, steps)):
            assert got == expected

    check()


class CrashingBroker:
    """A broker whose listener crashes on its first run: the hub must say so and go on."""

    cross_process = False
    healthy = True

    def __init__(self):
        self.runs = 0
        self.again = asyncio.Event()

    async def listen(self, on_records, on_gap) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("the broker's connection broke in an unexpected way")
        self.again.set()
        await asyncio.Event().wait()

    def publish(self, records) -> None:
        pass


async def test_a_crashing_hub_task_is_logged_reported_and_restarted(
    transactional_db, monkeypatch, caplog
):
    from stepstream.delivery import hub as hub_module

    monkeypatch.setattr(hub_module, "RESTART_DELAY", 0.01)
    broker = CrashingBroker()
    hub = hub_module.Hub(broker)
    with caplog.at_level(logging.ERROR, logger="stepstream.delivery"):
        await hub.start()
        await asyncio.wait_for(broker.again.wait(), 5)
    assert broker.runs == 2  # restarted
    assert hub.errors == {"broker": 1}
    assert not hub.healthy
    crash = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crash) == 1 and crash[0].levelno == logging.ERROR
    assert "unexpected way" in str(crash[0].exc_info[1])
    running = set(hub.tasks)
    assert len(running) == 3  # tail, reconcile, broker: owned by the hub
    await hub.stop()
    assert not hub.tasks and all(task.done() for task in running)


async def test_a_crashing_catch_up_closes_its_socket_instead_of_stalling(monkeypatch, caplog):
    """A bug in a one-off task is logged, and the subscription it served does not wait
    in silence for ever: its socket is closed, so the client resumes with since_seq."""
    from stepstream.delivery.broker_memory import MemoryBroker
    from stepstream.delivery.hub import Hub

    hub = Hub(MemoryBroker())

    async def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(hub, "_catching_up", broken)
    conn = Recorder()
    with caplog.at_level(logging.ERROR, logger="stepstream.delivery"):
        hub.subscribe(conn, 1, 5, "step", 1, 2)  # behind: it catches up
        await until(lambda: conn.closed and not hub.tasks, timeout=5)
    assert conn.closed
    assert hub.errors == {"catch-up": 1}
    assert any("crashed" in r.getMessage() for r in caplog.records)
    await hub.stop()
