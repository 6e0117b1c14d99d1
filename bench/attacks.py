"""Condition budgets (issue 24): the attacks replayed against a real server, the victim timed.

    python -m bench.attacks [--db sqlite|postgresql] [--tree PATH] [--only NAME,...]
                            [--cap 60] [--json results.json]

One real `stepstream serve` per attack (a fresh data directory; on PostgreSQL
a fresh schema in the bench's own database), started from `--tree` (default:
this checkout; `/tmp/base-1e4189a` for the tree before the work: its server
runs with PYTHONPATH set to that tree, and its own `.venv` if it has one).
Two projects, "attacker" and "victim", made with `stepstream init-project`.

For each attack, at the same time:

* the attack, from the attacker's environment (secret key over REST to
  publish the flow, publishable key over the WebSocket as a browser would);
* the victim: two closed loops on their own keep-alive connections, one of
  `POST /api/v1/people/{key}/track` with the victim's secret key, one of
  `GET /api/v1/health`, each request timed. They start 1 s before the attack
  and stop 1 s after it (bounded by count and by time).

Attacks:

* `baseline`: none (the victim alone for 4 s).
* `cost_bomb`: a 625-character `start_when`, four nested `exists` over
  literal lists of 70 zeros (70^4 = 24 million evaluations of the innermost
  comparison), published, then one `track` sets it off.
* `cost_bomb_forced`: the same with the server's STEPSTREAM_CONDITION_COST_BUDGET
  at 10^15, so the estimate accepts it and the defence in depth (or nothing)
  is what meets it; two `track`s.
* `tags_32000`: `has(person.tags) && person.tags.filter(t, t == 7).size() > 0`
  published, then one WebSocket `identify` with 32,000 tags (a 64 KB message);
  `tags_256` the same within the default limits (`tags_256_later`: the
  identify 3 s after the publish instead of at once).
* `events_filter`, `events_exists`: `events.filter(k, k.startsWith("export_")).size() >= 3`
  (resp. `events.exists(...)`) published, then a browser gives its person 1,000
  event names over the WebSocket (none starting with "export_", so the
  condition stays false and is evaluated on every write) and 50 more `track`s
  of names it has, each timed.

Every attacker request is bounded by `--cap` seconds (default 60): one that
takes longer is reported as not finished. The target: the attacker's
requests finish or are refused within 1 s; the victim's writes and health
checks stay under 100 ms p99. Traffic goes to 127.0.0.1 only.

The servers run with the WebSocket request rate limit raised (as the rest of
bench/ does: bench.targets.BENCH_SERVER_ENV) so the event-name growth is not
slowed by it; an attacker could open several sockets instead.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.targets import (
    BENCH_SERVER_ENV,
    background_load,
    cpu_seconds,
    database_reachable,
    machine_busy_seconds,
    own_cpu_seconds,
    reset_bench_database,
    stop_process,
    wait_for_quiet,
)
from stepstream.testing.servers import free_port, server_env

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/attacks_bench"
TARGET_ATTACKER_S = 1.0
TARGET_VICTIM_P99_MS = 100.0

ZEROS = "[" + ",".join(["0"] * 70) + "]"
COST_BOMB = (
    f"{ZEROS}.exists(a, {ZEROS}.exists(b, {ZEROS}.exists(c, {ZEROS}.exists(d, a+b+c+d == -1))))"
)
TAGS_CONDITION = "has(person.tags) && person.tags.filter(t, t == 7).size() > 0"
EVENTS_FILTER = 'events.filter(k, k.startsWith("export_")).size() >= 3'
EVENTS_EXISTS = 'events.exists(k, k.startsWith("export_"))'
EVENTS_PLAIN = "has(events.export_csv)"


def flow(identifier: str, start_when: str) -> dict:
    return {
        "identifier": identifier,
        "start_when": start_when,
        "steps": [{"identifier": "first"}, {"identifier": "second"}],
        "transitions": [{"identifier": "next", "from": "first", "to": "second"}],
    }


def log(message: str) -> None:
    print(f"[attacks {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(samples: list[float], p: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000, 1)


def summary(samples: list[float]) -> dict:
    return {
        "n": len(samples),
        "p50_ms": pct(samples, 0.50),
        "p99_ms": pct(samples, 0.99),
        "max_ms": round(max(samples) * 1000, 1) if samples else None,
    }


# -- the server under test -------------------------------------------------


class Target:
    """One `stepstream serve` from `tree`, on SQLite or the PostgreSQL at `database_url`."""

    def __init__(self, tree: Path, database_url: str | None, extra_env: dict | None = None):
        self.tree = tree
        self.database_url = database_url
        venv_python = tree / ".venv" / "bin" / "python"
        self.python = str(venv_python) if venv_python.exists() else sys.executable
        self.data_dir = tempfile.mkdtemp(prefix="bench-attacks-")
        self.env = server_env(
            self.data_dir,
            **BENCH_SERVER_ENV,
            STEPSTREAM_WS_RATE="1000000",  # older name, in case the tree reads it
            DATABASE_URL=database_url or "",
            REDIS_URL="",
            **(extra_env or {}),
        )
        self.env["PYTHONPATH"] = str(tree)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/api/v1"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.process: subprocess.Popen | None = None
        self.log_path = os.path.join(self.data_dir, "serve.log")

    def command(self, *args) -> str:
        done = subprocess.run(
            [self.python, "-m", "stepstream", *args],
            env=self.env,
            cwd=self.tree,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"stepstream {args[0]} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self, timeout: float = 60.0) -> "Target":
        if self.database_url:
            reset_bench_database(self.database_url)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - the child writes it
        self.process = subprocess.Popen(
            [self.python, "-m", "stepstream", "serve", "--port", str(self.port)],
            env=self.env,
            cwd=self.tree,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.server_log()[-3000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.server_log()[-3000:]}")

    def server_log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def keys(self, name: str) -> dict:
        """The first environment's keys of a new project."""
        return json.loads(self.command("init-project", name))["environments"][0]

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        shutil.rmtree(self.data_dir, ignore_errors=True)


