"""Any content accepted at publish renders without a console error (issue 25), in Chromium.

Hypothesis draws a flow's content (every type, Markdown bodies with links, HTML and
stray delimiters, any Unicode, targets present and absent, buttons, dismissal,
checklist items, locales); those `validate_definition` accepts (publish's own check)
are localized as `get_content` answers them (`content.for_locale`) and rendered by
the real renderer (`client.render()`, the SDK served by a real `stepstream serve`,
on a page of another origin, with the in-page server of tests/render_fake_server.js),
and drawn by the builder's `preview()`. Its controls are used as a person would: the
hotspot opened, the first button pressed (a transition, then a completion), Escape.
No page error and no console error, whatever was drawn.
"""

import json
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stepstream.engine import content, flows
from stepstream.errors import Invalid
from tests.test_browser import CHROMIUM, browser_page  # noqa: F401 - the fixture
from tests.test_render_browser import product_site, sdk_server  # noqa: F401 - the fixtures

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run installs it)",
    ),
    pytest.mark.backend_agnostic,
]

# Markdown's pieces, and what a hostile or careless author writes
FRAGMENTS = [
    "**",
    "*",
    "_",
    "__",
    "`",
    "\\",
    "[",
    "](",
    ")",
    "\n",
    "\n\n",
    "- ",
    "* ",
    "1. ",
    "[the guide](https://example.com/guide)",
    "[write](mailto:help@acme.test)",
    "[bad](javascript:alert(1))",
    "<b>bold</b>",
    "<script>console.error('parsed')</script>",
    '<img src=x onerror="console.error(1)">',
    "&amp;",
    "**strong *and em***",
    "`code *not em*`",
    "\u202e",
    "🎉",
    "ﷺ",
]
_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12
)
_markdown = st.lists(st.sampled_from(FRAGMENTS) | _text, min_size=1, max_size=12).map("".join)


def _texts(most: int):
    return _markdown.map(lambda s: s[:most])


# elements of the product page (tests/test_render_browser.py PAGE), and some that are not
SELECTORS = ["#save", "#menu", "#edge", ".card button", "main > .card", "#absent", "nav a:hover"]


@st.composite
def _content(draw, leaves: bool):
    """A step's content: on step "a" (left by "next") when `leaves`, else on final "b"."""
    kind = draw(st.sampled_from(content.TYPES))
    out: dict = {"type": kind}
    if draw(st.booleans()) or kind == "checklist":
        out["title"] = draw(_texts(content.MAX_TITLE))
    if "title" not in out or draw(st.booleans()):
        out["body"] = draw(_texts(content.MAX_BODY))
    if kind in content.NEEDS_TARGET or draw(st.booleans()):
        target: dict = {"selector": draw(st.sampled_from(SELECTORS))}
        if draw(st.booleans()):
            target["fallbacks"] = draw(st.lists(st.sampled_from(SELECTORS), max_size=2))
        if draw(st.booleans()):
            target["text"] = draw(st.sampled_from(["Save", "Menu", "Filters", "nowhere"]))
        if draw(st.booleans()):
            target["placement"] = draw(st.sampled_from(content.PLACEMENTS))
        if draw(st.booleans()):
            target["wait_ms"] = draw(st.integers(0, content.MAX_WAIT_MS))
        out["target"] = target
    press = {"transition": "next"} if leaves else {"action": "complete"}
    buttons = [
        {"label": draw(_texts(content.MAX_LABEL)), **press}
        | ({"style": draw(st.sampled_from(["primary", "secondary", "link"]))})
        for _ in range(draw(st.integers(0, 2)))
    ]
    if buttons:
        out["buttons"] = buttons
    if draw(st.booleans()):
        out["dismiss"] = draw(st.sampled_from(content.DISMISS))
    if kind == "checklist":
        out["items"] = [
            {"label": draw(_texts(content.MAX_LABEL)), "step": draw(st.sampled_from(["a", "b"]))}
            for _ in range(draw(st.integers(1, 3)))
        ]
    locales = {}
    for code in draw(st.lists(st.sampled_from(["fr", "pt-BR", "ar"]), unique=True, max_size=2)):
        texts = {key: draw(_texts(200)) for key in ("title", "body") if key in out}
        if buttons:
            texts["buttons"] = [{"label": draw(_texts(content.MAX_LABEL))} for _ in buttons]
        if "items" in out:
            texts["items"] = [{"label": draw(_texts(content.MAX_LABEL))} for _ in out["items"]]
        locales[code] = texts
    if locales:
        out["locales"] = locales
    return out


