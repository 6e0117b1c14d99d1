"""Orchestration benchmark (docs/rules.md, "Priority, durations, limits, timers"): timers
fired per second, and what an explanation costs.

    python -m bench.orchestration [--timers 2000] [--explains 200] [--processes 1]

In-process on SQLite (a fresh data directory), or on PostgreSQL when
DATABASE_URL is set (a database of its own: the bench counts every row): N
people each start a flow with a one-hour `after` transition, time passes
(their timers' due times and activations are moved back an hour, as the
tests' simulated clock does), then `fire_due` (the firing loop's pass) runs
until nothing is due, in `--processes` forked processes at once as the
loops of several server processes would; timers fired per second of that
(wall clock; and per CPU second of the firing processes), and a check that
each timer fired exactly once (two `timer` changes per person in the log).
Then p50/p99 of `GET .../explain`'s work
(`explain.explain`) for a person with a flow, a condition of three clauses
and a limit. Prints one JSON object.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta

FLOW = {
    "identifier": "reminder",
    "start_when": 'has(events.go) && person.plan == "pro" && size(person) > 0',
    "steps": [{"identifier": "wait"}, {"identifier": "nudged"}, {"identifier": "end"}],
    "transitions": [
        {"identifier": "nudge", "from": "wait", "to": "nudged", "type": "automatic", "after": "1h"},
        {"identifier": "finish", "from": "nudged", "to": "end"},
    ],
}


def fire_in(processes: int, fire_due) -> tuple[int, float, float]:
    """(timers fired, wall seconds, CPU seconds): the firing pass run until nothing is due,
    in this process or in `processes` new ones started together (each reports when its
    firing began and ended, so their start-up is not counted)."""
    if processes == 1:
        began = time.time()
        fired, cpu = _fire_all(fire_due)
        return fired, time.time() - began, cpu
    import subprocess

    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.orchestration", "--fire-only"],
            stdout=subprocess.PIPE,
            env=os.environ.copy(),
        )
        for _ in range(processes)
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=3600)
        assert child.returncode == 0, "a firing process failed"
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    wall = max(r["ended"] for r in results) - min(r["began"] for r in results)
    return sum(r["fired"] for r in results), wall, sum(r["cpu"] for r in results)


def fire_only() -> dict:
    """A child of `fire_in`: fires what is due in the database the parent set up."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
    import django

    django.setup()
    from stepstream.engine.firing import fire_due

    began = time.time()
    fired, cpu = _fire_all(fire_due)
    return {"fired": fired, "cpu": cpu, "began": began, "ended": time.time()}


def _fire_all(fire_due) -> tuple[int, float]:
    """As a server's loop does: until nothing is due (a pass that found every due person
    held by another process waits a moment, as the loop does)."""
    from django.utils import timezone

    cpu, fired = time.process_time(), 0
    while True:
        count, next_due = fire_due()
        fired += count
        if not count:
            if next_due is None or next_due > timezone.now():
                break
            time.sleep(0.05)  # firing.BUSY
    return fired, time.process_time() - cpu


def run(n_timers: int, n_explains: int, processes: int = 1) -> dict:
    os.environ.setdefault("STEPSTREAM_DATA_DIR", tempfile.mkdtemp(prefix="bench-orch-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)
    from django.db import connection
    from django.db.models import F

    from stepstream import engine
    from stepstream.engine import explain, flows, limits
    from stepstream.engine.firing import fire_due
    from stepstream.models import PendingTimer, StateChange, StepInstance
    from stepstream.trust.tenants import create_project, environment_for_key

    keys = create_project("bench-orchestration")["environments"][0]
    env = environment_for_key(keys["secret_key"], "secret")
    flows.publish(env, FLOW)
    limits.put(env, "calm", {"flows": "*", "max": 5, "window": "24h"})
    from django.db import transaction

    started = time.perf_counter()
    for first in range(0, n_timers, 500):  # a transaction per 500 people: setup is not measured
        with transaction.atomic():
            for i in range(first, min(first + 500, n_timers)):
                engine.do_put_person(env, f"p{i}", {"plan": "pro"})
                engine.do_track(env, f"p{i}", "go")  # starts the flow: its timer is written
    setup = time.perf_counter() - started
    hour = timedelta(hours=1, seconds=1)
    PendingTimer.objects.filter(person__environment=env).update(due_at=F("due_at") - hour)
    StepInstance.objects.filter(instance__person__environment=env).update(
        activated_at=F("activated_at") - hour
    )
    fired, firing, cpu = fire_in(processes, fire_due)
    assert not PendingTimer.objects.filter(person__environment=env).exists(), "all fired"
    timer_changes = StateChange.objects.filter(person__environment=env, cause__kind="timer").count()
    assert timer_changes == 2 * n_timers, f"exactly once: {timer_changes} timer changes"
    engine.do_put_person(env, "explained", {"plan": "free"})
    samples = []
    for _ in range(n_explains):
        t = time.perf_counter()
        explain.explain(env, "explained", "reminder")
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        "timers": n_timers,
        "setup_seconds": round(setup, 2),
        "fired": fired,
        "fire_seconds": round(firing, 3),
        "timers_fired_per_second": round(fired / firing) if firing else None,
        "processes": processes,
        "database": connection.vendor,
        "fire_cpu_seconds": round(cpu, 3),
        "timers_fired_per_cpu_second": round(fired / cpu) if cpu else None,
        "explain_ms_p50": round(statistics.median(samples), 2),
        "explain_ms_p99": round(samples[int(len(samples) * 0.99) - 1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=2000)
    parser.add_argument("--explains", type=int, default=200)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--fire-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fire_only:
        print(json.dumps(fire_only()))
        return
    print(json.dumps(run(args.timers, args.explains, args.processes)))


if __name__ == "__main__":
    main()
