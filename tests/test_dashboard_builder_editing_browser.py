"""The builder while a flow is edited, in a real browser (Chromium via Playwright), on a real
server: two staff users in two browser contexts edit one draft and the later save is refused
beside the Save button with a way to reload (nothing overwritten); the flow's graph, drawn by
the flow page's own code, gains a step and an edge as they are typed. Screenshots at 1280 and
768 px go to test-artifacts/dashboard/ (and docs/ with STEPSTREAM_DOCS_SCREENSHOTS=1)."""

import json
import os
from collections.abc import Iterator

import pytest

from stepstream.testing.servers import Server
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, TIMEOUT_MS, sync_api
from tests.test_dashboard_authoring_browser import press_on
from tests.test_dashboard_browser import PASSWORD, USER, _make_staff_user, pytestmark, shot
from tests.test_dashboard_builder_browser import type_into

__all__ = ["pytestmark"]

SECOND_USER = f"grace{USER[3:]}"  # ada-1234abcd on PostgreSQL: grace-1234abcd
TOUR = {
    "identifier": "team-tour",
    "name": "Team tour",
    "steps": [{"identifier": "welcome", "name": "Welcome"}, {"identifier": "menu"}],
    "transitions": [{"identifier": "next", "from": "welcome", "to": "menu"}],
}
embedded_only = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="embedded SQLite only: on PostgreSQL every --demo server of the suite shares one "
    "database, so the dashboard's first development environment may be another test's",
)


