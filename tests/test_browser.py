"""The demo page in a real browser (Debian's Chromium driven by Playwright).

One story, as a person would live it: open /demo, click through the
onboarding, see a change made through the REST API appear without a reload,
then the server is SIGKILLed, a change is made while it is down, the server
comes back on the same port with the same data, and the page picks up by
itself with every change shown once and no gap in the event panel.
Screenshots of each stage go to test-artifacts/browser/.
"""

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import jwt
import pytest

from stepstream.testing.servers import Server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
TIMEOUT_MS = 20_000

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run installs it)",
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'"
)


@pytest.fixture
def browser_page(tmp_path):
    """A page in a fresh headless Chromium profile; uncaught page errors are collected."""
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 860},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            yield page
        finally:
            context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, animations="disabled")


def panel_seqs(page) -> list[int]:
    return [
        int(s)
        for s in page.eval_on_selector_all("#events li", "els => els.map(e => e.dataset.seq)")
    ]


def wait_panel_up_to(page, last: int) -> list[int]:
    page.wait_for_function(
        "last => [...document.querySelectorAll('#events li')]"
        ".some(e => Number(e.dataset.seq) >= last)",
        arg=last,
    )
    return panel_seqs(page)


def in_another_process(server: Server, secret_key: str, body: str) -> None:
    """A change by a separate process writing the database (an admin script, say)."""
    server.shell(
        "from stepstream import engine\nfrom stepstream.trust import tenants\n"
        f"env = tenants.environment_for_key({secret_key!r}, 'secret')\n" + body
    )


def test_demo_page_live_updates_and_resumes_after_a_server_kill(tmp_path, browser_page):
    page = browser_page
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        assert f"{server.url}/demo" in server.log()  # `serve --demo` prints the URL to open
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        events_url = "/people/demo-user/events"
        transitions_url = "/people/demo-user/flows/onboarding/transitions"

        # 1. the page opens live, from the person's state: the welcome card, an idle checklist
        page.goto(f"{server.url}/demo")
        page.wait_for_selector("#status[data-status=live]")
        page.evaluate("window.notReloaded = true")
        assert page.is_visible("#welcome-card")
        for step in ("create-task", "invite", "due-date"):
            assert page.get_attribute(f"#step-{step}", "data-state") == "inactive"
            assert page.is_disabled(f"#step-{step} button")
        assert page.inner_text("#progress-text") == "0 of 3 done"
        assert wait_panel_up_to(page, 2) == [2, 1]  # the log so far, newest first
        shot(page, "01-welcome")

        # 2. clicking through: the page moves on by itself as the events arrive
        page.click("#start-button")
        page.wait_for_selector("#welcome-card", state="hidden")
        for step in ("create-task", "invite", "due-date"):
            page.wait_for_selector(f"#step-{step}[data-state=active]")
            assert page.is_enabled(f"#step-{step} button")
        page.click("#step-create-task button")
        page.wait_for_selector("#step-create-task[data-state=completed]")
        page.wait_for_selector("#progress-text:text('1 of 3 done')")
        shot(page, "02-first-task-done")

        # 3. a change through the REST API shows up without a reload
        assert rest.post(transitions_url, json={"transition": "invited"}).status_code == 200
        page.wait_for_selector("#step-invite[data-state=completed]")
        page.wait_for_selector("#progress-text:text('2 of 3 done')")
        last = rest.get(events_url).json()[-1]["seq"]
        assert wait_panel_up_to(page, last) == list(range(last, 0, -1))
        assert page.evaluate("window.notReloaded") is True
        shot(page, "03-rest-change-live")

        # 4. the server dies (SIGKILL); the page says it is reconnecting
        server.kill()
        page.wait_for_selector("#status[data-status=reconnecting]")
        shot(page, "04-server-down")
        # ... and a change is made while it is down: the flow is paused by a script
        in_another_process(
            server,
            keys["secret_key"],
            "engine.do_flow_action(env, 'demo-user', 'onboarding', 'pause')\n",
        )

        # 5. the server comes back (same port, same data): the page resumes by itself
        server.start()
        page.wait_for_selector("#status[data-status=live]", timeout=30_000)
        page.wait_for_selector("#paused:visible")
        assert page.inner_text("#flow-state") == "inactive"
        assert page.is_disabled("#step-due-date button")
        shot(page, "05-resumed-paused")
        # a change right after the restart, through REST, then the last click in the page
        assert rest.post("/people/demo-user/flows/onboarding/resume").status_code == 200
        page.wait_for_selector("#paused", state="hidden")
        page.wait_for_selector("#step-due-date button:enabled")
        page.click("#step-due-date button")
        page.wait_for_selector("#all-set:visible")
        page.wait_for_selector("#progress-text:text('3 of 3 done')")
        assert page.inner_text("#flow-state") == "completed"

        # every change of the person's log is in the panel: once each, no gap
        log = rest.get(events_url).json()
        last = log[-1]["seq"]
        seqs = wait_panel_up_to(page, last)
        assert seqs == list(range(last, 0, -1)), seqs
        paused = next(e for e in log if e["entity"] == "flow" and e["state"] == "inactive")
        row = page.inner_text(f"#events li[data-seq='{paused['seq']}']")
        assert re.search(r"flow\s+onboarding: active → inactive", row), row
        assert page.evaluate("window.notReloaded") is True
        assert page.errors == []
        shot(page, "06-all-set")
        rest.close()
    except Exception:
        if not page.is_closed():
            with contextlib.suppress(Exception):  # the test's own error is the one to see
                shot(page, "failure")
        raise
    finally:
        server.stop()


