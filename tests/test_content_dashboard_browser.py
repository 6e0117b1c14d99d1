"""The dashboard's content parts in Chromium: the theme on the flows page, what was seen in
the funnel; at a laptop's and a phone's width (screenshots in test-artifacts/dashboard)."""

import copy
import os

import pytest

from stepstream.testing.flows import CONTENT_FLOW
from stepstream.testing.servers import Server
from tests.test_browser import CHROMIUM, browser_page  # noqa: F401 - the fixture
from tests.test_dashboard_browser import PASSWORD, USER, _make_staff_user, shot

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run installs it)",
)


def _populate(rest) -> None:
    flow = copy.deepcopy(CONTENT_FLOW)
    assert rest.post("/flows", json=flow).status_code == 201
    seen = {"flow": "tour", "version": 1}
    for i in range(4):
        key = f"seen-{i}"
        rest.put(f"/people/{key}", json={"data": {}})
        assert rest.post(f"/people/{key}/flows", json={"flow": "tour"}).status_code == 201
        if i < 3:
            track = {"event": "$shown", "properties": {**seen, "step": "welcome"}}
            assert rest.post(f"/people/{key}/track", json=track).status_code == 200
        if i == 0:
            rest.post(f"/people/{key}/flows/tour/transitions", json={"transition": "next"})
            track = {"event": "$target_missing", "properties": {**seen, "step": "menu"}}
            assert rest.post(f"/people/{key}/track", json=track).status_code == 200
    tokens = {"color-primary": "#0f766e", "radius": "4px", "color-backdrop": "rgba(0, 0, 0, 0.4)"}
    assert rest.put("/theme", json={"tokens": tokens}).status_code == 200


def test_theme_and_content_seen_are_shown_at_laptop_and_phone_width(tmp_path, browser_page):  # noqa: F811
    page = browser_page
    server = Server(tmp_path / "data")
    try:
        server.start()
        _make_staff_user(server)
        keys = server.init_project("content")["environments"][0]
        with server.rest(keys["secret_key"]) as rest:
            _populate(rest)
        page.goto(f"{server.url}/dashboard/login/")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        out = server.shell(
            "from stepstream.trust import tenants\n"
            f"print(tenants.environment_for_key({keys['secret_key']!r}, 'secret').pk)"
        )
        env = int(out.strip().splitlines()[-1])  # any id on a shared PostgreSQL
        page.wait_for_url("**/dashboard/**")
        page.click(f"[data-environment=development][href='/dashboard/{env}/flows/']")
        page.wait_for_selector("[data-flow=tour]")
        flows_url = page.url

        # the theme: every token, the ones set told apart from the defaults
        theme = page.locator("[data-theme]")
        assert theme.get_by_role("heading", name="Theme").is_visible()
        primary = page.locator("[data-token=color-primary]")
        assert "#0f766e" in primary.inner_text() and "default" not in primary.inner_text()
        assert "default" in page.locator("[data-token=color-text]").inner_text()
        assert (
            page.locator("[data-token=color-primary] svg.swatch rect").get_attribute("fill")
            == "#0f766e"
        )
        theme.scroll_into_view_if_needed()
        shot(page, "content-theme-1280")

        # the funnel: content shown and target missing per step with content
        page.click("[data-flow=tour]")
        page.wait_for_selector("[data-row-step=welcome]")
        header = page.get_by_role("columnheader", name="Content shown")
        assert header.is_visible()
        cell = "[data-row-step={}] [data-cell={}]"
        assert page.inner_text(cell.format("welcome", "shown")) == "3"
        assert page.inner_text(cell.format("menu", "target_missing")) == "1"
        assert page.inner_text(cell.format("done", "shown")) == "0"
        page.locator("table.data").last.scroll_into_view_if_needed()
        shot(page, "content-funnel-1280")
        flow_url = page.url

        page.set_viewport_size({"width": 390, "height": 844})
        for url, name in ((flows_url, "content-theme-390"), (flow_url, "content-funnel-390")):
            page.goto(url)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{url} is {width} px wide"
            shot(page, name)
        # keyboard: the flow link is reached with Tab and followed with Enter
        page.goto(flows_url)
        page.focus("[data-flow=tour]")
        page.keyboard.press("Enter")
        page.wait_for_selector("[data-row-step=welcome]")
        assert not page.errors, page.errors
    finally:
        server.stop()
