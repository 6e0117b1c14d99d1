"""Concurrent engine calls: seq stays gap-free and the log replays to the stored states.

The PostgreSQL tests need DATABASE_URL; the embedded SQLite tests run without it.
Threads use real connections, so these tests are transactional.
"""

import os
import threading
from collections import Counter

import pytest
from django.db import OperationalError, connection

from stepstream import engine
from stepstream.engine import flows
from stepstream.errors import Conflict
from stepstream.models import FlowInstance, Person, StateChange, StepInstance

ON_POSTGRES = bool(os.environ.get("DATABASE_URL"))
needs_postgres = pytest.mark.skipif(not ON_POSTGRES, reason="needs PostgreSQL: set DATABASE_URL")
needs_sqlite = pytest.mark.skipif(
    ON_POSTGRES, reason="embedded SQLite only: unset DATABASE_URL to run"
)

THREADS = 16
CALLS = 10

# s -> a runs at once; then "flip" moves between a and b forever, so it always succeeds.
# A start logs 4 rows (flow, s active, s completed, a active); a flip logs 2.
TOGGLE_STEPS = ["s", "a", "b"]
TOGGLE_TRANSITIONS = [
    {"identifier": "begin", "from": "s", "to": "a", "type": "automatic"},
    {"identifier": "flip", "from": "a", "to": "b"},
    {"identifier": "flip", "from": "b", "to": "a"},
]
START_ROWS, FLIP_ROWS = 4, 2


def toggle(identifier):
    return {
        "identifier": identifier,
        "steps": [{"identifier": s} for s in TOGGLE_STEPS],
        "transitions": TOGGLE_TRANSITIONS,
    }


@pytest.fixture
def tenv(transactional_db):
    """An environment in a transactional database (threads see committed rows)."""
    from stepstream.trust.tenants import create_project, environment_for_key

    keys = create_project("concurrency")["environments"][0]
    return environment_for_key(keys["secret_key"], "secret")


