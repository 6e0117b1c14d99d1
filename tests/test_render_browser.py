"""The SDK's content renderer (`client.render()`) in a real browser (Playwright + Chromium).

A product page on another origin imports the SDK from a real `stepstream serve`
(so the renderer and Floating UI come by dynamic, cross-origin import) and talks
to a Stepstream server inside the page (tests/render_fake_server.js: the
protocol of docs/protocol.md and the contract's "Content" section), so each
test decides exactly which steps are active and reads back what the SDK asked.
Screenshots go to test-artifacts/render/, and into docs/ (the ones
docs/clients.md shows) with STEPSTREAM_DOCS_SCREENSHOTS=1.
"""

import contextlib
import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from stepstream.testing.flows import CONTENT_FLOW
from stepstream.testing.servers import Server, free_port
from tests.test_browser import CHROMIUM, browser_page  # noqa: F401 - the fixture
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "render"
DOCS = ROOT / "docs"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run installs it)",
)

TOUR = {
    "identifier": "tour",
    "version": 3,
    "initial": "welcome",
    "steps": [
        {
            "identifier": "welcome",
            "content": {
                "type": "modal",
                "title": "Welcome to Acme",
                "body": "Three quick things and your team is **tracking tasks**:\n\n"
                "- create a *task*\n- invite a teammate\n\n"
                "Raw <b>HTML</b> stays text, [a bad link](javascript:alert(1)) too; "
                "see `Ctrl+S` and [the guide](https://example.com/guide).",
                "buttons": [
                    {"label": "Show me", "transition": "next", "style": "primary"},
                    {"label": "Later", "transition": "later", "style": "secondary"},
                ],
                "locales": {
                    "fr": {
                        "title": "Bienvenue chez Acme",
                        "body": "Trois petites choses et votre équipe **suit ses tâches**.",
                        "buttons": [{"label": "Montrez-moi"}, {"label": "Plus tard"}],
                    }
                },
            },
        },
        {
            "identifier": "save-tip",
            "content": {
                "type": "tooltip",
                "title": "Save often",
                "body": "Click **Save task** to keep your work.",
                "target": {"selector": "#missing-save", "fallbacks": ["#save"]},
                "buttons": [{"label": "Got it", "transition": "ok"}],
            },
        },
        {
            "identifier": "done",
            "content": {
                "type": "banner",
                "title": "You're all set",
                "body": "Happy tracking! Questions? [Write to us](mailto:help@acme.test).",
                "dismiss": "hide",
                "buttons": [{"label": "Finish", "action": "complete", "style": "link"}],
            },
        },
        {"identifier": "later-end"},
    ],
    "transitions": [
        {"name": "next", "from": "welcome", "to": "save-tip"},
        {"name": "later", "from": "welcome", "to": "later-end"},
        {"name": "ok", "from": "save-tip", "to": "done"},
    ],
}
SETUP = {
    "identifier": "setup",
    "initial": ["list", "a", "b"],
    "steps": [
        {
            "identifier": "list",
            "content": {
                "type": "checklist",
                "title": "Get started",
                "dismiss": "none",
                "items": [
                    {"label": "Create a task", "step": "a"},
                    {"label": "Invite a teammate", "step": "b"},
                ],
            },
        },
        {"identifier": "a"},
        {"identifier": "a-end"},
        {"identifier": "b"},
        {"identifier": "b-end"},
    ],
    "transitions": [
        {"name": "did-a", "from": "a", "to": "a-end"},
        {"name": "did-b", "from": "b", "to": "b-end"},
    ],
}
HINT = {
    "identifier": "hint",
    "initial": "spot",
    "steps": [
        {
            "identifier": "spot",
            "content": {
                "type": "hotspot",
                "title": "New: reports",
                "body": "Your week at a glance.",
                "target": {"selector": "#late", "text": "Reports", "wait_ms": 20000},
                "dismiss": "hide",
            },
        }
    ],
}
GHOST = {
    "identifier": "ghost",
    "initial": "tip",
    "steps": [
        {
            "identifier": "tip",
            "content": {
                "type": "tooltip",
                "title": "Nowhere",
                "target": {"selector": "#nope", "fallbacks": [".nope"], "wait_ms": 300},
            },
        }
    ],
}
EDGE = {
    "identifier": "edge",
    "initial": "tip",
    "steps": [
        {
            "identifier": "tip",
            "content": {
                "type": "tooltip",
                "title": "Filters live here",
                "body": "Narrow the list to **your** tasks, or to those due this week.",
                "target": {"selector": "#edge", "placement": "right"},
                "buttons": [{"label": "Got it", "transition": "ok"}],
            },
        },
        {"identifier": "end"},
    ],
    "transitions": [{"name": "ok", "from": "tip", "to": "end"}],
}
FLOWS = [TOUR, SETUP, HINT, GHOST, EDGE]

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Acme tasks</title>
<style>
  * { box-sizing: border-box; }
  body { font-family: system-ui, sans-serif; margin: 0; background: #f5f6f8; color: #1d2330; }
  header { background: #2b3a67; color: white; padding: 14px 24px; font-weight: 700; }
  main { padding: 24px; max-width: 960px; }
  .card { background: white; border-radius: 10px; padding: 18px 22px; margin-bottom: 16px;
    box-shadow: 0 1px 3px #0002; }
  #edge { position: absolute; right: 6px; top: 420px; }
  .spacer { height: 1600px; }
</style>
<style id="hostile">
  div { color: red !important; font: 30px serif !important; padding: 40px !important;
    background: yellow !important; border: 4px solid purple !important; }
  button { background: red !important; color: yellow !important; font-size: 28px !important;
    border: 6px dashed lime !important; padding: 20px !important; }
  p, h2, li { font-size: 40px !important; color: green !important; }
</style>
</head><body>
<header>Acme task tracker</header>
<main>
  <div class="card"><h2>Your tasks</h2><p>Nothing due today.</p>
    <button id="save">Save task</button> <button id="other">Other</button>
    <button id="menu">Menu</button></div>
  <div class="card" id="late-slot">Reports are coming.</div>
  <button id="edge">Filters</button>
  <div class="spacer"></div>
</main>
<script type="module">
  import { FakeServer } from "./render_fake_server.js";
  const hostile = new URLSearchParams(location.search).has("hostile");
  if (!hostile) document.getElementById("hostile").remove();
  window.boot = async ({ sdk, setup, options }) => {
    const stepstream = (await import(sdk)).default;
    window.fake = new FakeServer(setup);
    window.client = stepstream.connect({ url: "http://stepstream.invalid", key: "pk_test",
      personKey: "p", WebSocket: window.fake.socketClass() });
    window.renderer = await window.client.render(options);
    await window.renderer.ready;
    return window.client.status;
  };
  // the same against a real server
  window.bootReal = async ({ sdk, url, key, personKey, options }) => {
    const stepstream = (await import(sdk)).default;
    window.client = stepstream.connect({ url, key, personKey });
    window.renderer = await window.client.render(options);
    await window.renderer.ready;
    return window.client.status;
  };
</script>
</body></html>
"""


@pytest.fixture(scope="module")
def sdk_server(tmp_path_factory):
    """A real `stepstream serve`: only its static files (the SDK) are used."""
    server = Server(tmp_path_factory.mktemp("render-data"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def product_site(tmp_path_factory):
    """The product page, on an origin of its own (another port than the SDK's)."""
    site = tmp_path_factory.mktemp("site")
    (site / "index.html").write_text(PAGE)
    shutil.copyfile(ROOT / "tests" / "render_fake_server.js", site / "render_fake_server.js")
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def shot(page, name: str, docs: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), animations="disabled")
    if docs and os.environ.get("STEPSTREAM_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(path, DOCS / f"{name}.png")


def boot(page, site, sdk_server, query="", theme=None, **options) -> None:
    page.goto(f"{site}/index.html{query}")
    page.wait_for_function("() => typeof window.boot === 'function'")
    setup = {"flows": FLOWS, "theme": {"tokens": theme or {}}}
    sdk = f"{sdk_server.url}/static/stepstream.js"
    assert page.evaluate("a => window.boot(a)", {"sdk": sdk, "setup": setup, "options": options})
    assert page.evaluate("window.client.status") == "live"


def piece(step: str) -> str:
    return f"stepstream-content[data-step='{step}']"


def state(page, flow: str) -> dict:
    """The fake server's instance of `flow`: its state and each step's."""
    return page.evaluate(
        """f => { const i = window.fake.instances.get(f);
             const steps = i.steps.map(s => [s.identifier, s.state]);
             return {state: i.state, ...Object.fromEntries(steps)}; }""",
        flow,
    )


def tracked(page) -> list:
    return page.evaluate("window.fake.tracked")


def box(page, step: str) -> dict:
    return page.locator(f"{piece(step)} .box").bounding_box()


@pytest.mark.backend_agnostic
def test_every_type_shows_and_hides_live_and_its_controls_move_the_state(
    browser_page,  # noqa: F811
    sdk_server,
    product_site,
):
    page = browser_page
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    try:
        # no render() yet: the page loaded the SDK alone, not the renderer nor Floating UI
        page.goto(f"{product_site}/index.html")
        page.evaluate(f"import({sdk_server.url + '/static/stepstream.js'!r})")
        loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        assert not any("stepstream-render" in u or "floating" in u for u in loaded), loaded

        boot(page, product_site, sdk_server)
        loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        assert any(u.endswith("/static/stepstream-render.js") for u in loaded), loaded
        assert any("vendor/floating-ui/floating-ui.dom" in u for u in loaded), loaded
        assert page.locator("stepstream-content").count() == 0  # no flow, nothing shown

        # a modal: a dialog that takes focus, traps it, and Escape exits the flow (dismiss: exit)
        page.focus("#other")
        page.evaluate("window.fake.start('tour')")
        dialog = page.locator(f"{piece('welcome')} [role=dialog]")
        dialog.wait_for()
        assert dialog.get_attribute("aria-modal") == "true"
        host = page.locator(piece("welcome"))
        assert host.get_attribute("data-flow") == "tour"
        assert host.get_attribute("data-type") == "modal"
        assert (
            page.evaluate(f"document.querySelector({piece('welcome')!r}).shadowRoot.mode") == "open"
        )
        focused = f"document.querySelector({piece('welcome')!r}).shadowRoot.activeElement"
        page.wait_for_function(f"() => {focused}?.dataset.transition === 'next'")
        for _ in range(5):  # close, Show me, Later, the guide link: Tab goes round inside
            page.keyboard.press("Tab")
            assert page.evaluate(f"{focused} !== null"), "focus left the dialog"
        page.keyboard.press("Shift+Tab")
        assert page.evaluate(f"{focused} !== null")
        page.mouse.click(5, 800)  # on the backdrop: focus stays in the dialog
        assert page.evaluate(f"{focused} !== null"), "a click on the backdrop took focus out"
        # its Markdown: emphasis, a list, inline code, a safe link; HTML and javascript: as text
        body = page.locator(f"{piece('welcome')} .body")
        assert body.locator("strong").inner_text() == "tracking tasks"
        assert body.locator("li").all_inner_texts() == ["create a task", "invite a teammate"]
        assert body.locator("code").inner_text() == "Ctrl+S"
        assert body.locator("b").count() == 0 and "Raw <b>HTML</b> stays text" in body.inner_text()
        assert [a.get_attribute("href") for a in body.locator("a").all()] == [
            "https://example.com/guide"
        ]
        assert "[a bad link](javascript:alert(1))" in body.inner_text()
        shot(page, "content-modal-1280", docs=True)

        page.keyboard.press("Escape")
        host.wait_for(state="detached")
        assert state(page, "tour")["state"] == "exited"
        assert page.evaluate("document.activeElement.id") == "other"  # focus is given back
        props = {"flow": "tour", "version": 3, "step": "welcome"}
        assert {"event": "$shown", "properties": props} in tracked(page)
        assert {"event": "$dismissed", "properties": props} in tracked(page)

        # again: the primary button calls its transition; the tooltip follows on its target
        page.evaluate("window.fake.start('tour')")
        page.click(f"{piece('welcome')} button[data-transition=next]")
        page.locator(piece("welcome")).wait_for(state="detached")
        assert state(page, "tour")["save-tip"] == "active"
        tip = page.locator(f"{piece('save-tip')} .box")
        tip.wait_for()
        save = page.locator("#save").bounding_box()
        placed = tip.bounding_box()
        assert placed["y"] >= save["y"] + save["height"]  # below it (placement: bottom)
        assert (
            placed["x"] <= save["x"] + save["width"] and placed["x"] + placed["width"] >= save["x"]
        )
        assert page.locator(piece("save-tip")).get_attribute("data-type") == "tooltip"
        shot(page, "content-tooltip-1280", docs=True)

        # its button moves on to a banner: at the top of the page, a final step
        page.click(f"{piece('save-tip')} button[data-transition=ok]")
        page.locator(f"{piece('done')} .box").wait_for()
        page.locator(piece("save-tip")).wait_for(state="detached")  # its step moved on
        assert page.evaluate("document.body.firstElementChild.dataset.step") == "done"
        shot(page, "content-banner-1280", docs=True)
        # dismiss "hide": gone until the page reloads; on a final step closing completes it
        page.click(f"{piece('done')} button[data-dismiss=hide]")
        page.locator(piece("done")).wait_for(state="detached")
        page.wait_for_function("window.fake.instances.get('tour').state === 'completed'")
        assert state(page, "tour")["done"] == "completed"

        # a checklist: no close control (dismiss: none), ticks follow the steps live
        page.evaluate("window.fake.start('setup')")
        checklist = page.locator(f"{piece('list')} .box")
        checklist.wait_for()
        assert page.locator(f"{piece('list')} [data-dismiss]").count() == 0
        assert page.locator(f"{piece('list')} li[data-done]").count() == 0
        page.evaluate("window.fake.transition('setup', 'did-a')")
        page.locator(f"{piece('list')} li[data-item=a][data-done]").wait_for()
        assert page.locator(f"{piece('list')} li[data-done]").count() == 1
        # paused: it goes; resumed: it comes back
        page.evaluate("window.fake.flowAction('pause', 'setup')")
        page.locator(piece("list")).wait_for(state="detached")
        page.evaluate("window.fake.flowAction('resume', 'setup')")
        page.locator(f"{piece('list')} li[data-item=a][data-done]").wait_for()
        shot(page, "content-checklist-1280", docs=True)

        # a hotspot whose target comes later (with the right text): found by the observer
        page.evaluate("window.fake.start('hint')")
        page.evaluate(
            """() => { const b = document.createElement('button'); b.id = 'late';
                 b.textContent = 'Soon'; document.getElementById('late-slot').append(b); }"""
        )
        marker = page.locator(f"{piece('spot')} .marker")
        page.wait_for_function("window.fake.requests.includes('get_content')")
        assert marker.count() == 0  # its text is not there yet
        page.evaluate("document.getElementById('late').textContent = 'Reports'")
        marker.wait_for()
        late = page.locator("#late").bounding_box()
        spot = marker.bounding_box()
        assert spot["x"] >= late["x"] + late["width"]  # beside it, on its right
        assert marker.get_attribute("aria-expanded") == "false"
        marker.click()
        page.locator(f"{piece('spot')} .box").wait_for()
        assert marker.get_attribute("aria-expanded") == "true"
        shot(page, "content-hotspot-1280", docs=True)
        page.keyboard.press("Escape")
        page.locator(f"{piece('spot')} .box").wait_for(state="hidden")
        page.evaluate("window.fake.flowAction('exit', 'hint')")  # exited elsewhere: it goes
        page.locator(piece("spot")).wait_for(state="detached")

        # a target that never comes: reported once wait_ms has passed, nothing shown
        page.evaluate("window.fake.start('ghost')")
        missing = {
            "event": "$target_missing",
            "properties": {"flow": "ghost", "version": 1, "step": "tip"},
        }
        page.wait_for_function(
            "m => window.fake.tracked.some(t => JSON.stringify(t) === JSON.stringify(m))",
            arg=missing,
        )
        assert page.locator(piece("tip")).filter(has=page.locator("h2")).count() == 0
        assert {"event": "$shown", "properties": missing["properties"]} not in tracked(page)

        # the content of a version is asked once, however often it shows
        asked = page.evaluate("window.fake.requests.filter(r => r === 'get_content').length")
        assert asked == 4  # tour, setup, hint, ghost: once each
        # and the theme came with it: no get_theme round trip before the first piece
        assert "get_theme" not in page.evaluate("window.fake.requests")
        page.evaluate("window.renderer.stop()")
        assert page.locator("stepstream-content").count() == 0
        assert page.errors == []
    except Exception:
        if not page.is_closed():
            with contextlib.suppress(Exception):
                shot(page, "failure-types")
        raise


@pytest.mark.backend_agnostic
def test_a_tooltip_stays_in_a_phone_screen_and_follows_scrolling(
    browser_page,  # noqa: F811
    sdk_server,
    product_site,
):
    page = browser_page
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        boot(page, product_site, sdk_server, theme={"color-primary": "#0a7d4f"})
        page.evaluate("window.fake.start('edge')")
        tip = page.locator(f"{piece('tip')} .box")
        tip.wait_for()

        def inside(b: dict) -> None:
            assert b["x"] >= 0 and b["x"] + b["width"] <= 390, b
            assert b["y"] >= 0 and b["y"] + b["height"] <= 844, b

        # asked for the right of a button at the right edge: flipped or shifted into view
        placed = box(page, "tip")
        inside(placed)
        assert page.locator(f"{piece('tip')} .box").get_attribute("data-placement") != "right"
        # the theme's tokens are the content's custom properties
        colour = page.evaluate(
            f"""getComputedStyle(document.querySelector({piece("tip")!r}).shadowRoot
                 .querySelector('.buttons button')).backgroundColor"""
        )
        assert colour == "rgb(10, 125, 79)"
        shot(page, "content-tooltip-390", docs=True)

        # scrolling: it moves with its target
        target_before = page.locator("#edge").bounding_box()["y"]
        page.mouse.wheel(0, 300)
        page.wait_for_function("window.scrollY >= 300")
        target_after = page.locator("#edge").bounding_box()["y"]
        page.wait_for_function(
            "([sel, y]) => Math.abs(document.querySelector(sel).shadowRoot.querySelector('.box')"
            ".getBoundingClientRect().y - y) < 1",
            arg=[piece("tip"), placed["y"] + (target_after - target_before)],
        )
        inside(box(page, "tip"))
        # its target near the bottom of the screen: it flips above it and stays in view
        page.evaluate("window.scrollTo(0, 0)")
        page.evaluate("document.getElementById('edge').style.top = '800px'")
        page.evaluate("window.dispatchEvent(new Event('resize'))")
        page.wait_for_function(
            "sel => document.querySelector(sel).shadowRoot.querySelector('.box')"
            ".dataset.placement.startsWith('top')",
            arg=piece("tip"),
        )
        inside(box(page, "tip"))
        assert (
            box(page, "tip")["y"] + box(page, "tip")["height"]
            <= page.locator("#edge").bounding_box()["y"]
        )

        # the other types at a phone's width, for the docs
        page.evaluate("document.getElementById('edge').style.top = '420px'")
        page.evaluate("window.fake.start('setup')")
        page.locator(f"{piece('list')} .box").wait_for()
        inside(box(page, "list"))
        shot(page, "content-checklist-390", docs=True)
        page.evaluate("window.fake.flowAction('exit', 'setup')")
        page.evaluate("window.fake.flowAction('exit', 'edge')")
        page.evaluate("window.fake.start('tour')")
        page.locator(f"{piece('welcome')} [role=dialog]").wait_for()
        inside(box(page, "welcome"))
        shot(page, "content-modal-390", docs=True)
        page.click(f"{piece('welcome')} button[data-transition=next]")
        page.locator(f"{piece('save-tip')} .box").wait_for()
        inside(box(page, "save-tip"))
        page.click(f"{piece('save-tip')} button[data-transition=ok]")
        page.locator(f"{piece('done')} .box").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "content-banner-390", docs=True)
        page.evaluate("window.fake.start('hint')")
        page.evaluate(
            """() => { const b = document.createElement('button'); b.id = 'late';
                 b.textContent = 'Reports'; document.getElementById('late-slot').append(b); }"""
        )
        page.locator(f"{piece('spot')} .marker").click()
        page.locator(f"{piece('spot')} .box").wait_for()
        inside(box(page, "spot"))
        shot(page, "content-hotspot-390", docs=True)
        assert page.errors == []
    except Exception:
        if not page.is_closed():
            with contextlib.suppress(Exception):
                shot(page, "failure-phone")
        raise


STYLE_PROBE = """
sel => {
  const root = document.querySelector(sel).shadowRoot;
  const pick = (el, names) => Object.fromEntries(names.map((n) => [n, getComputedStyle(el)[n]]));
  const names = ["color", "backgroundColor", "fontSize", "fontFamily", "paddingTop",
    "borderTopWidth", "borderTopStyle"];
  return {
    box: pick(root.querySelector(".box"), names),
    title: pick(root.querySelector("h2"), names),
    body: pick(root.querySelector(".body p"), names),
    primary: pick(root.querySelector(".buttons button"), names),
    close: pick(root.querySelector("button.close"), names),
    rect: root.querySelector(".box").getBoundingClientRect().toJSON(),
  };
}
"""


@pytest.mark.backend_agnostic
def test_french_texts_and_host_css_that_cannot_reach_inside(browser_page, sdk_server, product_site):  # noqa: F811
    page = browser_page
    try:
        boot(page, product_site, sdk_server, locale="fr")
        page.evaluate("window.fake.start('tour')")
        dialog = page.locator(f"{piece('welcome')} [role=dialog]")
        dialog.wait_for()
        assert page.locator(f"{piece('welcome')} h2").inner_text() == "Bienvenue chez Acme"
        assert page.locator(f"{piece('welcome')} .body strong").inner_text() == "suit ses tâches"
        labels = page.locator(f"{piece('welcome')} .buttons button").all_inner_texts()
        assert labels == ["Montrez-moi", "Plus tard"]
        assert page.evaluate("window.fake.requests.includes('get_content')")
        plain = page.evaluate(STYLE_PROBE, piece("welcome"))

        # the same content on a page whose CSS restyles every div, button, p and h2
        boot(page, product_site, sdk_server, query="?hostile", locale="fr")
        assert page.evaluate("getComputedStyle(document.querySelector('#save')).fontSize") == "28px"
        page.evaluate("window.fake.start('tour')")
        page.locator(f"{piece('welcome')} [role=dialog]").wait_for()
        hostile = page.evaluate(STYLE_PROBE, piece("welcome"))
        assert hostile == plain
        shot(page, "content-hostile-css")
        assert page.errors == []
    except Exception:
        if not page.is_closed():
            with contextlib.suppress(Exception):
                shot(page, "failure-fr")
        raise


def test_against_a_real_server_buttons_and_dismiss_move_the_persons_state(
    tmp_path,
    browser_page,  # noqa: F811
    product_site,
):
    """End to end: the content published with the flow, in French, its buttons and
    close controls calling the real server, checked over REST, and what was seen
    counted in the flow's analytics."""
    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        assert rest.post("/flows", json=CONTENT_FLOW).status_code == 201
        put = rest.put("/theme", json={"tokens": {"color-primary": "#0a7d4f"}})
        assert put.status_code == 200, put.text
        tour = "/people/{}/flows/tour"

        def steps(person: str) -> dict:
            instance = rest.get(f"/people/{person}/flows").json()[0]
            return {"state": instance["state"]} | {
                s["identifier"]: s["state"] for s in instance["steps"]
            }

        def open_page(person: str, locale: str | None = None) -> None:
            page.goto(f"{product_site}/index.html")
            page.wait_for_function("() => typeof window.bootReal === 'function'")
            options = {"locale": locale} if locale else {}
            args = {
                "sdk": f"{server.url}/static/stepstream.js",
                "url": server.url,
                "key": keys["publishable_key"],
                "personKey": person,
                "options": options,
            }
            assert page.evaluate("a => window.bootReal(a)", args) == "live"

        for person in ("ann", "bob"):
            assert rest.put(f"/people/{person}", json={"data": {}}).status_code in (200, 201)
            assert rest.post(f"/people/{person}/flows", json={"flow": "tour"}).status_code == 201

        # ann, in French: the modal's button calls its transition
        open_page("ann", "fr")
        dialog = page.locator(f"{piece('welcome')} [role=dialog]")
        dialog.wait_for()
        assert page.locator(f"{piece('welcome')} h2").inner_text() == "Bienvenue"
        colour = page.evaluate(
            f"""getComputedStyle(document.querySelector({piece("welcome")!r}).shadowRoot
                 .querySelector('.buttons button')).backgroundColor"""
        )
        assert colour == "rgb(10, 125, 79)"  # the environment's theme
        page.click(f"{piece('welcome')} button[data-transition=next]")
        page.locator(f"{piece('menu')} .box").wait_for()
        assert steps("ann")["menu"] == "active"
        # the tooltip's close (dismiss: hide): gone until the page reloads, the step stays
        page.click(f"{piece('menu')} button[data-dismiss=hide]")
        page.locator(piece("menu")).wait_for(state="detached")
        assert steps("ann")["menu"] == "active"
        open_page("ann", "fr")
        page.locator(f"{piece('menu')} .box").wait_for()
        # a change made over REST shows at once: the banner, a final step
        moved = rest.post(tour.format("ann") + "/transitions", json={"transition": "next"})
        assert moved.status_code == 200
        banner = page.locator(f"{piece('done')} .box")
        banner.wait_for()
        page.locator(piece("menu")).wait_for(state="detached")
        assert "C'est tout." in banner.inner_text()
        page.click(f"{piece('done')} button[data-action=complete]")
        page.locator(piece("done")).wait_for(state="detached")
        assert steps("ann") == {
            "state": "completed",
            "welcome": "completed",
            "menu": "completed",
            "done": "completed",
        }

        # bob: Escape on the modal exits the flow (dismiss: exit, the default)
        open_page("bob")
        dialog.wait_for()
        assert page.locator(f"{piece('welcome')} h2").inner_text() == "Welcome"
        page.keyboard.press("Escape")
        page.locator(piece("welcome")).wait_for(state="detached")
        assert steps("bob")["state"] == "exited"

        # what was seen: each instance that showed the welcome modal, once
        def analytics() -> dict:
            answer = rest.get("/flows/tour/analytics").json()["steps"]
            return {s["identifier"]: s["shown"] for s in answer}

        wait_until(lambda: analytics() == {"welcome": 2, "menu": 1, "done": 1})
        assert page.errors == []
        rest.close()
    except Exception:
        if not page.is_closed():
            with contextlib.suppress(Exception):
                shot(page, "failure-real")
        raise
    finally:
        server.stop()


def test_the_demo_tour_is_rendered_content_in_english_and_french(
    tmp_path,
    browser_page,  # noqa: F811
):
    """/demo's tour: a rule starts it, the SDK renders a modal, a tooltip on the page's
    own checklist with the tour's checklist beside it, then a banner; the language
    switch renders it again in French; closing the checklist completes the tour."""
    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        page.goto(f"{server.url}/demo")
        page.wait_for_selector("#status[data-status=live]")
        assert page.locator("stepstream-content").count() == 0  # no tour until asked
        page.click("#tour-button")
        page.locator(f"{piece('intro')} [role=dialog]").wait_for()
        assert page.locator(f"{piece('intro')} h2").inner_text() == "A quick tour of Acme"
        page.click(f"{piece('intro')} button[data-transition=next]")
        tip = page.locator(f"{piece('checklist-tip')} .box")
        tip.wait_for()
        page.locator(f"{piece('progress')} .box").wait_for()
        heading = page.locator("#checklist-card h3").bounding_box()
        assert tip.bounding_box()["y"] >= heading["y"] + heading["height"]  # on the real element
        shot(page, "demo-tour-1280")

        page.select_option("#locale", "fr")
        page.locator(f"{piece('checklist-tip')} h2:text('Votre liste')").wait_for()
        assert page.locator(f"{piece('progress')} h2").inner_text() == "La visite"
        page.click(f"{piece('checklist-tip')} button[data-transition=next]")
        banner = page.locator(f"{piece('wrap-up')} .box")
        banner.wait_for()
        assert "C'est tout." in banner.inner_text()
        page.locator(f"{piece('progress')} li[data-item=checklist-tip][data-done]").wait_for()
        page.click(f"{piece('wrap-up')} button[data-action=complete]")
        page.locator(piece("wrap-up")).wait_for(state="detached")
        page.locator(f"{piece('progress')} li[data-item=wrap-up][data-done]").wait_for()
        # the checklist is the tour's last active step (final): closing it completes the tour
        page.click(f"{piece('progress')} button[data-dismiss]")
        page.locator(piece("progress")).wait_for(state="detached")

        def tour_state() -> str:
            instances = rest.get("/people/demo-user/flows").json()
            return next(i["state"] for i in instances if i["flow"] == "tour")

        wait_until(lambda: tour_state() == "completed")
        # the onboarding the page shows itself is untouched
        assert page.is_visible("#welcome-card")
        assert page.errors == []
        rest.close()
    except Exception:
        if not page.is_closed():
            with contextlib.suppress(Exception):
                shot(page, "failure-demo")
        raise
    finally:
        server.stop()


MARKDOWN_CASES = {
    "plain <b>bold</b> & <script>x()</script>": (
        "<p>plain &lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;x()&lt;/script&gt;</p>"
    ),
    "a **b** *c* _d_ __e__ `f*g*`": (
        "<p>a <strong>b</strong> <em>c</em> <em>d</em> <strong>e</strong> <code>f*g*</code></p>"
    ),
    "one\nline\n\ntwo": "<p>one line</p><p>two</p>",
    "- a\n- *b*\n\n1. c\n2. d": (
        "<ul><li>a</li><li><em>b</em></li></ul><ol><li>c</li><li>d</li></ol>"
    ),
    "[x](https://e.com/a?b=1) [m](mailto:a@b.c)": (
        '<p><a href="https://e.com/a?b=1" target="_blank" rel="noopener noreferrer">x</a>'
        ' <a href="mailto:a@b.c">m</a></p>'
    ),
    "[js](javascript:alert(1)) [d](data:text/html,x) [r](/relative)": (
        "<p>[js](javascript:alert(1)) [d](data:text/html,x) [r](/relative)</p>"
    ),
    "[**bold link**](http://e.com)": (
        '<p><a href="http://e.com" target="_blank" rel="noopener noreferrer">'
        "<strong>bold link</strong></a></p>"
    ),
    "\\*not em\\* 2 * 3 * 4": "<p>*not em* 2 * 3 * 4</p>",
    "<img src=x onerror=alert(1)>": "<p>&lt;img src=x onerror=alert(1)&gt;</p>",
}


@pytest.mark.backend_agnostic
def test_markdown_builds_nodes_and_never_parses_html(
    browser_page,  # noqa: F811
    sdk_server,
    product_site,
):
    page = browser_page
    page.goto(f"{product_site}/index.html")
    rendered = page.evaluate(
        """async ({url, cases}) => {
             const { markdown } = await import(url);
             const out = {};
             for (const source of cases) {
               const div = document.createElement("div");
               div.append(markdown(source));
               out[source] = div.innerHTML;
             }
             // unclosed delimiters, many of them: still plain text
             const long = "`" + "[a](".repeat(5000) + "**";
             const div = document.createElement("div");
             div.append(markdown(long));
             out.long = div.textContent === long;
             return out;
           }""",
        {"url": f"{sdk_server.url}/static/stepstream-render.js", "cases": list(MARKDOWN_CASES)},
    )
    for source, html in MARKDOWN_CASES.items():
        assert rendered[source] == html, source
    assert rendered["long"] is True
    assert page.errors == []