SDK_SCRIPT = """
async ({key, personKey}) => {
  const stepstream = (await import("/static/stepstream.js")).default;
  const client = stepstream.connect({url: location.origin, key, personKey, data: {plan: "pro"}});
  window.sdkClient = client;
  window.sdkChanges = [];
  client.flow("onboarding").onChange((flow) => window.sdkChanges.push(flow.state));
  await client.ready;
  return {status: client.status, flows: client.flows.size, data: client.personData};
}
"""


def test_sdk_follows_a_flow_started_later_and_applies_its_own_transitions(tmp_path, browser_page):
    """The SDK on its own, for a new person: identify creates them, a flow started
    through REST afterwards appears with all its steps, and a transition's result
    is in the live state as soon as `await client.transition()` returns."""
    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        page.goto(f"{server.url}/demo")  # any page of the server's origin
        started = page.evaluate(
            SDK_SCRIPT, {"key": keys["publishable_key"], "personKey": "sdk-user"}
        )
        assert started == {"status": "live", "flows": 0, "data": {"plan": "pro"}}
        assert rest.get("/people/sdk-user").json()["data"] == {"plan": "pro"}

        assert rest.post("/people/sdk-user/flows", json={"flow": "onboarding"}).status_code == 201
        page.wait_for_function(
            "window.sdkClient.flow('onboarding').step('welcome').state === 'active'"
        )
        page.wait_for_function("window.sdkChanges.length > 0")  # heard once its burst is in
        assert page.evaluate("window.sdkChanges")[0] == "active"  # onChange saw it appear
        steps = page.evaluate("window.sdkClient.flow('onboarding').steps.map(s => s.identifier)")
        assert steps == [s["identifier"] for s in rest.get("/flows/onboarding").json()["steps"]]

        after = page.evaluate(
            """async () => {
                 const client = window.sdkClient;
                 await client.transition("onboarding", "start");
                 const now = client.flow("onboarding").activeSteps.map((s) => s.identifier);
                 let refused = null;
                 try { await client.transition("onboarding", "start"); }
                 catch (e) { refused = {status: e.status, code: e.code, message: e.message}; }
                 return {now, welcome: client.flow("onboarding").step("welcome").state, refused};
               }"""
        )
        assert after["now"] == ["create-task", "invite", "due-date"]
        assert after["welcome"] == "completed"
        assert after["refused"]["status"] == 409
        assert after["refused"]["code"] == "conflict"
        assert "start" in after["refused"]["message"]
        instance = rest.get("/people/sdk-user/flows").json()[0]
        shown = page.evaluate(
            "Object.fromEntries(window.sdkClient.flow('onboarding').steps"
            ".map(s => [s.identifier, s.state]))"
        )
        assert shown == {s["identifier"]: s["state"] for s in instance["steps"]}
        # each change replaces the flow object, so React's useSyncExternalStore sees it
        assert page.evaluate(
            """async () => {
                 const flow = window.sdkClient.flow("onboarding");
                 const before = flow.value;
                 const same = flow.value === before;
                 await window.sdkClient.transition("onboarding", "invited");
                 return same && flow.value !== before && before.steps[2].state === "active";
               }"""
        )

        # identity verification enforced: the token goes with every action
        secret = rest.post("/identity-verification/secret").json()["identity_secret"]
        assert rest.put("/identity-verification", json={"mode": "enforce"}).status_code == 200
        token = jwt.encode(
            {"sub": "sdk-user", "exp": int(time.time()) + 300}, secret, algorithm="HS256"
        )
        outcome = page.evaluate(
            """async ({key, token}) => {
                 const stepstream = (await import("/static/stepstream.js")).default;
                 const opts = {url: location.origin, key, personKey: "sdk-user"};
                 const signed = stepstream.connect({...opts, personToken: token});
                 const unsigned = stepstream.connect(opts);
                 await signed.ready;
                 await signed.transition("onboarding", "due-date-set");
                 const refused = await unsigned.ready.then(() => null, (e) => e.status);
                 const result = {signed: signed.status, unsigned: unsigned.status, refused,
                   dueDate: signed.flow("onboarding").step("due-date").state};
                 signed.close();
                 return result;
               }""",
            {"key": keys["publishable_key"], "token": token},
        )
        assert outcome == {
            "signed": "live",
            "unsigned": "closed",
            "refused": 401,
            "dueDate": "completed",
        }

        # a token that lapses: the server ends the subscriptions, the SDK renews them
        # with a fresh token from the app's callback and misses nothing
        short = jwt.encode(
            {"sub": "sdk-user", "exp": int(time.time()) + 2}, secret, algorithm="HS256"
        )
        page.evaluate(
            """async ({key, tokens}) => {
                 const stepstream = (await import("/static/stepstream.js")).default;
                 window.asked = 0;
                 window.renewing = stepstream.connect({url: location.origin, key,
                   personKey: "sdk-user", personToken: () => tokens[window.asked++] ?? tokens[1]});
                 await window.renewing.ready;
               }""",
            {"key": keys["publishable_key"], "tokens": [short, token]},
        )
        # the first token lapses (2 s): the subscriptions end and are renewed with a fresh one
        page.wait_for_function("() => window.asked >= 2", timeout=15000)
        assert rest.post("/people/sdk-user/flows/onboarding/exit").status_code == 200
        page.wait_for_function("() => window.renewing.flow('onboarding').state === 'exited'")
        assert page.evaluate("() => [window.renewing.status, window.asked >= 2]") == ["live", True]

        # a wrong key: the SDK says so (close 4401 with the server's reason) and stops
        invalid = page.evaluate(
            """async () => {
                 const stepstream = (await import("/static/stepstream.js")).default;
                 const client = stepstream.connect({url: location.origin, key: "pk_wrong",
                   personKey: "sdk-user", minBackoffMs: 50});
                 const e = await client.ready.then(() => null, (e) => e);
                 return {code: e.code, status: e.status, message: e.message, state: client.status};
               }"""
        )
        assert invalid["code"] == "invalid_key" and invalid["status"] == 401
        assert invalid["state"] == "closed"
        assert "invalid key" in invalid["message"] and "publishable key" in invalid["message"]
        assert page.errors == []
        rest.close()
    finally:
        server.stop()


