"""Rules benchmark (docs/performance-history.md, "Rules"): what conditions cost a write.

    python -m bench.rules [--calls 2000] [--seconds 10] [--callers 4]
    python -m bench.rules --orchestration [--calls 2000] [--rounds 2]

1. In-process on SQLite: one person in an environment with 50 flows that
   have `start_when` and 100 conditional automatic transitions; p50/p99 of
   `track` and `identify` (engine calls, no transport).
2. A real `stepstream serve` on SQLite: WebSocket `transition` calls per
   second flipping the `loop` flow, in an environment with those flows and
   conditions on `loop`'s transitions, against the same flows with every
   condition removed. Variants alternate, twice each, and the best run counts.

With --orchestration instead: step 1 with the flows as they are against the
same flows each with a `priority` (i % 5) under a limit on every flow ("*",
a max no write reaches, 24 h: each start_when start checks it, and the
person's start times are read), rounds alternating in one run; the mean of
track + identify per variant and their ratio (issue 27's target: limits and
priority cost a write at most 10 %). Then `explain` of one flow for that
person with the 50 flows' conditions (GET /people/{key}/explain's work),
p50/p99 (target 20 ms).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

FLOWS = 50


def rule_flows(conditional: bool) -> list[dict]:
    """50 flows, each with start_when and two conditional automatic transitions, plus loop."""
    out = []
    for i in range(FLOWS):
        flow = {
            "identifier": f"f{i:02d}",
            "steps": [{"identifier": s} for s in ("intro", "middle", "wait", "end")],
            "transitions": [
                {
                    "identifier": "a",
                    "from": "intro",
                    "to": "middle",
                    "type": "automatic",
                    "condition": f"has(events.step{i % 20}) && events.step{i % 20}.count >= 2",
                },
                {
                    "identifier": "b",
                    "from": "middle",
                    "to": "wait",
                    "type": "automatic",
                    "condition": f"has(person.score) && person.score > {i}",
                },
                {"identifier": "done", "from": "wait", "to": "end"},
            ],
        }
        if conditional:
            flow["start_when"] = f'has(events.open{i % 10}) || person.plan == "p{i}"'
        else:
            flow["transitions"] = [
                {k: v for k, v in t.items() if k != "condition"} | {"type": "manual"}
                for t in flow["transitions"]
            ]
        out.append(flow)
    loop = {
        "identifier": "loop",
        "steps": [{"identifier": "begin"}, {"identifier": "a"}, {"identifier": "b"}],
        "transitions": [
            {"identifier": "go", "from": "begin", "to": "a", "type": "automatic"},
            {"identifier": "flip", "from": "a", "to": "b"},
            {"identifier": "flip", "from": "b", "to": "a"},
        ],
    }
    if conditional:
        loop["transitions"][1]["condition"] = '!has(events.blocked) && person.plan != "banned"'
        loop["transitions"][2]["condition"] = '!has(flows.f00) || flows.f00 != "exited"'
    return out + [loop]


def _pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def inprocess(calls: int, with_rules: bool = True, orchestrated: bool = False) -> dict:
    """track/identify timings; without rules: the same calls in an environment with no flows
    (what the SQLite write itself costs, commit and checkpoints included); orchestrated:
    the flows with priorities and a limit on them all (see --orchestration)."""
    os.environ.setdefault("STEPSTREAM_DATA_DIR", tempfile.mkdtemp(prefix="bench-rules-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)
    from stepstream import engine
    from stepstream.engine import flows
    from stepstream.trust.tenants import create_project, environment_for_key

    keys = create_project("bench-rules")["environments"][0]
    env = environment_for_key(keys["secret_key"], "secret")
    for i, f in enumerate(rule_flows(True) if with_rules else ()):
        if orchestrated:
            f["priority"] = i % 5
        flows.publish(env, f)
    if orchestrated:
        from stepstream.engine import limits

        limits.put(env, "all", {"flows": "*", "max": 1000, "window": "24h"})
    rng = random.Random(1)
    engine.do_identify(env, "p", {"plan": "free", "score": 0})
    for i in range(10):  # half the flows start; the other half stay waiting
        if i % 2 == 0:
            engine.do_track(env, "p", f"open{i}")
    results = {}
    for name in ("track", "identify"):
        samples, cpu = [], []
        for n in range(calls):
            started, started_cpu = time.perf_counter(), time.thread_time()
            if name == "track":
                engine.do_track(env, "p", f"step{rng.randrange(25)}")
            else:
                engine.do_identify(env, "p", {"score": rng.randrange(60), "seen": n})
            samples.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)
        results[name] = {
            "calls": calls,
            "p50_ms": round(_pct(samples, 0.50), 3),
            "p99_ms": round(_pct(samples, 0.99), 3),
            "mean_ms": round(statistics.mean(samples) * 1000, 3),
            # CPU time of this thread: the cost without other processes' turns on the cores
            "cpu_p99_ms": round(_pct(cpu, 0.99), 3),
        }
    if orchestrated:
        from stepstream.engine import explain

        samples = []
        for _ in range(200):
            started = time.perf_counter()
            explain.explain(env, "p", "f07")
            samples.append(time.perf_counter() - started)
        results["explain_50_flows"] = {
            "p50_ms": round(_pct(samples, 0.50), 3),
            "p99_ms": round(_pct(samples, 0.99), 3),
        }
    elif with_rules:
        results["segment_scan"] = segment_scan(env)
    snapshot = engine.snapshot(env, "p")
    results["person"] = {
        "instances": len(snapshot["flows"]),
        "seq": snapshot["seq"],
    }
    return results


def segment_scan(env, people: int = 20000) -> dict:
    """People per second that GET /segments/{id}/people scans, with and without events."""
    from stepstream.engine import segments
    from stepstream.models import Person, TrackedEvent

    Person.objects.bulk_create(
        [Person(environment=env, person_key=f"s{i}", data={"n": i}) for i in range(people)],
        batch_size=2000,
    )
    from django.utils import timezone

    now = timezone.now()
    ids = Person.objects.filter(environment=env, person_key__startswith="s").values_list(
        "pk", flat=True
    )
    TrackedEvent.objects.bulk_create(
        [TrackedEvent(person_id=pk, name="x", count=1, first_at=now, last_at=now) for pk in ids],
        batch_size=2000,
    )
    out = {}
    for name, condition in (
        ("data", "has(person.n) && person.n % 3 == 0"),
        ("data_and_events", "has(person.n) && person.n % 3 == 0 && has(events.x)"),
    ):
        segments.put(env, name, {"condition": condition})
        started, found, after = time.perf_counter(), 0, None
        while True:
            page = segments.people_page(env, name, 1000, after)
            found += len(page["people"])
            after = page["next"]
            if after is None:
                break
        seconds = time.perf_counter() - started
        out[name] = {"members": found, "people_per_s": round((people + 1) / seconds)}
    return out


def _serve(data_dir: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "STEPSTREAM_DATA_DIR": data_dir, "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("DATABASE_URL", None)
    env["STEPSTREAM_WS_RATE"] = "100000"
    log = open(os.path.join(data_dir, "serve.log"), "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "stepstream", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=log,
    )


def _cli(data_dir: str, *args) -> str:
    env = {**os.environ, "STEPSTREAM_DATA_DIR": data_dir}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "stepstream", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    ).stdout


def websocket_rate(conditional: bool, seconds: float, callers: int) -> float:
    import httpx
    from websockets.sync.client import connect

    from stepstream.testing.servers import free_port

    data_dir = tempfile.mkdtemp(prefix="bench-rules-ws-")
    keys = json.loads(_cli(data_dir, "init-project", "bench"))["environments"][0]
    port = free_port()
    server = _serve(data_dir, port)
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {keys['secret_key']}"}
        for _ in range(100):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as rest:
            for f in rule_flows(conditional):
                assert rest.post("/flows", json=f).status_code == 201
            for c in range(callers):
                rest.put(f"/people/w{c}", json={"data": {"plan": "free", "score": 0}})
                rest.post(f"/people/w{c}/track", json={"event": "open0"})
                rest.post(f"/people/w{c}/flows", json={"flow": "loop"})
        counts = [0] * callers
        deadline = time.perf_counter() + seconds
        url = f"ws://127.0.0.1:{port}/ws?key={keys['publishable_key']}"

        def caller(c: int) -> None:
            with connect(url) as ws:
                n = 0
                while time.perf_counter() < deadline:
                    ws.send(
                        json.dumps(
                            {
                                "action": "transition",
                                "request_id": n,
                                "data": {
                                    "person_key": f"w{c}",
                                    "flow": "loop",
                                    "transition": "flip",
                                },
                            }
                        )
                    )
                    answer = json.loads(ws.recv())
                    assert answer["status"] == 200, answer
                    n += 1
                counts[c] = n

        threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / (time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(timeout=30)


def orchestration_cost(calls: int, rounds: int) -> dict:
    """Plain and orchestrated rounds alternating in one process and one database."""
    runs: dict[str, list[float]] = {"plain": [], "limits_and_priority": []}
    explains = []
    for _ in range(rounds):
        for orchestrated in (False, True):
            found = inprocess(calls, orchestrated=orchestrated)
            mean = (found["track"]["mean_ms"] + found["identify"]["mean_ms"]) / 2
            runs["limits_and_priority" if orchestrated else "plain"].append(round(mean, 3))
            if orchestrated:
                explains.append(found["explain_50_flows"])
    best = {k: min(v) for k, v in runs.items()}
    return {
        "write_mean_ms": runs,
        "best": best,
        "ratio": round(best["limits_and_priority"] / best["plain"], 3),
        "explain_50_flows": explains,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--callers", type=int, default=4)
    p.add_argument("--skip-ws", action="store_true")
    p.add_argument("--orchestration", action="store_true")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    if args.orchestration:
        print(json.dumps(orchestration_cost(args.calls, args.rounds), indent=2))
        return
    report = {
        "inprocess_sqlite": inprocess(args.calls),
        "inprocess_sqlite_no_rules": inprocess(args.calls, with_rules=False),
    }
    print(json.dumps(report), file=sys.stderr, flush=True)
    if not args.skip_ws:
        rates = {"with_conditions": [], "without_conditions": []}
        for _ in range(2):
            for conditional in (True, False):
                key = "with_conditions" if conditional else "without_conditions"
                rates[key].append(round(websocket_rate(conditional, args.seconds, args.callers), 1))
        best = {k: max(v) for k, v in rates.items()}
        report["websocket_transitions_per_s"] = {
            "runs": rates,
            "best": best,
            "ratio": round(best["with_conditions"] / best["without_conditions"], 3),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
