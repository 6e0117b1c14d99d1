"""Outbound benchmarks (issue 12): the feed's write cost, feed reads, analytics, webhooks.

    python -m bench.outbound writecost [--seconds 4 --threads 4 --rounds 3]
    python -m bench.outbound feed [--events 100000]
    python -m bench.outbound analytics [--instances 100000]
    python -m bench.outbound webhooks [--backlog 20000 --rate 500 --seconds 10]

Each runs against DATABASE_URL (PostgreSQL) when set, else a fresh SQLite file
in a temporary data directory, and prints one JSON object. Current figures:
docs/performance.md ("Outbound"); method and past runs: docs/performance-history.md
("Outbound").
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

LOOP_FLOW = {
    "identifier": "loop",
    "steps": [{"identifier": "begin"}, {"identifier": "a"}, {"identifier": "b"}],
    "transitions": [
        {"identifier": "go", "from": "begin", "to": "a", "type": "automatic"},
        {"identifier": "flip", "from": "a", "to": "b"},
        {"identifier": "flip", "from": "b", "to": "a"},
    ],
}
FUNNEL = {
    "identifier": "funnel",
    "steps": [{"identifier": f"s{i}"} for i in range(5)],
    "transitions": [{"identifier": "next", "from": f"s{i}", "to": f"s{i + 1}"} for i in range(4)],
}


def _django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
    from stepstream.testing.servers import SHARED_SECRET

    # the servers started here (tests/servers.py) use this secret: keys must match
    os.environ["STEPSTREAM_SECRET_KEY"] = SHARED_SECRET
    if not os.environ.get("DATABASE_URL") and "STEPSTREAM_DATA_DIR" not in os.environ:
        os.environ["STEPSTREAM_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-outbound-")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)


def _tenant(*flows_to_publish):
    from stepstream.engine import flows
    from stepstream.trust.tenants import create_project, environment_for_key

    keys = create_project("bench outbound")["environments"][0]
    env = environment_for_key(keys["secret_key"], "secret")
    for flow in flows_to_publish:
        flows.publish(env, flow)
    return env, keys


def _q(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- write cost ----------------------------------------------------------------


def _append_log_before_the_feed(person, rows) -> None:
    """store.append_log as it was before the change feed (no key), for the comparison."""
    from django.db import connection

    from stepstream.engine import store

    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as c:
        store._insert(
            c,
            store.L,
            "person_id, seq, entity, object_id, identifier, state, previous_state, "
            "flow_identifier, flow_instance_id, occurred_at",
            [
                [person.pk, seq, e, store.db_uuid(o), i, st, p, f, store.db_uuid(fid), adapt(at)]
                for seq, e, o, i, st, p, f, fid, at in rows
            ],
        )
        c.execute(f"UPDATE {store.P} SET last_seq = %s WHERE id = %s", [person.last_seq, person.pk])


_CURRENT_APPEND_LOG = None


def _variant(name: str) -> None:
    """'none': the log as before this issue (no key, no index); 'feed': as it is now."""
    global _CURRENT_APPEND_LOG
    from django.db import connection

    from stepstream.engine import store

    if _CURRENT_APPEND_LOG is None:
        _CURRENT_APPEND_LOG = store.append_log
    t = "stepstream_statechange"
    with connection.cursor() as c:
        if name == "none":
            store.append_log = _append_log_before_the_feed
            if connection.vendor == "postgresql":
                c.execute(f"ALTER TABLE {t} ALTER COLUMN xid SET DEFAULT 0")
                c.execute("DROP INDEX IF EXISTS statechange_feed")
        else:
            store.append_log = _CURRENT_APPEND_LOG
            if connection.vendor == "postgresql":
                c.execute(
                    f"ALTER TABLE {t} ALTER COLUMN xid "
                    "SET DEFAULT (pg_current_xact_id()::text::bigint)"
                )
                c.execute(f"CREATE INDEX IF NOT EXISTS statechange_feed ON {t} (xid, id)")


def writecost(args) -> dict:
    from django.db import connection

    from stepstream import engine

    env, _ = _tenant(LOOP_FLOW)
    keys = [f"w{i}" for i in range(args.threads * 4)]
    for key in keys:
        engine.do_put_person(env, key, {})
        engine.do_start_flow(env, key, "loop")

    def run(seconds: float) -> float:
        done = [0] * args.threads
        stop = time.monotonic() + seconds

        def work(i):
            from django.db import connection as conn

            mine = keys[i :: args.threads]
            n = 0
            while time.monotonic() < stop:
                engine.do_transition(env, mine[n % len(mine)], "loop", "flip")
                n += 1
            done[i] = n
            conn.close()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(done) / seconds

    variants = ["none", "feed"]
    results = {v: [] for v in variants}
    run(1.0)  # warm up
    for _ in range(args.rounds):
        for v in variants:
            _variant(v)
            results[v].append(run(args.seconds))
    _variant("feed")
    base = statistics.median(results["none"])
    return {
        "vendor": connection.vendor,
        "threads": args.threads,
        "transitions_per_s": {v: round(statistics.median(r), 1) for v, r in results.items()},
        "ratio_feed": round(statistics.median(results["feed"]) / base, 3),
        "runs": {v: [round(x, 1) for x in r] for v, r in results.items()},
    }


# -- synthetic history, written straight into the tables ------------------------


def _fill(env, flow_identifier: str, count: int, events_per_person: int | None = None) -> int:
    """`count` people, each with one instance of the flow at a spread of stages, and its log.

    Rows are written with the engine's own insert helper (store._insert) in the
    shape the engine writes them; much faster than running the engine 100,000 times.
    """
    from django.db import connection, transaction

    from stepstream.engine import store
    from stepstream.models import Flow, Person

    flow = Flow.objects.filter(environment=env, identifier=flow_identifier).latest("version")
    steps = list(flow.steps.order_by("position").values_list("identifier", flat=True))
    adapt = connection.ops.adapt_datetimefield_value
    no_cause = store._cause_field.get_db_prep_value({}, connection)
    t0 = datetime.now(UTC) - timedelta(days=1)
    written = 0
    chunk = 2000
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        with transaction.atomic():
            Person.objects.bulk_create(
                [Person(environment=env, person_key=f"h{start + i}", data={}) for i in range(n)]
            )
            pids = dict(
                Person.objects.filter(
                    environment=env, person_key__in=[f"h{start + i}" for i in range(n)]
                ).values_list("person_key", "id")
            )
            inst, step_rows, log_rows = [], [], []
            for i in range(n):
                k = start + i
                pid = pids[f"h{k}"]
                iid = uuid.uuid4()
                stage = events_per_person or (k % (len(steps) + 1))  # how far they got
                stage = min(stage, len(steps))
                done = stage == len(steps)
                state = "completed" if done else ("exited" if k % 17 == 0 else "active")
                inst.append([store.db_uuid(iid), pid, flow.pk, flow_identifier, state, adapt(t0)])
                seq = 0
                at = t0 + timedelta(seconds=k % 600)
                log_rows.append(
                    [
                        pid,
                        (seq := seq + 1),
                        "flow",
                        store.db_uuid(iid),
                        flow_identifier,
                        "active",
                        "inactive",
                        flow_identifier,
                        store.db_uuid(iid),
                        adapt(at),
                    ]
                )
                for pos, ident in enumerate(steps):
                    sid = uuid.uuid4()
                    if pos < stage:
                        s_state = "completed"
                    elif pos == stage and not done:
                        s_state = "active"
                    else:
                        s_state = "inactive"
                    activated, seconds = None, None
                    if s_state != "inactive":
                        at += timedelta(seconds=30 + (k * 7 + pos * 13) % 300)
                        activated = at
                        log_rows.append(
                            [
                                pid,
                                (seq := seq + 1),
                                "step",
                                store.db_uuid(sid),
                                ident,
                                "active",
                                "inactive",
                                flow_identifier,
                                store.db_uuid(iid),
                                adapt(at),
                            ]
                        )
                    if s_state == "completed":
                        at += timedelta(seconds=5 + (k * 11 + pos * 3) % 120)
                        seconds = (at - activated).total_seconds()
                        log_rows.append(
                            [
                                pid,
                                (seq := seq + 1),
                                "step",
                                store.db_uuid(sid),
                                ident,
                                "completed",
                                "active",
                                flow_identifier,
                                store.db_uuid(iid),
                                adapt(at),
                            ]
                        )
                    step_rows.append(
                        [
                            store.db_uuid(sid),
                            store.db_uuid(iid),
                            ident,
                            "",
                            pos,
                            s_state,
                            flow.pk,
                            adapt(activated),
                            seconds,
                        ]
                    )
                if done:
                    log_rows.append(
                        [
                            pid,
                            (seq := seq + 1),
                            "flow",
                            store.db_uuid(iid),
                            flow_identifier,
                            "completed",
                            "active",
                            flow_identifier,
                            store.db_uuid(iid),
                            adapt(at),
                        ]
                    )
                written += seq
            with connection.cursor() as c:
                store._insert(
                    c, store.I, "id, person_id, flow_id, flow_identifier, state, created_at", inst
                )
                store._insert(
                    c,
                    store.S,
                    "id, instance_id, identifier, name, position, state, flow_id, activated_at, "
                    "seconds_to_complete",
                    step_rows,
                )
                store._insert(
                    c,
                    store.L,
                    "person_id, seq, entity, object_id, identifier, state, previous_state, "
                    "flow_identifier, flow_instance_id, occurred_at, cause",
                    [row + [no_cause] for row in log_rows],
                )
                c.execute(
                    f"UPDATE {store.P} SET last_seq = (SELECT MAX(seq) FROM {store.L} l "
                    f"WHERE l.person_id = {store.P}.id) WHERE environment_id = %s "
                    "AND last_seq = 0",
                    [env.pk],
                )
    with connection.cursor() as c:
        c.execute("ANALYZE")
    return written


# -- feed reads ------------------------------------------------------------------


def _server(**env):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from stepstream.testing.servers import Server

    data = os.environ.get("STEPSTREAM_DATA_DIR") or tempfile.mkdtemp(prefix="bench-outbound-")
    return Server(data, **env).start()


def feed(args) -> dict:
    import httpx
    import orjson
    from django.db import connection

    from stepstream.engine import feed as feed_module

    env, keys = _tenant(FUNNEL)
    total = _fill(env, "funnel", args.events // 10, events_per_person=5)
    result = {"vendor": connection.vendor, "events": total}
    for limit in (1000, 10000):
        started, read, after = time.perf_counter(), 0, None
        while True:
            page = feed_module.page(env.pk, after, limit)
            orjson.dumps(page)
            read += len(page["events"])
            after = page["next"]
            if not page["events"]:
                break
        result[f"in_process_events_per_s_limit_{limit}"] = round(
            read / (time.perf_counter() - started)
        )
    server = _server()
    try:
        with httpx.Client(
            base_url=server.url + "/api/v1",
            headers={"Authorization": f"Bearer {keys['secret_key']}"},
            timeout=60,
        ) as rest:
            for limit in (1000, 10000):
                started, read, after, pages = time.perf_counter(), 0, None, 0
                while True:
                    params = {"limit": limit, **({"after": after} if after else {})}
                    page = rest.get("/events", params=params).json()
                    read += len(page["events"])
                    pages += 1
                    after = page["next"]
                    if not page["events"]:
                        break
                elapsed = time.perf_counter() - started
                result[f"rest_events_per_s_limit_{limit}"] = round(read / elapsed)
                result[f"rest_ms_per_page_limit_{limit}"] = round(elapsed / pages * 1000, 1)
    finally:
        server.stop()
    return result


# -- analytics ---------------------------------------------------------------------


def analytics(args) -> dict:
    from django.db import connection

    from stepstream.engine import analytics as analytics_module
    from stepstream.engine import store
    from stepstream.models import StepCount

    env, _ = _tenant(FUNNEL)
    started = time.perf_counter()
    events = _fill(env, "funnel", args.instances)
    fill_s = time.perf_counter() - started

    def timed() -> tuple[list[float], dict]:
        timings = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            report = analytics_module.report(env, "funnel")
            timings.append(time.perf_counter() - t0)
        return timings, report

    timings, report = timed()
    result = {
        "vendor": connection.vendor,
        "instances": report["instances"]["total"],
        "log_rows": events,
        "fill_s": round(fill_s, 1),
        "ms_median": round(statistics.median(timings) * 1000, 1),
        "ms_max": round(max(timings) * 1000, 1),
    }
    if connection.vendor == "postgresql":
        # Right after the bulk load no page is marked all-visible, so the index-only
        # scans read the table too; autovacuum marks them soon after such a load
        # (autovacuum_vacuum_insert_threshold). Both figures are reported.
        with connection.cursor() as c:
            c.execute(f"VACUUM ANALYZE {store.S}, {store.I}, {StepCount._meta.db_table}")
        timings, report = timed()
        result["ms_median_after_vacuum"] = round(statistics.median(timings) * 1000, 1)
        result["ms_max_after_vacuum"] = round(max(timings) * 1000, 1)
    result["steps"] = report["steps"]
    return result


# -- webhooks ------------------------------------------------------------------------


class _Receiver(asyncio.Protocol):
    """A minimal HTTP/1.1 keep-alive receiver: 200 to every POST, records (person, seq, latency)."""

    seen: dict = {}
    latencies: list = []
    received = 0

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            now = time.time()
            data = json.loads(body)["data"]
            key = (data["person_key"], data["seq"])
            cls = type(self)
            cls.received += 1
            if key not in cls.seen:
                cls.seen[key] = now
                occurred = datetime.strptime(data["occurred_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
                cls.latencies.append(now - occurred.replace(tzinfo=UTC).timestamp())
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


def receiver_main(args) -> None:
    """Runs in its own process; prints a summary once `expect` distinct events arrived."""

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Receiver, "127.0.0.1", args.port)
        print("ready", flush=True)
        first = None
        deadline = time.monotonic() + args.timeout
        while len(_Receiver.seen) < args.expect and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if first is None and _Receiver.seen:
                first = min(_Receiver.seen.values())
        last = max(_Receiver.seen.values(), default=time.time())
        server.close()
        lat = _Receiver.latencies
        print(
            json.dumps(
                {
                    "distinct": len(_Receiver.seen),
                    "requests": _Receiver.received,
                    "first_to_last_s": round(last - (first or last), 3),
                    "latency_ms_p50": round(_q(lat, 0.5) * 1000, 1) if lat else None,
                    "latency_ms_p99": round(_q(lat, 0.99) * 1000, 1) if lat else None,
                    "latency_ms_max": round(max(lat) * 1000, 1) if lat else None,
                }
            ),
            flush=True,
        )

    asyncio.run(main())


def _start_receiver(expect: int, timeout: float):
    from stepstream.testing.servers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.outbound",
            "receiver",
            "--port",
            str(port),
            "--expect",
            str(expect),
            "--timeout",
            str(timeout),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc, f"http://127.0.0.1:{port}/hook"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (a figure the machine's load does not skew)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def webhooks(args) -> dict:
    import httpx
    from django.db import connection

    from stepstream import engine

    result = {"vendor": connection.vendor, "concurrency": args.concurrency}
    server = _server(
        STEPSTREAM_WEBHOOK_ALLOW_PRIVATE="1", STEPSTREAM_WEBHOOK_CONCURRENCY=args.concurrency
    )
    try:
        # 1. throughput: a backlog of events replayed to a new webhook ("after": "")
        env, keys = _tenant(FUNNEL)
        backlog = _fill(env, "funnel", args.backlog // 10, events_per_person=4)  # 10 each
        proc, url = _start_receiver(backlog, timeout=300)
        cpu_before = _cpu_seconds(server.process.pid)
        spy = None
        if args.profile:
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "--format",
                    "raw",
                    "--output",
                    args.profile,
                    "--nonblocking",
                    "--duration",
                    "20",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        with httpx.Client(
            base_url=server.url + "/api/v1",
            headers={"Authorization": f"Bearer {keys['secret_key']}"},
        ) as rest:
            rest.post("/webhooks", json={"url": url, "after": ""}).raise_for_status()
        summary = json.loads(proc.stdout.readline())
        proc.wait()
        summary.pop("latency_ms_p50"), summary.pop("latency_ms_p99"), summary.pop("latency_ms_max")
        summary["deliveries_per_s"] = round(summary["distinct"] / summary["first_to_last_s"])
        summary["lost"] = backlog - summary["distinct"]
        cpu = _cpu_seconds(server.process.pid) - cpu_before
        summary["server_cpu_ms_per_delivery"] = round(cpu * 1000 / summary["distinct"], 3)
        summary["deliveries_per_server_cpu_s"] = round(summary["distinct"] / cpu)
        result["backlog"] = summary
        if spy is not None:
            spy.wait()

        # 2. latency: changes made live at a steady rate, commit to receipt
        env, keys = _tenant(LOOP_FLOW)
        persons = [f"l{i}" for i in range(args.people)]
        for key in persons:
            engine.do_put_person(env, key, {})
            engine.do_start_flow(env, key, "loop")
        flips = int(args.rate * args.seconds)
        proc, url = _start_receiver(flips * 2, timeout=args.seconds + 120)
        with httpx.Client(
            base_url=server.url + "/api/v1",
            headers={"Authorization": f"Bearer {keys['secret_key']}"},
        ) as rest:
            rest.post("/webhooks", json={"url": url}).raise_for_status()
        time.sleep(1.5)  # the deliverer claims the new webhook within a second
        writers = 4
        per = flips // writers

        def write(i):
            from django.db import connection as conn

            interval = writers / args.rate
            next_at = time.monotonic()
            for n in range(per):
                key = persons[(i + writers * n) % len(persons)]
                engine.do_transition(env, key, "loop", "flip")
                next_at += interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            conn.close()

        started = time.monotonic()
        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        made = per * writers * 2
        write_s = time.monotonic() - started
        summary = json.loads(proc.stdout.readline())
        proc.wait()
        summary["events_made"] = made
        summary["events_per_s_made"] = round(made / write_s)
        summary["lost"] = made - summary["distinct"]
        result["live"] = summary
    finally:
        server.stop()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="job", required=True)
    w = sub.add_parser("writecost")
    w.add_argument("--seconds", type=float, default=4.0)
    w.add_argument("--threads", type=int, default=4)
    w.add_argument("--rounds", type=int, default=3)
    f = sub.add_parser("feed")
    f.add_argument("--events", type=int, default=100_000)
    a = sub.add_parser("analytics")
    a.add_argument("--instances", type=int, default=100_000)
    a.add_argument("--repeat", type=int, default=5)
    h = sub.add_parser("webhooks")
    h.add_argument("--backlog", type=int, default=20_000)
    h.add_argument("--rate", type=float, default=500.0, help="flips/s (2 events each)")
    h.add_argument("--seconds", type=float, default=10.0)
    h.add_argument("--concurrency", type=int, default=16)
    h.add_argument("--people", type=int, default=1000, help="people changing in the live part")
    h.add_argument("--profile", help="py-spy raw profile of the server during the backlog")
    r = sub.add_parser("receiver")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--expect", type=int, required=True)
    r.add_argument("--timeout", type=float, default=300)
    args = p.parse_args()
    if args.job == "receiver":
        receiver_main(args)
        return
    _django()
    job = {"writecost": writecost, "feed": feed, "analytics": analytics, "webhooks": webhooks}
    print(json.dumps(job[args.job](args), indent=2), flush=True)


if __name__ == "__main__":
    main()
