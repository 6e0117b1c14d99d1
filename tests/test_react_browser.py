"""`<StepstreamContent>` and `useFlow` (stepstream/static/stepstream-react.js) with real React.

React 18.3.1's production UMD files (tests/vendor/react/, with their licence and
version; no Node at install or run time) on a product page of another origin, the
bindings imported from a real `stepstream serve` (`--demo`, SQLite or the suite's
PostgreSQL). The component must show the person's active step's content inside the
app's own tree, follow the person's state live (moved over REST and by the content's
own buttons), survive the app's re-renders, follow a `locale` prop, and leave nothing
behind when unmounted. Screenshots go to test-artifacts/react/ (and docs/ with
STEPSTREAM_DOCS_SCREENSHOTS=1).
"""

import contextlib
import functools
import http.server
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import pytest

from stepstream.testing.servers import Server, free_port
from tests.test_browser import CHROMIUM, browser_page  # noqa: F401 - the fixture
from tests.test_render_browser import QuietHandler
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
REACT = ROOT / "tests" / "vendor" / "react"
ARTIFACTS = ROOT / "test-artifacts" / "react"
DOCS = ROOT / "docs"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run installs it)",
)

GUIDE = {
    "identifier": "react-guide",
    "name": "Getting started (React)",
    "steps": [
        {
            "identifier": "welcome",
            "content": {
                "type": "banner",
                "title": "Welcome aboard",
                "body": "Two minutes to your first **task**.",
                "buttons": [{"label": "Show me", "transition": "next"}],
                "dismiss": "none",
                "locales": {
                    "fr": {
                        "title": "Bienvenue à bord",
                        "body": "Deux minutes pour votre première **tâche**.",
                        "buttons": [{"label": "Montrez-moi"}],
                    }
                },
            },
        },
        {
            "identifier": "setup",
            "content": {
                "type": "checklist",
                "title": "Get started",
                "dismiss": "none",
                "items": [
                    {"label": "Create a task", "step": "create"},
                    {"label": "Invite a teammate", "step": "invite"},
                ],
                "locales": {
                    "fr": {
                        "title": "Pour commencer",
                        "items": [{"label": "Créer une tâche"}, {"label": "Inviter un collègue"}],
                    }
                },
            },
        },
        {"identifier": "create"},
        {"identifier": "created"},
        {"identifier": "invite"},
        {"identifier": "invited"},
        {"identifier": "done"},
    ],
    "transitions": [
        {"identifier": "next", "from": "welcome", "to": "setup"},
        {"identifier": "next", "from": "welcome", "to": "create"},
        {"identifier": "next", "from": "welcome", "to": "invite"},
        {"identifier": "did-create", "from": "create", "to": "created"},
        {"identifier": "did-invite", "from": "invite", "to": "invited"},
        {"identifier": "finish", "from": "setup", "to": "done"},
    ],
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Acme tasks (React)</title>
<link rel="icon" href="data:,">
<style>
  * { box-sizing: border-box; }
  body { font-family: system-ui, sans-serif; margin: 0; background: #f5f6f8; color: #1d2330; }
  header { background: #2b3a67; color: white; padding: 14px 24px; font-weight: 700; }
  .layout { display: flex; flex-wrap: wrap; gap: 24px; padding: 24px; }
  main { flex: 1 1 420px; }
  aside { flex: 0 1 340px; }
  .card { background: white; border-radius: 10px; padding: 18px 22px; margin-bottom: 16px;
    box-shadow: 0 1px 3px #0002; }
  .controls button { margin: 4px 8px 4px 0; }
  .guide stepstream-content { display: block; margin-bottom: 16px; }
  /* the app's own CSS: it cannot reach inside the content's shadow roots */
  button { font: inherit; }
</style>
<script src="react.production.min.js"></script>
<script src="react-dom.production.min.js"></script>
</head><body>
<div id="root"></div>
<script type="module">
  window.mount = async ({ server, key, personKey }) => {
    const { stepstreamReact } = await import(`${server}/static/stepstream-react.js`);
    const { StepstreamProvider, useFlow, StepstreamContent } = stepstreamReact(window.React);
    const h = React.createElement;

    function Progress() {
      const { flow, step } = useFlow("react-guide");
      const active = (flow?.steps ?? []).filter((s) => s.state === "active");
      const names = active.map((s) => s.identifier).join(", ") || "nothing active";
      return h("div", { className: "card" },
        h("h2", null, "Your tasks"),
        h("p", { id: "status" }, flow ? `${flow.state}: ${names}` : "not started"),
        h("p", { id: "created" }, `Create a task: ${step("create")?.state ?? "–"}`));
    }

    function App() {
      const [locale, setLocale] = React.useState(undefined);
      const [shown, setShown] = React.useState(true);
      const [renders, setRenders] = React.useState(0);
      const button = (id, onClick, text) => h("button", { id, onClick }, text);
      return h(StepstreamProvider, { url: server, publishableKey: key, personKey },
        h("header", null, "Acme task tracker"),
        h("div", { className: "layout" },
          h("main", null,
            h(Progress),
            h("div", { className: "card controls" },
              button("rerender", () => setRenders((n) => n + 1), `Re-render (${renders})`),
              button("toggle", () => setShown((s) => !s), shown ? "Hide guide" : "Show guide"),
              button("french", () => setLocale(locale ? undefined : "fr"),
                locale ? "English" : "Français"))),
          h("aside", { id: "sidebar" },
            shown ? h(StepstreamContent, { flows: ["react-guide"], locale, className: "guide" })
              : null,
            h("div", { className: "card" }, "Team activity: nothing new."))));
    }

    window.root = ReactDOM.createRoot(document.getElementById("root"));
    window.root.render(h(App));
    return React.version;
  };
</script>
</body></html>
"""


@pytest.fixture
def react_site(tmp_path):
    """The React product page, on an origin of its own."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    for name in ("react.production.min.js", "react-dom.production.min.js"):
        shutil.copyfile(REACT / name, site / name)
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def shot(page, name: str, docs: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    if docs and os.environ.get("STEPSTREAM_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(path, DOCS / f"{name}.png")


IN_SIDEBAR = "#sidebar > .guide > stepstream-content"


def test_stepstream_content_renders_a_flow_inside_the_apps_tree_and_follows_it_live(
    tmp_path,
    browser_page,  # noqa: F811
    react_site,
):
    page = browser_page
    console: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and console.append(m.text))
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        assert rest.post("/flows", json=GUIDE).status_code == 201
        rita = f"rita-{uuid.uuid4().hex[:8]}"  # on PostgreSQL, --demo servers share a database
        person = f"/people/{rita}/flows/react-guide"
        assert rest.put(f"/people/{rita}", json={"data": {}}).status_code in (200, 201)

        def states() -> dict:
            instance = rest.get(f"/people/{rita}/flows").json()[0]
            return {"state": instance["state"]} | {
                s["identifier"]: s["state"] for s in instance["steps"]
            }

        page.goto(f"{react_site}/index.html")
        page.wait_for_function("() => typeof window.mount === 'function'")
        args = {"server": server.url, "key": keys["publishable_key"], "personKey": rita}
        assert page.evaluate("a => window.mount(a)", args) == "18.3.1"
        status = page.locator("#status")
        assert status.inner_text() == "not started"

        # started over REST: the banner shows inside the component's element, live
        assert rest.post(f"/people/{rita}/flows", json={"flow": "react-guide"}).status_code == 201
        banner = page.locator(f"{IN_SIDEBAR}[data-step=welcome]")
        banner.locator(".box").wait_for()
        assert banner.locator("h2").inner_text() == "Welcome aboard"
        assert status.inner_text() == "active: welcome"  # useFlow re-rendered the app
        # in the sidebar's flow, not floating over the page: above the sidebar's own card
        card = page.locator("#sidebar > .card").bounding_box()
        placed = banner.locator(".box").bounding_box()
        assert placed["y"] + placed["height"] <= card["y"]
        assert card["x"] <= placed["x"] < card["x"] + card["width"]

        # its button moves the person (over the WebSocket): checked over REST
        banner.locator("button[data-transition=next]").click()
        checklist = page.locator(f"{IN_SIDEBAR}[data-step=setup]")
        checklist.locator(".box").wait_for()
        banner.wait_for(state="detached")
        assert states() == {
            "state": "active",
            "welcome": "completed",
            "setup": "active",
            "create": "active",
            "created": "inactive",
            "invite": "active",
            "invited": "inactive",
            "done": "inactive",
        }
        page.locator("#status:text('active: setup, create, invite')").wait_for()
        assert checklist.locator(".checklist.inline").count() == 1  # in the layout

        # a step completed elsewhere: its item ticked, live
        moved = rest.post(f"{person}/transitions", json={"transition": "did-create"})
        assert moved.status_code == 200, moved.text
        checklist.locator("li[data-item=create][data-done]").wait_for()
        assert checklist.locator("li[data-item=invite][data-done]").count() == 0
        page.locator("#created:text('completed')").wait_for()
        shot(page, "react-content-1280", docs=True)
        page.set_viewport_size({"width": 390, "height": 844})
        box = checklist.locator(".box").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        shot(page, "react-content-390")
        page.set_viewport_size({"width": 1280, "height": 860})

        # the app re-renders: React leaves the SDK's element alone (the very same node)
        page.evaluate(f"document.querySelector({IN_SIDEBAR!r}).dataset.mark = 'kept'")
        page.click("#rerender")
        page.locator("#rerender:text('Re-render (1)')").wait_for()
        assert checklist.get_attribute("data-mark") == "kept"

        # a new locale prop: the same content, in French
        page.click("#french")
        checklist.locator("h2:text('Pour commencer')").wait_for()
        labels = checklist.locator("li .label").all_inner_texts()
        assert labels == ["Créer une tâche", "Inviter un collègue"]
        assert checklist.locator("li[data-item=create][data-done]").count() == 1
        assert page.locator("stepstream-content").count() == 1  # the English one is gone

        # unmounted: nothing of it is left on the page; mounted again: back, live
        page.click("#toggle")
        page.locator("stepstream-content").first.wait_for(state="detached")
        assert page.locator("stepstream-content").count() == 0
        moved = rest.post(f"{person}/transitions", json={"transition": "did-invite"})
        assert moved.status_code == 200, moved.text
        page.click("#toggle")
        checklist.locator("li[data-item=invite][data-done]").wait_for()
        assert page.locator("stepstream-content").count() == 1

        # the step ends over REST: its content goes
        assert rest.post(f"{person}/transitions", json={"transition": "finish"}).status_code == 200
        checklist.wait_for(state="detached")
        page.locator("#status:text('completed')").wait_for()
        wait_until(lambda: states()["state"] == "completed")
        assert page.errors == []
        assert console == []
        rest.close()
    except Exception:
        if not page.is_closed():
            with contextlib.suppress(Exception):
                shot(page, "failure-react")
        raise
    finally:
        server.stop()
