"""The REST reference at /api/v1/docs in a real browser (Debian's Chromium, Playwright).

What a backend developer would do with it, on a `serve --demo` server: read an
operation's request body as a schema (its `$ref` resolved into fields, not shown
as raw JSON), call `GET /api/v1/health` with "Try it out", type the demo's secret
key into "Authorize" and list the flows with it. The page loads nothing from
elsewhere (Swagger UI is vendored under stepstream/static/vendor/swagger-ui/),
logs no console error under its Content-Security-Policy, keeps the key out of
the browser's storage, and fits a phone. Screenshots go to
test-artifacts/reference/ (and docs/api-reference.png with STEPSTREAM_DOCS_SCREENSHOTS=1).
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from stepstream.testing.servers import Server
from tests.test_browser import CHROMIUM, browser_page  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "reference"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run installs it)",
)


def shot(page, name: str, docs: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), animations="disabled")  # the viewport, as a reader sees it
    if docs and os.environ.get("STEPSTREAM_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(path, ROOT / "docs" / f"{name}.png")


def watch(page, origin: str) -> tuple[list[str], list[str]]:
    """Console errors and warnings (a CSP refusal is one), and requests to other origins."""
    problems, elsewhere = [], []
    page.on(
        "console",
        lambda m: (
            problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on(
        "request",
        lambda r: (
            elsewhere.append(r.url) if not r.url.startswith((origin + "/", "data:")) else None
        ),
    )
    return problems, elsewhere


def operation(page, tag: str, operation_id: str):
    """An operation's block, opened."""
    block = page.locator(f"#operations-{tag}-{operation_id}")
    block.locator(".opblock-summary-control").click()
    block.locator(".opblock-body").wait_for()
    return block


def try_it(block) -> tuple[str, str]:
    """Try it out, Execute: (the status shown, the response body shown)."""
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    live = block.locator(".live-responses-table")
    cell = live.locator("tr.response .response-col_status")
    cell.wait_for()
    status = cell.inner_text().strip()
    return status, live.locator(".response-col_description pre").first.inner_text()


@pytest.mark.backend_agnostic
def test_the_api_reference_resolves_schemas_and_tries_calls_with_a_typed_key(
    tmp_path,
    browser_page,  # noqa: F811
):
    page = browser_page
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    server = Server(tmp_path / "data", args=("--demo",))
    try:
        server.start()
        secret_key = json.loads((tmp_path / "data" / "demo.json").read_text())["secret_key"]
        problems, elsewhere = watch(page, server.url)
        page.set_viewport_size(LAPTOP)
        page.goto(f"{server.url}/api/v1/docs")
        page.locator(".opblock").first.wait_for()
        assert page.title() == "Stepstream REST API"
        # the descriptions' Markdown rendered, not shown as asterisks and backticks
        info = page.locator(".information-container .renderedMarkdown")
        assert info.locator("strong", has_text="secret key").count() == 1
        assert "**" not in info.inner_text() and "`" not in info.inner_text()

        # 1. a request body as its schema: FlowDefinition's fields, not {"$ref": ...}
        publish = operation(page, "flows", "publishFlow")
        body = publish.locator(".opblock-section-request-body")
        body.get_by_role("tab", name="Schema").click()
        model = body.locator(".model-box")
        model.wait_for()
        text = model.inner_text()
        assert "$ref" not in text and "#/components" not in text, text
        assert "FlowDefinition" in text
        for field in ("identifier", "steps", "transitions", "start_when"):
            assert field in text, (field, text)
        publish.scroll_into_view_if_needed()
        shot(page, "api-reference", docs=True)
        assert not problems, problems  # loaded and rendered without a console error

        # 2. "Try it out" on GET /api/v1/health, which needs no key
        health = operation(page, "service", "health")
        status, answer = try_it(health)
        assert status == "200", (status, answer)
        assert json.loads(answer)["status"] == "ok"

        # 3. the secret key typed into "Authorize" signs the calls that need it
        flows = operation(page, "flows", "listFlows")
        status, answer = try_it(flows)
        assert status == "401", (status, answer)  # no key yet
        refused = "the server responded with a status of 401 (Unauthorized)"
        assert len(problems) == 1 and refused in problems[0], problems  # Chromium says so
        problems.clear()
        page.get_by_role("button", name="Authorize").first.click()
        form = page.locator(".modal-ux .auth-container", has_text="secretKey")
        form.locator("input").fill(secret_key)
        form.get_by_role("button", name="Apply credentials").click()
        page.locator(".modal-ux").get_by_role("button", name="Close").first.click()
        flows.get_by_role("button", name="Execute").click()
        flows.locator(
            ".live-responses-table tr.response .response-col_status", has_text="200"
        ).wait_for()
        listed = json.loads(
            flows.locator(".live-responses-table pre.microlight").first.inner_text()
        )
        assert "onboarding" in {f["identifier"] for f in listed}
        flows.locator(".request-url").evaluate("e => e.scrollIntoView({block: 'start'})")
        shot(page, "api-reference-try-it")

        # the key stays in the page's memory: not in its storage, nor in a cookie
        stored = page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")
        assert secret_key not in stored
        assert all(secret_key not in c["value"] for c in page.context.cookies())

        # 4. a phone: nothing wider than the screen, a path broken only before a "/"
        page.set_viewport_size(PHONE)
        page.goto(f"{server.url}/api/v1/docs#/instances")
        page.locator("#operations-instances-callTransition").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        path = page.locator("#operations-instances-callTransition .opblock-summary-path")
        path.scroll_into_view_if_needed()
        lines = path.evaluate(LINES_OF_TEXT)
        assert len(lines) >= 2, lines  # too long for one line at 390 px
        assert all(line.startswith("/") for line in lines), lines  # never cut mid-word
        shot(page, "api-reference-phone")

        assert not problems, problems
        assert not elsewhere, f"the reference loaded from elsewhere: {elsewhere}"
    finally:
        server.stop()


# The rendered lines of an element's text: each character's line is the top of its box.
LINES_OF_TEXT = """(element) => {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const lines = new Map();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const box = range.getClientRects()[0];
      if (!box) continue;
      const top = Math.round(box.top);
      lines.set(top, (lines.get(top) || "") + node.data[i]);
    }
  }
  const tops = [...lines.keys()].sort((a, b) => a - b);
  return tops.map((top) => lines.get(top).replace(/\\u200b/g, ""));
}"""
