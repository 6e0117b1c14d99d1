"""The four scenarios of issue 5, each run against Stepstream and the reference in turn.

Every scenario starts a fresh server process per target, drives it with the
same harness (bench.wire) and returns plain numbers. Latencies are in
milliseconds, two ways, both measured the same way for both servers:

* commit-to-receipt: the receipt time minus the event's `occurred_at` (wall
  clock). Stepstream stamps it inside the transaction just before the rows
  are written, so it slightly over-states commit-to-receipt; the reference
  stamps it when the publish arrives.
* trigger-to-receipt (end to end): the receipt time minus the moment the
  harness sent the `transition` request that caused the event (monotonic
  clock); it includes the engine's work and any queueing before it.

A "change" is one `transition` call flipping the `loop` flow (step `a`
completes, step `b` becomes active, or back): one commit, two step events of
about 330 bytes to every subscriber. The reference makes the same two events.
"""

import asyncio
import contextlib
import gc
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench import wire
from bench.rest import rest
from bench.stats import parse_stamp, summarize, wall_offset
from bench.targets import (
    DurableReference,
    Profiler,
    Reference,
    Stepstream,
    cpu_seconds,
    database_reachable,
    machine_busy_seconds,
    own_cpu_seconds,
    reset_bench_database,
    rss_kib,
    wait_for_quiet,
)

EVENTS_PER_CHANGE = 2
FAN_PERSON = "fan0"  # prepare([("fan", 1)]) makes person fan0


@dataclass
class Config:
    quick: bool = False
    targets: tuple[str, ...] = ("stepstream", "reference")
    durable: bool = True  # many people: the durable reference runs beside them
    results_dir: Path = Path("bench/results")
    profile: tuple[str, ...] = ()
    profile_format: str = "flamegraph"
    database_url: str | None = None  # delivery scenarios: None is the embedded SQLite
    postgres_url: str | None = None  # engine scenario's PostgreSQL (None: skipped)
    engine_databases: tuple[str, ...] = ("sqlite", "postgresql")
    server_env: dict = field(default_factory=dict)
    workers: int = 1  # `serve --workers N` for Stepstream
    fanout_ns: tuple[int, ...] = (1, 100, 1000, 5000)
    fanout_latency_changes: int = 10
    fanout_rate: float = 2.0
    fanout_bursts: int = 3
    quiet_wait_s: float = 0.0
    many_people: int = 1000
    many_rates: tuple[float, ...] = ()
    many_level_s: float = 2.0
    many_publishers: int = 8
    engine_callers: tuple[int, ...] = (1, 16)
    engine_modes: tuple[str, ...] = ("rest", "ws")
    engine_seconds: float = 3.0
    starts: int = 200
    capacity_counts: tuple[int, ...] = (1000, 10000)
    capacity_hold_s: float = 2.0
    # reconnect storm (bench/storm.py); the backoff is the SDK's default
    storm_clients: int = 10000
    storm_moving: int = 1000  # people whose flows change (the others stay quiet)
    storm_concurrency: int = 100
    storm_base_s: float = 0.25
    storm_cap_s: float = 10.0
    storm_down_s: float = 2.0
    storm_timeout_s: float = 15.0
    storm_deadline_s: float = 120.0
    # rest (bench/rest.py): wrk against one serve process
    rest_databases: tuple[str, ...] = ("postgresql", "sqlite")
    rest_calls: tuple[tuple[str, int], ...] = (
        ("health", 16),
        ("health", 1),
        ("person", 16),
        ("person", 1),
        ("transition", 16),
    )
    rest_people: int = 256
    rest_seconds: float = 5.0
    rest_warmup_s: float = 1.0
    rest_runs: int = 2
    appearance_rounds: int = 60  # bench/appearance.py: each times three appearances

    def rates(self) -> list[float]:
        if self.many_rates:
            return list(self.many_rates)
        if self.quick:
            return [50.0, 200.0]
        # steps of about 1.4x: 25, 50, 75, 100, 150, 200, 300, ... 25600
        rates = [25.0, 50.0]
        while rates[-1] < 25600:
            rates.append(rates[-1] * (1.5 if len(rates) % 2 == 0 else 4 / 3))
        return rates


