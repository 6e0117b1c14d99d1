"""A flow's authoring sections in a real browser (Chromium via Playwright), on a real server:
a staff user compares two versions, saves the switches, archives and brings back the
flow and promotes a version, all with the keyboard; the pages fit a laptop (1280 px)
and a phone (390 px). Screenshots go to test-artifacts/dashboard/."""

import json
import os

import pytest

from stepstream.testing.servers import Server
from tests.test_browser import browser_page  # noqa: F401 - the fixture
from tests.test_dashboard_browser import PASSWORD, USER, _make_staff_user, pytestmark, shot

__all__ = ["pytestmark"]


def sign_in(page, server) -> None:
    page.goto(f"{server.url}/dashboard/login/")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url("**/dashboard/**")


def press_on(page, selector: str, key: str = "Enter") -> None:
    """Reach a control by the keyboard: focus it as Tab would, then press the key."""
    page.focus(selector)
    assert page.evaluate("s => document.activeElement.matches(s)", selector)
    page.keyboard.press(key)


@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="embedded SQLite only: on PostgreSQL every --demo server of the suite shares one "
    "database, so the dashboard's first development environment may be another test's",
)
def test_a_flows_authoring_sections_by_keyboard_on_a_laptop_and_a_phone(tmp_path, browser_page):  # noqa: F811
    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        _make_staff_user(server)
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        current = rest.get("/flows/onboarding").json()
        second = {
            "identifier": "onboarding",
            "name": current["name"] + " (shorter)",
            "steps": [{k: s[k] for k in ("identifier", "name")} for s in current["steps"]],
            "transitions": [
                {
                    k: v
                    for k, v in t.items()
                    if k in ("identifier", "from", "to", "type", "condition")
                }
                for t in current["transitions"]
            ],
        }
        second["steps"][0]["name"] = "Say hello"
        second["transitions"] = second["transitions"][:-1]
        assert rest.post("/flows", json=second).status_code == 201

        page.set_viewport_size({"width": 1280, "height": 900})
        sign_in(page, server)
        page.click("[data-environment=development][href$='/flows/']")
        page.wait_for_url("**/flows/")
        flows_url = page.url
        page.goto(f"{flows_url}onboarding/")
        page.wait_for_selector("[data-section=versions] [data-version='2']")
        assert page.locator("[data-section=versions] tbody tr").count() == 2
        assert "key:" + keys["secret_key"][:8] in page.inner_text("[data-section=versions]")
        assert page.locator("[data-diff=changed][data-diff-kind=step]").count() == 1
        assert page.locator("[data-diff=removed][data-diff-kind=transition]").count() == 1
        page.locator("[data-section=differences]").scroll_into_view_if_needed()
        shot(page, "dashboard-flow-authoring-1280", docs=True)

        # switches by keyboard: untick "enabled", save
        press_on(page, "#enabled", " ")
        press_on(page, "[data-form=switches] button[type=submit]")
        page.wait_for_selector(".message[data-level=success]")
        assert not page.is_checked("#enabled")
        started = rest.put("/people/kb", json={"data": {}})
        assert started.status_code == 201
        refused = rest.post("/people/kb/flows", json={"flow": "onboarding"})
        assert refused.status_code == 409 and "disabled" in refused.json()["errors"][0]

        # archive, seen apart on the flows page, then back
        press_on(page, "[data-form=archive] button[type=submit]")
        page.wait_for_selector("[data-archived]")
        page.goto(flows_url)
        page.wait_for_selector("[data-section=archived] [data-flow=onboarding]")
        page.goto(f"{flows_url}onboarding/")
        press_on(page, "[data-form=archive] button[type=submit]")
        page.wait_for_selector(".message[data-level=success]")
        assert page.locator("[data-archived]").count() == 0

        # promote version 2 to production by keyboard
        press_on(page, "[data-form=promote] button[type=submit]")
        page.wait_for_selector(".message[data-level=success]")
        assert "in production" in page.inner_text(".messages")
        actions = [
            page.get_attribute(f"[data-section=audit] tbody tr:nth-child({i})", "data-audit-action")
            for i in (1, 2, 3, 4)
        ]
        assert actions == ["promote", "unarchive", "archive", "switch"]
        audit_url = flows_url.replace("/flows/", "/audit/")
        page.goto(audit_url)
        page.wait_for_selector("[data-audit-action=promote]")
        assert USER in page.inner_text("table.data")
        shot(page, "dashboard-audit-1280")

        # start it for a person from its page, by keyboard: refused while switched off,
        # then, switched on, the person's page with the new instance
        page.goto(f"{flows_url}onboarding/")
        page.fill("#start-person", "kb")
        press_on(page, "[data-form=start] button[type=submit]")
        page.wait_for_selector(".message[data-level=error]")
        assert "disabled" in page.inner_text(".messages")
        press_on(page, "#enabled", " ")
        press_on(page, "[data-form=switches] button[type=submit]")
        page.wait_for_selector(".message[data-level=success]")
        page.fill("#start-person", "kb")
        page.locator("[data-form=start]").scroll_into_view_if_needed()
        shot(page, "dashboard-flow-start-1280", viewport=True)
        press_on(page, "#start-person", "Enter")
        page.wait_for_url("**/people/kb/")
        assert "Flow onboarding started for kb." in page.inner_text(".messages")
        assert rest.get("/people/kb/flows").json()[0]["flow"] == "onboarding"

        # a phone: nothing wider than the screen
        page.set_viewport_size({"width": 390, "height": 844})
        for url, name in (
            (f"{flows_url}onboarding/", "dashboard-flow-authoring-390"),
            (audit_url, "dashboard-audit-390"),
        ):
            page.goto(url)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{url} is {width} px wide"
            shot(page, name)
    finally:
        server.stop()


