"""The person page's "Why / why not" in a real browser: each flow's verdict, its start
condition's clauses, limits, timers due and deferred starts; opened with the keyboard, at
laptop and phone widths (screenshots in test-artifacts/dashboard/)."""

import os
import uuid

import pytest

from stepstream.testing.servers import Server
from tests.test_browser import CHROMIUM, browser_page  # noqa: F401 - the fixture
from tests.test_dashboard_browser import PASSWORD, USER, _make_staff_user, shot

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")

UPSELL = {
    "identifier": "upsell",
    "start_when": 'person.plan == "free" && has(events.exported)',
    "steps": [{"identifier": "offer"}],
}
REMINDER = {
    "identifier": "reminder",
    "steps": [{"identifier": "wait"}, {"identifier": "nudged"}],
    "transitions": [
        {"identifier": "nudge", "from": "wait", "to": "nudged", "type": "automatic", "after": "2d"}
    ],
}
TOUR = {"identifier": "tour", "start_when": "has(events.exported)", "steps": [{"identifier": "a"}]}


def test_the_person_page_says_why_and_why_not(tmp_path, browser_page):  # noqa: F811
    page = browser_page
    server = Server(tmp_path / "data")
    try:
        server.start()
        _make_staff_user(server)
        keys = server.init_project(f"why-{uuid.uuid4().hex[:8]}")["environments"][0]
        rest = server.rest(keys["secret_key"])
        for flow in (UPSELL, REMINDER, TOUR):
            assert rest.post("/flows", json=flow).status_code == 201
        limit = {"flows": ["reminder", "tour"], "max": 1, "window": "24h"}
        assert rest.put("/limits/one-a-day", json=limit).status_code == 201
        assert rest.put("/people/ann", json={"data": {"plan": "pro"}}).status_code == 201
        assert rest.post("/people/ann/flows", json={"flow": "reminder"}).status_code == 201
        assert rest.post("/people/ann/track", json={"event": "exported"}).status_code == 200
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
        page.goto(f"{server.url}/dashboard/{env}/people/ann/")
        why = page.locator("[data-why]")
        verdict = why.locator("[data-explain='upsell'] [data-verdict]")
        assert "not started" in verdict.inner_text()
        assert "deferred" in why.locator("[data-explain='tour'] [data-verdict]").inner_text()
        assert "has it" in why.locator("[data-explain='reminder'] [data-verdict]").inner_text()
        # opened with the keyboard: the clause that is false is named
        why.locator("[data-explain='upsell'] summary").focus()
        page.keyboard.press("Enter")
        clauses = why.locator("[data-explain='upsell'] [data-clause]")
        assert clauses.count() == 2
        assert clauses.nth(0).get_attribute("data-value") == "false"
        assert clauses.nth(1).get_attribute("data-value") == "true"
        why.locator("[data-explain='reminder'] summary").focus()
        page.keyboard.press("Enter")
        assert "timer due" in why.locator("[data-transition='nudge']").inner_text()
        kinds = why.locator("[data-pending] li").evaluate_all("els => els.map(e => e.dataset.kind)")
        assert sorted(kinds) == ["deferred", "timer"]
        why.scroll_into_view_if_needed()
        shot(page, "dashboard-person-why-laptop")
        # live: the change that starts upsell redraws it (its section stays open)
        assert rest.put("/people/ann", json={"data": {"plan": "free"}}).status_code == 200
        verdict.filter(has_text="has it").wait_for()
        assert why.locator("[data-explain='upsell']").get_attribute("open") is not None
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "dashboard-person-why-phone")
    finally:
        server.stop()


def test_the_sdk_sends_the_page_on_connect_and_every_navigation(tmp_path, browser_page):  # noqa: F811
    import json

    from tests.test_browser import SDK_SCRIPT
    from tests.waiting import wait_until

    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        for identifier, condition in (
            ("on-demo", 'page.path == "/demo"'),
            ("pushed", 'page.path == "/pushed" && page.query.x == "1"'),
            ("replaced", 'page.path == "/replaced"'),
            ("hashed", 'page.url.endsWith("#tour")'),
        ):
            flow = {
                "identifier": identifier,
                "start_when": condition,
                "steps": [{"identifier": "a"}],
            }
            assert rest.post("/flows", json=flow).status_code == 201
        page.goto(f"{server.url}/demo")
        page.evaluate(SDK_SCRIPT, {"key": keys["publishable_key"], "personKey": "walker"})

        def has(flow):
            return lambda: flow in {i["flow"] for i in rest.get("/people/walker/flows").json()}

        wait_until(has("on-demo"), what="the page sent on connect")
        page.evaluate("history.pushState({}, '', '/pushed?x=1')")
        wait_until(has("pushed"), what="pushState sent")
        page.evaluate("history.replaceState({}, '', '/replaced')")
        wait_until(has("replaced"), what="replaceState sent")
        page.evaluate("location.hash = 'tour'")
        wait_until(has("hashed"), what="hashchange sent")
        events = rest.get("/people/walker/events").json()
        assert all(e["cause"].get("page") is True for e in events if e["entity"] == "flow")
    finally:
        server.stop()
