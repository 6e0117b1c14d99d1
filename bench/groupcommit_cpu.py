"""CPU time per transition, one transaction each or in group-commit batches (docs/performance.md).

    python -m bench.groupcommit_cpu                      # embedded SQLite in a temporary directory
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/NAME_bench python -m bench.groupcommit_cpu

One thread runs `do_transition` (the `loop` flow's `flip`, round-robin over
1,000 people) back to back: plainly, and through `groupcommit.run_batch` with
batches of 1, 8 and 32 jobs; three rounds each, interleaved. CPU time is this
process's (on PostgreSQL, the server's work is not in it), so a machine busy
with other work changes it less than it changes rates. The PostgreSQL
database must be empty or one this script may fill (its name should say bench).
"""

import os
import sys
import tempfile
import time

PEOPLE = 1000
ROUNDS = 3


def main() -> None:
    os.environ.setdefault("STEPSTREAM_DATA_DIR", tempfile.mkdtemp(prefix="gc-cpu-"))
    os.environ.setdefault("STEPSTREAM_LOG_LEVEL", "WARNING")
    from bench import inproc

    inproc._django()
    from stepstream import engine
    from stepstream.engine import flows, groupcommit
    from stepstream.trust.tenants import create_project

    keys = create_project("groupcommit-cpu")["environments"][0]
    env = inproc._environment(keys["secret_key"])
    flows.publish(env, inproc.LOOP_FLOW)
    prefix = f"gc{int(time.time())}-"
    inproc._create_people(env, prefix, PEOPLE)
    for i in range(PEOPLE):
        engine.do_start_flow(env, f"{prefix}{i}", "loop")
    flip = engine.do_transition.__wrapped__  # without the group-commit wrapper
    turn = iter(range(10**9))

    def args():
        return (env, f"{prefix}{next(turn) % PEOPLE}", "loop", "flip")

    def plain(n: int) -> float:
        started = time.process_time()
        for _ in range(n):
            flip(*args())
        return 1e6 * (time.process_time() - started) / n

    def batches(n: int, size: int) -> float:
        started = time.process_time()
        for _ in range(n // size):
            groupcommit.run_batch([groupcommit.Job(flip, args()) for _ in range(size)])
        return 1e6 * (time.process_time() - started) / (n // size * size)

    plain(300)  # warm up caches
    batches(320, 8)
    kinds = {
        "one transaction per change": lambda: plain(1000),
        "batch of 1 (run as a plain transaction)": lambda: batches(1000, 1),
        "batch of 8": lambda: batches(1000, 8),
        "batch of 32": lambda: batches(1024, 32),
    }
    found: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(ROUNDS):
        for name, run in kinds.items():
            found[name].append(run())
    print(f"database: {os.environ.get('DATABASE_URL') and 'postgresql' or 'sqlite'}")
    for name, values in found.items():
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name}: best {min(values):.0f} us of CPU per change ({shown})")


if __name__ == "__main__":
    sys.exit(main())
