"""The demo page's "Rules at work" card in a real browser: the server decides, the page tracks.

Clicking "Search" and "Comment" only tracks events; the checklist starts and
completes by its conditions. Choosing a plan only identifies; the tip's branch
is chosen by `person.plan`. Every event in the panel says why it happened.
"""

import json

from stepstream.testing.servers import Server
from tests.test_browser import browser_page, pytestmark, shot  # noqa: F401 - fixture, skip mark


def test_demo_rules_card(tmp_path, browser_page):  # noqa: F811 - the imported fixture
    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        page.goto(f"{server.url}/demo")
        page.wait_for_selector("#status[data-status=live]")
        assert page.inner_text("#habits-state") == "not started"
        page.click("#habit-search button")
        page.wait_for_selector("#habit-search[data-state=completed]")
        page.wait_for_selector("#habit-comment[data-state=active]")
        assert page.inner_text("#habits-state") == "active"
        page.click("#habit-comment button")
        page.wait_for_selector("#habits-state[data-state=completed]")
        page.click("button[data-plan=pro]")
        page.wait_for_selector("#tip-branch[data-branch=pro-tip]")
        page.click("button[data-plan=free]")  # the tip started once: its branch stays
        page.click("button[data-restart=plan-tip]")  # a new instance reads the new plan
        page.wait_for_selector("#tip-branch[data-branch=free-tip]")
        with server.rest(keys["secret_key"]) as rest:
            log = rest.get("/people/demo-user/events").json()
        started = next(e for e in log if e["identifier"] == "habits")
        assert started["cause"] == {"kind": "start_when", "event": "searched"}
        row = page.inner_text(f"#events li[data-seq='{started['seq']}']")
        assert "start_when · event searched" in row, row
        assert page.errors == []
        shot(page, "07-rules-at-work")
    finally:
        server.stop()