def _accepted(first: dict, second: dict) -> dict | None:
    """The flow as publish keeps it, or None where publish refuses it (a 400)."""
    try:
        return flows.validate_definition(
            {
                "identifier": "random",
                "steps": [
                    {"identifier": "a", "content": first},
                    {"identifier": "b", "content": second},
                ],
                "transitions": [{"identifier": "next", "from": "a", "to": "b"}],
            }
        )
    except Invalid:
        return None


# One example in the page: a fresh client and renderer on the in-page server, the flow
# started, each piece used as a person would, everything stopped. Answers what it saw.
RUN = """async ({ sdk, setup, locale, raw }) => {
  window.renderer?.stop();
  window.client?.close();
  await window.boot({ sdk, setup, options: locale ? { locale } : {} });
  const { preview } = await import(new URL("./stepstream-render.js", sdk).href);
  const box = document.getElementById("late-slot");
  for (const c of raw) preview(box, c, { locale: locale ?? undefined });
  box.replaceChildren("Reports are coming.");

  const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
  const until = async (test) => {
    for (let i = 0; i < 400 && !test(); i++) await frame();
    return test();
  };
  const found = (t) => [t.selector, ...(t.fallbacks ?? [])].some((s) =>
    [...document.querySelectorAll(s)].some((n) =>
      (!t.text || n.textContent.includes(t.text)) && n.getClientRects().length));
  const pieceOf = (step) => [...window.renderer.pieces.values()].find((p) => p.spec.step === step);
  const settled = (step) => {
    const p = pieceOf(step);
    return p && (p.shown || (p.c.target && !found(p.c.target)));
  };
  const seen = [];
  window.fake.start("random");
  for (const step of ["a", "b"]) {
    if (!(await until(() => settled(step)))) return { seen, stuck: step };
    const p = pieceOf(step);
    seen.push([step, p.type, p.shown]);
    if (!p.shown) break; // its target is not on the page: nothing to press
    if (p.marker) p.marker.click(); // a hotspot opens as a tooltip
    await frame();
    const button = p.box.querySelector(".buttons button");
    if (!button) break;
    button.click();
    const want = step === "a" ? "b" : null;
    const moved = () => {
      const i = window.fake.instances.get("random");
      return want ? i.steps.find((s) => s.identifier === want).state === "active"
        : i.state !== "active";
    };
    if (!(await until(moved))) return { seen, stuck: `after ${step}'s button` };
  }
  document.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
  await frame();
  window.renderer.stop();
  return { seen, stuck: null };
}"""


def test_any_content_accepted_at_publish_renders_without_a_console_error(
    browser_page,  # noqa: F811
    sdk_server,  # noqa: F811
    product_site,  # noqa: F811
):
    page = browser_page
    console: list[str] = []

    def heard(message) -> None:
        # the product page has no icon: the browser's own request for one is not the SDK's
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            console.append(f"{message.text} ({message.location['url']})")

    page.on("console", heard)
    page.goto(f"{product_site}/index.html")
    page.wait_for_function("() => typeof window.boot === 'function'")
    sdk = f"{sdk_server.url}/static/stepstream.js"
    rendered = []

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(
        first=_content(leaves=True),
        second=_content(leaves=False),
        locale=st.sampled_from([None, "fr", "pt-BR", "pt", "de"]),
    )
    def renders(first, second, locale):
        flow = _accepted(first, second)
        assume(flow is not None)
        steps = [(s["identifier"], s["content"]) for s in flow["steps"]]
        # get_content's own answer for that locale (a made-up version id, forgotten after)
        answer = content.for_locale(2**40, "random", 1, lambda: steps, locale)
        content.forget(2**40)
        by_step = {s["identifier"]: s["content"] for s in answer["steps"]}
        setup = {
            "flows": [
                {
                    "identifier": "random",
                    "initial": "a",
                    "steps": [{"identifier": i, "content": by_step.get(i)} for i in ("a", "b")],
                    "transitions": [{"name": "next", "from": "a", "to": "b"}],
                }
            ],
        }
        raw = [c for _, c in steps if c]
        result = page.evaluate(RUN, {"sdk": sdk, "setup": setup, "locale": locale, "raw": raw})
        problem = json.dumps({"first": first, "second": second, "locale": locale})
        assert result["stuck"] is None, (result, problem)
        assert page.errors == [], (page.errors, problem)
        assert console == [], (console, problem)
        rendered.append(result["seen"])

    renders()
    # the examples did reach the browser, and showed something there
    assert len(rendered) >= 20, len(rendered)
    assert any(shown for seen in rendered for _, _, shown in seen)
