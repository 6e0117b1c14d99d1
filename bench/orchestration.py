"""Orchestration benchmark (docs/rules.md, "Priority, durations, limits, timers"): timers
fired per second, and what an explanation costs.

    python -m bench.orchestration [--timers 2000] [--explains 200]

In-process on SQLite (a fresh data directory): N people each start a flow
with a one-hour `after` transition, time passes (their timers' due times and
activations are moved back an hour, as the tests' simulated clock does),
then `fire_due` (the firing loop's pass) runs until nothing is due; timers
fired per second of that. Then p50/p99 of `GET .../explain`'s work
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


def run(n_timers: int, n_explains: int) -> dict:
    os.environ.setdefault("STEPSTREAM_DATA_DIR", tempfile.mkdtemp(prefix="bench-orch-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)
    from django.db.models import F

    from stepstream import engine
    from stepstream.engine import explain, flows, limits
    from stepstream.engine.firing import fire_due
    from stepstream.models import PendingTimer, StepInstance
    from stepstream.trust.tenants import create_project, environment_for_key

    keys = create_project("bench-orchestration")["environments"][0]
    env = environment_for_key(keys["secret_key"], "secret")
    flows.publish(env, FLOW)
    limits.put(env, "calm", {"flows": "*", "max": 5, "window": "24h"})
    started = time.perf_counter()
    for i in range(n_timers):
        engine.do_put_person(env, f"p{i}", {"plan": "pro"})
        engine.do_track(env, f"p{i}", "go")  # starts the flow: its timer is written
    setup = time.perf_counter() - started
    hour = timedelta(hours=1, seconds=1)
    PendingTimer.objects.update(due_at=F("due_at") - hour)
    StepInstance.objects.update(activated_at=F("activated_at") - hour)
    started = time.perf_counter()
    fired = 0
    while True:
        count, _ = fire_due()
        if not count:
            break
        fired += count
    firing = time.perf_counter() - started
    assert not PendingTimer.objects.exists(), "every timer fired"
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
        "explain_ms_p50": round(statistics.median(samples), 2),
        "explain_ms_p99": round(samples[int(len(samples) * 0.99) - 1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=2000)
    parser.add_argument("--explains", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(run(args.timers, args.explains)))


if __name__ == "__main__":
    main()
