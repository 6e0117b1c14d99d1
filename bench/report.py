"""Turns the scenarios' raw results into the table (results.md), results.json and the plot."""

import json
import math
from pathlib import Path

from bench.appearance import appearance_rows  # imports `row` from here when called
from bench.rest import rest_rows  # it imports `row` from here when called: no import cycle

# The seed project's engine on the same PostgreSQL (issue 5): the engine's "reference".
SEED = {
    "transitions_1": 120.0,
    "transitions_16": 160.0,
    "queries_per_transition": 10,
    "queries_per_start": 89,
    "start_ms": 70.0,
}
TARGET_FANOUT_N = "1000"


def _num(value):
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ratio(s, r):
    s, r = _num(s), _num(r)
    if s is None or r is None or r == 0:
        return None
    return round(s / r, 3)


def row(scenario, metric, s, r=None, target="", met=None, ref_note="", d=None):
    """One line of the table; `d` is the durable reference's figure (the `many` scenario)."""
    return {
        "scenario": scenario,
        "metric": metric,
        "stepstream": s,
        "reference": r,
        "reference_note": ref_note,
        "ratio": _ratio(s, r),
        "durable": d,
        "durable_ratio": _ratio(s, d),
        "target": target,
        "met": met,
    }


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def fanout_rows(res: dict) -> list[dict]:
    s_all, r_all = res.get("stepstream", {}), res.get("reference", {})
    rows = []
    for n in sorted(set(s_all) | set(r_all), key=int):
        s, r = s_all.get(n, {}), r_all.get(n, {})
        scen = f"fan-out, N={n}"
        burst = _get(s, "burst", "changes") or _get(r, "burst", "changes")
        s_rate, r_rate = _get(s, "burst", "events_per_s"), _get(r, "burst", "events_per_s")
        s_lost = _lost(s)
        target, met = "", None
        if n == TARGET_FANOUT_N:
            target = ">= 0.5x ref, none lost"
            ratio = _ratio(s_rate, r_rate)
            met = ratio is not None and ratio >= 0.5 and s_lost == 0
        rows.append(
            row(scen, f"events/s delivered (burst of {burst} changes)", s_rate, r_rate, target, met)
        )
        rate = _get(s, "steady", "changes_per_s") or _get(r, "steady", "changes_per_s")
        for key, label in (("median", "median"), ("p99", "p99"), ("p99_9", "p99.9")):
            sv = _get(s, "steady", "commit_to_receipt_ms", key)
            rv = _get(r, "steady", "commit_to_receipt_ms", key)
            if sv is None and rv is None:
                continue
            target, met = "", None
            if n == TARGET_FANOUT_N and key == "p99":
                target = "<= 2x ref"
                ratio = _ratio(sv, rv)
                met = ratio is not None and ratio <= 2
            rows.append(
                row(scen, f"commit-to-receipt {label} ms ({rate:g} changes/s)", sv, rv, target, met)
            )
        rows.append(
            row(
                scen,
                f"trigger-to-receipt p99 ms ({rate:g} changes/s)",
                _get(s, "steady", "trigger_to_receipt_ms", "p99"),
                _get(r, "steady", "trigger_to_receipt_ms", "p99"),
            )
        )
        rows.append(row(scen, "events lost", s_lost, _lost(r), "0", s_lost == 0 if s else None))
    return rows


def _lost(side: dict):
    if not side:
        return None
    steady = _get(side, "steady", "expected_events") - _get(side, "steady", "received_events")
    return steady + _get(side, "burst", "lost_events") + side.get("gaps", 0)