def run_threads(target, count=THREADS):
    """Runs target(i) in `count` threads released together; returns their exceptions."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def body(i):
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            with lock:
                errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return errors


def assert_log_replays(person_key, env):
    """seq is exactly 1..N, last_seq == N, and replaying the log gives the stored states."""
    person = Person.objects.get(environment=env, person_key=person_key)
    rows = list(StateChange.objects.filter(person=person).order_by("seq"))
    n = len(rows)
    assert [r.seq for r in rows] == list(range(1, n + 1))
    assert person.last_seq == n

    replayed: dict = {}
    for r in rows:
        previous = replayed.get(r.object_id, "inactive")
        assert r.previous_state == previous, f"seq {r.seq}: {r} does not follow {previous}"
        replayed[r.object_id] = r.state

    instances = list(FlowInstance.objects.filter(person=person))
    steps = list(StepInstance.objects.filter(instance__person=person))
    stored = {i.id: i.state for i in instances} | {s.id: s.state for s in steps}
    for object_id, state in stored.items():
        assert replayed.get(object_id, "inactive") == state, object_id
    assert set(replayed) <= set(stored), "log rows name objects that do not exist"
    # Every instance's log starts with its flow becoming active.
    for i in instances:
        first = next(r for r in rows if r.flow_instance_id == i.id)
        assert (first.entity, first.previous_state, first.state) == ("flow", "inactive", "active")
    return n


def same_person_workload(env):
    """16 threads x 10 calls on one person: own starts, shared flips, refused starts."""
    for i in range(THREADS):
        flows.publish(env, toggle(f"own{i}"))
    flows.publish(env, toggle("shared"))
    engine.do_put_person(env, "alice", {})
    engine.do_start_flow(env, "alice", "shared")

    conflicts = Counter()
    counts_lock = threading.Lock()

    def work(i):
        engine.do_start_flow(env, "alice", f"own{i}")
        for call in range(CALLS - 1):
            if call == 4:
                try:
                    engine.do_start_flow(env, "alice", "shared")
                except Conflict:
                    with counts_lock:
                        conflicts["start"] += 1
            elif call % 2:
                engine.do_transition(env, "alice", "shared", "flip")
            else:
                engine.do_transition(env, "alice", f"own{i}", "flip")

    errors = run_threads(work)
    assert errors == []
    assert conflicts["start"] == THREADS

    flips = THREADS * (CALLS - 2)  # every call but the own start and the refused start
    expected = START_ROWS * (1 + THREADS) + FLIP_ROWS * flips
    assert assert_log_replays("alice", env) == expected

    # Each own flow was flipped an even number of times (4): back on step a.
    snap = engine.snapshot(env, "alice")
    assert snap["seq"] == expected
    own = {i["flow"]: {s["identifier"]: s["state"] for s in i["steps"]} for i in snap["flows"]}
    for i in range(THREADS):
        assert own[f"own{i}"] == {"s": "completed", "a": "active", "b": "completed"}
    # The shared flow was flipped 16 * 4 = 64 times: back on a as well.
    assert own["shared"] == {"s": "completed", "a": "active", "b": "completed"}


def same_transition_race(env):
    flows.publish(
        env,
        {
            "identifier": "once",
            "steps": [{"identifier": "s"}, {"identifier": "a"}, {"identifier": "end"}],
            "transitions": [
                {"identifier": "go", "from": "s", "to": "a"},
                {"identifier": "finish", "from": "a", "to": "end"},
            ],
        },
    )
    engine.do_put_person(env, "bob", {})
    engine.do_start_flow(env, "bob", "once")

    outcomes = Counter()
    lock = threading.Lock()

    def work(i):
        try:
            engine.do_transition(env, "bob", "once", "go")
            result = "ok"
        except Conflict:
            result = "conflict"
        with lock:
            outcomes[result] += 1

    assert run_threads(work) == []
    assert outcomes == {"ok": 1, "conflict": THREADS - 1}
    bob = Person.objects.get(environment=env, person_key="bob")
    assert [
        (r.seq, r.entity, r.identifier, r.previous_state, r.state)
        for r in StateChange.objects.filter(person=bob).order_by("seq")
    ] == [
        (1, "flow", "once", "inactive", "active"),
        (2, "step", "s", "inactive", "active"),
        (3, "step", "s", "active", "completed"),
        (4, "step", "a", "inactive", "active"),
    ]
    assert assert_log_replays("bob", env) == 4


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_concurrent_calls_for_one_person_keep_seq_gap_free(tenv):
    same_person_workload(tenv)


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_same_transition_at_once_has_exactly_one_winner(tenv):
    same_transition_race(tenv)


@needs_sqlite
@pytest.mark.django_db(transaction=True)
def test_sqlite_concurrent_callers_for_different_people_are_not_locked_out(tenv):
    flows.publish(tenv, toggle("t"))
    for i in range(THREADS):
        engine.do_put_person(tenv, f"p{i}", {})

    def work(i):
        key = f"p{i}"
        engine.do_start_flow(tenv, key, "t")
        for _ in range(CALLS - 1):
            engine.do_transition(tenv, key, "t", "flip")

    errors = run_threads(work)
    locked = [e for e in errors if isinstance(e, OperationalError)]
    assert locked == [], f"database errors: {locked!r}"
    assert errors == []
    for i in range(THREADS):
        n = assert_log_replays(f"p{i}", tenv)
        assert n == START_ROWS + FLIP_ROWS * (CALLS - 1)
        # 9 flips from a: ends on b.
        snap = engine.snapshot(tenv, f"p{i}")
        assert {s["identifier"]: s["state"] for s in snap["flows"][0]["steps"]} == {
            "s": "completed",
            "a": "completed",
            "b": "active",
        }


@needs_sqlite
@pytest.mark.django_db(transaction=True)
def test_sqlite_concurrent_calls_for_one_person_keep_seq_gap_free(tenv):
    same_person_workload(tenv)


@needs_sqlite
@pytest.mark.django_db(transaction=True)
def test_sqlite_same_transition_at_once_has_exactly_one_winner(tenv):
    same_transition_race(tenv)


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_people_sharing_counter_rows_all_get_their_transitions(tenv):
    """People whose changes meet on the same dashboard counter rows, flipping at once.

    The counter triggers lock those rows in whatever order each statement
    updates its step rows, so two such writes can deadlock; PostgreSQL aborts
    one and the engine runs it again: every caller gets its answer.
    """
    from stepstream.engine.counters import SHARDS

    flows.publish(tenv, toggle("shared"))
    same_shard = []
    n = 0
    while len(same_shard) < THREADS:
        engine.do_put_person(tenv, f"p{n}", {})
        person = Person.objects.get(environment=tenv, person_key=f"p{n}")
        if person.pk % SHARDS == 0:
            same_shard.append(person.person_key)
        n += 1
    for key in same_shard:
        engine.do_start_flow(tenv, key, "shared")

    def work(i):
        for _ in range(3 * CALLS):
            engine.do_transition(tenv, same_shard[i], "shared", "flip")

    assert run_threads(work) == []
    for key in same_shard:
        assert assert_log_replays(key, tenv) == START_ROWS + FLIP_ROWS * 3 * CALLS