# -- the victim --------------------------------------------------------------


class Victim:
    """Two loops (writes, health) in threads, each on a fixed schedule, every request timed.

    Each loop means to send one request every INTERVAL seconds, one at a time on
    its keep-alive connection. A request's latency counts from when it was due,
    not from when it could be sent: a request that waits behind a stalled one
    is late by the stall. The slots a stalled request makes the loop miss are
    not sent afterwards (no catch-up burst) but recorded, each with the latency
    it would have had at best (answered when the stalled one was), so a stall
    weighs in the percentiles for the time it lasts, not as a single sample
    (as HdrHistogram's correction for coordinated omission does).
    """

    MAX_REQUESTS = 5000  # sent per loop
    INTERVAL = 0.02  # 50 requests/s per loop

    def __init__(self, target: Target, secret: str, max_seconds: float):
        self.target = target
        self.secret = secret
        self.max_seconds = max_seconds
        self.stop_at = float("inf")
        self.samples: dict[str, list[float]] = {"writes": [], "health": []}
        self.service: dict[str, list[float]] = {"writes": [], "health": []}
        self.errors: dict[str, dict[str, int]] = {"writes": {}, "health": {}}
        self.last_health: dict | None = None
        self.threads = [
            threading.Thread(target=self._loop, args=("writes",), daemon=True),
            threading.Thread(target=self._loop, args=("health",), daemon=True),
        ]

    def _loop(self, kind: str) -> None:
        headers = {"Authorization": f"Bearer {self.secret}"} if kind == "writes" else {}
        samples, service, errors = self.samples[kind], self.service[kind], self.errors[kind]
        hard_stop = time.perf_counter() + self.max_seconds
        with httpx.Client(base_url=self.target.base, headers=headers, timeout=90) as client:
            n, due = 0, time.perf_counter()
            while n < self.MAX_REQUESTS and due < min(self.stop_at, hard_stop):
                now = time.perf_counter()
                if now < due:
                    time.sleep(due - now)
                sent = time.perf_counter()
                try:
                    if kind == "writes":
                        answer = client.post(f"/people/v{n % 10}/track", json={"event": "visit"})
                    else:
                        answer = client.get("/health")
                    status = str(answer.status_code)
                except httpx.HTTPError as e:
                    answer, status = None, type(e).__name__
                done = time.perf_counter()
                samples.append(done - due)
                service.append(done - sent)
                if status not in ("200", "201"):
                    errors[status] = errors.get(status, 0) + 1
                elif kind == "health":
                    self.last_health = answer.json()
                n += 1
                due += self.INTERVAL
                while due < done and due < min(self.stop_at, hard_stop):
                    samples.append(done - due)  # a slot missed while waiting
                    due += self.INTERVAL

    def warm_up(self) -> None:
        with httpx.Client(base_url=self.target.base, timeout=30) as client:
            client.headers["Authorization"] = f"Bearer {self.secret}"
            for i in range(10):
                client.post(f"/people/v{i}/track", json={"event": "visit"})
                client.get("/health")

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self, after: float) -> None:
        self.stop_at = time.perf_counter() + after
        for t in self.threads:
            t.join(timeout=self.max_seconds + 120)

    def report(self) -> dict:
        out = {}
        for kind in ("writes", "health"):
            out[kind] = summary(self.samples[kind])
            out[kind]["sent"] = len(self.service[kind])
            out[kind]["service_max_ms"] = round(max(self.service[kind], default=0) * 1000, 1)
            if self.errors[kind]:
                out[kind]["errors"] = self.errors[kind]
        if self.last_health and "conditions" in self.last_health:
            out["health_conditions"] = self.last_health["conditions"]
        return out


