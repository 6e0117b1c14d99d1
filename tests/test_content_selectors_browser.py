"""The selectors publish accepts are the ones Chromium's querySelector takes (docs/content.md)."""

import os

import pytest

from stepstream.engine import content
from tests.test_browser import CHROMIUM, browser_page  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run installs it)",
)

SELECTORS = [
    "#menu",
    ".a.b > c + d ~ e",
    "nav a[href^='/settings']:not(.hidden)",
    'button[data-x="1"]',
    "li:nth-child(2n+1)",
    "li:nth-of-type(odd)",
    "input:checked",
    "a:hover",
    "a:focus-visible",
    ":is(a, button)",
    ":where(a)",
    "div:has(> p)",
    "[lang|=en]",
    "*",
    "*|*",
    'a[href$=".pdf" i]',
    "p::before",
    "p:contains(x)",
    "div[[",
    "a;b",
    "a}",
    "a >",
    "#",
    ".1a",
    ":not(",
    "a:nth-child(2n+)",
    "svg|a",
    "a, ",
    "a,,b",
    "a:unknown-pseudo",
    "#\\31 23",
    '[data-step="a\\"]"]',
    ".md\\:flex",
    "a:NOT(.x)",
    "li:nth-child(2n+1 of .x)",
    "li:nth-child(-n + 3)",
    "[xlink|href]",
    'a[title="x:hover"]',
    'a[title="svg|a"]',
    ":root > body",
]
EVERYDAY = [
    "#menu",
    ".a.b > c + d ~ e",
    "nav a[href^='/settings']:not(.hidden)",
    "li:nth-child(2n+1)",
    ":is(a, button)",
    "div:has(> p)",
    "[lang|=en]",
    ".md\\:flex",
    "li:nth-child(-n + 3)",
    'a[title="svg|a"]',
    '[data-step="a\\"]"]',
]


def _server_accepts(selector: str) -> bool:
    problems = content.Problems()
    content.check_selector(selector, "s", problems)
    return not problems


@pytest.mark.backend_agnostic
def test_publish_accepts_only_what_chromium_parses(browser_page):  # noqa: F811
    page = browser_page
    page.set_content("<p>x</p>")
    disagree = []
    for selector in SELECTORS:
        browser = page.evaluate(
            "s => { try { document.querySelector(s); return true } catch (e) { return false } }",
            selector,
        )
        server = _server_accepts(selector)
        # the server may refuse more (pseudo-elements, :contains), never accept what throws
        if server and not browser:
            disagree.append(selector)
    assert disagree == [], f"accepted at publish, refused by Chromium: {disagree}"


def test_publish_accepts_the_everyday_selectors():
    assert [s for s in EVERYDAY if not _server_accepts(s)] == []
