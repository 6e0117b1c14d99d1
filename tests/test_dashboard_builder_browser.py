"""The builder in a real browser (Chromium via Playwright), on a real server: a staff user
builds a three-step flow (a modal, a tooltip, a banner) from scratch with the contract's
hooks and the keyboard only, sees each step drawn by the SDK's own renderer in the
environment's theme, is shown a problem beside its field with nothing published, then
publishes and reads the flow back over REST. The JSON export gives the same flow, and an
import draws it again. Screenshots at 1280, 768 and 390 px go to test-artifacts/dashboard/
(and docs/ with STEPSTREAM_DOCS_SCREENSHOTS=1)."""

import json
import os
import time

import pytest

from stepstream.testing.servers import Server
from tests.test_browser import browser_page  # noqa: F401 - the fixture
from tests.test_dashboard_authoring_browser import press_on, sign_in
from tests.test_dashboard_browser import _make_staff_user, pytestmark, shot

__all__ = ["pytestmark"]

STEP = "[data-step-editor='{}']"


def type_into(page, selector: str, text: str) -> None:
    """Focus a field as Tab would and type, key by key."""
    page.focus(selector)
    assert page.evaluate("s => document.activeElement.matches(s)", selector)
    page.keyboard.type(text)


def choose(page, selector: str, option: str) -> None:
    """Pick a choice of a select with the arrow keys (no mouse)."""
    options = page.eval_on_selector(selector, "s => [...s.options].map(o => o.value)")
    page.focus(selector)
    current = page.eval_on_selector(selector, "s => s.value")
    steps = options.index(option) - options.index(current)
    for _ in range(abs(steps)):
        page.keyboard.press("ArrowDown" if steps > 0 else "ArrowUp")
    assert page.eval_on_selector(selector, "s => s.value") == option


def too_wide(page, width: int) -> list[str]:
    """Elements reaching past the viewport's right edge (none when the page fits)."""
    return page.evaluate(
        """w => [...document.querySelectorAll("body *")]
              .filter(n => n.getBoundingClientRect().right > w + 1)
              .slice(0, 5).map(n => n.tagName + "." + n.className + "#" + n.id)""",
        width,
    )


def preview_text(page, step: str) -> str:
    return page.evaluate(
        """s => document.querySelector(s + " [data-preview] stepstream-content")
              ?.shadowRoot.querySelector('.box')?.innerText ?? ''""",
        STEP.format(step),
    )


