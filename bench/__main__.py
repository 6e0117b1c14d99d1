"""Stepstream's benchmark suite (issue 5); docs/performance.md explains the method.

    python -m bench all                  # every scenario (several minutes)
    python -m bench --quick              # a reduced run of every scenario, under a minute
    python -m bench fanout --n 1000      # one scenario, one size
    python -m bench fanout --n 1000 --target stepstream --profile
                                         # py-spy flame graph of the server

Writes results.json, results.md and latency.png into bench/results/ (or --out).
"""

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench import report, scenarios
from bench.targets import ROOT, machine_busy_seconds
from bench.wire import raise_open_file_limit

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/helper_bench"

QUICK = {
    "fanout_ns": (1, 100),
    "fanout_latency_changes": 3,
    "many_people": 100,
    "many_level_s": 0.8,
    "engine_databases": ("sqlite",),
    "engine_seconds": 0.5,
    "starts": 20,
    "capacity_counts": (200,),
    "capacity_hold_s": 0.5,
    "fanout_bursts": 1,
    "storm_clients": 60,
    "storm_moving": 20,
    "storm_concurrency": 20,
    "storm_base_s": 0.05,
    "storm_cap_s": 0.5,
    "storm_down_s": 0.3,
    "storm_deadline_s": 30.0,
    "rest_databases": ("sqlite",),
    "rest_people": 32,
    "rest_seconds": 1.0,
    "rest_warmup_s": 0.0,
    "rest_runs": 1,
    "appearance_rounds": 10,
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "scenarios",
        nargs="*",
        default=["all"],
        metavar="SCENARIO",
        help=f"all (the default) or any of: {', '.join(scenarios.SCENARIOS)}",
    )
    p.add_argument("--quick", action="store_true", help="reduced sizes: a smoke run under a minute")
    p.add_argument(
        "--target",
        choices=["both", "stepstream", "reference", "durable"],
        default="both",
        help="both (the default): Stepstream and the bare reference, and in `many` the "
        "durable reference too; durable: that one alone (it runs `many` only)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument(
        "--db",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="database of the delivery scenarios (fanout, many, capacity); default sqlite",
    )
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_POSTGRES),
        help="a PostgreSQL database the bench owns: it is emptied when its name contains "
        "'bench' (env BENCH_DATABASE_URL; default %(default)s)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for the Stepstream server (repeatable)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run Stepstream as `serve --workers N` (CPU and memory are then summed over its "
        "processes); default %(default)s",
    )
    p.add_argument(
        "--profile",
        nargs="?",
        const="stepstream",
        choices=["stepstream", "reference", "durable", "both"],
        help="record each scenario's server with py-spy (default: stepstream; both: every one)",
    )
    p.add_argument(
        "--profile-format",
        choices=["flamegraph", "raw", "speedscope"],
        default="flamegraph",
        help="py-spy output: flamegraph (svg), raw (collapsed "
        "stacks, for python -m bench.topstacks), speedscope (json)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        help="before each server starts, wait up to this many seconds for other work on the "
        "machine to fall under 25%% of a core (default 10, 0 with --quick)",
    )
    g = p.add_argument_group("fan-out")
    g.add_argument("--n", type=_ints, help="subscriber counts, e.g. 1000 or 1,100,1000,5000")
    g.add_argument("--changes", type=int, help="changes in the steady (2/s) latency phase")
    g.add_argument("--bursts", type=int, help="throughput bursts per size (best counts; default 3)")
    g = p.add_argument_group("many people")
    g.add_argument("--people", type=int, help="people (one subscriber each); default 1000")
    g.add_argument("--rates", type=_floats, help="offered changes/s, e.g. 100,200,400")
    g.add_argument("--level-seconds", type=float, help="seconds per rate level")
    g = p.add_argument_group("engine")
    g.add_argument("--engine-db", help="sqlite,postgresql (default both; sqlite with --quick)")
    g.add_argument("--callers", type=_ints, help="concurrent callers, e.g. 1,16")
    g.add_argument("--mode", help="rest,ws")
    g.add_argument("--seconds", type=float, help="seconds per engine measurement")
    g.add_argument("--starts", type=int, help="flow starts to time")
    g = p.add_argument_group("rest (wrk)")
    g.add_argument("--rest-db", help="sqlite,postgresql (default both; sqlite with --quick)")
    g.add_argument(
        "--rest-calls",
        help="CALL-CONNECTIONS, e.g. person-16,transition-16 (calls: health, person, transition)",
    )
    g.add_argument("--rest-seconds", type=float, help="seconds per wrk run (default 5)")
    g.add_argument("--rest-runs", type=int, help="runs per call, the best reported (default 2)")
    g = p.add_argument_group("capacity")
    g.add_argument("--connections", type=_ints, help="e.g. 1000,10000")
    g = p.add_argument_group("reconnect storm")
    g.add_argument("--clients", type=int, help="subscribed clients (default 10000)")
    g.add_argument("--moving", type=int, help="of them, people whose flows change (1000)")
    g.add_argument(
        "--backoff",
        type=_floats,
        help="base,cap of the reconnect backoff in s (0.25,10: the SDK's)",
    )
    g = p.add_argument_group("content appearance (Chromium)")
    g.add_argument("--rounds", type=int, help="rounds, each timing three appearances (60)")
    return p


