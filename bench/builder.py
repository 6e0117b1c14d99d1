"""Builder benchmark (docs/performance.md, "The builder"): how soon the builder page is
usable in Chromium, and what a condition check costs over REST.

    python -m bench.builder [--loads 10] [--checks 200] [--baseline PATH ...]

A real server (SQLite, `--demo`) per checkout, a staff user signed in. Page: from the
start of navigation to the demo's onboarding flow's step editors all drawn with their
previews and their handlers attached (interactive), and to the next frame (painted),
both read in the page from Chromium's own clock (`performance.now()`, noted by a
MutationObserver installed before the page's scripts), with the navigation's timing
beside them (`responseStart`: the server's answer; `domContentLoaded`: the modules
fetched and run); the same again with the browser's cache emptied before each load
(`page_interactive_cold_cache_ms`: a first visit); `wall_ms` adds Playwright's round
trips, which no user has. p50/p95 of N loads; target 500 ms. Checks: p50/p95 of
`POST /api/v1/conditions/check` round trips with a three-clause condition; target 50 ms.

`--baseline PATH` (a checkout of another commit: `git worktree add PATH COMMIT`) runs
that code's server too, each load and check alternating between the servers, so both
see the same machine. Prints one JSON object, keyed by checkout.
"""

import argparse
import json
import os
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
HERE = str(Path(__file__).resolve().parent.parent)
# Installed before the page's own scripts: notes Chromium's clock (from navigation start)
# when every step editor first has its preview, and at the next frame, painted.
WATCH = """
new MutationObserver((_, observer) => {
  const editors = [...document.querySelectorAll('[data-step-editor]')];
  if (!editors.length || !editors.every(e => e.querySelector('[data-preview] > *'))) return;
  observer.disconnect();
  window.__benchReady = performance.now();
  requestAnimationFrame(() => setTimeout(() => { window.__benchPainted = performance.now(); }));
}).observe(document, { childList: true, subtree: true });
"""
TIMING = """() => {
  const n = performance.getEntriesByType('navigation')[0];
  return [window.__benchReady, window.__benchPainted, n.responseStart,
          n.domContentLoadedEventEnd];
}"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)


def summary(values: list[float]) -> dict:
    return {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "all": [round(v) for v in values]}


def rotated(sides: list, i: int) -> list:
    return sides[i % len(sides) :] + sides[: i % len(sides)]


class Side:
    """One checkout's server, its REST client and a signed-in Chromium page."""

    def __init__(self, checkout: str, playwright, data: Path):
        self.checkout = checkout
        # the server runs that checkout's code: PYTHONPATH, from a directory holding none
        self.server = Server(data / "data", args=("--demo",), PYTHONPATH=checkout)
        self.server.start()
        _make_staff_user(self.server)
        keys = json.loads((data / "data" / "demo.json").read_text())
        self.rest = self.server.rest(keys["secret_key"])
        self.context = playwright.chromium.launch_persistent_context(
            str(data / "chromium"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS
        )
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.page.add_init_script(WATCH)
        self.cdp = self.context.new_cdp_session(self.page)
        sign_in(self.page, self.server)
        self.page.click("[data-environment=development][href$='/flows/']")
        self.page.wait_for_url("**/flows/")
        self.edit = self.page.url + "onboarding/edit/"
        self.load()  # the first load warms caches: left out
        self.html_bytes = len(self.page.content())  # tells the checkouts' pages apart
        self.ready: list[float] = []
        self.painted: list[float] = []
        self.cold_ready: list[float] = []
        self.server_ms: list[float] = []
        self.dcl: list[float] = []
        self.wall: list[float] = []
        self.checks: list[float] = []

    def load(self) -> tuple[float, float, float, float, float]:
        began = time.perf_counter()
        self.page.goto(self.edit, wait_until="commit")
        self.page.wait_for_function("() => window.__benchPainted")
        wall = (time.perf_counter() - began) * 1000
        return (*self.page.evaluate(TIMING), wall)

    def measure_cold_load(self) -> None:
        """With the browser's cache emptied first: every module and the CSS fetched again."""
        self.cdp.send("Network.clearBrowserCache")
        self.cold_ready.append(self.load()[0])

    def measure_load(self) -> None:
        ready, painted, response_start, dcl, wall = self.load()
        self.ready.append(ready)
        self.painted.append(painted)
        self.server_ms.append(response_start)
        self.dcl.append(dcl)
        self.wall.append(wall)

    def measure_check(self) -> None:
        began = time.perf_counter()
        answer = self.rest.post("/conditions/check", json={"condition": CONDITION})
        self.checks.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, answer.text

    def result(self) -> dict:
        return {
            "page_interactive_ms": summary(self.ready),
            "page_painted_ms": summary(self.painted),
            "page_interactive_cold_cache_ms": summary(self.cold_ready),
            "response_start_ms": summary(self.server_ms),
            "dom_content_loaded_ms": summary(self.dcl),
            "wall_ms": summary(self.wall),
            "conditions_check_ms": {
                "p50": pct(self.checks, 0.5),
                "p95": pct(self.checks, 0.95),
                "mean": round(statistics.fmean(self.checks), 1),
            },
            "html_bytes": self.html_bytes,
        }

    def close(self) -> None:
        self.context.close()
        self.server.stop()


def run(loads: int, checks: int, baselines: list[str]) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-builder-"))
    os.chdir(root)  # `python -m stepstream` puts its directory first on the path: none here
    sides: list[Side] = []
    with sync_api.sync_playwright() as playwright:
        try:
            for i, checkout in enumerate([HERE, *baselines]):
                sides.append(Side(str(Path(checkout).resolve()), playwright, root / str(i)))
            for i in range(checks):
                for side in rotated(sides, i):
                    side.measure_check()
            for i in range(loads):  # each round in another order: none is always first
                for side in rotated(sides, i):
                    side.measure_load()
                for side in rotated(sides, i):
                    side.measure_cold_load()
            results = {side.checkout: side.result() for side in sides}
        finally:
            for side in sides:
                side.close()
    return {
        **results,
        "page_target_ms": 500,
        "conditions_check_target_ms": 50,
        "loads": loads,
        "checks": checks,
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--checks", type=int, default=200)
    parser.add_argument("--baseline", action="append", default=[], metavar="PATH")
    args = parser.parse_args()
    print(json.dumps(run(args.loads, args.checks, args.baseline)))


if __name__ == "__main__":
    main()