@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="embedded SQLite only: on PostgreSQL every --demo server of the suite shares one "
    "database, so the dashboard's first development environment may be another test's",
)
def test_a_three_step_flow_built_by_keyboard_previewed_and_published(tmp_path, browser_page):  # noqa: F811
    page = browser_page
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        _make_staff_user(server)
        keys = json.loads((tmp_path / "data" / "demo.json").read_text())
        rest = server.rest(keys["secret_key"])
        # the environment's theme colours the preview
        assert rest.put("/theme", json={"tokens": {"color-primary": "#0f766e"}}).status_code in (
            200,
            201,
        )
        page.set_viewport_size({"width": 1280, "height": 900})
        sign_in(page, server)
        page.click("[data-environment=development][href$='/flows/']")
        page.wait_for_url("**/flows/")
        page.goto(page.url.replace("/flows/", "/new-flow/"))
        page.wait_for_selector("[data-action=add-step]")
        began = time.monotonic()

        type_into(page, "#flow-identifier", "product-tour")
        type_into(page, "#flow-name", "Product tour")
        type_into(page, "[name=start_when]", 'person.plan == "pro"')
        type_into(page, "[name=priority]", "5")
        for sid in ("welcome", "menu", "done"):
            press_on(page, "[data-action=add-step]")
            page.keyboard.type(sid)  # the new editor's identifier has the focus
            page.wait_for_selector(STEP.format(sid))
        for tid, origin, to in (("show-menu", "welcome", "menu"), ("finish", "menu", "done")):
            press_on(page, "[data-action=add-transition]")
            page.keyboard.type(tid)
            editor = f"[data-transition-editor]:nth-child({1 if tid == 'show-menu' else 2})"
            type_into(page, f"{editor} [name=from]", origin)
            type_into(page, f"{editor} [name=to]", to)

        # step 1: a modal with a button that runs the first transition
        welcome = STEP.format("welcome")
        choose(page, f"{welcome} [name='content.type']", "modal")
        type_into(page, f"{welcome} [name='content.title']", "Welcome aboard")
        type_into(page, f"{welcome} [name='content.body']", "Let us show you **around**.")
        press_on(page, f"{welcome} [data-action=add-button]")
        page.keyboard.type("Show me")  # the new row's label has the focus
        type_into(page, f"{welcome} [name='content.buttons.transition']", "show-menu")
        page.wait_for_function(
            """s => document.querySelector(s + " [data-preview] stepstream-content")
                 ?.shadowRoot.querySelector("button:not(.close)")?.textContent === "Show me" """,
            arg=welcome,
        )
        assert "Welcome aboard" in preview_text(page, "welcome")
        assert page.evaluate(
            """s => {
                const host = document.querySelector(s + " [data-preview] stepstream-content");
                const strong = host.shadowRoot.querySelector(".body strong");
                const button = host.shadowRoot.querySelector(".buttons button");
                return [host.style.getPropertyValue("--stepstream-color-primary"),
                        strong && strong.textContent, getComputedStyle(button).backgroundColor,
                        host.shadowRoot.querySelector("[role=dialog]") !== null];
            }""",
            welcome,
        ) == ["#0f766e", "around", "rgb(15, 118, 110)", True]

        # step 2: a tooltip beside a target, with a translation
        menu = STEP.format("menu")
        choose(page, f"{menu} [name='content.type']", "tooltip")
        type_into(page, f"{menu} [name='content.title']", "Your menu")
        type_into(page, f"{menu} [name='content.body']", "Everything starts here.")
        type_into(page, f"{menu} [name='content.target.selector']", "#app-menu")
        type_into(page, f"{menu} [name='content.target.fallbacks']", "nav .menu")
        choose(page, f"{menu} [name='content.target.placement']", "right")
        choose(page, f"{menu} [name='content.dismiss']", "hide")
        press_on(page, f"{menu} [data-action=add-button]")
        page.keyboard.type("Got it")
        type_into(page, f"{menu} [name='content.buttons.transition']", "finish")
        press_on(page, f"{menu} [data-action=add-locale]")
        page.keyboard.type("fr")
        type_into(page, f"{menu} [name='content.locales.title']", "Votre menu")
        type_into(page, f"{menu} [name='content.locales.body']", "Tout commence ici.")
        type_into(page, f"{menu} [name='content.locales.buttons']", "Compris")
        choose(page, f"{menu} [name=preview-locale]", "fr")
        page.wait_for_function(
            "s => document.querySelector(s + ' [data-preview] stepstream-content')"
            "?.shadowRoot.innerHTML.includes('Votre menu')",
            arg=menu,
        )
        assert "Compris" in preview_text(page, "menu")
        choose(page, f"{menu} [name=preview-locale]", "")

        # step 3: a banner whose button completes the flow's last step
        done = STEP.format("done")
        choose(page, f"{done} [name='content.type']", "banner")
        type_into(page, f"{done} [name='content.body']", "You are all set.")
        press_on(page, f"{done} [data-action=add-button]")
        page.keyboard.type("Thanks")
        # a problem first: the button runs no transition; nothing is published
        press_on(page, "[data-action=publish]")
        beside = f"{done} [data-button] [data-problem]"
        page.wait_for_selector(beside)
        assert "complete" in page.inner_text(beside)
        assert rest.get("/flows/product-tour").status_code == 404
        page.evaluate("window.scrollTo(0, 0)")  # the sticky top bar at the top of the shot
        shot(page, "dashboard-builder-preview-1280", docs=True)
        page.set_viewport_size({"width": 768, "height": 1024})
        assert page.evaluate("document.documentElement.scrollWidth") <= 768, too_wide(page, 768)
        page.evaluate("window.scrollTo(0, 0)")  # the sticky top bar at the top of the shot
        shot(page, "dashboard-builder-preview-768", docs=True)
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, too_wide(page, 390)
        page.evaluate("window.scrollTo(0, 0)")  # the sticky top bar at the top of the shot
        shot(page, "dashboard-builder-preview-390", docs=True)
        page.set_viewport_size({"width": 1280, "height": 900})

        press_on(page, f"{done} [name='content.buttons.complete']", " ")
        page.wait_for_selector(f"{done} [name='content.buttons.transition']", state="hidden")

        # the export is the flow as REST takes it; an import draws it again
        press_on(page, "[data-json] summary")
        press_on(page, "[data-action=export-json]")
        exported = json.loads(page.input_value("[name=json]"))
        assert [s["identifier"] for s in exported["steps"]] == ["welcome", "menu", "done"]
        assert exported["priority"] == 5
        assert exported["steps"][1]["content"]["locales"]["fr"]["buttons"] == [{"label": "Compris"}]
        press_on(page, "[data-action=import-json]")
        page.wait_for_function(
            "s => document.querySelector(s + ' [data-preview] stepstream-content')", arg=done
        )

        press_on(page, "[data-action=publish]")
        try:
            page.wait_for_url("**/flows/product-tour/", timeout=5000)
        except Exception:
            raise AssertionError(page.inner_text("#builder")) from None
        took = time.monotonic() - began
        print(f"built and published a three-step flow in {took:.1f} s of scripted typing")
        flow = rest.get("/flows/product-tour").json()
        assert flow["version"] == 1 and flow["priority"] == 5
        assert flow["start_when"] == 'person.plan == "pro"'
        by_id = {s["identifier"]: s for s in flow["steps"]}
        assert by_id["welcome"]["content"]["type"] == "modal"
        assert by_id["welcome"]["content"]["buttons"][0] == {
            "label": "Show me",
            "transition": "show-menu",
            "style": "primary",
        }
        target = by_id["menu"]["content"]["target"]
        assert target["selector"] == "#app-menu" and target["fallbacks"] == ["nav .menu"]
        assert target["placement"] == "right" and by_id["menu"]["content"]["dismiss"] == "hide"
        assert by_id["done"]["content"]["buttons"][0]["action"] == "complete"
        assert not page.errors
    finally:
        server.stop()
