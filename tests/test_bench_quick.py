"""The benchmark suite's smoke run (`python -m bench --quick`) works end to end.

A smoke test only: it checks that every scenario ran against Stepstream and
the reference (`many` against the durable reference too) and produced
numbers, never how fast anything was (this machine's speed, and whatever else
runs on it, are not the code's).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a benchmark run: about 40 s

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("fanout", "many", "engine", "capacity", "storm", "rest", "appearance")


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(400)
@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="runs in the embedded-default suite: the quick bench starts its own servers on "
    "SQLite whatever DATABASE_URL says, so a second run here would repeat it",
)
def test_quick_bench_reports_every_scenario(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").read_text().count("| fan-out") >= 1

    for name in SCENARIOS:
        assert name in results["scenarios"], name
        assert "error" not in results["scenarios"][name], results["scenarios"][name]
    fanout = results["scenarios"]["fanout"]
    for target in ("stepstream", "reference"):
        for n, row in fanout[target].items():
            assert row["burst"]["events_per_s"] > 0, (target, n)
            assert row["burst"]["lost_events"] == 0, (target, n)
            assert _number(row["steady"]["commit_to_receipt_ms"]["p99"]), (target, n)
    many = results["scenarios"]["many"]
    for target in ("stepstream", "reference", "durable"):
        assert many[target]["levels"], target
        assert _number(many[target]["highest_sustained_changes_per_s"]), target
        for level in many[target]["levels"]:
            assert level["lost_events"] == 0, (target, level)
            assert _number(level["server_cpu_ms_per_change"]), (target, level)
    assert len(many["durable"]["levels"]) == 1  # quick: the smallest level only
    many_rows = [r for r in results["rows"] if r["scenario"].startswith("many people")]
    assert any(_number(r["durable"]) and _number(r["durable_ratio"]) for r in many_rows)
    sqlite = results["scenarios"]["engine"]["stepstream"]["sqlite"]
    for key in ("rest-1", "rest-16", "ws-1", "ws-16"):
        assert sqlite[key]["per_s"] > 0, key
    assert sqlite["flow_starts"]["queries_per_start"] > 0
    assert results["scenarios"]["engine"]["reference"]["ping-16"]["per_s"] > 0
    capacity = results["scenarios"]["capacity"]
    for target in ("stepstream", "reference"):
        for row in capacity[target].values():
            assert row["held"] == row["connections"], target
            assert _number(row["kib_per_connection"]), target

    storm = results["scenarios"]["storm"]
    for target in ("stepstream", "reference"):
        side = storm[target]
        # every client came back after the SIGKILL and restart, and resumed exactly
        assert side["live_again"] == side["clients"], (target, side)
        assert side["resumed_ok"] == side["clients"], (target, side)
        assert _number(side["connect_subscribe_per_s"]), target
        assert _number(side["last_live_after_ready_s"]), target
    assert storm["stepstream"]["changes"]["down"] > 0  # written while no server ran
    rest = results["scenarios"]["rest"]  # wrk: skipped (not an error) where it is missing
    if "skipped" not in rest:
        sqlite_rest = rest["stepstream"]["sqlite"]
        for key in ("health-16", "health-1", "person-16", "person-1", "transition-16"):
            assert sqlite_rest[key]["per_s"] > 0 and not sqlite_rest[key]["errors"], key
        assert rest["reference"]["health-16"]["per_s"] > 0

    appearance = results["scenarios"]["appearance"]  # Chromium: skipped where it is missing
    if "skipped" not in appearance:
        assert appearance["page_errors"] == []
        for key in ("modal_request", "tooltip_request", "target_inserted", "modal_commit"):
            assert appearance[key]["n"] == appearance["rounds"], key
            assert _number(appearance[key]["p50"]) and appearance[key]["p50"] > 0, key

    rows = results["rows"]
    covered = {r["scenario"].split(",")[0].split(" (")[0] for r in rows}
    assert {"fan-out", "many people", "engine", "capacity", "reconnect storm"} <= covered, covered
    compared = [r for r in rows if r["ratio"] is not None]
    assert compared, "no Stepstream figure has a reference beside it"
    assert all(_number(r["stepstream"]) for r in compared)
