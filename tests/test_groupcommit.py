"""Group commit (stepstream/engine/groupcommit.py) on the real database: SQLite, or
PostgreSQL with DATABASE_URL.

A batch runs several people's writes in one transaction: a write that fails
rolls back alone and its caller gets its own error; a batch that dies commits
nothing; each person's writes keep their order; only committed changes are
delivered, once, in order. Threads use real connections, so these tests are
transactional.
"""

import os
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest
from django.db import connection

from stepstream import engine
from stepstream.engine import commits, flows, groupcommit
from stepstream.errors import Conflict, Unavailable
from stepstream.models import Person, StateChange
from tests.test_concurrency import assert_log_replays, run_threads, same_transition_race, toggle

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def group_commit_on(settings):
    """On for these tests on both databases (by default it is on for SQLite only)."""
    settings.STEPSTREAM = {**settings.STEPSTREAM, "GROUP_COMMIT": True}


START_ROWS, FLIP_ROWS = 4, 2


@pytest.fixture
def tenv(transactional_db):
    from stepstream.trust.tenants import create_project, environment_for_key

    keys = create_project("groupcommit")["environments"][0]
    env = environment_for_key(keys["secret_key"], "secret")
    flows.publish(env, toggle("t"))
    for i in range(4):
        engine.do_put_person(env, f"p{i}", {})
        engine.do_start_flow(env, f"p{i}", "t")
    return env


@pytest.fixture
def delivered():
    """Records handed to delivery, in the order they were announced."""
    seen: list = []
    commits.listen(seen.extend)
    yield seen
    commits._listeners.remove(seen.extend)


def flip(env, key):
    # the action without its group-commit wrapper: what the committer runs as a job
    return groupcommit.Job(engine.do_transition.__wrapped__, (env, key, "t", "flip"))


def last_seq(env, key) -> int:
    return Person.objects.get(environment=env, person_key=key).last_seq


def seqs(records, env, key) -> list[int]:
    pk = Person.objects.get(environment=env, person_key=key).pk
    return [r.seq for r in records if r.person_id == pk]


def test_a_failing_write_rolls_back_alone_and_its_caller_gets_its_error(tenv, delivered):
    def flip_then_fail():
        engine.do_transition.__wrapped__(tenv, "p1", "t", "flip")  # rows and log rows written
        raise RuntimeError("this write fails after writing")

    jobs = [
        flip(tenv, "p0"),
        groupcommit.Job(flip_then_fail),
        groupcommit.Job(engine.do_transition.__wrapped__, (tenv, "p2", "t", "no-such")),
        flip(tenv, "p3"),
    ]
    groupcommit.run_batch(jobs)

    assert all(j.finished for j in jobs)
    with pytest.raises(RuntimeError, match="fails after writing"):
        jobs[1].outcome()
    with pytest.raises(Conflict, match="no-such"):
        jobs[2].outcome()
    assert jobs[0].outcome()["seq"] == START_ROWS + FLIP_ROWS
    assert jobs[3].outcome()["seq"] == START_ROWS + FLIP_ROWS
    # the failed writes left nothing: no rows, no log rows, no seq used, nothing delivered
    for key in ("p1", "p2"):
        assert last_seq(tenv, key) == START_ROWS
        assert assert_log_replays(key, tenv) == START_ROWS
        assert seqs(delivered, tenv, key) == []
    for key in ("p0", "p3"):
        assert assert_log_replays(key, tenv) == START_ROWS + FLIP_ROWS
        assert seqs(delivered, tenv, key) == [5, 6]
    # the next write of p1 gets the next seq: no gap where the failed one was
    assert engine.do_transition(tenv, "p1", "t", "flip")["seq"] == START_ROWS + FLIP_ROWS
    assert assert_log_replays("p1", tenv) == START_ROWS + FLIP_ROWS


def test_a_statement_the_database_refuses_fails_its_job_alone_with_djangos_error(tenv, delivered):
    """The engine's statements run on the driver's cursor; a refusal still arrives as
    Django's IntegrityError (what callers map to their answers) and undoes that job only."""
    from django.db import IntegrityError
    from django.utils import timezone

    from stepstream.engine import store
    from stepstream.engine.changes import Change

    def log_row_at_a_used_seq():
        person = store.lock_person(tenv.id, "p1")
        used = (1, "flow", uuid.uuid4(), "t", "active", "inactive", "t", uuid.uuid4())
        store.append_log(person, [Change(*used, timezone.now(), {"kind": "test"})])

    jobs = [flip(tenv, "p0"), groupcommit.Job(log_row_at_a_used_seq), flip(tenv, "p2")]
    groupcommit.run_batch(jobs)

    with pytest.raises(IntegrityError):
        jobs[1].outcome()
    assert last_seq(tenv, "p1") == START_ROWS
    assert assert_log_replays("p1", tenv) == START_ROWS
    for key in ("p0", "p2"):
        assert assert_log_replays(key, tenv) == START_ROWS + FLIP_ROWS
        assert seqs(delivered, tenv, key) == [5, 6]


class Crash(BaseException):
    """Stands for the batch dying after some of its jobs ran (not a job's own error)."""


