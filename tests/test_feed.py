"""The environment change feed: every change once, each person's in seq order, paged by cursor."""

import threading
import time

import pytest

from stepstream import engine
from stepstream.engine import people
from stepstream.testing.flows import LOOP_FLOW
from stepstream.testing.servers import Server
from tests.waiting import wait_until

# Real commits: on PostgreSQL the feed shows only rows of finished transactions,
# so a test wrapped in one open transaction would see nothing.
pytestmark = pytest.mark.django_db(transaction=True)


def read_all(get, after=None, limit=1000, expect=0, timeout=30.0):
    """Follows `next` until an empty page with at least `expect` events read.

    On PostgreSQL the feed waits for every older open transaction of the
    database server (its horizon), including other programs' on a shared
    server, so a change can take a moment to appear: the reader keeps asking.
    """
    events = []
    deadline = time.monotonic() + timeout
    while True:
        params = {"limit": limit}
        if after is not None:
            params["after"] = after
        page = get(params)
        events += page["events"]
        after = page["next"]
        if not page["events"]:
            if len(events) >= expect or time.monotonic() > deadline:
                return events, after
            time.sleep(0.05)  # an empty page: the feed is polled, as a consumer would


def read_items(environment_id, expect, timeout=30.0):
    """feed.read from the start until `expect` items (the horizon may lag on a shared server)."""
    from stepstream.engine import feed

    def enough():
        items = feed.read(environment_id, 0, 0, 1000)
        return (items,) if len(items) >= expect else None

    try:
        return wait_until(enough, timeout, interval=0.05)[0]
    except AssertionError:
        return feed.read(environment_id, 0, 0, 1000)  # fewer: the caller's assertion says so


def api_get(api):
    def get(params):
        response = api.get("/api/v1/events", params)
        assert response.status_code == 200, response.content
        return response.json()

    return get


def assert_exactly_once_in_order(events, last_seqs: dict):
    """Every (person, seq) once; each person's seq 1..last in order; nothing else."""
    seen: dict[str, list[int]] = {}
    for event in events:
        seen.setdefault(event["person_key"], []).append(event["seq"])
    assert set(seen) == {k for k, n in last_seqs.items() if n}
    for key, seqs in seen.items():
        assert seqs == list(range(1, last_seqs[key] + 1)), key


def test_feed_pages_through_every_change_once_in_order(api, env, linear_flow):
    for key in ("ann", "bob", "cy"):
        engine.do_put_person(env, key, {})
        engine.do_start_flow(env, key, "onboarding")
    engine.do_transition(env, "bob", "onboarding", "next")
    engine.do_transition(env, "ann", "onboarding", "next")
    engine.do_transition(env, "bob", "onboarding", "next")

    last = {k: people.get(env, k).last_seq for k in ("ann", "bob", "cy")}
    events, after = read_all(api_get(api), limit=2, expect=sum(last.values()))
    assert_exactly_once_in_order(events, last)
    assert events[0] == api.get("/api/v1/people/ann/events").json()[0]
    assert {"entity", "id", "identifier", "state", "previous_state", "seq"} <= set(events[0])

    # Following the last cursor later gives only what happened since.
    engine.do_transition(env, "cy", "onboarding", "next")
    since, after = read_all(api_get(api), after, expect=2)
    assert [(e["person_key"], e["seq"]) for e in since] == [("cy", 3), ("cy", 4)]
    empty = api.get("/api/v1/events", {"after": after}).json()
    assert empty["events"] == [] and empty["next"]


def test_empty_feed_still_gives_a_cursor(api):
    page = api.get("/api/v1/events").json()
    assert page == {"events": [], "next": page["next"]} and page["next"]


def test_deleted_people_leave_the_feed(api, env, linear_flow):
    for key in ("gone", "stays"):
        engine.do_put_person(env, key, {})
        engine.do_start_flow(env, key, "onboarding")
    people.delete(env, "gone")
    events, _ = read_all(api_get(api), expect=2)
    assert {e["person_key"] for e in events} == {"stays"}


def test_bad_cursors_and_limits_are_400(api, keys, project, env, linear_flow):
    from rest_framework.test import APIClient

    engine.do_put_person(env, "p", {})
    engine.do_start_flow(env, "p", "onboarding")
    cursor = api.get("/api/v1/events").json()["next"]
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {project['environments'][1]['secret_key']}")
    foreign = other.get("/api/v1/events", {"after": cursor})
    assert foreign.status_code == 400
    assert "another environment" in foreign.json()["errors"][0]
    for bad in ("nonsense", cursor[:-2], cursor + "AA", "x" * 500, "%%%"):
        response = api.get("/api/v1/events", {"after": bad})
        assert response.status_code == 400, bad
        assert "cursor" in response.json()["errors"][0]
    for limit in ("0", "10001", "ten"):
        assert api.get("/api/v1/events", {"limit": limit}).status_code == 400
    assert len(api.get("/api/v1/events", {"limit": "10000"}).json()["events"]) == 2
    assert api.get("/api/v1/events").status_code == 200


def test_feed_needs_the_secret_key(client):
    assert client.get("/api/v1/events").status_code == 401