def run_async(coro):
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def with_target(
    cfg: Config, kind: str, scenario: str, people, body, database_url=None, after_stop=None
):
    """Starts a fresh `kind` server, runs `body(target)` on the harness loop, stops it.

    `after_stop(target, result)` runs once the server is stopped, before its data goes."""
    if kind == "stepstream":
        if database_url:
            reset_bench_database(database_url)
        target = Stepstream(database_url, cfg.server_env, cfg.workers)
    else:
        target = DurableReference() if kind == "durable" else Reference()
    profiler = None
    try:
        if people is not None:
            target.prepare(people[0], start_loop=people[1])
        if cfg.quiet_wait_s:
            load = wait_for_quiet(cfg.quiet_wait_s)
            log(f"{scenario} {kind}: other work on the machine uses {load:.0f}% of a core")
        target.start()
        if kind in cfg.profile:
            ext = {"flamegraph": "svg", "speedscope": "json"}.get(cfg.profile_format, "txt")
            suffix = f"-{target.database}" if kind == "stepstream" else ""
            output = cfg.results_dir / f"profile-{scenario}-{kind}{suffix}.{ext}"
            profiler = Profiler(target.pid, output, cfg.profile_format)
            log(f"profiling {kind} (pid {target.pid}) into {output}")
        result = run_async(body(target))
    finally:
        if profiler is not None:
            profiler.stop()
        if kind == "stepstream" and after_stop is not None:
            target.stop_server()
        else:
            target.stop()
    if after_stop is not None:
        try:
            after_stop(target, result)
        finally:
            target.stop()
    return result


# -- what the harness records ---------------------------------------------


class Sink:
    """Collects received events: receipt times per (person, seq); occurred_at once per event."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.times: dict[tuple[str, int], list[float]] = {}
        self.occurred: dict[tuple[str, int], bytes] = {}
        self.count = 0
        self.last = 0.0
        self.size = 0

    def __call__(self, client, seq, data, start, end, now) -> None:
        self.count += 1
        self.last = now
        key = (client.tag, seq)
        times = self.times.get(key)
        if times is None:
            times = self.times[key] = []
            i = data.find(b'"occurred_at":"', start, end) + 15
            self.occurred[key] = data[i : i + 27]
            self.size = end - start
        times.append(now)

    def latencies(self, sent: dict) -> tuple[dict, dict]:
        """(commit-to-receipt, trigger-to-receipt) summaries in ms."""
        offset = wall_offset()
        commit, trigger = [], []
        for key, times in self.times.items():
            stamp = parse_stamp(self.occurred[key]) - offset
            commit += [(t - stamp) * 1000 for t in times]
            sent_at = sent.get(key)
            if sent_at is not None:
                trigger += [(t - sent_at) * 1000 for t in times]
        return summarize(commit), summarize(trigger)


class Triggers:
    """The `transition` calls of a phase and their responses."""

    def __init__(self):
        self.calls = []

    def flip(self, client: wire.WsClient, person: str) -> None:
        sent_at = time.perf_counter()
        _, future = client.send(
            "transition", {"person_key": person, "flow": "loop", "transition": "flip"}
        )
        self.calls.append((person, sent_at, future))

    async def settle(self, timeout: float) -> None:
        futures = [f for _, _, f in self.calls if not f.done()]
        if futures:
            await asyncio.wait(futures, timeout=timeout)

    def outcome(self) -> tuple[int, dict, Counter]:
        """(successful changes, {(person, seq): sent_at}, errors by kind)."""
        ok, sent, errors = 0, {}, Counter()
        for person, sent_at, future in self.calls:
            if not future.done():
                errors["no response"] += 1
                continue
            if future.exception() is not None:
                errors["connection closed"] += 1
                continue
            message, _ = future.result()
            if message.get("status") != 200:
                errors[f"status {message.get('status')}"] += 1
                continue
            ok += 1
            seq = message["data"]["seq"]
            for s in range(seq - EVENTS_PER_CHANGE + 1, seq + 1):
                sent[(person, s)] = sent_at
        return ok, sent, errors


@contextlib.contextmanager
def gc_paused():
    """No garbage collection in the harness while it measures: a full collection over
    thousands of connections would show up as latency of whichever server is measured."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


async def until(predicate, timeout: float, step: float = 0.005) -> bool:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def subscriber(target, sink, tag_of, entity="step", count=1, concurrency=64):
    async def subscribe(client):
        response = await client.request(
            "subscribe_state_change", {"person_key": client.tag, "entity": entity}
        )
        if response["status"] != 200:
            raise RuntimeError(f"subscribe failed: {response}")

    return await wire.connect_many(
        count, target.port, target.key, subscribe, sink, tag_of, concurrency
    )


