"""How soon content appears in Chromium (issue 25): `client.render()` on a real page.

    python -m bench appearance [--quick] [--db postgresql]

A real `stepstream serve` (SQLite, or PostgreSQL with `--db postgresql`) and a
product page on another origin (a small HTTP server of this bench) that imports
the SDK from the server, connects as one person and calls `render()`. The page's
origin also forwards `POST /move/<transition>` to the REST API (a product's own
backend moving the person: the page never holds the secret key). Each round:

* **step activated, target present**: the page notes `performance.now()`, asks
  for the transition, and waits until the new step's `<stepstream-content>` is
  attached and laid out (a MutationObserver on the page and on the piece's shadow
  root; a box with a size, and for a tooltip the position Floating UI gave it),
  then for the next animation frame (the browser paints it then). Twice a round:
  a modal (from a step without content), then a tooltip whose target is on the
  page (which also takes the modal away).
* **target appearing**: the person is moved to a tooltip step whose target is
  not on the page; once the renderer waits for it (its piece made, not shown),
  the page notes the time and inserts the target, and waits as above.

Reported in ms, p50/p95/max over the rounds: from the request (the whole way:
the proxy, the REST call, the commit, the push, the SDK's 10 ms burst window,
the renderer), from the commit (the event's `occurred_at`, the server's clock,
against the page's `performance.timeOrigin + now()`: one machine, one clock),
and from the event's arrival in the page; and from the target's insertion. The
first piece of a page (its `get_content` asked then) is reported apart; the
target is 200 ms (CONTRACT.md, "Rendering"). Stepstream only: the reference
server renders nothing.
"""

import http.server
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from bench.scenarios import log
from bench.stats import quantile
from bench.targets import Stepstream, wait_for_quiet

TARGET_MS = 200
PERSON = "viewer0"  # prepare([("viewer", 1)]) makes it
CHROMIUM = "/usr/bin/chromium"

FLOW = {
    "identifier": "appear",
    "name": "Appearance bench",
    "steps": [
        {"identifier": "start"},  # a start step has no incoming transition: on to rest at once
        {"identifier": "rest"},
        {
            "identifier": "modal",
            "content": {
                "type": "modal",
                "title": "Welcome to Acme",
                "body": "Three quick things and your team is **tracking tasks**.",
                "buttons": [{"label": "Show me", "transition": "to-tip"}],
            },
        },
        {
            "identifier": "tip",
            "content": {
                "type": "tooltip",
                "title": "Save often",
                "body": "Click **Save task** to keep your work.",
                "target": {"selector": "#save"},
            },
        },
        {
            "identifier": "late",
            "content": {
                "type": "tooltip",
                "title": "Reports",
                "body": "Your week at a glance.",
                "target": {"selector": "#late", "wait_ms": 60000},
            },
        },
    ],
    "transitions": [
        {"identifier": "begin", "from": "start", "to": "rest", "type": "automatic"},
        {"identifier": "to-modal", "from": "rest", "to": "modal"},
        {"identifier": "to-tip", "from": "modal", "to": "tip"},
        {"identifier": "to-rest", "from": "tip", "to": "rest"},
        {"identifier": "to-late", "from": "rest", "to": "late"},
        {"identifier": "late-rest", "from": "late", "to": "rest"},
    ],
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme tasks</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f5f6f8; }
  main { padding: 24px; } .card { background: white; padding: 18px; margin-bottom: 16px; }
</style></head><body>
<main>
  <div class="card"><h2>Your tasks</h2><button id="save">Save task</button></div>
  <div class="card" id="slot">Reports are coming.</div>