# -- the attacker ------------------------------------------------------------


class Timed:
    """The attacker's requests: what each answered and how long it took."""

    def __init__(self, cap: float):
        self.cap = cap
        self.requests: list[dict] = []

    def record(self, what: str, started: float, status, detail=None) -> dict:
        seconds = time.perf_counter() - started
        row = {"request": what, "seconds": round(seconds, 3), "status": status}
        if detail:
            row["detail"] = detail
        self.requests.append(row)
        log(f"  {what}: {status} in {seconds:.3f} s{' ' + str(detail) if detail else ''}")
        return row

    def rest(self, client: httpx.Client, what: str, method: str, path: str, body) -> dict:
        started = time.perf_counter()
        try:
            answer = client.request(method, path, json=body, timeout=self.cap)
        except httpx.TimeoutException:
            return self.record(what, started, f"did not finish within {self.cap:.0f} s")
        except httpx.HTTPError as e:
            return self.record(what, started, type(e).__name__)
        detail = None
        if answer.status_code >= 400:
            try:
                detail = answer.json().get("errors", answer.text[:300])
            except ValueError:
                detail = answer.text[:300]
            detail = _short(detail)
        return self.record(what, started, answer.status_code, detail)


def _short(detail) -> str:
    text = detail if isinstance(detail, str) else json.dumps(detail)
    return text if len(text) <= 300 else text[:297] + "..."


class Browser:
    """A WebSocket client with the publishable key, one request at a time."""

    def __init__(self, target: Target, key: str, cap: float):
        from websockets.sync.client import connect

        self.connection = connect(
            f"{target.ws_url}?key={key}",
            max_size=None,
            open_timeout=cap,
            close_timeout=2,
            compression=None,
            ping_interval=None,  # no keepalive of its own: a stalled server is waited for
        )
        self.ws = self.connection.__enter__()
        self.cap = cap
        self.rid = 0

    def call(self, action: str, data: dict, deadline: float) -> dict | str:
        """The answer, or a sentence if none came before `deadline` (monotonic)."""
        self.rid += 1
        message = {"action": action, "request_id": self.rid, "data": data}
        self.ws.send(json.dumps(message, separators=(",", ":")))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"did not finish within {self.cap:.0f} s"
            try:
                message = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                return f"did not finish within {self.cap:.0f} s"
            except Exception as e:  # noqa: BLE001 - a closed socket is an outcome
                return f"socket closed: {type(e).__name__} {e}"
            # an answer to a message too large to be read carries no request_id
            if "status" in message and message.get("request_id") in (self.rid, None):
                return message

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.__exit__(None, None, None)


def _ws_outcome(answer) -> tuple:
    if isinstance(answer, str):
        return answer, None
    detail = _short(answer.get("errors")) if answer.get("status", 200) >= 400 else None
    return answer.get("status"), detail


