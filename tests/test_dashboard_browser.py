"""The dashboard in a real browser (Debian's Chromium driven by Playwright), on a real server.

One story, as a product team member would live it: the dashboard refuses
them until they sign in (a wrong password is refused), they pick the demo's
environment, open the onboarding flow and watch its step counts move as
people progress through the REST API (also across a server kill and
restart), search people, open one and see a new change appear in their
timeline within a second, visit every section, and sign out. No key appears
in any page. Screenshots go to test-artifacts/dashboard/, and into docs/
(the ones docs/dashboard.md shows) with STEPSTREAM_DOCS_SCREENSHOTS=1.
"""

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from stepstream.testing.servers import Server
from tests.test_browser import CHROMIUM, browser_page  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
DOCS = ROOT / "docs"
PASSWORD = "a staff password for the browser test"
# servers on PostgreSQL share one database: a user of its own there
USER = f"ada-{uuid.uuid4().hex[:8]}" if os.environ.get("DATABASE_URL") else "ada"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run installs it)",
)


def shot(page, name: str, docs: bool = False, viewport: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=not viewport, animations="disabled")
    if docs and os.environ.get("STEPSTREAM_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(path, DOCS / f"{name}.png")


NAMES = ["ada", "grace", "alan", "edsger", "barbara", "ken", "dennis", "margaret", "linus"]
PEOPLE = [f"{NAMES[i % len(NAMES)]}.{i:02}@acme.test" for i in range(36)]


def populate(rest) -> None:
    """People at every stage of the demo's onboarding, for a page worth looking at."""
    for i, key in enumerate(PEOPLE):
        assert rest.put(f"/people/{key}", json={"data": {"plan": "pro"}}).status_code == 201
        assert rest.post(f"/people/{key}/flows", json={"flow": "onboarding"}).status_code == 201
        url = f"/people/{key}/flows/onboarding/transitions"
        if i % 4:
            assert rest.post(url, json={"transition": "start"}).status_code == 200
        if i % 4 == 2 or i % 8 == 3:
            assert rest.post(url, json={"transition": "task-created"}).status_code == 200
        if i % 8 == 3:
            assert rest.post(url, json={"transition": "invited"}).status_code == 200
        if i % 12 == 7:
            assert rest.post(f"/people/{key}/flows/onboarding/exit").status_code == 200


def active(page, step: str) -> int:
    return int(page.get_attribute(f"[data-step='{step}']", "data-active"))


def wait_active(page, step: str, n: int) -> None:
    page.wait_for_selector(f"[data-step='{step}'][data-active='{n}']")


def no_keys_in(page, keys: dict) -> None:
    html = page.content()
    assert keys["secret_key"] not in html, page.url
    assert keys["publishable_key"] not in html, page.url


def _make_staff_user(server) -> None:
    """The staff user the docs have a team create: `stepstream manage createsuperuser`.

    On PostgreSQL, servers share DATABASE_URL's database: an earlier test may
    have made this user (same name, same password) already.
    """
    made = server.command(
        "manage",
        "createsuperuser",
        "--noinput",
        "--username",
        USER,
        "--email",
        "ada@example.com",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    assert made.returncode == 0 or "already taken" in made.stderr, made.stderr


def test_dashboard_signs_in_shows_flows_live_and_every_page(tmp_path, browser_page):  # noqa: F811
    page = browser_page
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        printed = server.log()
        assert f"{server.url}/dashboard/" in printed  # `serve --demo` prints where it is
        assert "sign in as" in printed  # a staff user made by --demo, or the team's own
        _make_staff_user(server)
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        populate(rest)
        out = server.shell(
            "from stepstream.trust import tenants\n"
            f"print(tenants.environment_for_key({keys['secret_key']!r}, 'secret').pk)"
        )
        env = int(out.strip().splitlines()[-1])  # 1 on SQLite; any id on a shared PostgreSQL

        # 1. refused without a session; a wrong password is refused; the right one lets in
        page.goto(f"{server.url}/dashboard/{env}/flows/")
        assert "/dashboard/login/" in page.url
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", "not the password")
        page.click("button[type=submit]")
        page.wait_for_selector("#login-error")
        assert "do not match a staff account" in page.inner_text("#login-error")
        page.fill("input[name=password]", "")
        shot(page, "dashboard-login", docs=True)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"**/dashboard/{env}/flows/")
        page.goto(f"{server.url}/dashboard/")
        shot(page, "dashboard-environments", docs=True)
        no_keys_in(page, keys)

        # 2. the environment, its flows, the onboarding flow drawn with live counts
        page.click(f"[data-environment=development][href='/dashboard/{env}/flows/']")
        page.wait_for_selector("[data-flow=onboarding]")
        shot(page, "dashboard-flows", docs=True)
        page.click("[data-flow=onboarding]")
        page.wait_for_selector("#live-status[data-status=live]")
        page.evaluate("window.notReloaded = true")
        welcome, invite = active(page, "welcome"), active(page, "invite")
        assert welcome >= 1
        done = "[data-row-step=welcome] [data-cell=completed]"
        completed = int(page.inner_text(done))
        url = "/people/demo-user/flows/onboarding/transitions"
        assert rest.post(url, json={"transition": "start"}).status_code == 200
        wait_active(page, "welcome", welcome - 1)
        wait_active(page, "invite", invite + 1)
        page.wait_for_selector(f"{done}:text-is('{completed + 1}')")  # the funnel follows
        assert rest.post(url, json={"transition": "invited"}).status_code == 200
        wait_active(page, "invite", invite)
        page.wait_for_timeout(700)  # the highlight of a changed count fades
        shot(page, "dashboard-flow", docs=True)
        no_keys_in(page, keys)

        # 3. counts stay right across a server kill, with a change made while it was down
        server.kill()
        page.wait_for_selector("#live-status[data-status=reconnecting]")
        server.shell(
            "from stepstream import engine\nfrom stepstream.trust import tenants\n"
            f"env = tenants.environment_for_key({keys['secret_key']!r}, 'secret')\n"
            "engine.do_transition(env, 'demo-user', 'onboarding', 'task-created')\n"
        )
        server.start()
        page.wait_for_selector("#live-status[data-status=live]", timeout=30_000)
        expected = count_active(rest)
        for step, n in expected.items():
            wait_active(page, step, n)
        assert page.evaluate("window.notReloaded") is True

        # 4. people: search by key, then one person's page and live timeline
        page.click("nav.sections >> text=People")
        page.wait_for_selector("input[name=q]")
        shot(page, "dashboard-people", docs=True)
        page.fill("input[name=q]", "grace")
        page.press("input[name=q]", "Enter")
        page.wait_for_url("**/people/?q=grace")
        found = page.eval_on_selector_all("[data-person]", "els => els.map(e => e.dataset.person)")
        assert found and all("grace" in key for key in found)
        page.fill("input[name=q]", "demo-user")
        page.press("input[name=q]", "Enter")
        page.click("[data-person='demo-user']")
        page.wait_for_selector("#live-status[data-status=live]")
        last = rest.get("/people/demo-user/events").json()[-1]["seq"]
        assert page.is_visible(f"#timeline li[data-seq='{last}']")
        assert rest.post(url, json={"transition": "due-date-set"}).status_code == 200
        events = rest.get(f"/people/demo-user/events?since_seq={last}").json()
        newest = events[-1]
        # live, not on a reload: the row arrives over the page's socket (how fast is
        # measured in bench/, not asserted against a loaded CI machine's clock)
        page.wait_for_selector(f"#timeline li[data-seq='{newest['seq']}']", timeout=10_000)
        row = page.inner_text(f"#timeline li[data-seq='{newest['seq']}']")
        assert newest["identifier"] in row and newest["state"] in row
        if "cause" in newest:  # recorded causes (the Rules branch) are shown in words
            assert page.is_visible(f"#timeline li[data-seq='{newest['seq']}'] .cause")
        seqs = page.eval_on_selector_all("#timeline li", "els => els.map(e => +e.dataset.seq)")
        assert seqs == list(range(newest["seq"], 0, -1))  # each change once, no gap
        page.wait_for_selector("[data-instance] [data-instance-state][data-state=completed]")
        shot(page, "dashboard-person", docs=True)
        no_keys_in(page, keys)

        # 5. every other section from the navigation
        for section, name in (("Segments", "segments"), ("Webhooks", "webhooks"), ("Keys", "keys")):
            page.click(f"nav.sections >> text={section}")
            page.wait_for_selector(f"nav.sections a[aria-current=page]:text('{section}')")
            shot(page, f"dashboard-{name}", docs=name == "keys")
            no_keys_in(page, keys)
        page.click("text=Rotate publishable key…")
        page.wait_for_selector("text=Make a new publishable key?")
        page.click("text=Cancel")
        page.wait_for_selector("nav.sections a[aria-current=page]:text('Keys')")

        # keyboard: the steps of the graph can be reached with Tab
        page.goto(f"{server.url}/dashboard/{env}/flows/onboarding/")
        page.focus("[data-step=welcome]")
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.dataset.step")
        assert focused and focused != "welcome"

        # 6. signed out: pages are refused again
        page.click("text=Sign out")
        page.wait_for_url("**/dashboard/login/")
        page.goto(f"{server.url}/dashboard/{env}/people/")
        assert "/dashboard/login/" in page.url
        assert page.errors == []
        rest.close()
    except Exception:
        if not page.is_closed():
            with contextlib.suppress(Exception):  # the test's own error is the one to see
                shot(page, "failure")
        raise
    finally:
        server.stop()


def count_active(rest) -> dict[str, int]:
    """The step counts from the REST API, person by person (the slow way, as a check)."""
    counts: dict[str, int] = {}
    for key in ["demo-user", *PEOPLE]:
        for instance in rest.get(f"/people/{key}/flows").json():
            for step in instance["steps"]:
                counts.setdefault(step["identifier"], 0)
                counts[step["identifier"]] += step["state"] == "active"
    return counts


@pytest.mark.backend_agnostic
def test_dashboard_pages_fit_a_phone_screen(tmp_path, browser_page):  # noqa: F811
    """At 390 px wide the top bar wraps and wide tables scroll in their card: no page is
    wider than the screen, and every section's link is on the page's own width."""
    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        _make_staff_user(server)
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{server.url}/dashboard/login/")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.click("[data-environment=development][href$='/flows/']")
        page.wait_for_url("**/flows/")
        flows = page.url
        for url in (flows, f"{flows}onboarding/", flows.replace("/flows/", "/people/")):
            page.goto(url)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{url} is {width} px wide"
            box = page.locator(".sections").bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (url, box)
    finally:
        server.stop()


# any browser can make such a person with `identify`
ODD_PEOPLE = [
    "x/../../keys/rotate",
    ".",
    "..",
    "a%b",
    "a?b#c",
    "%2E%2E",
    "first last",
    "ünï cødé ✓",
    "50%off?&#=;",
]
# step identifiers may hold any character but controls: `"]` ended querySelector's value
ODD_FLOW = {
    "identifier": 'odd "]/../flow',
    "name": "Odd identifiers",
    "steps": [
        {"identifier": 'a"]'},
        {"identifier": "b\\\"]'\\ ✓"},
        {"identifier": "c"},
    ],
    "transitions": [
        {"identifier": "next", "from": 'a"]', "to": "b\\\"]'\\ ✓"},
        {"identifier": "next", "from": "b\\\"]'\\ ✓", "to": "c"},
    ],
}
# a cell of a step's row in the funnel table, found however odd its identifier (CSS.escape)
CELL_IS = """([step, cell, n]) => document.querySelector(
    `[data-row-step="${CSS.escape(step)}"] [data-cell=${cell}]`)?.textContent === n"""


def rest_segment(key: str) -> str:
    """One REST path segment; "." and ".." spelled %2E (httpx keeps those)."""
    from urllib.parse import quote

    return key.replace(".", "%2E") if key in (".", "..") else quote(key, safe="")


def test_odd_keys_and_identifiers_are_linked_and_followed_live(tmp_path, browser_page):  # noqa: F811
    """Every person key links to its own page ("x/../../keys/rotate" linked to the keys
    page, "." and ".." elsewhere, "%" to a 404), and a flow whose step identifiers hold
    `"]` keeps its live counts (querySelector threw on them)."""
    page = browser_page
    server = Server(tmp_path / "data")
    try:
        server.start()
        _make_staff_user(server)
        keys = server.init_project(f"odd-{uuid.uuid4().hex[:8]}")["environments"][0]
        rest = server.rest(keys["secret_key"])
        assert rest.post("/flows", json=ODD_FLOW).status_code == 201, ODD_FLOW
        for key in ODD_PEOPLE:
            assert rest.put(f"/people/{rest_segment(key)}", json={"data": {}}).status_code == 201
        flow_segment = rest_segment(ODD_FLOW["identifier"])
        for key in ("a?b#c", "a%b"):
            started = rest.post(
                f"/people/{rest_segment(key)}/flows", json={"flow": ODD_FLOW["identifier"]}
            )
            assert started.status_code == 201, started.text
        out = server.shell(
            "from stepstream.trust import tenants\n"
            f"print(tenants.environment_for_key({keys['secret_key']!r}, 'secret').pk)"
        )
        env = int(out.strip().splitlines()[-1])

        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(f"{server.url}/dashboard/login/")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard/")
        people = f"{server.url}/dashboard/{env}/people/"
        page.goto(people)
        page.wait_for_selector("[data-person]")
        page.screenshot(path="/tmp/dashboard-people-odd-keys-laptop.png", full_page=True)
        shot(page, "dashboard-people-odd-keys-laptop")
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path="/tmp/dashboard-people-odd-keys-phone.png", full_page=True)
        shot(page, "dashboard-people-odd-keys-phone")
        page.set_viewport_size({"width": 1280, "height": 800})

        # each link, clicked, opens that person's page
        listed = page.eval_on_selector_all(
            "a[data-person]", "els => els.map(e => e.dataset.person)"
        )
        assert sorted(listed) == sorted(ODD_PEOPLE)
        for i, key in enumerate(listed):
            page.goto(people)
            page.locator("a[data-person]").nth(i).click()
            page.wait_for_selector("#live-status[data-status=live]")
            assert page.inner_text("h1") == key, (key, page.url)
            config = json.loads(page.text_content("#live-config"))
            assert config["person_key"] == key, (key, page.url)

        # the person's flow card links to the flow, whose counts follow every change
        page.goto(people)
        page.locator("a[data-person]").nth(listed.index("a?b#c")).click()
        page.click("a[data-flow]")
        page.wait_for_selector("#live-status[data-status=live]")
        assert json.loads(page.text_content("#live-config"))["flow"] == ODD_FLOW["identifier"]
        first, second = (s["identifier"] for s in ODD_FLOW["steps"][:2])
        page.wait_for_function(CELL_IS, arg=[first, "active", "2"])
        url = f"/people/{rest_segment('a?b#c')}/flows/{flow_segment}/transitions"
        assert rest.post(url, json={"transition": "next"}).status_code == 200
        page.wait_for_function(CELL_IS, arg=[first, "active", "1"])
        page.wait_for_function(CELL_IS, arg=[second, "active", "1"])
        page.wait_for_function(CELL_IS, arg=[second, "reached", "1"])
        assert page.errors == []
        rest.close()
    except Exception:
        if not page.is_closed():
            shot(page, "failure-odd")
        raise
    finally:
        server.stop()


