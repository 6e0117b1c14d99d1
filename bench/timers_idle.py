"""What pending timers cost an idle server (docs/performance.md, "Idle cost of pending timers").

    python -m bench.timers_idle [--timers 100000] [--seconds 60] [--data-dir DIR]

Fills a data directory (SQLite, or DATABASE_URL's database) with N people
each holding a timer due in two days (skipped when --data-dir already holds
them), starts a real `stepstream serve` on it, lets it settle 5 s, then
reads the user + system CPU time of the server and its children from
/proc/PID/stat over --seconds. Run it with --timers 0 beside it for the
server's own idle cost. Prints one JSON object.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SECRET = "bench-timers-idle-secret-0123456789-0123456789"
SETUP = """
from django.db import transaction
from stepstream import engine
from stepstream.engine import flows
from stepstream.models import PendingTimer
from stepstream.trust.tenants import create_project, environment_for_key
keys = create_project("idle")["environments"][0]
env = environment_for_key(keys["secret_key"], "secret")
flows.publish(env, {{
    "identifier": "reminder", "start_when": "has(events.go)",
    "steps": [{{"identifier": "wait"}}, {{"identifier": "nudged"}}, {{"identifier": "end"}}],
    "transitions": [
        {{"identifier": "nudge", "from": "wait", "to": "nudged", "type": "automatic",
          "after": "2d"}},
        {{"identifier": "finish", "from": "nudged", "to": "end"}},
    ],
}})
for first in range(0, {n}, 1000):
    with transaction.atomic():
        for i in range(first, min(first + 1000, {n})):
            engine.do_track(env, f"p{{i}}", "go")
print(PendingTimer.objects.count())
"""


def cpu_seconds(pid: int) -> float:
    """User + system time of `pid` and its children (the workers of --workers N)."""
    pids = [pid]
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    pids += [int(p) for p in found.stdout.split()]
    total = 0.0
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    from stepstream.testing.servers import Server, run_command

    data = args.data_dir or tempfile.mkdtemp(prefix="bench-timers-idle-")
    if not os.path.exists(os.path.join(data, "stepstream.sqlite3")):
        os.makedirs(data, exist_ok=True)
        migrated = run_command(data, "manage", "migrate", "-v0", STEPSTREAM_SECRET_KEY=SECRET)
        assert migrated.returncode == 0, migrated.stderr
        started = time.perf_counter()
        done = run_command(
            data,
            "manage",
            "shell",
            "-c",
            SETUP.format(n=args.timers),
            timeout=24 * 3600,
            STEPSTREAM_SECRET_KEY=SECRET,
        )
        assert done.returncode == 0, done.stderr
        print(f"set up in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    server = Server(data, STEPSTREAM_SECRET_KEY=SECRET, STEPSTREAM_LOG_LEVEL="WARNING")
    server.start(timeout=120)
    try:
        time.sleep(5)  # start-up's work done
        assert server.process is not None
        before, began = cpu_seconds(server.process.pid), time.monotonic()
        time.sleep(args.seconds)
        used, took = cpu_seconds(server.process.pid) - before, time.monotonic() - began
    finally:
        server.stop()
    print(
        json.dumps(
            {
                "timers": args.timers,
                "cpu_seconds": round(used, 3),
                "over_seconds": round(took, 1),
                "cpu_percent": round(100 * used / took, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