def attack_none(target, keys, timed: Timed) -> dict:
    time.sleep(4)
    return {}


def _publish(target, keys, timed: Timed, identifier: str, condition: str) -> bool:
    with httpx.Client(
        base_url=target.base, headers={"Authorization": f"Bearer {keys['secret_key']}"}
    ) as rest:
        row = timed.rest(rest, "publish", "POST", "/flows", flow(identifier, condition))
    return row["status"] == 201


def attack_cost_bomb(target, keys, timed: Timed, tracks: int = 1) -> dict:
    if not _publish(target, keys, timed, "bomb", COST_BOMB):
        return {}
    with httpx.Client(
        base_url=target.base, headers={"Authorization": f"Bearer {keys['secret_key']}"}
    ) as rest:
        for i in range(tracks):
            row = timed.rest(rest, f"track {i + 1}", "POST", "/people/a1/track", {"event": "go"})
            if not isinstance(row["status"], int):
                break  # the server is still busy with it: a second one would only queue
    return {}


def attack_cost_bomb_forced(target, keys, timed: Timed) -> dict:
    return attack_cost_bomb(target, keys, timed, tracks=2)


def _attack_tags(target, keys, timed: Timed, count: int, pause: float = 0.0) -> dict:
    if not _publish(target, keys, timed, "tagged", TAGS_CONDITION):
        return {}
    time.sleep(pause)  # the first write at once, or once the server had time to settle
    browser = Browser(target, keys["publishable_key"], timed.cap)
    try:
        data = {"person_key": "b1", "data": {"tags": [7] * count}}
        message = {"action": "identify", "request_id": 1, "data": data}
        size = len(json.dumps(message, separators=(",", ":")))
        started = time.perf_counter()
        answer = browser.call("identify", data, time.monotonic() + timed.cap)
        status, detail = _ws_outcome(answer)
        timed.record(f"ws identify ({count} tags, {size} bytes)", started, status, detail)
    finally:
        browser.close()
    return {"message_bytes": size}


def attack_tags_32000(target, keys, timed):
    return _attack_tags(target, keys, timed, 32000)


def attack_tags_256(target, keys, timed):
    return _attack_tags(target, keys, timed, 256)


def attack_tags_256_later(target, keys, timed):
    """tags_256 with the identify 3 s after the publish, not at once."""
    return _attack_tags(target, keys, timed, 256, pause=3.0)


def _attack_events(target, keys, timed: Timed, condition: str) -> dict:
    if not _publish(target, keys, timed, "exports", condition):
        return {}
    browser = Browser(target, keys["publishable_key"], timed.cap)
    deadline = time.monotonic() + timed.cap
    growth, later, failure = [], [], None
    statuses = {id(growth): {}, id(later): {}}
    started_all = time.perf_counter()
    phases = (
        (growth, [f"n{i:04d}" for i in range(1000)]),
        (later, [f"n{i:04d}" for i in range(50)]),
    )
    try:
        for samples, names in phases:
            for name in names:
                started = time.perf_counter()
                answer = browser.call("track", {"person_key": "b1", "event": name}, deadline)
                samples.append(time.perf_counter() - started)
                status, detail = _ws_outcome(answer)
                counts = statuses[id(samples)]
                counts[str(status)] = counts.get(str(status), 0) + 1
                if not isinstance(status, int):
                    failure = status  # no answer within the cap, or the socket closed
                    break
                if status >= 400 and failure is None:
                    failure = f"{status}: {detail}"
            if failure is not None and not failure[:1].isdigit():
                break
    finally:
        browser.close()
    total = time.perf_counter() - started_all
    over_cap = time.monotonic() >= deadline
    timed.requests.append(
        {
            "request": "ws track: 1,000 new event names",
            "done": len(growth),
            "seconds": round(sum(growth), 3),
            "max_ms": round(max(growth) * 1000, 1) if growth else None,
            "last_ms": round(growth[-1] * 1000, 1) if growth else None,
            "status": _statuses(statuses[id(growth)]),
        }
    )
    timed.requests.append(
        {
            "request": "ws track: 50 more",
            "done": len(later),
            "p50_ms": pct(later, 0.5),
            "max_ms": round(max(later) * 1000, 1) if later else None,
            "seconds": round(max(later), 3) if later else None,
            "status": _statuses(statuses[id(later)]),
        }
    )
    if growth:
        log(f"  1,000 names: {len(growth)} in {sum(growth):.2f} s, last {growth[-1] * 1000:.1f} ms")
    if later:
        log(f"  50 more: p50 {pct(later, 0.5)} ms, max {max(later) * 1000:.1f} ms")
    result = {"total_s": round(total, 3)}
    if failure:
        result["first_failure"] = _short(failure)
    if over_cap:
        result["capped"] = f"stopped at the {timed.cap:.0f} s cap"
    return result