def config(args) -> scenarios.Config:
    cfg = scenarios.Config(quick=args.quick, results_dir=args.out)
    if args.quick:
        for name, value in QUICK.items():
            setattr(cfg, name, value)
    pair = ("stepstream", "reference")
    cfg.targets = pair if args.target == "both" else tuple(t for t in pair if t == args.target)
    cfg.durable = args.target in ("both", "durable")
    if args.profile:
        everyone = (*pair, "durable")
        cfg.profile = everyone if args.profile == "both" else (args.profile,)
    cfg.profile_format = args.profile_format
    cfg.postgres_url = args.postgres_url
    cfg.quiet_wait_s = args.quiet_wait if args.quiet_wait is not None else (0 if args.quick else 10)
    if args.db == "postgresql":
        cfg.database_url = args.postgres_url
    cfg.server_env = dict(item.split("=", 1) for item in args.server_env)
    cfg.workers = args.workers
    overrides = {
        "fanout_ns": args.n,
        "fanout_latency_changes": args.changes,
        "fanout_bursts": args.bursts,
        "many_people": args.people,
        "many_rates": args.rates,
        "many_level_s": args.level_seconds,
        "engine_callers": args.callers,
        "engine_seconds": args.seconds,
        "starts": args.starts,
        "capacity_counts": args.connections,
        "storm_clients": args.clients,
        "storm_moving": args.moving,
        "appearance_rounds": args.rounds,
    }
    for name, value in overrides.items():
        if value:
            setattr(cfg, name, value)
    if args.backoff:
        cfg.storm_base_s, cfg.storm_cap_s = args.backoff
    cfg.storm_moving = min(cfg.storm_moving, cfg.storm_clients)
    if args.engine_db:
        cfg.engine_databases = tuple(args.engine_db.split(","))
    if args.rest_db:
        cfg.rest_databases = tuple(args.rest_db.split(","))
    if args.rest_calls:
        calls = [item.rsplit("-", 1) for item in args.rest_calls.split(",")]
        cfg.rest_calls = tuple((call, int(n)) for call, n in calls)
    if args.rest_seconds:
        cfg.rest_seconds = args.rest_seconds
    if args.rest_runs:
        cfg.rest_runs = args.rest_runs
    if args.mode:
        cfg.engine_modes = tuple(args.mode.split(","))
    return cfg


class OwnUsage:
    """Tells apart the CPU this bench used (itself, its servers, its jobs) from everyone else's."""

    def __init__(self):
        self.machine = machine_busy_seconds()
        self.own = self._own()
        self.wall = time.monotonic()

    @staticmethod
    def _own() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # ended and waited for
        return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime

    def others(self) -> float:
        """Other work on the machine over the period, in % of one core (all servers have ended)."""
        busy = machine_busy_seconds() - self.machine - (self._own() - self.own)
        return round(max(0.0, 100 * busy / max(1e-9, time.monotonic() - self.wall)), 1)


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return done.stdout.strip() + ("+changes" if dirty else "")
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    unknown = set(args.scenarios) - {"all", *scenarios.SCENARIOS}
    if unknown:
        p.error(f"unknown scenario {', '.join(sorted(unknown))}")
    names = list(scenarios.SCENARIOS) if "all" in args.scenarios else args.scenarios
    cfg = config(args)
    raise_open_file_limit()
    started = time.time()
    results = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
            "mode": "quick" if args.quick else "full",
            "scenarios": names,
            "commit": _commit(),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
            f"{platform.python_version()}",
            "delivery_database": args.db,
            "workers": args.workers,
            "argv": sys.argv[1:] if argv is None else argv,
            "seconds": 0,
        },
        "scenarios": {},
    }
    failed = False
    run_usage = OwnUsage()
    for name in names:
        scenarios.log(f"scenario {name}")
        t0 = time.time()
        usage = OwnUsage()
        try:
            results["scenarios"][name] = scenarios.SCENARIOS[name](cfg)
        except Exception as e:  # noqa: BLE001 - the other scenarios still run and report
            traceback.print_exc()
            results["scenarios"][name] = {"error": f"{type(e).__name__}: {e}"}
            failed = True
        results["meta"].setdefault("scenario_seconds", {})[name] = round(time.time() - t0, 1)
        results["meta"].setdefault("others_cpu_percent", {})[name] = usage.others()
        results["meta"]["others_cpu_percent"]["run"] = run_usage.others()
        results["meta"]["seconds"] = round(time.time() - started, 1)
        report.write(results, args.out)  # after each scenario: a crash keeps what was measured
    print((args.out / "results.md").read_text())
    scenarios.log(f"done in {results['meta']['seconds']} s: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