def closed_count(clients) -> Counter:
    return Counter(c.close_code for c in clients if c.closed)


def close_all(clients) -> None:
    for c in clients:
        c.close()


class CpuMeter:
    """CPU over a phase, in % of one core: the server, this harness, and everything else.

    "others" is the whole machine's busy time less the server's and the harness's:
    other work on the machine (tests, builds) that competed for the two cores.
    """

    def __init__(self, pid: int):
        self.server = pid
        self.cpu = self._readings()
        self.machine = machine_busy_seconds()
        self.wall = time.perf_counter()

    def _readings(self) -> tuple[float, float]:
        # the server is a child of this process: the harness is this process alone
        return cpu_seconds(self.server), own_cpu_seconds()

    def server_seconds(self) -> float:
        """The server's CPU time (its workers' too) since the meter started."""
        return cpu_seconds(self.server) - self.cpu[0]

    def both(self) -> dict:
        wall = max(1e-9, time.perf_counter() - self.wall)
        server, harness = (
            100 * (now - before) / wall
            for now, before in zip(self._readings(), self.cpu, strict=True)
        )
        machine = 100 * (machine_busy_seconds() - self.machine) / wall
        return {
            "server": round(server, 1),
            "harness": round(harness, 1),
            "others": round(max(0.0, machine - server - harness), 1),
        }


# -- fan-out -----------------------------------------------------------------