</main>
<script type="module">
  const piece = (step) => document.querySelector(`stepstream-content[data-step="${step}"]`);

  // resolves with {laidOut, frame} (performance.now()) once `step`'s content is shown in place
  function shown(step) {
    return new Promise((resolve) => {
      let done = false;
      let inner = null;
      const check = () => {
        if (done) return;
        const host = piece(step);
        if (!host?.isConnected || !host.shadowRoot) return;
        if (!inner) {
          inner = new MutationObserver(check);
          inner.observe(host.shadowRoot, { subtree: true, childList: true, attributes: true });
        }
        const box = host.shadowRoot.querySelector(".box");
        if (!box || (box.classList.contains("floating") && !box.dataset.placement)) return;
        const rect = box.getBoundingClientRect();
        if (!rect.width || !rect.height) return;
        done = true;
        const laidOut = performance.now();
        outer.disconnect();
        inner.disconnect();
        requestAnimationFrame(() => resolve({ laidOut, frame: performance.now() }));
      };
      const outer = new MutationObserver(check);
      outer.observe(document.body, { childList: true, subtree: true });
      check();
    });
  }

  // moves the person with `transition` and times `step`'s content appearing
  window.measure = async (transition, step) => {
    let event = null;
    let committed = null;
    const off = window.client.onEvent((e) => {
      if (event === null && e.entity === "step" && e.identifier === step && e.state === "active") {
        event = performance.now();
        committed = Date.parse(e.occurred_at) - performance.timeOrigin; // same clock, ms
      }
    });
    const visible = shown(step);
    const t0 = performance.now();
    const answer = await fetch(`/move/${transition}`, { method: "POST" });
    if (!answer.ok) throw new Error(`move ${transition}: ${answer.status} ${await answer.text()}`);
    const { laidOut, frame } = await visible;
    off();
    return { request: frame - t0, commit: frame - committed, event: frame - event,
             laid_out: laidOut - t0 };
  };

  // moves the person with `transition` and waits until no content of `step` is shown
  window.leave = async (transition, step) => {
    const answer = await fetch(`/move/${transition}`, { method: "POST" });
    if (!answer.ok) throw new Error(`move ${transition}: ${answer.status} ${await answer.text()}`);
    while ([...window.renderer.pieces.keys()].some((k) => k.endsWith(`/${step}`)) || piece(step)) {
      await new Promise((r) => setTimeout(r, 5));
    }
  };

  // the target of `step` comes now: times its tooltip appearing
  window.insertTarget = async (step) => {
    while (![...window.renderer.pieces.keys()].some((k) => k.endsWith(`/${step}`))) {
      await new Promise((r) => setTimeout(r, 5)); // the renderer waits for it
    }
    const visible = shown(step);
    const t0 = performance.now();
    const target = document.createElement("button");
    target.id = "late";
    target.textContent = "Reports";
    document.getElementById("slot").append(target);
    const { laidOut, frame } = await visible;
    return { inserted: frame - t0, laid_out: laidOut - t0 };
  };

  window.removeTarget = () => document.getElementById("late")?.remove();

  window.boot = async ({ sdk, url, key, personKey }) => {
    const stepstream = (await import(sdk)).default;
    window.client = stepstream.connect({ url, key, personKey, pages: false });
    window.renderer = await window.client.render();
    await window.renderer.ready;
    return window.client.status;
  };
</script>
</body></html>
"""


def _handler(rest_url: str, secret: str, directory: str):
    import httpx

    client = httpx.Client(
        base_url=rest_url, headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )
    path = f"/people/{PERSON}/flows/{FLOW['identifier']}/transitions"

    class Handler(http.server.SimpleHTTPRequestHandler):
        """The product's origin: its page, and its backend moving the person over REST."""

        protocol_version = "HTTP/1.1"  # keep-alive: the page's fetches reuse one connection

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

        def do_POST(self):  # noqa: N802 - http.server's name
            name = self.path.removeprefix("/move/")
            answer = client.post(path, json={"transition": name})
            body = answer.content
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

    return Handler, client


def _summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(quantile(ordered, 0.5), 1),
        "p95": round(quantile(ordered, 0.95), 1),
        "max": round(ordered[-1], 1),
    }