@pytest.fixture
def browser() -> Iterator:
    """A headless Chromium whose contexts are separate people (cookies of their own)."""
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def person(browser, server, username: str, width: int = 1280):
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(f"{server.url}/dashboard/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url("**/dashboard/**")
    return page


@pytest.fixture
def demo(tmp_path) -> Iterator[tuple[Server, object]]:
    """A --demo server with two staff users and the flow `team-tour` published."""
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        _make_staff_user(server)
        made = server.command(
            "manage",
            "createsuperuser",
            "--noinput",
            "--username",
            SECOND_USER,
            "--email",
            "grace@example.com",
            DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        )
        assert made.returncode == 0, made.stderr
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        assert rest.post("/flows", json=TOUR).status_code == 201
        yield server, rest
    finally:
        server.stop()


def edit_page(page) -> None:
    page.click("[data-environment=development][href$='/flows/']")
    page.wait_for_url("**/flows/")
    page.goto(page.url.replace("/flows/", "/flows/team-tour/edit/"))
    page.wait_for_selector("[data-action=save-draft]")


def rename(page, name: str) -> None:
    page.fill("#flow-name", "")
    type_into(page, "#flow-name", name)


@embedded_only
def test_two_staff_users_one_draft_the_later_save_is_refused_with_a_reload(demo, browser):
    server, rest = demo
    ada = person(browser, server, USER)
    grace = person(browser, server, SECOND_USER)
    for page in (ada, grace):
        edit_page(page)  # both open the published version: no draft yet

    rename(ada, "Ada's tour")
    press_on(ada, "[data-action=save-draft]")
    ada.wait_for_selector("[data-status]:has-text('Draft saved')")

    rename(grace, "Grace's tour")
    press_on(grace, "[data-action=save-draft]")
    conflict = grace.wait_for_selector("[data-conflict]:not([hidden])")
    text = conflict.inner_text()
    assert USER in text and "revision 1" in text
    assert conflict.get_attribute("role") == "alert"
    draft = rest.get("/flows/team-tour/draft").json()
    assert draft["draft"]["name"] == "Ada's tour" and draft["revision"] == 1  # not overwritten
    grace.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    shot(grace, "dashboard-builder-conflict-1280", docs=True, viewport=True)
    grace.set_viewport_size({"width": 768, "height": 1024})
    grace.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    shot(grace, "dashboard-builder-conflict-768", docs=True, viewport=True)

    # the reload control is reached by the keyboard (next after the status line) and
    # opens ada's draft, whose ETag the next save sends
    grace.focus("[data-action=publish]")
    grace.keyboard.press("Tab")
    assert grace.evaluate("document.activeElement.dataset.action") == "reload-draft"
    with grace.expect_navigation():
        grace.keyboard.press("Enter")
    grace.wait_for_selector("[data-action=save-draft]")
    assert grace.input_value("#flow-name") == "Ada's tour"
    assert grace.is_hidden("[data-conflict]")
    rename(grace, "Grace's tour")
    press_on(grace, "[data-action=save-draft]")
    grace.wait_for_selector("[data-status]:has-text('Draft saved')")
    assert rest.get("/flows/team-tour/draft").json()["revision"] == 2

    # now ada's page is the stale one: her publish is refused, nothing is published
    press_on(ada, "[data-action=publish]")
    ada.wait_for_selector("[data-conflict]:not([hidden])")
    assert SECOND_USER in ada.inner_text("[data-conflict]")
    assert rest.get("/flows/team-tour").json()["version"] == 1
    assert not ada.errors and not grace.errors


def graph_steps(page) -> list[str]:
    return page.eval_on_selector_all(
        "[data-graph-holder] [data-step]", "ns => ns.map(n => n.dataset.step)"
    )


@embedded_only
def test_the_flow_is_drawn_as_steps_and_transitions_are_edited(demo, browser):
    server, _ = demo
    page = person(browser, server, USER)
    edit_page(page)
    # the module graph is fetched at once (modulepreload), each module once and found
    preloaded = page.eval_on_selector_all("link[rel=modulepreload]", "ls => ls.map(l => l.href)")
    fetched = page.evaluate(
        "performance.getEntriesByType('resource').map(e => [e.name, e.responseStatus])"
    )
    assert len(preloaded) == 4 and all(n.endswith(".js") for n in preloaded)
    for href in preloaded:
        assert [status for name, status in fetched if name == href] == [200], href
    # drawn with the page, as the flow page draws it: boxes, an edge and its label
    assert graph_steps(page) == ["welcome", "menu"]
    edge = "[data-graph-holder] [data-edge-from='{}'][data-edge-to='{}']"
    drawn = page.query_selector(edge.format("welcome", "menu"))
    assert drawn and drawn.bounding_box()["width"] > 20
    assert "2 steps" in page.text_content("[data-graph-holder] desc")
    # not tab stops here (the editors hold the same): Tab goes from the flow's fields on
    assert page.eval_on_selector_all("[data-graph-holder] [tabindex]", "ns => ns.length") == 0

    press_on(page, "[data-action=add-step]")
    page.keyboard.type("done")
    page.wait_for_selector("[data-graph-holder] [data-step=done]")
    assert graph_steps(page) == ["welcome", "menu", "done"]
    # a step's name shows in its box
    type_into(page, "[data-step-editor=done] [name=name]", "All set")
    page.wait_for_selector("[data-graph-holder] [data-step=done] .step-name >> text=All set")

    press_on(page, "[data-action=add-transition]")
    page.keyboard.type("finish")
    editor = "[data-transition-editor]:nth-child(2)"
    type_into(page, f"{editor} [name=from]", "menu")
    type_into(page, f"{editor} [name=to]", "done")
    page.wait_for_selector(edge.format("menu", "done"), state="attached")  # a flat line
    assert "finish" in page.text_content("[data-graph-holder] .edge-labels")
    # `done` is the last step now: the final one, and `menu` no longer is
    assert "final" in page.get_attribute("[data-graph-holder] [data-step=done]", "class")
    assert "final" not in page.get_attribute("[data-graph-holder] [data-step=menu]", "class")
    # an automatic transition is drawn dashed, as on the flow page
    page.select_option(f"{editor} [name=type]", "automatic")
    page.wait_for_selector(edge.format("menu", "done") + ".auto", state="attached")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "dashboard-builder-graph-1280", docs=True, viewport=True)
    page.set_viewport_size({"width": 768, "height": 1024})
    assert page.evaluate("document.documentElement.scrollWidth") <= 768
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "dashboard-builder-graph-768", docs=True, viewport=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    # a removed step takes its box and edge away
    press_on(page, "[data-step-editor=done] > button")
    page.wait_for_function(
        "() => !document.querySelector(\"[data-graph-holder] [data-step='done']\")"
    )
    assert page.query_selector(edge.format("menu", "done")) is None
    assert not page.errors
