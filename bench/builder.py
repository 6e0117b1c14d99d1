"""Builder benchmark (docs/dashboard.md, "The builder"): how soon the builder page is
usable in Chromium, and what a condition check costs over REST.

    python -m bench.builder [--loads 10] [--checks 200]

A real server (SQLite, `--demo`), a staff user signed in. Page: time from navigation
to the demo's onboarding flow's step editors drawn with their previews (the page is
interactive then), p50/p95 of N loads; targets 500 ms. Checks: p50/p95 of `POST
/api/v1/conditions/check` round trips with a three-clause condition; target 50 ms.
Prints one JSON object.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from playwright import sync_api

from stepstream.testing.servers import Server
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS
from tests.test_dashboard_authoring_browser import sign_in
from tests.test_dashboard_browser import _make_staff_user

CONDITION = 'person.plan == "pro" && size(person) > 0 && has(events.signed_up)'


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)


def run(loads: int, checks: int) -> dict:
    data = Path(tempfile.mkdtemp(prefix="bench-builder-"))
    server = Server(data / "data", args=("--demo",))
    server.start()
    try:
        _make_staff_user(server)
        keys = json.loads((data / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        check_times = []
        for _ in range(checks):
            began = time.perf_counter()
            answer = rest.post("/conditions/check", json={"condition": CONDITION})
            check_times.append(time.perf_counter() - began)
            assert answer.status_code == 200, answer.text
        page_times = []
        with sync_api.sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(data / "chromium"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS
            )
            page = context.pages[0] if context.pages else context.new_page()
            sign_in(page, server)
            page.click("[data-environment=development][href$='/flows/']")
            page.wait_for_url("**/flows/")
            edit = page.url + "onboarding/edit/"
            for _ in range(loads + 1):  # the first load warms caches: left out
                began = time.perf_counter()
                page.goto(edit)
                page.wait_for_function(
                    "document.querySelector('[data-step-editor] [data-preview] > *') !== null"
                )
                page_times.append(time.perf_counter() - began)
            context.close()
        page_times = page_times[1:]
        return {
            "page_interactive_ms": {"p50": pct(page_times, 0.5), "p95": pct(page_times, 0.95)},
            "page_target_ms": 500,
            "conditions_check_ms": {
                "p50": pct(check_times, 0.5),
                "p95": pct(check_times, 0.95),
                "mean": round(statistics.fmean(check_times) * 1000, 1),
            },
            "conditions_check_target_ms": 50,
            "loads": loads,
            "checks": checks,
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--checks", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(run(args.loads, args.checks)))


if __name__ == "__main__":
    main()