# every drawn text of the flow graph: (kind, step, text, drawn width, bottom, pill top)
GRAPH_TEXTS = """() => {
  const out = [];
  for (const g of document.querySelectorAll("svg.graph .step")) {
    const pill = g.querySelector(".count-pill").getBBox().y;
    const name = g.querySelector(".step-name");
    const bottom = name.getBBox().y + name.getBBox().height;
    for (const t of name.querySelectorAll("tspan")) {
      out.push(["name", g.dataset.step, t.textContent, t.getComputedTextLength(), bottom, pill]);
    }
    const id = g.querySelector(".step-id");
    out.push(["sub", g.dataset.step, id.textContent, id.getComputedTextLength(), 0, 0]);
  }
  for (const t of document.querySelectorAll("svg.graph .edge-label")) {
    out.push(["edge", "", t.textContent, t.getComputedTextLength(), 0, 0]);
  }
  return out;
}"""
SCROLL_UNDER_THE_TOP_BAR = """(selector) => {
  const bar = document.querySelector(".topbar").offsetHeight;
  const top = document.querySelector(selector).getBoundingClientRect().top;
  window.scrollTo(0, top + window.scrollY - bar - 32);
}"""
# a legend key's line and an edge of its kind, as the browser styles them
STROKES = """([key, edge]) => [key, edge].map((selector) => {
  const style = getComputedStyle(document.querySelector(selector));
  return [style.stroke, style.strokeWidth, style.strokeDasharray];
})"""