def many_rows(res: dict) -> list[dict]:
    """Stepstream beside the bare reference and the durable one (issue 29)."""
    s, r, d = res.get("stepstream"), res.get("reference"), res.get("durable")
    people = _get(s, "people") or _get(r, "people") or _get(d, "people")
    scen = f"many people ({people}, one subscriber each)"
    s_best = _get(s, "highest_sustained_changes_per_s")
    d_best = _get(d, "highest_sustained_changes_per_s")
    ratio = _ratio(s_best, d_best)
    # against a durable figure that is only a floor (its ladder never failed), no verdict
    judged = ratio is not None and _get(d, "ceiling_reached") is not False
    rows = [
        row(
            scen,
            "highest sustained changes/s (end-to-end p99 <= 100 ms, none lost)",
            s_best,
            _get(r, "highest_sustained_changes_per_s"),
            ">= 0.5x durable" if s and d else "",
            ratio >= 0.5 if judged else None,
            d=d_best,
        )
    ]
    sides = [side for side in (s, r, d) if side]

    def sustained(side) -> dict:
        levels = _get(side, "levels") or []
        return {lv["offered_changes_per_s"]: lv for lv in levels if lv["sustained"]}

    def at(side, rate, *path):
        return _get(sustained(side).get(rate), *path) if side else None

    rows.append(
        row(
            scen,
            "server CPU ms per change, at its highest sustained rate",
            at(s, s_best, "server_cpu_ms_per_change"),
            at(r, _get(r, "highest_sustained_changes_per_s"), "server_cpu_ms_per_change"),
            d=at(d, d_best, "server_cpu_ms_per_change"),
        )
    )
    # the rest compared at the highest rate every server sustained
    common = set.intersection(*(set(sustained(side)) for side in sides)) if sides else set()
    if common:
        rate = max(common)
        metrics = [
            ("server_cpu_ms_per_change",),
            *(
                (kind, q)
                for kind in ("commit_to_receipt_ms", "trigger_to_receipt_ms")
                for q in ("median", "p99")
            ),
        ]
        labels = {
            "server_cpu_ms_per_change": "server CPU ms per change",
            "commit_to_receipt_ms": "commit-to-receipt",
            "trigger_to_receipt_ms": "trigger-to-receipt",
        }
        for path in metrics:
            label = " ".join([labels[path[0]], *path[1:]])
            if path[0] != "server_cpu_ms_per_change":
                label += " ms"
            rows.append(
                row(
                    scen,
                    f"{label} at {rate:g} changes/s",
                    at(s, rate, *path),
                    at(r, rate, *path),
                    d=at(d, rate, *path),
                )
            )

    def lost(side):
        if not side:
            return None
        return sum(lv["lost_events"] for lv in side["levels"]) + side.get("gaps", 0)

    s_lost = lost(s)
    rows.append(
        row(scen, "events lost", s_lost, lost(r), "0", s_lost == 0 if s else None, d=lost(d))
    )
    return rows


def engine_rows(res: dict) -> list[dict]:
    rows = []
    s_all = res.get("stepstream", {})
    for database, s in s_all.items():
        scen = f"engine, {'PostgreSQL' if database == 'postgresql' else 'SQLite'}"
        if "skipped" in s:
            rows.append(row(scen, f"skipped: {s['skipped']}", None))
            continue
        pg = database == "postgresql"
        for key in sorted(k for k in s if k.split("-")[0] in ("rest", "ws")):
            mode, callers = key.split("-")
            value = s[key]["per_s"]
            ref = SEED[f"transitions_{callers}"] if pg and callers in ("1", "16") else None
            target, met = "", None
            if pg and callers == "16":
                target = ">= 500/s"
                met = value >= 500
            label = "REST" if mode == "rest" else "WebSocket `transition`"
            rows.append(
                row(
                    scen,
                    f"transitions/s, {label}, {callers} caller{'s' if callers != '1' else ''}",
                    value,
                    ref,
                    target,
                    met,
                    "seed" if ref else "",
                )
            )
        starts = s.get("flow_starts") or {}
        if starts:
            rows.append(
                row(
                    scen,
                    "flow start, 21 steps: ms (median, in-process)",
                    starts["start_ms_median"],
                    SEED["start_ms"] if pg else None,
                    "<= 7 ms (10x seed)",
                    starts["start_ms_median"] <= SEED["start_ms"] / 10,
                    "seed" if pg else "",
                )
            )
            rows.append(
                row(
                    scen,
                    "queries per flow start",
                    starts["queries_per_start"],
                    SEED["queries_per_start"] if pg else None,
                    ref_note="seed" if pg else "",
                )
            )
            rows.append(
                row(
                    scen,
                    "queries per transition",
                    starts["queries_per_transition"],
                    SEED["queries_per_transition"] if pg else None,
                    ref_note="seed" if pg else "",
                )
            )
    s_ping = next((s["ping-16"] for s in s_all.values() if "ping-16" in s), None)
    r_ping = _get(res, "reference", "ping-16")
    if s_ping or r_ping:
        rows.append(
            row(
                "WebSocket request round trip",
                "`ping` round trips/s, 16 connections",
                _get(s_ping, "per_s"),
                _get(r_ping, "per_s"),
            )
        )
    return rows