BURST_SCRIPT = """
async ({key, personKey}) => {
  const stepstream = (await import("/static/stepstream.js")).default;
  const client = stepstream.connect({url: location.origin, key, personKey});
  window.burstClient = client;
  window.heard = [];  // what each onChange call showed
  client.flow("loop").onChange((flow) => window.heard.push({
    state: flow.state,
    active: flow.steps.filter((s) => s.state === "active").map((s) => s.identifier),
  }));
  await client.ready;
  return client.status;
}
"""


def test_sdk_on_change_fires_once_per_committed_change_set(tmp_path, browser_page):
    """Issue 14: one transition (a step completes, the next activates: two events of
    one commit) is one onChange call, and no call shows an active flow with no
    active step, whether the change comes from the REST API or the SDK itself."""
    from stepstream.testing.flows import LOOP_FLOW

    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        assert rest.post("/flows", json=LOOP_FLOW).status_code == 201
        page.goto(f"{server.url}/demo")
        args = {"key": keys["publishable_key"], "personKey": "burst-user"}
        assert page.evaluate(BURST_SCRIPT, args) == "live"
        assert rest.post("/people/burst-user/flows", json={"flow": "loop"}).status_code == 201
        page.wait_for_function("window.heard.some((h) => h.active.join() === 'begin')")

        def settle(active: str) -> None:
            """Waits for the SDK to show `active`, then past any later call of the same burst."""
            page.wait_for_function(
                "a => window.burstClient.flow('loop').activeSteps"
                ".map(s => s.identifier).join() === a",
                arg=active,
            )
            page.wait_for_timeout(300)  # BURST_MAX_MS is 100: a second call would be in by now

        settle("begin")
        transitions = [("go", "a")] + [("flip", "b" if n % 2 == 0 else "a") for n in range(12)]
        per_transition = []
        for n, (name, active) in enumerate(transitions):
            before = page.evaluate("window.heard.length")
            url = "/people/burst-user/flows/loop/transitions"
            if n % 3 == 2:  # now and then the SDK's own call: events, then its response
                page.evaluate(f"window.burstClient.transition('loop', {name!r})")
            else:  # a change made elsewhere: only the socket's events tell the page
                assert rest.post(url, json={"transition": name}).status_code == 200
            settle(active)
            calls = page.evaluate("window.heard")[before:]
            per_transition.append(len(calls))
            assert calls[-1]["active"] == [active]
        assert per_transition == [1] * len(transitions)
        heard = page.evaluate("window.heard")
        assert [h for h in heard if h["state"] == "active" and not h["active"]] == []
        assert page.errors == []
    finally:
        server.stop()