@pytest.mark.backend_agnostic
def test_flow_graph_text_fits_its_boxes_and_the_legend_matches_the_edges(tmp_path, browser_page):  # noqa: F811
    """Long step names, identifiers and transition names, drawn by Chromium: each
    line fits its box (and the server's estimate was not short of the drawn width),
    a name's second line stays above the count, each legend key is styled as the
    edges it stands for, and the funnel says "not reached" for a step nobody reached.
    Screenshots of the graph and the funnel at 1280 and 390 px."""
    from stepstream.http.dashboard import layout
    from tests.test_dashboard import LONG_FLOW

    page = browser_page
    server = Server(tmp_path / "data")
    try:
        server.start()
        _make_staff_user(server)
        keys = server.init_project(f"long-{uuid.uuid4().hex[:8]}")["environments"][0]
        rest = server.rest(keys["secret_key"])
        assert rest.post("/flows", json=LONG_FLOW).status_code == 201
        calls = {"p-1": ["calendar-connected-by-the-person"], "p-2": ["skip", "finish"], "p-3": []}
        for key, transitions in calls.items():
            assert rest.put(f"/people/{key}", json={"data": {}}).status_code == 201
            started = rest.post(f"/people/{key}/flows", json={"flow": "long-names"})
            assert started.status_code == 201, started.text
            for transition in transitions:
                url = f"/people/{key}/flows/long-names/transitions"
                assert rest.post(url, json={"transition": transition}).status_code == 200
        assert rest.delete("/people/p-2").status_code == 204  # who reached the long one
        out = server.shell(
            "from stepstream.trust import tenants\n"
            f"print(tenants.environment_for_key({keys['secret_key']!r}, 'secret').pk)"
        )
        env = int(out.strip().splitlines()[-1])

        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(f"{server.url}/dashboard/login/")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard/")
        page.goto(f"{server.url}/dashboard/{env}/flows/long-names/")
        page.wait_for_selector("#live-status[data-status=live]")

        limits = {"name": layout.NAME_W, "sub": layout.SUB_W, "edge": layout.EDGE_LABEL_W}
        texts = page.evaluate(GRAPH_TEXTS)
        assert {kind for kind, *_ in texts} == {"name", "sub", "edge"}
        for kind, step, text, drawn, bottom, pill in texts:
            assert drawn <= limits[kind], (kind, step, text, drawn)
            if kind == "name":
                assert drawn <= layout.text_width(text, layout.NAME_SIZE) + 0.5, (text, drawn)
                assert bottom <= pill, (step, bottom, pill)  # the name clears the count
        names = [text for kind, _, text, *_ in texts if kind == "name"]
        assert "Welcome to the Acme" in names and "onboarding tour" in names

        for kind in ("manual", "auto", "back"):
            edge = {"manual": ".edge:not(.auto):not(.back)", "auto": ".edge.auto:not(.back)"}
            selector = "svg.graph path" + edge.get(kind, ".edge.back")
            key, drawn_edge = page.evaluate(STROKES, [f"[data-key={kind}] line", selector])
            assert key == drawn_edge, (kind, key, drawn_edge)
        assert (
            page.evaluate(STROKES, ["[data-key=auto] line", "[data-key=manual] line"])[0][2]
            != "none"
        )

        row = "[data-funnel-step=supercalifragilistic] [data-numbers]"
        assert page.text_content(row) == "0 / 0 · — · not reached"
        assert page.inner_text("[data-row-step=done] [data-cell=median]") == "< 1 ms"
        assert not page.errors, page.errors

        for width, height, screen in ((1280, 800, "laptop"), (390, 844, "phone")):
            page.set_viewport_size({"width": width, "height": height})
            page.reload()
            page.wait_for_selector("#live-status[data-status=live]")
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            for card in ("graph", "funnel"):
                page.evaluate(SCROLL_UNDER_THE_TOP_BAR, f"#{card}-title")
                shot(page, f"dashboard-flow-{card}-{screen}", viewport=True)
        # on a phone the graph and the funnel keep their size (their names readable) and
        # scroll sideways in their card
        for chart in ("svg.graph", "svg.funnel"):
            box = page.locator(chart).bounding_box()
            assert box and box["width"] > 390, (chart, box)
        texts = page.evaluate(GRAPH_TEXTS)
        assert all(drawn <= limits[kind] for kind, _, _, drawn, *_ in texts)
    finally:
        server.stop()