def test_the_builder_makes_a_flow_without_json(tmp_path, browser_page):  # noqa: F811
    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        _make_staff_user(server)
        page.set_viewport_size({"width": 1280, "height": 900})
        sign_in(page, server)
        page.click("[data-environment=development][href$='/flows/']")
        page.wait_for_url("**/flows/")
        flows_url = page.url
        page.goto(flows_url.replace("/flows/", "/new-flow/"))
        page.fill("input[name=identifier]", "hello-tour")
        for sid in ("hello", "bye"):
            page.click("[data-action=add-step]")
            # the new editor's identifier field has the focus: typed, it names the editor
            page.keyboard.type(sid)
            page.wait_for_selector(f"[data-step-editor='{sid}']")
        page.select_option("[data-step-editor=hello] select[name='content.type']", "modal")
        page.fill("[data-step-editor=hello] [name='content.title']", "Welcome aboard")
        page.click("[data-action=add-transition]")
        page.keyboard.type("next")
        editor = "[data-transition-editor]"
        page.fill(f"{editor} [name=from]", "hello")
        page.fill(f"{editor} [name=to]", "nowhere")
        # a condition is checked as it is typed
        page.fill(f"{editor} [name=condition]", "person.plan ==")
        page.wait_for_selector(f"{editor} [data-problem]")
        page.fill(f"{editor} [name=condition]", 'person.plan == "pro"')
        page.wait_for_selector(f"{editor} [data-problem]", state="detached")
        # save: the unknown step is named beside the transition
        page.click("[data-action=save-draft]")
        beside_to = f"{editor} .field:has([name=to]) [data-problem]"
        page.wait_for_selector(beside_to)
        assert "nowhere" in page.inner_text(beside_to)
        assert page.get_attribute(f"{editor} [name=to]", "aria-invalid") == "true"
        shot(page, "dashboard-builder-1280", docs=True)
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "dashboard-builder-390")
        page.set_viewport_size({"width": 1280, "height": 900})
        # fixed, one click publishes and leads to the flow's page
        page.fill(f"{editor} [name=to]", "bye")
        page.click("[data-action=publish]")
        try:
            page.wait_for_url("**/flows/hello-tour/", timeout=5000)
        except Exception:
            raise AssertionError(page.inner_text("#builder")) from None
        assert page.locator("[data-section=versions] [data-version='1']").count() == 1
    finally:
        server.stop()
