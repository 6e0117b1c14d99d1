"""Benchmark jobs that run inside Django, in a process of their own.

Run with the same environment as the server under test (STEPSTREAM_DATA_DIR,
STEPSTREAM_SECRET_KEY, DATABASE_URL): `python -m bench.inproc JOB ...`. Each
job prints one JSON object on stdout.

* `setup`: migrates, creates a project, publishes the benchmark flows and
  creates people (optionally with the `loop` flow started, which leaves
  step `a` active, ready to flip). Far faster than the same through REST.
* `starts`: times flow starts of the 21-step flow and counts the queries of
  a start and of a transition (Django's CaptureQueriesContext).
* `flip`: flips the `loop` flow of people PREFIX0..PREFIX(COUNT-1), as
  another process writing while the server is down (the reconnect storm).
"""

import argparse
import json
import os
import statistics
import sys
import time

LOOP_FLOW = {
    "identifier": "loop",
    "name": "Loop",
    "steps": [{"identifier": "begin"}, {"identifier": "a"}, {"identifier": "b"}],
    "transitions": [
        {"identifier": "go", "from": "begin", "to": "a", "type": "automatic"},
        {"identifier": "flip", "from": "a", "to": "b"},
        {"identifier": "flip", "from": "b", "to": "a"},
    ],
}

LONG_STEPS = 21
LONG_FLOW = {
    "identifier": "long",
    "name": "Twenty-one steps",
    "steps": [{"identifier": f"s{i}", "name": f"Step {i}"} for i in range(LONG_STEPS)],
    "transitions": [
        {"identifier": "next", "from": f"s{i}", "to": f"s{i + 1}"} for i in range(LONG_STEPS - 1)
    ],
}


def _django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)


def _environment(secret_key: str):
    from stepstream.trust.tenants import environment_for_key

    env = environment_for_key(secret_key, "secret")
    if env is None:
        raise SystemExit("unknown secret key")
    return env


def _create_people(env, prefix: str, count: int) -> None:
    from stepstream.models import Person

    Person.objects.bulk_create(
        [Person(environment=env, person_key=f"{prefix}{i}", data={}) for i in range(count)],
        batch_size=1000,
    )


def job_setup(args) -> dict:
    from stepstream import engine
    from stepstream.engine import flows
    from stepstream.trust.tenants import create_project

    keys = create_project("bench")["environments"][0]
    env = _environment(keys["secret_key"])
    flows.publish(env, LOOP_FLOW)
    flows.publish(env, LONG_FLOW)
    started = time.perf_counter()
    for prefix, count in args.people:
        _create_people(env, prefix, count)
        if args.start_loop:
            for i in range(count):
                engine.do_start_flow(env, f"{prefix}{i}", "loop")
    for prefix, count in args.idle_people:
        _create_people(env, prefix, count)
    return {
        "publishable_key": keys["publishable_key"],
        "secret_key": keys["secret_key"],
        "setup_s": round(time.perf_counter() - started, 3),
    }


def _quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def job_starts(args) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from stepstream import engine

    env = _environment(args.secret_key)
    prefix = f"start-{time.time_ns()}-"
    total = args.count + args.count_queries + 1
    _create_people(env, prefix, total)
    keys = [f"{prefix}{i}" for i in range(total)]
    engine.do_start_flow(env, keys[0], "long")  # warm: the compiled graph is cached after this
    timings = []
    for key in keys[1 : args.count + 1]:
        t0 = time.perf_counter()
        engine.do_start_flow(env, key, "long")
        timings.append(time.perf_counter() - t0)
    transition_timings = []
    for key in keys[1 : args.count + 1]:
        t0 = time.perf_counter()
        engine.do_transition(env, key, "long", "next")
        transition_timings.append(time.perf_counter() - t0)
    start_queries, transition_queries = [], []
    for key in keys[args.count + 1 :]:
        with CaptureQueriesContext(connection) as captured:
            engine.do_start_flow(env, key, "long")
        start_queries.append(len(captured.captured_queries))
        with CaptureQueriesContext(connection) as captured:
            engine.do_transition(env, key, "long", "next")
        transition_queries.append(len(captured.captured_queries))
    timings.sort()
    transition_timings.sort()
    return {
        "vendor": connection.vendor,
        "steps": LONG_STEPS,
        "starts": len(timings),
        "start_ms_median": round(statistics.median(timings) * 1000, 3),
        "start_ms_p99": round(_quantile(timings, 0.99) * 1000, 3),
        "starts_per_s": round(len(timings) / sum(timings), 1),
        "queries_per_start": statistics.median(start_queries),
        "transition_ms_median": round(statistics.median(transition_timings) * 1000, 3),
        "transition_ms_p99": round(_quantile(transition_timings, 0.99) * 1000, 3),
        "queries_per_transition": statistics.median(transition_queries),
    }


def job_flip(args) -> dict:
    from stepstream import engine

    env = _environment(args.secret_key)
    started = time.perf_counter()
    done = 0
    for i in range(args.count):
        engine.do_transition(env, f"{args.prefix}{i}", "loop", "flip", via="admin")
        done += 1
    return {"flips": done, "seconds": round(time.perf_counter() - started, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="job", required=True)
    setup = sub.add_parser("setup")
    setup.add_argument(
        "--people",
        nargs=2,
        action="append",
        default=[],
        metavar=("PREFIX", "COUNT"),
        help="create COUNT people named PREFIX0, PREFIX1, ...",
    )
    setup.add_argument("--start-loop", action="store_true")
    setup.add_argument(
        "--idle-people",
        nargs=2,
        action="append",
        default=[],
        metavar=("PREFIX", "COUNT"),
        help="also create COUNT people named PREFIX0, ... with no flow started",
    )
    flip = sub.add_parser("flip")
    flip.add_argument("--secret-key", required=True)
    flip.add_argument("--prefix", required=True)
    flip.add_argument("--count", type=int, required=True)
    starts = sub.add_parser("starts")
    starts.add_argument("--secret-key", required=True)
    starts.add_argument("--count", type=int, default=200)
    starts.add_argument("--count-queries", type=int, default=5)
    args = parser.parse_args()
    if args.job == "setup":
        args.people = [(prefix, int(count)) for prefix, count in args.people]
        args.idle_people = [(prefix, int(count)) for prefix, count in args.idle_people]
    _django()
    jobs = {"setup": job_setup, "starts": job_starts, "flip": job_flip}
    result = jobs[args.job](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