def test_postgres_a_row_committed_out_of_id_order_is_not_skipped(env, linear_flow):
    """T1 writes first (lower id) but commits after T2: the feed waits for T1, then gives both."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("ids are commit order on SQLite (one writer)")
    import psycopg

    from stepstream.engine import feed

    for key in ("early", "late"):
        engine.do_put_person(env, key, {})
    settings = connection.settings_dict
    dsn = dict(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
    )

    def insert(conn, key):
        conn.execute(
            "INSERT INTO stepstream_statechange (person_id, seq, entity, object_id, identifier, "
            "state, previous_state, flow_identifier, flow_instance_id, occurred_at, cause) "
            "SELECT id, 1, 'flow', gen_random_uuid(), 'f', 'active', 'inactive', 'f', "
            'gen_random_uuid(), now(), \'{"kind": "call", "via": "admin"}\'::jsonb '
            "FROM stepstream_person WHERE person_key = %s",
            [key],
        )

    with psycopg.connect(**dsn) as t1, psycopg.connect(**dsn) as t2:
        insert(t1, "early")  # lower id, transaction still open
        insert(t2, "late")
        t2.commit()
        assert feed.read(env.pk, 0, 0, 100) == []  # the horizon waits for T1
        t1.commit()
        items = read_items(env.pk, 2)
    assert [i.data["person_key"] for i in items] == ["early", "late"]
    assert items[0].id < items[1].id and items[0].xid < items[1].xid


# -- real processes: two servers, 16 writers, one reader ---------------------


@pytest.mark.slow
def test_feed_read_during_concurrent_writes_in_two_processes_is_exactly_once(tmp_path):
    """16 writers through two `serve` processes while a reader follows the feed."""
    # On SQLite both processes share one data directory (one database file);
    # on PostgreSQL they share DATABASE_URL.
    a = Server(tmp_path).start()
    b = Server(tmp_path).start()
    try:
        keys = a.init_project("feed")["environments"][0]
        secret = keys["secret_key"]
        with a.rest(secret) as rest:
            rest.post("/flows", json=LOOP_FLOW).raise_for_status()
            persons = [f"p{i}" for i in range(24)]
            for key in persons:
                rest.put(f"/people/{key}", json={"data": {}}).raise_for_status()
                rest.post(f"/people/{key}/flows", json={"flow": "loop"}).raise_for_status()
                rest.post(
                    f"/people/{key}/flows/loop/transitions", json={"transition": "go"}
                ).raise_for_status()

        stop = threading.Event()
        errors = []

        def writer(i):
            server = a if i % 2 else b
            # each writer has a person of its own and shares eight with the others
            mine = [persons[16 + i % 8], persons[i]]
            with server.rest(secret) as rest:
                for n in range(60):
                    key = mine[n % 2]
                    r = rest.post(
                        f"/people/{key}/flows/loop/transitions", json={"transition": "flip"}
                    )
                    if r.status_code not in (200, 409):
                        errors.append(r.text)

        collected = []

        def reader():
            after = None
            with a.rest(secret) as rest:
                while not stop.is_set():
                    params = {"limit": 97}
                    if after:
                        params["after"] = after
                    page = rest.get("/events", params=params).json()
                    collected.extend(page["events"])
                    after = page["next"]
                    if not page["events"]:
                        time.sleep(0.01)  # a follower polls the feed, as a consumer would
            collected.append(after)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
        follow = threading.Thread(target=reader)
        follow.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()  # what the follower has not read yet is read below
        follow.join()
        after = collected.pop()
        assert not errors, errors[:3]
        with b.rest(secret) as rest:
            last = {k: rest.get(f"/people/{k}/flows").json()[0]["seq"] for k in persons}
            rest_of, _ = read_all(
                lambda p: rest.get("/events", params=p).json(),
                after,
                expect=sum(last.values()) - len(collected),
            )
            collected += rest_of
        assert sum(last.values()) > 24 * 4 + 16 * 60  # the writers really wrote
        assert_exactly_once_in_order(collected, last)
    finally:
        a.stop()
        b.stop()


def test_postgres_a_writer_whose_transaction_id_is_older_still_comes_after_in_seq_order(
    env, linear_flow
):
    """T2 gets its transaction id first but takes the person's lock after T1 committed."""
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        pytest.skip("one writer at a time on SQLite")

    engine.do_put_person(env, "p", {})
    engine.do_start_flow(env, "p", "onboarding")  # seq 1, 2
    has_xid, t1_done = threading.Event(), threading.Event()
    failures = []

    def t2():
        from django.db import connection as conn

        try:
            with transaction.atomic():
                with conn.cursor() as c:
                    c.execute("SELECT pg_current_xact_id()")  # an id before T1 has one
                has_xid.set()
                t1_done.wait(10)
                engine.do_transition(env, "p", "onboarding", "next")  # seq 5..8
        except Exception as e:  # noqa: BLE001
            failures.append(e)
        finally:
            conn.close()

    thread = threading.Thread(target=t2)
    thread.start()
    has_xid.wait(10)
    engine.do_transition(env, "p", "onboarding", "next")  # T1: seq 3, 4, committed first
    t1_done.set()
    thread.join()
    assert not failures
    items = read_items(env.pk, 8)
    assert [i.data["seq"] for i in items] == list(range(1, 9))