def test_a_batch_aborted_midway_leaves_nothing_and_every_caller_is_told(tenv, delivered):
    def crash():
        raise Crash

    jobs = [flip(tenv, "p0"), flip(tenv, "p1"), groupcommit.Job(crash), flip(tenv, "p2")]
    groupcommit.run_batch(jobs)

    for job in jobs:
        with pytest.raises(Unavailable, match="nothing of it was saved"):
            job.outcome()
    assert delivered == []
    for key in ("p0", "p1", "p2"):
        assert last_seq(tenv, key) == START_ROWS
        assert assert_log_replays(key, tenv) == START_ROWS
    assert engine.do_transition(tenv, "p0", "t", "flip")["seq"] == START_ROWS + 1 * FLIP_ROWS


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
    django.setup()
    from django.db import connection
    connection.settings_dict["NAME"] = sys.argv[1]
    from stepstream import engine
    from stepstream.engine import groupcommit
    from stepstream.models import Environment
    env = Environment.objects.get(pk=int(sys.argv[2]))
    flip = engine.do_transition.__wrapped__
    def die():
        print("jobs ran", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies before the batch commits
    groupcommit.run_batch([
        groupcommit.Job(flip, (env, "p0", "t", "flip")),
        groupcommit.Job(flip, (env, "p1", "t", "flip")),
        groupcommit.Job(die),
    ])
    """
)


def test_a_process_killed_mid_batch_commits_nothing(tenv):
    name = connection.settings_dict["NAME"]
    done = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(name), str(tenv.pk)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STEPSTREAM_LOG_LEVEL": "WARNING"},
    )
    assert done.returncode == -9, done.stderr
    assert "jobs ran" in done.stdout
    for key in ("p0", "p1"):
        assert last_seq(tenv, key) == START_ROWS
        assert assert_log_replays(key, tenv) == START_ROWS
    # the database is usable at once, and seq goes on without a gap
    assert engine.do_transition(tenv, "p0", "t", "flip")["seq"] == START_ROWS + FLIP_ROWS
    assert assert_log_replays("p0", tenv) == START_ROWS + FLIP_ROWS


def test_one_persons_jobs_in_a_batch_run_in_submit_order(tenv, delivered):
    jobs = [flip(tenv, "p0"), flip(tenv, "p0"), flip(tenv, "p1"), flip(tenv, "p0")]
    groupcommit.run_batch(jobs)

    assert [j.outcome()["seq"] for j in jobs] == [6, 8, 6, 10]
    # each answer shows the state its own flip left: a->b, b->a, a->b
    active = [
        next(s["identifier"] for s in j.outcome()["steps"] if s["state"] == "active") for j in jobs
    ]
    assert active == ["b", "a", "b", "b"]
    assert seqs(delivered, tenv, "p0") == [5, 6, 7, 8, 9, 10]
    assert assert_log_replays("p0", tenv) == 10


def test_each_persons_order_holds_across_batches_under_concurrent_callers(tenv, delivered):
    """Callers in threads go through the real queue: many batches, each person in order."""
    callers, calls = 8, 15
    for i in range(4, callers):
        engine.do_put_person(tenv, f"p{i}", {})
        engine.do_start_flow(tenv, f"p{i}", "t")
    answers: dict[str, list[int]] = {f"p{i}": [] for i in range(callers)}
    sizes: list[int] = []
    real = groupcommit.run_batch

    def counted(jobs):
        sizes.append(len(jobs))
        real(jobs)

    groupcommit.run_batch = counted
    lock = threading.Lock()
    try:

        def work(i):
            for _ in range(calls):
                seq = engine.do_transition(tenv, f"p{i}", "t", "flip")["seq"]
                with lock:
                    answers[f"p{i}"].append(seq)

        assert run_threads(work, callers) == []
    finally:
        groupcommit.run_batch = real
    expected = [START_ROWS + FLIP_ROWS * (n + 1) for n in range(calls)]
    for key, got in answers.items():
        assert got == expected, key
        assert assert_log_replays(key, tenv) == expected[-1]
        # delivered once each, in seq order (p4.. were started in this test: from seq 1)
        first = 1 if int(key[1:]) >= 4 else START_ROWS + 1
        assert seqs(delivered, tenv, key) == list(range(first, expected[-1] + 1))
    assert sum(sizes) == callers * calls
    assert max(sizes) > 1, "no batch held more than one job"


def test_a_full_queue_refuses_the_write_unwritten(tenv, settings):
    settings.STEPSTREAM = {**settings.STEPSTREAM, "GROUP_COMMIT_QUEUE": 1}
    groupcommit._group.queue.append(flip(tenv, "p3"))  # someone else's job, not yet taken
    try:
        with pytest.raises(Unavailable, match="too many writes queued"):
            engine.do_transition(tenv, "p0", "t", "flip")
    finally:
        groupcommit._group.queue.clear()
    assert last_seq(tenv, "p0") == START_ROWS


def test_a_job_that_waited_too_long_is_refused_unwritten(tenv, settings):
    settings.STEPSTREAM = {**settings.STEPSTREAM, "GROUP_COMMIT_WAIT": 0.5}
    stale, fresh = flip(tenv, "p0"), flip(tenv, "p1")
    stale.queued_at -= 1
    groupcommit.run_batch([stale, fresh])
    with pytest.raises(Unavailable, match="too busy"):
        stale.outcome()
    assert fresh.outcome()["seq"] == START_ROWS + FLIP_ROWS
    assert last_seq(tenv, "p0") == START_ROWS
    assert StateChange.objects.filter(person__person_key="p1").count() == 6


def test_the_same_transition_at_once_still_has_one_winner_and_409s(tenv):
    """Concurrent identical transitions, now through batches: one ok, every other a 409."""
    same_transition_race(tenv)