def burst_size(n: int, quick: bool) -> int:
    return max(4, min(50 if quick else 200, (4000 if quick else 40000) // n))


async def _fanout(cfg: Config, target) -> dict:
    sink = Sink()
    publisher = await wire.connect(target.port, target.key)
    subscribers: list[wire.WsClient] = []
    results = {}
    try:
        for n in cfg.fanout_ns:
            more = n - len(subscribers)
            started = time.perf_counter()
            subscribers += await subscriber(target, sink, lambda i: FAN_PERSON, count=more)
            connect_s = time.perf_counter() - started
            await asyncio.sleep(0.3)
            for c in subscribers:
                c.last_seq = None
                c.gaps = c.duplicates = 0
            row = {"subscribers": n, "connect_subscribe_per_s": round(more / connect_s, 1)}

            # latency at a steady rate (the 2 changes per second)
            sink.reset()
            triggers = Triggers()
            cpu = CpuMeter(target.pid)
            with gc_paused():
                for _ in range(cfg.fanout_latency_changes):
                    triggers.flip(publisher, FAN_PERSON)
                    await asyncio.sleep(1 / cfg.fanout_rate)
                await triggers.settle(30)
                ok, sent, errors = triggers.outcome()
                expected = ok * EVENTS_PER_CHANGE * n
                await until(lambda e=expected: sink.count >= e, 30)
            commit, trigger = sink.latencies(sent)
            row["steady"] = {
                "changes_per_s": cfg.fanout_rate,
                "changes": ok,
                "errors": dict(errors),
                "expected_events": expected,
                "received_events": sink.count,
                "commit_to_receipt_ms": commit,
                "trigger_to_receipt_ms": trigger,
                "cpu_percent": cpu.both(),
            }
            row["event_bytes"] = sink.size

            # throughput: bursts of changes as fast as they can be made; the best one counts
            # (other work on a shared 2-core machine only ever makes a run slower)
            bursts = []
            for _ in range(cfg.fanout_bursts):
                bursts.append(await _burst(cfg, target, sink, publisher, n))
                await asyncio.sleep(0.2)
            row["burst"] = max(bursts, key=lambda b: b["events_per_s"])
            row["burst"]["lost_events"] = sum(b["lost_events"] for b in bursts)
            row["burst_events_per_s_all"] = [b["events_per_s"] for b in bursts]
            row["gaps"] = sum(c.gaps for c in subscribers)
            row["duplicates"] = sum(c.duplicates for c in subscribers)
            row["closed"] = {str(k): v for k, v in closed_count(subscribers).items()}
            results[str(n)] = row
            log(
                f"fanout {target.name} N={n}: {row['burst']['events_per_s']:.0f} events/s, "
                f"steady p99 {commit_p99(row)} ms, lost {row['burst']['lost_events']}"
            )
    finally:
        close_all(subscribers)
        publisher.close()
        await asyncio.sleep(0.2)
    return results


async def _burst(cfg: Config, target, sink: Sink, publisher, n: int) -> dict:
    sink.reset()
    triggers = Triggers()
    burst = burst_size(n, cfg.quick)
    cpu = CpuMeter(target.pid)
    with gc_paused():
        first = time.perf_counter()
        for _ in range(burst):
            triggers.flip(publisher, FAN_PERSON)
        await triggers.settle(60)
        ok, sent, errors = triggers.outcome()
        expected = ok * EVENTS_PER_CHANGE * n
        await until(lambda: sink.count >= expected, 60)
    received = sink.count
    last = sink.last or first
    commit, trigger = sink.latencies(sent)
    return {
        "changes": ok,
        "errors": dict(errors),
        "expected_events": expected,
        "received_events": received,
        "lost_events": expected - received,
        "events_per_s": round(received / max(1e-9, last - first), 1),
        "changes_per_s": round(ok / max(1e-9, last - first), 1),
        "seconds": round(last - first, 3),
        "commit_to_receipt_ms": commit,
        "trigger_to_receipt_ms": trigger,
        "cpu_percent": cpu.both(),
    }


def commit_p99(row):
    return row["steady"]["commit_to_receipt_ms"]["p99"]


def fanout(cfg: Config) -> dict:
    out = {}
    for kind in cfg.targets:
        out[kind] = with_target(
            cfg,
            kind,
            "fanout",
            ([("fan", 1)], True),
            lambda t: _fanout(cfg, t),
            cfg.database_url,
        )
    return out


# -- many people -------------------------------------------------------------


async def _many(cfg: Config, target, rates: list[float]) -> dict:
    sink = Sink()
    people = cfg.many_people
    subscribers = await subscriber(target, sink, lambda i: f"p{i}", count=people)
    publishers = [await wire.connect(target.port, target.key) for _ in range(cfg.many_publishers)]
    levels = []
    best = None
    counter = itertools.count()
    try:
        # a short level at half the first rate warms every path up; it is not counted
        await _many_level(cfg, target, sink, publishers, counter, rates[0] / 2, warm_up=True)
        for rate in rates:
            level = await _many_level(cfg, target, sink, publishers, counter, rate)
            levels.append(level)
            if not level["sustained"]:
                break
            best = level
            await asyncio.sleep(0.2)
        # before the harness closes them: a socket the server closed shows here
        closed = {str(k): v for k, v in closed_count(subscribers).items()}
        gaps = sum(c.gaps for c in subscribers)
        duplicates = sum(c.duplicates for c in subscribers)
    finally:
        close_all(subscribers)
        close_all(publishers)
        await asyncio.sleep(0.2)
    return {
        "people": people,
        "publishers": len(publishers),
        "level_seconds": cfg.many_level_s,
        "levels": levels,
        "highest_sustained_changes_per_s": best["offered_changes_per_s"] if best else 0,
        # False when every level offered was sustained: the figure is then a floor, not a ceiling
        "ceiling_reached": bool(levels) and not levels[-1]["sustained"],
        "at_highest": best,
        "event_bytes": sink.size,
        "gaps": gaps,
        "duplicates": duplicates,
        "closed": closed,
    }


async def _many_level(cfg, target, sink, publishers, counter, rate, warm_up=False) -> dict:
    """Offers `rate` changes/s for a level (open loop), round-robin over the people."""
    people = cfg.many_people
    seconds = min(1.0, cfg.many_level_s) if warm_up else cfg.many_level_s
    sink.reset()
    triggers = Triggers()
    cpu = CpuMeter(target.pid)
    started = time.perf_counter()
    sent_count = 0
    with gc_paused():
        while (elapsed := time.perf_counter() - started) < seconds:
            due = min(int(rate * elapsed) - sent_count, 10_000)
            for _ in range(due):
                i = next(counter) % people
                # a person always goes through the same publisher: their changes stay in order
                triggers.flip(publishers[i % len(publishers)], f"p{i}")
            sent_count += max(0, due)
            await asyncio.sleep(0.002)
        await triggers.settle(10)
        ok, sent, errors = triggers.outcome()
        expected = ok * EVENTS_PER_CHANGE
        await until(lambda: sink.count >= expected, 5)
    received = sink.count
    last = sink.last or started
    commit, trigger = sink.latencies(sent)
    server_cpu = cpu.server_seconds()
    achieved = ok / max(seconds, last - started)
    sustained = (
        not errors
        and received == expected
        and achieved >= 0.9 * rate
        and trigger["p99"] is not None
        and trigger["p99"] <= 100
    )
    log(
        f"many {target.name} {rate:g}/s{' (warm-up)' if warm_up else ''}: achieved "
        f"{achieved:.0f}/s, p99 end-to-end {trigger['p99']} ms, commit-to-receipt "
        f"{commit['p99']} ms, server CPU {_per_change(server_cpu, ok)} ms a change, "
        f"{'ok' if sustained else 'NOT sustained'}"
    )
    return {
        "offered_changes_per_s": rate,
        "achieved_changes_per_s": round(achieved, 1),
        "changes": ok,
        "errors": dict(errors),
        "lost_events": expected - received,
        "commit_to_receipt_ms": commit,
        "trigger_to_receipt_ms": trigger,
        "cpu_percent": cpu.both(),
        # the server's CPU over the level (and its settling) for each change it made
        "server_cpu_ms_per_change": _per_change(server_cpu, ok),
        "sustained": sustained,
    }


def _per_change(cpu_s: float, changes: int) -> float | None:
    return round(1000 * cpu_s / changes, 3) if changes else None


def many_people(cfg: Config) -> dict:
    """Stepstream, the bare reference and the durable one (SQLite, group commit) in turn.

    In quick mode the durable reference runs the first level only: a smoke run."""
    out = {}
    kinds = (*cfg.targets, "durable") if cfg.durable else cfg.targets
    for kind in kinds:
        rates = cfg.rates()[:1] if kind == "durable" and cfg.quick else cfg.rates()
        out[kind] = with_target(
            cfg,
            kind,
            "many",
            ([("p", cfg.many_people)], True),
            lambda t, rates=rates: _many(cfg, t, rates),
            cfg.database_url,
        )
    return out


# -- engine ------------------------------------------------------------------


ENGINE_PEOPLE = 16


async def _closed_loop(callers: int, seconds: float, make, call) -> dict:
    """`callers` tasks, each calling as fast as answers come, for `seconds`."""
    connections = [await make(i) for i in range(callers)]
    statuses: Counter = Counter()
    timings: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(i):
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status = await call(connections[i], i)
            timings.append((time.perf_counter() - t0) * 1000)
            statuses[status] += 1

    started = time.perf_counter()
    try:
        with gc_paused():
            await asyncio.wait_for(asyncio.gather(*(loop(i) for i in range(callers))), seconds + 30)
    finally:
        for c in connections:
            c.close()
    elapsed = time.perf_counter() - started
    ok = statuses.get(200, 0)
    return {
        "callers": callers,
        "per_s": round(ok / elapsed, 1),
        "ok": ok,
        "errors": {str(k): v for k, v in statuses.items() if k != 200},
        "call_ms": summarize(timings),
    }


async def _transitions(target, mode: str, callers: int, seconds: float) -> dict:
    if mode == "rest":

        async def make(i):
            return await wire.http_connect(
                target.port, {"Authorization": f"Bearer {target.secret}"}
            )

        async def call(conn, i):
            status, _ = await conn.request(
                "POST", f"/api/v1/people/e{i}/flows/loop/transitions", {"transition": "flip"}
            )
            return status

    else:

        async def make(i):
            return await wire.connect(target.port, target.key)

        async def call(conn, i):
            message = await conn.request(
                "transition", {"person_key": f"e{i}", "flow": "loop", "transition": "flip"}
            )
            return message["status"]

    return await _closed_loop(callers, seconds, make, call)


async def _pings(target, callers: int, seconds: float) -> dict:
    async def make(i):
        return await wire.connect(target.port, target.key)

    async def call(conn, i):
        return (await conn.request("ping"))["status"]

    return await _closed_loop(callers, seconds, make, call)


async def _engine_calls(cfg: Config, target, with_pings: bool) -> dict:
    out = {}
    cpu = CpuMeter(target.pid)
    for mode in cfg.engine_modes:
        for callers in cfg.engine_callers:
            result = await _transitions(target, mode, callers, cfg.engine_seconds)
            out[f"{mode}-{callers}"] = result
            log(
                f"engine {target.database} {mode} x{callers}: {result['per_s']} transitions/s "
                f"(errors {result['errors']})"
            )
    out["cpu_percent"] = cpu.both()
    if with_pings:
        out["ping-16"] = await _pings(target, 16, cfg.engine_seconds)
    return out


def engine(cfg: Config) -> dict:
    out: dict = {"stepstream": {}, "reference": {}}
    pinged = False
    for database in cfg.engine_databases:
        url = None
        if database == "postgresql":
            problem = database_reachable(cfg.postgres_url)
            if problem:
                out["stepstream"][database] = {"skipped": problem}
                log(f"engine on PostgreSQL skipped: {problem}")
                continue
            url = cfg.postgres_url

        def body(target, first=not pinged):
            return _engine_calls(cfg, target, with_pings=first)

        if "stepstream" in cfg.targets:

            def starts(target, calls):
                calls["flow_starts"] = _starts(cfg, target)

            calls = with_target(
                cfg,
                "stepstream",
                f"engine-{database}",
                ([("e", ENGINE_PEOPLE)], True),
                body,
                url,
                after_stop=starts,
            )
            out["stepstream"][database] = calls
            pinged = True
    if "reference" in cfg.targets:

        async def ref_body(target):
            return {"ping-16": await _pings(target, 16, cfg.engine_seconds)}

        out["reference"] = with_target(cfg, "reference", "engine", None, ref_body)
    return out


def _starts(cfg: Config, target: Stepstream) -> dict:
    """Flow starts of the 21-step flow, in-process, once the server has stopped."""
    result = target.inproc("starts", "--secret-key", target.secret, "--count", str(cfg.starts))
    log(
        f"flow starts {target.database}: {result['start_ms_median']} ms, "
        f"{result['queries_per_start']} queries"
    )
    return result


# -- capacity ----------------------------------------------------------------


async def _capacity(cfg: Config, target) -> dict:
    sink = Sink()
    # one connection first, so the baseline includes everything a first socket loads
    warm = await subscriber(target, sink, lambda i: f"c{i}", count=1)
    close_all(warm)
    await asyncio.sleep(1.0)
    baseline = rss_kib(target.pid)
    clients: list[wire.WsClient] = []
    rows = {}
    try:
        for count in cfg.capacity_counts:
            more = count - len(clients)
            started = time.perf_counter()
            offset = len(clients)
            clients += await subscriber(
                target, sink, lambda i, o=offset: f"c{o + i}", count=more, concurrency=100
            )
            connect_s = time.perf_counter() - started
            await asyncio.sleep(cfg.capacity_hold_s)
            rss = rss_kib(target.pid)
            sample = clients[:: max(1, len(clients) // 100)]
            answers = await asyncio.gather(
                *(c.request("ping", timeout=30) for c in sample), return_exceptions=True
            )
            answered = sum(1 for a in answers if isinstance(a, dict) and a.get("status") == 200)
            held = sum(1 for c in clients if not c.closed)
            rows[str(count)] = {
                "connections": count,
                "held": held,
                "ping_sample": len(sample),
                "ping_answered": answered,
                "connect_subscribe_per_s": round(more / connect_s, 1),
                "rss_kib": rss,
                "baseline_rss_kib": baseline,
                "kib_per_connection": round((rss - baseline) / count, 2),
            }
            log(
                f"capacity {target.name} {count}: held {held}, "
                f"{rows[str(count)]['kib_per_connection']} KiB each, "
                f"{rows[str(count)]['connect_subscribe_per_s']} connects/s"
            )
    finally:
        close_all(clients)
        await asyncio.sleep(0.5)
    return rows


def capacity(cfg: Config) -> dict:
    wire.raise_open_file_limit()
    most = max(cfg.capacity_counts)
    out = {}
    for kind in cfg.targets:
        out[kind] = with_target(
            cfg,
            kind,
            "capacity",
            ([("c", most)], False),
            lambda t: _capacity(cfg, t),
            cfg.database_url,
        )
    return out


def storm(cfg: Config) -> dict:
    from bench.storm import storm as run  # bench.storm uses this module

    return run(cfg)


def appearance(cfg: Config) -> dict:
    from bench.appearance import appearance as run  # Playwright: imported when it runs

    return run(cfg)


SCENARIOS = {
    "fanout": fanout,
    "many": many_people,
    "engine": engine,
    "capacity": capacity,
    "storm": storm,
    "rest": rest,
    "appearance": appearance,
}