def capacity_rows(res: dict) -> list[dict]:
    s_all, r_all = res.get("stepstream", {}), res.get("reference", {})
    rows = []
    for n in sorted(set(s_all) | set(r_all), key=int):
        s, r = s_all.get(n, {}), r_all.get(n, {})
        scen = f"capacity, {int(n):,} idle subscribed connections"
        big = int(n) >= 10000
        held = s.get("held")
        rows.append(
            row(
                scen,
                "connections held",
                held,
                r.get("held"),
                ">= 10,000" if big else "",
                (held is not None and held >= 10000) if big else None,
            )
        )
        kib = s.get("kib_per_connection")
        rows.append(
            row(
                scen,
                "resident KiB per connection",
                kib,
                r.get("kib_per_connection"),
                "<= 20 KiB" if big else "",
                (kib is not None and kib <= 20) if big else None,
            )
        )
        rows.append(
            row(
                scen,
                "connect + subscribe per s",
                s.get("connect_subscribe_per_s"),
                r.get("connect_subscribe_per_s"),
            )
        )
    return rows


def storm_rows(res: dict) -> list[dict]:
    """The reconnect storm (bench/storm.py): targets of issue 15."""
    s, r = res.get("stepstream", {}), res.get("reference", {})
    n = s.get("clients") or r.get("clients") or 0
    scen = f"reconnect storm, {int(n):,} subscribed clients, SIGKILL + restart"
    big = n >= 10000
    rate, r_rate = s.get("connect_subscribe_per_s"), r.get("connect_subscribe_per_s")
    last, r_last = s.get("last_live_after_ready_s"), r.get("last_live_after_ready_s")
    ratio = _ratio(rate, r_rate)
    late = _ratio(last, r_last)
    resumed = s.get("resumed_ok")
    wrong = None
    if s:
        wrong = sum(s.get(k, 0) for k in ("lost_events", "duplicate_events", "out_of_order"))
    return [
        row(
            scen,
            "connect + subscribe (flow and step, since_seq) per s",
            rate,
            r_rate,
            ">= 0.5x ref" if big else "",
            (ratio is not None and ratio >= 0.5) if big else None,
        ),
        row(
            scen,
            "s from restart (listening) until the last client is live",
            last,
            r_last,
            "<= 2x ref" if big else "",
            (late is not None and late <= 2) if big else None,
        ),
        row(
            scen,
            "clients live again within the deadline (120 s from ready)",
            s.get("live_again"),
            r.get("live_again"),
            f"all {n:,}" if n else "",
            (s.get("live_again") == n) if s else None,
        ),
        row(
            scen,
            "s from the kill until the last client is live",
            s.get("last_live_after_kill_s"),
            r.get("last_live_after_kill_s"),
        ),
        row(
            scen,
            "server CPU ms per connect + subscribe",
            s.get("server_cpu_ms_per_connect"),
            r.get("server_cpu_ms_per_connect"),
        ),
        row(
            scen,
            "server CPU ms per resumed client (the storm)",
            s.get("server_cpu_ms_per_resume"),
            r.get("server_cpu_ms_per_resume"),
        ),
        row(
            scen,
            "clients resumed exactly (nothing lost, twice, or out of order)",
            resumed,
            r.get("resumed_ok"),
            f"all {n:,}" if n else "",
            (resumed == n and wrong == 0) if s else None,
        ),
    ]


ROWS = {
    "fanout": fanout_rows,
    "many": many_rows,
    "engine": engine_rows,
    "capacity": capacity_rows,
    "storm": storm_rows,
    "rest": rest_rows,
    "appearance": appearance_rows,
}