def _statuses(counts: dict) -> str:
    if list(counts) == ["200"]:
        return "all 200"
    return ", ".join(f"{n} x {status}" for status, n in counts.items())


def attack_events_filter(target, keys, timed):
    return _attack_events(target, keys, timed, EVENTS_FILTER)


def attack_events_exists(target, keys, timed):
    return _attack_events(target, keys, timed, EVENTS_EXISTS)


def attack_events_plain(target, keys, timed):
    """The control: the same 1,050 writes with a condition whose cost does not grow."""
    return _attack_events(target, keys, timed, EVENTS_PLAIN)


ATTACKS = {
    "baseline": (attack_none, {}),
    "cost_bomb": (attack_cost_bomb, {}),
    "cost_bomb_forced": (
        attack_cost_bomb_forced,
        {"STEPSTREAM_CONDITION_COST_BUDGET": "1000000000000000"},
    ),
    "tags_32000": (attack_tags_32000, {}),
    "tags_256": (attack_tags_256, {}),
    "tags_256_later": (attack_tags_256_later, {}),
    "events_filter": (attack_events_filter, {}),
    "events_exists": (attack_events_exists, {}),
    "events_plain": (attack_events_plain, {}),
}


def attacker_worst(timed: Timed) -> tuple[float | None, object]:
    """The slowest attacker request (the one the 1 s target is about) and its status."""
    worst, status = None, None
    for row in timed.requests:
        seconds = row.get("max_ms") / 1000 if row.get("max_ms") is not None else row["seconds"]
        if "did not finish" in str(row.get("status")):
            return None, row["status"]
        if worst is None or seconds > worst:
            worst, status = seconds, row.get("status")
    return worst, status


def run_attack(
    name: str, tree: Path, database_url: str | None, cap: float, quiet_wait: float
) -> dict:
    attack, extra_env = ATTACKS[name]
    target = Target(tree, database_url, extra_env)
    try:
        target.start()
        attacker = target.keys("attacker")
        victim_keys = target.keys("victim")
        with httpx.Client(
            base_url=target.base, headers={"Authorization": f"Bearer {victim_keys['secret_key']}"}
        ) as rest:
            answer = rest.post("/flows", json=flow("welcome", "has(events.visit)"))
            assert answer.status_code == 201, answer.text
        victim = Victim(target, victim_keys["secret_key"], max_seconds=cap + 60)
        victim.warm_up()
        load = wait_for_quiet(quiet_wait) if quiet_wait else background_load(1.0)
        log(f"{name}: others use {load:.0f}% of a core; server pid {target.process.pid}")
        timed = Timed(cap)
        clock = (time.perf_counter(), machine_busy_seconds(), own_cpu_seconds())
        server_cpu = cpu_seconds(target.process.pid)  # the server and its children
        victim.start()
        time.sleep(1.0)
        started = time.perf_counter()
        extra = attack(target, attacker, timed)
        attack_seconds = time.perf_counter() - started
        victim.finish(after=1.0)
        ours = own_cpu_seconds() - clock[2] + cpu_seconds(target.process.pid) - server_cpu
        others = (machine_busy_seconds() - clock[1] - ours) / (time.perf_counter() - clock[0])
        report = victim.report()
        worst, status = attacker_worst(timed)
        result = {
            "attack": name,
            "tree": str(tree),
            "db": "postgresql" if database_url else "sqlite",
            "background_load_pct_core": load,
            # everything else on the machine while the victim ran, in % of one core
            "others_during_pct_core": round(max(0.0, others) * 100),
            "attack_seconds": round(attack_seconds, 3),
            "attacker": timed.requests,
            "attacker_worst_s": None if worst is None else round(worst, 3),
            "attacker_status": status,
            **extra,
            "victim": report,
        }
        if name != "baseline":
            result["attacker_within_1s"] = worst is not None and worst < TARGET_ATTACKER_S
        result["victim_writes_p99_ok"] = (report["writes"]["p99_ms"] or 0) < TARGET_VICTIM_P99_MS
        result["health_p99_ok"] = (report["health"]["p99_ms"] or 0) < TARGET_VICTIM_P99_MS
        w, h = report["writes"], report["health"]
        log(
            f"{name}: attacker {result['attacker_worst_s']} s ({status}); victim writes "
            f"p50/p99/max {w['p50_ms']}/{w['p99_ms']}/{w['max_ms']} ms (n={w['n']}); health "
            f"{h['p50_ms']}/{h['p99_ms']}/{h['max_ms']} ms (n={h['n']})"
        )
        return result
    except Exception as e:
        log(f"{name}: failed: {e}")
        return {"attack": name, "tree": str(tree), "error": str(e)[-3000:]}
    finally:
        target.stop()


