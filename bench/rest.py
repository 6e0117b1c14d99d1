"""REST at full speed (issue 15): wrk, a C load generator, against one `stepstream serve`.

Three calls, each with 16 connections (and the two reads with one connection,
one request after the other, for the latency of a single request):

* `POST /api/v1/people/{key}/flows/loop/transitions {"transition": "flip"}`: the
  `loop` flow has `flip` from `a` to `b` and from `b` back to `a`, so every
  call succeeds, whatever the order; the Lua script walks the people round
  robin, each wrk thread its own share, so no two connections wait on one person;
* `GET /api/v1/people/{key}`, the same walk;
* `GET /api/v1/health`, beside a bare uvicorn app (bench/bare_app.py) answering
  the same way on the same machine in the same run: the reference.

On PostgreSQL (the issue's targets) and the embedded SQLite. Every non-2xx
answer and every socket error is counted and reported (a run with errors is
not a rate). Needs `wrk` on the PATH (Debian: `apt-get install wrk`); without
it the scenario reports itself skipped.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.targets import (
    ChildServer,
    Profiler,
    Stepstream,
    cpu_seconds,
    database_reachable,
    reset_bench_database,
    wait_for_quiet,
)

PREFIX = "r"  # people r0, r1, ... with the loop flow started (step a active)
WRK_MARK = "WRK_JSON "

# Reports what wrk measured as one JSON line (latencies in microseconds).
_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,"connect":%d,' ..
    '"read":%d,"write":%d,"timeout":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d}\n',
    "WRK_JSON ", summary.requests, summary.duration, summary.bytes, e.status, e.connect,
    e.read, e.write, e.timeout, latency.mean, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# Each wrk thread walks its own share of the people: thread t takes t, t+T, t+2T, ...
_WALK = r"""
local threads = 0
function setup(thread)
  thread:set("offset", threads)
  threads = threads + 1
end
local counter = 0
function init(args)
  stride = tonumber(args[1])
  wrk.headers["Authorization"] = "Bearer %(secret)s"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  local i = (offset + counter * stride) %% %(people)d
  counter = counter + 1
  return wrk.format(%(method)s, "/api/v1/people/%(prefix)s" .. i .. "%(suffix)s", nil, %(body)s)