def build_rows(scenarios: dict) -> list[dict]:
    rows = []
    for name, maker in ROWS.items():
        if name in scenarios and "error" not in scenarios[name]:
            rows += maker(scenarios[name])
    return rows


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "| scenario | metric | Stepstream | reference | ratio | durable reference | ratio "
        "| target | met |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results["rows"]:
        ref = _fmt(r["reference"])
        if r["reference_note"] and r["reference"] is not None:
            ref += f" ({r['reference_note']})"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "–"
        d_ratio = f"{r['durable_ratio']:.2f}x" if r.get("durable_ratio") is not None else "–"
        met = "" if r["met"] is None else ("**yes**" if r["met"] else "**no**")
        lines.append(
            f"| {r['scenario']} | {r['metric']} | {_fmt(r['stepstream'])} | {ref} | {ratio} "
            f"| {_fmt(r.get('durable'))} | {d_ratio} | {r['target']} | {met} |"
        )
    errors = [f"- {name}: {s['error']}" for name, s in results["scenarios"].items() if "error" in s]
    head = (
        f"Run {meta['started']} ({meta['mode']}, {meta['seconds']} s) on {meta['machine']}, "
        f"commit {meta['commit']}. Ratio = Stepstream / reference (for latency and memory, "
        "above 1 is worse). Reference: the bare `websockets` server of bench/reference_server.py "
        "in the same run; for the engine rows on PostgreSQL, the seed project's figures from "
        "issue 5 (marked seed). Durable reference (many people): the same server with "
        "`--durable`, every change committed to SQLite (WAL, group commit) before it is "
        "answered and sent, in the same run."
    )
    others = meta.get("others_cpu_percent", {})
    if others:
        per = ", ".join(f"{k} {v:.0f}%" for k, v in others.items() if k != "run")
        head += (
            f" Other work on the machine during the run (not this bench): "
            f"{others.get('run', 0):.0f}% of one core on average ({per})."
        )
        if others.get("run", 0) > 20:
            head += " **The machine was shared: treat absolute figures as pessimistic.**"
    parts = [head, "", *lines]
    if errors:
        parts += ["", "Scenarios that failed:", *errors]
    return "\n".join(parts) + "\n"


def plot(results: dict, path: Path) -> str | None:
    """latency.png: latency against load. Returns a reason when it cannot be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    scen = results["scenarios"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"stepstream": "tab:blue", "reference": "tab:gray", "durable": "tab:green"}
    fan = scen.get("fanout", {})
    for kind in ("stepstream", "reference"):
        data = fan.get(kind) or {}
        ns = sorted(data, key=int)
        if not ns:
            continue
        xs = [int(n) for n in ns]
        for q, style in (("median", "--"), ("p99", "-")):
            ys = [data[n]["steady"]["commit_to_receipt_ms"][q] for n in ns]
            ax1.plot(xs, ys, style, marker="o", color=colors[kind], label=f"{kind} {q}")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("subscribers of one person")
    ax1.set_ylabel("commit-to-receipt latency (ms)")
    ax1.set_title("Fan-out at 2 changes/s")
    ax1.grid(True, which="both", alpha=0.3)
    if ax1.lines:
        ax1.legend(fontsize=8)
    many = scen.get("many", {})
    for kind in ("stepstream", "reference", "durable"):
        levels = _get(many, kind, "levels") or []
        if not levels:
            continue
        xs = [lv["offered_changes_per_s"] for lv in levels]
        for key, style, label in (
            ("trigger_to_receipt_ms", "-", "end-to-end p99"),
            ("commit_to_receipt_ms", ":", "commit-to-receipt p99"),
        ):
            ys = [lv[key]["p99"] for lv in levels]
            ax2.plot(xs, ys, style, marker="o", color=colors[kind], label=f"{kind} {label}")
    ax2.axhline(100, color="tab:red", linewidth=0.8, label="100 ms")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("offered changes/s, spread over people")
    ax2.set_ylabel("p99 latency (ms)")
    people = _get(many, "stepstream", "people") or _get(many, "reference", "people") or ""
    ax2.set_title(f"Many people ({people}, one subscriber each)")
    ax2.grid(True, which="both", alpha=0.3)
    if len(ax2.lines) > 1:
        ax2.legend(fontsize=8)
    fig.suptitle(
        f"Stepstream vs the bare and the durable references, {results['meta']['started']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["rows"] = build_rows(results["scenarios"])
    (out / "results.md").write_text(markdown(results))
    problem = plot(results, out / "latency.png")
    results["meta"]["plot"] = problem or "latency.png"
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
