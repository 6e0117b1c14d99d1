"""Durable timers across real server processes: each fires exactly once, SIGKILL or not.

`serve --workers 2` (on the embedded SQLite, or on PostgreSQL when the run
has DATABASE_URL) and two separate servers on PostgreSQL + Redis: both
processes' firing loops race for the same due timers. The timers are
written overdue by another process (`manage shell`, on the engine's clock
set two hours back), as if they fell due while no server ran; a server is
SIGKILLed once the first has fired and started again. Whatever the kill
interrupted, every person's log ends with the timer's two changes once.
"""

import json
import os
import uuid

import pytest

from stepstream.testing.servers import Server
from tests.waiting import wait_until

pytestmark = pytest.mark.slow  # servers started, killed and restarted

PEOPLE = 600
FLOW = {
    "identifier": "reminder",
    "steps": [{"identifier": "wait"}, {"identifier": "nudged"}, {"identifier": "end"}],
    "transitions": [
        {"identifier": "nudge", "from": "wait", "to": "nudged", "type": "automatic", "after": "1h"},
        {"identifier": "finish", "from": "nudged", "to": "end"},
    ],
}

_SETUP = """
from datetime import timedelta
from django.utils import timezone
from stepstream import engine
from stepstream.engine import clock
from django.db import transaction
from stepstream.trust.tenants import environment_for_key
env = environment_for_key({secret!r}, "secret")
with clock.at(timezone.now() - timedelta(hours=2)), transaction.atomic():  # due an hour ago
    for i in range({people}):
        engine.do_put_person(env, f"p{{i}}", {{}})
        engine.do_start_flow(env, f"p{{i}}", "reminder")
"""

_COUNT = """
import json
from collections import Counter
from stepstream.models import PendingTimer, StateChange
from stepstream.trust.tenants import environment_for_key
env = environment_for_key({secret!r}, "secret")
fired = Counter()
rows = StateChange.objects.filter(person__environment=env)
rows = rows.values_list("person__person_key", "cause")
for key, cause in rows:
    if cause.get("kind") == "timer":
        fired[key] += 1
pending = PendingTimer.objects.filter(person__environment=env).count()
print(json.dumps({{"pending": pending, "fired": fired}}))
"""


def counts(server: Server, secret: str) -> dict:
    return json.loads(server.shell(_COUNT.format(secret=secret)).strip().splitlines()[-1])


def first_fired(rest) -> bool:
    """p0 was written first (its timer is the earliest due): its nudge ran."""
    steps = rest.get("/people/p0/flows").json()[0]["steps"]
    return {s["identifier"]: s["state"] for s in steps}["nudged"] == "active"


def fire_kill_restart(victim: Server, survivors: list[Server], keys: dict) -> None:
    """Timers overdue for PEOPLE people; `victim` SIGKILLed once one fired, then started again;
    every timer fired exactly once."""
    secret = keys["secret_key"]
    with victim.rest(secret) as rest:
        assert rest.post("/flows", json=FLOW).status_code == 201
    for server in [victim, *survivors]:
        server.stop()  # the timers are written while no server runs
    victim.shell(_SETUP.format(secret=secret, people=PEOPLE))
    for server in [victim, *survivors]:
        server.start()
    with victim.rest(secret) as rest:
        wait_until(lambda: first_fired(rest), timeout=30, what="the first timer fired")
    victim.kill()  # SIGKILL: whatever it was firing is rolled back, its locks go
    victim.start()
    found: dict = {}

    def all_fired() -> bool:
        found.update(counts(victim, secret))
        return found["pending"] == 0 and len(found["fired"]) == PEOPLE

    wait_until(all_fired, timeout=120, interval=0.2, what="every overdue timer fired")
    # wait completed and nudged active, with cause `timer`: once each, never twice
    assert set(found["fired"].values()) == {2}, found["fired"]
    assert sorted(found["fired"]) == sorted(f"p{i}" for i in range(PEOPLE))


def test_timers_fire_once_with_two_workers_after_a_sigkill_and_a_restart(tmp_path):
    server = Server(tmp_path / "w", args=("--workers", "2"))
    try:
        server.start()
        keys = server.init_project(f"timers-{uuid.uuid4().hex[:8]}")["environments"][0]
        fire_kill_restart(server, [], keys)
    finally:
        server.kill()


@pytest.mark.skipif(
    not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
    reason="needs PostgreSQL and Redis: set DATABASE_URL and REDIS_URL",
)
def test_timers_fire_once_on_two_servers_after_one_is_sigkilled_and_restarted(tmp_path):
    a, b = Server(tmp_path / "a"), Server(tmp_path / "b")
    try:
        a.start()
        b.start()
        keys = a.init_project(f"timers-{uuid.uuid4().hex[:8]}")["environments"][0]
        fire_kill_restart(a, [b], keys)
    finally:
        a.kill()
        b.kill()


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL"), reason="PostgreSQL only: set DATABASE_URL to run"
)
def test_a_timer_written_by_a_process_without_a_loop_wakes_a_sleeping_server(tmp_path):
    """The server's loop sleeps up to 30 s; PostgreSQL's notification of the new timer (written
    by `manage shell`, which runs no loop) wakes it, so the 1 s timer fires long before."""
    server = Server(tmp_path / "s")
    try:
        server.start()
        keys = server.init_project(f"timers-{uuid.uuid4().hex[:8]}")["environments"][0]
        flow = {**FLOW, "transitions": [{**FLOW["transitions"][0], "after": "1s"}]}
        flow["transitions"].append(FLOW["transitions"][1])
        with server.rest(keys["secret_key"]) as rest:
            assert rest.post("/flows", json=flow).status_code == 201
            server.shell(
                "from stepstream import engine\n"
                "from stepstream.trust.tenants import environment_for_key\n"
                f"env = environment_for_key({keys['secret_key']!r}, 'secret')\n"
                "engine.do_put_person(env, 'p0', {})\n"
                "engine.do_start_flow(env, 'p0', 'reminder')\n"
            )
            wait_until(lambda: first_fired(rest), timeout=15, what="the 1 s timer fired")
    finally:
        server.stop()