end
"""


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def lua_script(directory: Path, call: str, secret: str = "", people: int = 0) -> Path:
    """The wrk script of one call: `health`, `person` or `transition`."""
    if call == "health":
        text = 'wrk.path = "/api/v1/health"\n'
    else:
        walk = {
            "person": {"method": '"GET"', "suffix": "", "body": "nil"},
            "transition": {
                "method": '"POST"',
                "suffix": "/flows/loop/transitions",
                "body": '\'{"transition": "flip"}\'',
            },
        }[call]
        text = _WALK % {"secret": secret, "people": people, "prefix": PREFIX, **walk}
    path = directory / f"{call}.lua"
    path.write_text(text + _DONE)
    return path


def run_wrk(port: int, script: Path, connections: int, seconds: float, pid: int | None) -> dict:
    """One wrk run; req/s counts only 2xx answers. Also the server's CPU in % of one core."""
    threads = min(2, connections)
    command = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command += ["--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}", "--"]
    command += [str(threads)]
    cpu_before = cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.perf_counter() - started
    line = next((x for x in done.stdout.splitlines() if x.startswith(WRK_MARK)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
    raw = json.loads(line[len(WRK_MARK) :])
    errors = {k: raw[k] for k in ("status_errors", "connect", "read", "write", "timeout") if raw[k]}
    ok = raw["requests"] - raw["status_errors"]
    seconds_run = raw["duration_us"] / 1e6
    result = {
        "connections": connections,
        "per_s": round(ok / seconds_run, 1),
        "ok": ok,
        "errors": errors,
        "latency_ms": {
            "mean": round(raw["mean_us"] / 1000, 3),
            "median": round(raw["p50_us"] / 1000, 3),
            "p90": round(raw["p90_us"] / 1000, 3),
            "p99": round(raw["p99_us"] / 1000, 3),
            "max": round(raw["max_us"] / 1000, 3),
        },
    }
    if pid:
        result["server_cpu_percent"] = round(100 * (cpu_seconds(pid) - cpu_before) / wall, 1)
    return result


def best_of(runs: int, measure) -> dict:
    """The best of `runs` runs by req/s (the issue's rule on a shared machine), all kept."""
    results = [measure() for _ in range(runs)]
    best = max(results, key=lambda r: r["per_s"])
    return {**best, "runs_per_s": [r["per_s"] for r in results]}


class BareUvicorn(ChildServer):
    """bench/bare_app.py under uvicorn, one process: the REST reference."""

    name = "bare uvicorn"

    def argv(self) -> list[str]:
        return ["uvicorn", "bench.bare_app:app", "--port", str(self.port)] + [
            "--no-access-log",
            "--log-level",
            "warning",
        ]


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _measure_stepstream(cfg, database: str, url: str | None, scripts: Path) -> dict:
    if url:
        reset_bench_database(url)
    target = Stepstream(url, cfg.server_env)
    profiler = None
    try:
        target.prepare([(PREFIX, cfg.rest_people)], start_loop=True)
        if cfg.quiet_wait_s:
            load = wait_for_quiet(cfg.quiet_wait_s)
            _log(f"rest {database}: other work on the machine uses {load:.0f}% of a core")
        target.start()
        scripts_of = {
            call: lua_script(scripts, call, target.secret, cfg.rest_people)
            for call in ("health", "person", "transition")
        }
        out = {}
        for call, connections in cfg.rest_calls:
            script = scripts_of[call]
            if cfg.rest_warmup_s:
                run_wrk(target.port, script, connections, cfg.rest_warmup_s, None)
            if "stepstream" in cfg.profile:  # one profile per call, the warm-up left out
                ext = {"flamegraph": "svg", "speedscope": "json"}.get(cfg.profile_format, "txt")
                output = cfg.results_dir / f"profile-rest-{call}{connections}-{database}.{ext}"
                profiler = Profiler(target.pid, output, cfg.profile_format)
                _log(f"profiling stepstream (pid {target.pid}) into {output}")
            try:
                out[f"{call}-{connections}"] = result = best_of(
                    cfg.rest_runs,
                    lambda s=script, c=connections: run_wrk(
                        target.port, s, c, cfg.rest_seconds, target.pid
                    ),
                )
            finally:
                if profiler is not None:
                    profiler.stop()
                    profiler = None
            _log(
                f"rest {database} {call} x{connections}: {result['per_s']}/s, "
                f"median {result['latency_ms']['median']} ms (errors {result['errors'] or 0})"
            )
        return out
    finally:
        target.stop()


def _measure_reference(cfg, scripts: Path) -> dict:
    target = BareUvicorn()
    try:
        if cfg.quiet_wait_s:
            wait_for_quiet(cfg.quiet_wait_s)
        target.start()
        script = lua_script(scripts, "health")
        out = {}
        for call, connections in cfg.rest_calls:
            if call != "health":
                continue
            if cfg.rest_warmup_s:
                run_wrk(target.port, script, connections, cfg.rest_warmup_s, None)
            out[f"health-{connections}"] = result = best_of(
                cfg.rest_runs,
                lambda c=connections: run_wrk(target.port, script, c, cfg.rest_seconds, target.pid),
            )
            _log(f"rest bare uvicorn health x{connections}: {result['per_s']}/s")
        return out
    finally:
        target.stop()


def rest(cfg) -> dict:
    if wrk_binary() is None:
        reason = "wrk is not installed (Debian: apt-get install wrk)"
        _log(f"rest skipped: {reason}")
        return {"skipped": reason}
    out: dict = {"stepstream": {}, "reference": {}}
    with tempfile.TemporaryDirectory(prefix="stepstream-wrk-") as scripts:
        scripts = Path(scripts)
        if "stepstream" in cfg.targets:
            for database in cfg.rest_databases:
                url = None
                if database == "postgresql":
                    problem = database_reachable(cfg.postgres_url)
                    if problem:
                        out["stepstream"][database] = {"skipped": problem}
                        _log(f"rest on PostgreSQL skipped: {problem}")
                        continue
                    url = cfg.postgres_url
                out["stepstream"][database] = _measure_stepstream(cfg, database, url, scripts)
        if "reference" in cfg.targets:
            out["reference"] = _measure_reference(cfg, scripts)
    out["wrk_threads"] = 2
    out["cores"] = os.cpu_count()
    return out


# -- the rows of results.md ------------------------------------------------------------

REST_TARGETS = {"transition": 500, "person": 2000}


def rest_rows(res: dict) -> list[dict]:
    from bench.report import row

    if "skipped" in res:
        return [row("REST (wrk)", f"skipped: {res['skipped']}", None)]
    rows = []
    reference = res.get("reference") or {}
    for database, s in (res.get("stepstream") or {}).items():
        scen = f"REST (wrk), {'PostgreSQL' if database == 'postgresql' else 'SQLite'}"
        if "skipped" in s:
            rows.append(row(scen, f"skipped: {s['skipped']}", None))
            continue
        pg = database == "postgresql"
        for key, result in s.items():
            call, connections = key.split("-")
            ref = reference.get(key) if call == "health" else None
            plural = "s" if connections != "1" else ""
            label = {
                "health": "`GET /health`",
                "person": "`GET /people/{key}`",
                "transition": "transitions (`POST .../transitions`)",
            }[call]
            target, met = "", None
            if connections == "16" and pg and call in REST_TARGETS:
                target = f">= {REST_TARGETS[call]:,}/s"
                met = result["per_s"] >= REST_TARGETS[call] and not result["errors"]
            elif connections == "16" and call == "health" and ref:
                target = ">= 0.5x ref"
                met = result["per_s"] >= 0.5 * ref["per_s"]
            rows.append(
                row(
                    scen,
                    f"{label} per s, {connections} connection{plural}",
                    result["per_s"],
                    ref["per_s"] if ref else None,
                    target,
                    met,
                    "bare uvicorn" if ref else "",
                )
            )
            ref_ms = ref["latency_ms"]["median"] if ref else None
            rows.append(
                row(
                    scen,
                    f"{label} median ms, {connections} connection{plural}",
                    result["latency_ms"]["median"],
                    ref_ms,
                    ref_note="bare uvicorn" if ref else "",
                )
            )
            if connections != "1":
                rows.append(
                    row(
                        scen,
                        f"{label} p99 ms, {connections} connection{plural}",
                        result["latency_ms"]["p99"],
                        ref["latency_ms"]["p99"] if ref else None,
                        ref_note="bare uvicorn" if ref else "",
                    )
                )
            if result["errors"]:
                rows.append(row(scen, f"{label}: errors", sum(result["errors"].values()), None))
    return rows
