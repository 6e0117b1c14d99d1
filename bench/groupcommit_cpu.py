"""CPU time per transition, one transaction each or in group-commit batches (docs/performance.md).

    python -m bench.groupcommit_cpu                      # embedded SQLite in a temporary directory
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/NAME_bench python -m bench.groupcommit_cpu
    python -m bench.groupcommit_cpu --statements      # also: each statement's time per change

One thread runs `do_transition` (the `loop` flow's `flip`, round-robin over
1,000 people) back to back: plainly, and through `groupcommit.run_batch` with
batches of 1, 8 and 32 jobs; three rounds each, interleaved. CPU time is this
process's (on PostgreSQL, the server's work is not in it), so a machine busy
with other work changes it less than it changes rates. The PostgreSQL
database must be empty or one this script may fill (its name should say bench).

`--statements` then times each of the engine's statements (on the driver's
cursor, `stepstream/engine/store.py`) over batches of 8 and 32: the time
spent inside the database driver per change, the commit left out. On SQLite
all of it is spent holding the one write lock.
"""

import collections
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
    if "--statements" in sys.argv[1:]:
        for size in (8, 32):
            print(f"statements, batches of {size}:")
            for text, (per_change, count) in statement_times(batches, size).items():
                print(f"  {per_change:6.1f} us a change, {count:.2f} a change: {text}")


def statement_times(batches, size: int, n: int = 4096) -> dict:
    """Wall time in the driver per change for each statement (its first 60 characters)."""
    from stepstream.engine import store

    spent, calls = collections.Counter(), collections.Counter()
    cls = store._Cursor
    plain, many = cls.execute, cls.executemany

    def timed(method, label):
        def run(self, sql, params=()):
            started = time.perf_counter()
            try:
                return method(self, sql, params)
            finally:
                key = label + " ".join(sql.split())[:60]
                spent[key] += time.perf_counter() - started
                calls[key] += 1

        return run

    cls.execute, cls.executemany = timed(plain, ""), timed(many, "(many) ")
    try:
        batches(n, size)
    finally:
        cls.execute, cls.executemany = plain, many
    done = n // size * size
    found = {k: (1e6 * v / done, calls[k] / done) for k, v in spent.most_common()}
    found["all of the above"] = (1e6 * sum(spent.values()) / done, sum(calls.values()) / done)
    return found


if __name__ == "__main__":
    sys.exit(main())