def _measure(target: Stepstream, rounds: int) -> dict:
    from playwright import sync_api

    from stepstream.testing.servers import free_port

    rest_url = f"http://127.0.0.1:{target.port}/api/v1"
    import httpx

    with httpx.Client(
        base_url=rest_url, headers={"Authorization": f"Bearer {target.secret}"}, timeout=10
    ) as rest:
        published = rest.post("/flows", json=FLOW)
        assert published.status_code == 201, published.text
        started = rest.post(f"/people/{PERSON}/flows", json={"flow": FLOW["identifier"]})
        assert started.status_code == 201, started.text
    site = Path(tempfile.mkdtemp(prefix="bench-appearance-"))
    (site / "index.html").write_text(PAGE)
    handler, proxy_client = _handler(rest_url, target.secret, str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    samples: dict[str, list[float]] = {
        "modal_request": [],
        "modal_commit": [],
        "modal_event": [],
        "tooltip_request": [],
        "tooltip_commit": [],
        "tooltip_event": [],
        "target_inserted": [],
    }
    errors: list[str] = []
    try:
        with sync_api.sync_playwright() as playwright:
            from tests.test_browser import CHROMIUM_FLAGS

            context = playwright.chromium.launch_persistent_context(
                str(site / "chromium-profile"),
                executable_path=CHROMIUM,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 860},
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(30_000)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
                page.wait_for_function("() => typeof window.boot === 'function'")
                args = {
                    "sdk": f"http://127.0.0.1:{target.port}/static/stepstream.js",
                    "url": f"http://127.0.0.1:{target.port}",
                    "key": target.key,
                    "personKey": PERSON,
                }
                booted = page.evaluate("a => window.boot(a)", args)
                assert booted == "live", booted
                # the page's first piece: the content is asked for then (get_content)
                first = page.evaluate("window.measure('to-modal', 'modal')")
                page.evaluate("window.leave('to-tip', 'modal')")
                page.evaluate("window.leave('to-rest', 'tip')")
                for _ in range(rounds):
                    modal = page.evaluate("window.measure('to-modal', 'modal')")
                    tooltip = page.evaluate("window.measure('to-tip', 'tip')")
                    page.evaluate("window.leave('to-rest', 'tip')")
                    page.evaluate("window.leave('to-late', 'rest')")
                    late = page.evaluate("window.insertTarget('late')")
                    page.evaluate("window.leave('late-rest', 'late')")
                    page.evaluate("window.removeTarget()")
                    for kind, row in (("modal", modal), ("tooltip", tooltip)):
                        for clock in ("request", "commit", "event"):
                            samples[f"{kind}_{clock}"].append(row[clock])
                    samples["target_inserted"].append(late["inserted"])
            finally:
                context.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        proxy_client.close()
    out = {name: _summary(values) for name, values in samples.items()}
    out["first_piece_ms"] = {k: round(v, 1) for k, v in first.items()}
    out["rounds"] = rounds
    out["page_errors"] = errors
    out["database"] = target.database
    out["target_ms"] = TARGET_MS
    return out


def appearance(cfg) -> dict:
    """The scenario: one Stepstream server (cfg.database_url: the delivery scenarios' database)."""
    if "stepstream" not in cfg.targets:
        return {"skipped": "Stepstream only (the reference renders nothing)"}
    if not os.path.exists(CHROMIUM):
        return {"skipped": f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"}
    try:
        import playwright  # noqa: F401
    except ImportError:
        return {"skipped": "Playwright is not installed (pip install -e '.[test]')"}
    target = Stepstream(cfg.database_url, cfg.server_env, cfg.workers)
    if cfg.database_url:
        from bench.targets import reset_bench_database

        reset_bench_database(cfg.database_url)
    try:
        target.prepare([("viewer", 1)], start_loop=False)
        if cfg.quiet_wait_s:
            load = wait_for_quiet(cfg.quiet_wait_s)
            log(f"appearance: other work on the machine uses {load:.0f}% of a core")
        target.start()
        began = time.monotonic()
        result = _measure(target, cfg.appearance_rounds)
        log(
            f"appearance: {cfg.appearance_rounds} rounds in {time.monotonic() - began:.1f} s, "
            f"modal p50 {result['modal_request']['p50']} ms, target inserted p50 "
            f"{result['target_inserted']['p50']} ms"
        )
        return result
    finally:
        target.stop()


def appearance_rows(res: dict) -> list[dict]:
    from bench.report import row

    if "skipped" in res:
        return [row("content appearance (Chromium)", f"skipped: {res['skipped']}", None)]
    scen = (
        f"content appearance (Chromium, {res['rounds']} rounds, "
        f"{'PostgreSQL' if res['database'] == 'postgresql' else 'SQLite'})"
    )
    rows = []
    labels = {
        "modal_request": "ms to a modal shown, from the REST transition's request",
        "tooltip_request": "ms to a tooltip (target present) shown, from the request",
        "target_inserted": "ms to a tooltip shown, from its target's insertion",
        "modal_commit": "ms to a modal shown, from the commit (occurred_at)",
        "modal_event": "ms to a modal shown, from the event's arrival in the page",
    }
    for key, label in labels.items():
        s = res[key]
        checked = key in ("modal_request", "tooltip_request", "target_inserted")
        for q in ("p50", "p95", "max"):
            target = f"<= {TARGET_MS} ms" if checked and q == "max" else ""  # every time
            met = (s[q] <= TARGET_MS) if target else None
            rows.append(row(scen, f"{label}, {q}", s[q], target=target, met=met))
    return rows


def main() -> None:
    import argparse

    from bench.scenarios import Config

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--database-url", help="PostgreSQL (a database the bench owns)")
    args = parser.parse_args()
    cfg = Config(database_url=args.database_url, targets=("stepstream",))
    cfg.appearance_rounds = args.rounds
    print(json.dumps(appearance(cfg), indent=2))


if __name__ == "__main__":
    main()