@pytest.mark.backend_agnostic
def test_pages_fit_a_phone_screen(tmp_path, browser_page):
    """At 390 px wide nothing is pushed off the side: the demo's "Start over" button stays
    on screen, and the API reference's index sits above the reference, not beside it."""
    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        page.set_viewport_size({"width": 390, "height": 844})
        for path in ("/", "/demo", "/api/v1/docs"):
            page.goto(f"{server.url}{path}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{path} is {width} px wide"
        page.goto(f"{server.url}/demo")
        box = page.locator("#reset-demo").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        page.goto(f"{server.url}/api/v1/docs")
        main = page.locator("main").bounding_box()
        assert main["width"] >= 300, main  # the reference has the screen's width
    finally:
        server.stop()


BACKOFF_SCRIPT = """
async () => {
  const { backoffDelay, StepstreamClient } = window.sdk;
  // the delays themselves: within [0, min(cap, base * 2^attempt)], spread over that window
  const windows = [];
  for (let attempt = 0; attempt < 10; attempt++) {
    const ceiling = Math.min(2000, 100 * 2 ** attempt);
    const delays = Array.from({ length: 400 }, () => backoffDelay(attempt, 100, 2000));
    windows.push({ ceiling, low: Math.min(...delays), high: Math.max(...delays) });
  }
  // the client, against a server that refuses every connection: the wait it asks for
  // before each new try (its only timers before a socket opens), and when it tries
  const tries = [];
  const asked = [];
  class Refused {
    constructor() {
      tries.push(performance.now());
      setTimeout(() => this.onclose?.({ code: 1006, reason: "" }), 0);
    }
    close() {}
  }
  const client = new StepstreamClient({ url: "http://127.0.0.1:9", key: "pk_x",
    personKey: "p", minBackoffMs: 20, maxBackoffMs: 160, WebSocket: Refused });
  const later = client._later.bind(client);
  client._later = (fn, ms) => { asked.push(ms); return later(fn, ms); };
  client.ready.catch(() => {});
  while (tries.length < 12) await new Promise((r) => setTimeout(r, 20));
  client.close();
  // the poll above may see a 13th try under load: judge exactly the first 12
  const judged = tries.slice(0, 12);
  return { windows, asked: asked.slice(0, 11),
           gaps: judged.slice(1).map((t, i) => t - judged[i]) };
}
"""


def test_sdk_reconnect_backoff_has_full_jitter_and_a_cap(tmp_path, browser_page):
    """The SDK's reconnect delays: each in [0, min(cap, base * 2^attempt)], the window
    doubling up to the cap, spread over all of it (full jitter), and a client that is
    refused waits that long between attempts (docs/protocol.md, "Reconnecting")."""
    page = browser_page
    source = (ROOT / "stepstream" / "static" / "stepstream.js").read_text()
    page.set_content("<!doctype html><title>backoff</title>")
    page.add_script_tag(
        content=source + "\nwindow.sdk = { backoffDelay, StepstreamClient };", type="module"
    )
    page.wait_for_function("() => window.sdk !== undefined")
    result = page.evaluate(BACKOFF_SCRIPT)
    ceilings = [w["ceiling"] for w in result["windows"]]
    assert ceilings == [100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000, 2000]
    for w in result["windows"]:
        assert 0 <= w["low"] <= w["high"] <= w["ceiling"], w
        assert w["low"] < 0.1 * w["ceiling"] and w["high"] > 0.9 * w["ceiling"], w  # full jitter
    asked, gaps = result["asked"], result["gaps"]
    assert len(asked) == len(gaps) == 11
    for attempt, wait in enumerate(asked):
        assert 0 <= wait <= min(160, 20 * 2**attempt), (attempt, asked)
    assert sum(asked[-6:]) > sum(asked[:3])  # the waits grew: later windows are wider
    # and it did wait that long before trying again (timers fire late under load, never
    # early; performance.now() is coarsened, hence the millisecond's slack)
    for wait, gap in zip(asked, gaps, strict=True):
        assert gap >= wait - 1, (asked, gaps)
    assert page.errors == []