def attacker_text(requests: list[dict]) -> str:
    """The attacker's requests in a few words: each one's status and time."""
    parts = []
    for row in requests:
        name = row["request"]
        if name.startswith("ws track: 1,000"):
            parts.append(
                f"1,000 names: {row['done']} in {row['seconds']:.1f} s, last {row['last_ms']} ms"
                f" (max {row['max_ms']} ms), {row['status']}"
                if row["done"]
                else "1,000 names: none"
            )
        elif name.startswith("ws track: 50"):
            if row["done"]:
                parts.append(
                    f"50 more: p50 {row['p50_ms']} ms, max {row['max_ms']} ms, {row['status']}"
                )
        else:
            status = row["status"]
            took = "" if "did not finish" in str(status) else f" in {row['seconds']:.3f} s"
            parts.append(f"{name.split(' (')[0]} {status}{took}")
    return "; ".join(parts) or "-"


def table(results: list[dict]) -> str:
    lines = [
        "| attack | tree | db | attacker's requests | victim writes p50 / p99 / max"
        " (ms) | health p50 / p99 / max (ms) | targets | others' CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['attack']} | {r['tree']} | | failed: {r['error'][:80]} | | | | |")
            continue
        w, h = r["victim"]["writes"], r["victim"]["health"]
        attacker = attacker_text(r["attacker"])
        held = [
            r.get("attacker_within_1s", True),
            r["victim_writes_p99_ok"],
            r["health_p99_ok"],
        ]
        lines.append(
            f"| {r['attack']} | {Path(r['tree']).name} | {r['db']} | {attacker} | "
            f"{w['p50_ms']} / {w['p99_ms']} / {w['max_ms']} | "
            f"{h['p50_ms']} / {h['p99_ms']} / {h['max_ms']} | "
            f"{'hold' if all(held) else 'missed'} | {r['others_during_pct_core']} % |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    p.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose server runs")
    p.add_argument("--only", help="comma-separated attacks (default all): " + ",".join(ATTACKS))
    p.add_argument("--cap", type=float, default=60.0, help="seconds per attacker request")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait, before each attack, for other work to use under 25%% of a core",
    )
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise SystemExit(f"unknown attacks: {unknown}")
    database_url = None
    if args.db == "postgresql":
        problem = database_reachable(args.postgres_url)
        if problem:
            raise SystemExit(f"PostgreSQL at {args.postgres_url}: {problem}")
        database_url = args.postgres_url
    tree = args.tree.resolve()
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--short", "stepstream"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    log(f"tree {tree} at {commit}{' with uncommitted changes in stepstream/' if dirty else ''}")
    results = []
    for name in names:
        result = run_attack(name, tree, database_url, args.cap, args.quiet_wait)
        result["commit"] = commit + ("+uncommitted" if dirty else "")
        results.append(result)
        print(json.dumps(result), flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
