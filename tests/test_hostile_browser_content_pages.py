"""A hostile browser with the publishable key against a real server (CONTRACT.md, "Content"
and "Orchestration"): every bad input is a clear 4xx, never a 500, and nothing it sends
makes the server hold more than the documented limits."""

import copy
import json
import uuid

import pytest

from stepstream.testing.flows import CONTENT_FLOW


@pytest.fixture
def tour(rest):
    flow = copy.deepcopy(CONTENT_FLOW)
    flow["identifier"] = f"hostile-{uuid.uuid4().hex[:8]}"
    response = rest.post("/flows", json=flow)
    assert response.status_code == 201, response.json()
    return flow["identifier"]


def refused(answer: dict, status: int = 400) -> str:
    assert answer["status"] == status, answer
    assert answer["errors"] and all(isinstance(e, str) for e in answer["errors"]), answer
    return answer["errors"][0]


BAD_URLS = [
    "",
    "https://example.com/" + "x" * 5000,
    "https://example.com/\u0000",
    "https://example.com/\u007f",
    "https://example.com/\u0085",
    "https://[::1/",
    "http://[x]/",
    42,
    None,
    ["https://example.com/"],
    {"url": "https://example.com/"},
]


@pytest.mark.parametrize("url", BAD_URLS, ids=range(len(BAD_URLS)))
def test_page_refuses_bad_urls_with_a_4xx(ws, person_key, url):
    answer = ws.request("page", {"person_key": person_key, "url": url})
    assert 400 <= answer["status"] < 500, answer


def test_page_with_odd_but_valid_urls(ws, person_key):
    for url in (
        "https://example.com/a?b=1&b=2&c",
        "https://example.com/%ZZ?%zz=%",
        "https://example.com/é?ü=ß#frag",
        "https://user:pw@example.com:8443/p;x?q=" + "v" * 500,
        "/relative/only",  # path as written: a relative URL is the path
        "javascript:alert(1)",  # stored and compared as text, never followed
        "https://exa mple.com/",
    ):
        answer = ws.request("page", {"person_key": person_key, "url": url})
        assert answer["status"] in (200, 400), answer


def test_get_content_hostile_arguments(ws, tour):
    for data in (
        {"flow": tour, "version": 0},
        {"flow": tour, "version": -1},
        {"flow": tour, "version": 2**63},
        {"flow": tour, "version": 1.5},
        {"flow": tour, "version": True},
        {"flow": tour, "locale": ""},
        {"flow": tour, "locale": 5},
        {"flow": tour, "locale": ["fr"]},
        {"flow": "x" * 10_000},
        {"flow": {"$ne": 1}},
        {"flow": "../../etc"},
    ):
        assert 400 <= ws.request("get_content", data)["status"] < 500, data
    for locale in ("\u0000", "fr\u0000", "'; drop table x; --", "zz-" + "z" * 32, "FR", "fr-"):
        answer = ws.request("get_content", {"flow": tour, "locale": locale})
        assert answer["status"] in (200, 400), answer


def test_flow_actions_on_bad_names(ws, person_key, tour):
    for action in ("pause", "resume", "exit"):
        for data in (
            {"person_key": person_key},
            {"person_key": person_key, "flow": 1},
            {"person_key": person_key, "flow": "nope"},
            {"person_key": "x" * 5000, "flow": tour},
            {"person_key": None, "flow": tour},
        ):
            assert 400 <= ws.request(action, data)["status"] < 500, (action, data)
    for data in (
        {"person_key": person_key, "flow": tour},
        {"person_key": person_key, "flow": tour, "step": "nope"},
        {"person_key": person_key, "flow": tour, "step": ["done"]},
        {"person_key": "unknown-" + uuid.uuid4().hex, "flow": tour, "step": "done"},
    ):
        assert 400 <= ws.request("complete_step", data)["status"] < 500, data


def test_reserved_events_and_deep_properties(ws, person_key):
    for event in ("$other", "$", "$shown\u0000"):
        refused(ws.request("track", {"person_key": person_key, "event": event}))
    deep = '{"a":' * 2000 + "{}" + "}" * 2000
    text = (
        '{"action": "track", "request_id": 1, "data": {"person_key": '
        + json.dumps(person_key)
        + ', "event": "$shown", "properties": '
        + deep
        + "}}"
    )
    answer = ws.send_raw(text)
    assert 400 <= answer["status"] < 500, answer
    assert ws.request("ping")["status"] == 200
    ok = ws.request(
        "track",
        {
            "person_key": person_key,
            "event": "$shown",
            "properties": {"flow": "x" * 60_000, "version": 1, "step": "s"},
        },
    )
    assert 400 <= ok["status"] < 500, ok


def test_a_page_flood_is_rate_limited_never_an_error(connect, person_key):
    client = connect()
    long_url = "https://example.com/" + "p" * 1500 + "?q="
    statuses = set()
    for i in range(400):
        statuses.add(
            client.request("page", {"person_key": person_key, "url": f"{long_url}{i}"})["status"]
        )
    assert statuses <= {200, 400, 429}, statuses
    assert 200 in statuses


def test_a_url_that_does_not_split_is_refused_and_harms_no_later_write(ws, rest, person_key):
    flow = {
        "identifier": f"on-page-{uuid.uuid4().hex[:8]}",
        "start_when": 'has(page.path) && page.path == "/home"',
        "steps": [{"identifier": "one"}, {"identifier": "two"}],
        "transitions": [{"identifier": "next", "from": "one", "to": "two"}],
    }
    assert rest.post("/flows", json=flow).status_code == 201
    for url in ("https://[::1/", "http://[x]/", "http://a]b/"):
        assert "data.url" in refused(ws.request("page", {"person_key": person_key, "url": url}))
    answer = ws.request("track", {"person_key": person_key, "event": "later"})
    assert answer["status"] == 200, answer
    url = "https://example.com/home"
    assert ws.request("page", {"person_key": person_key, "url": url})["status"] == 200
    flows = ws.request("get_state", {"person_key": person_key})["data"]["flows"]
    assert [f["flow"] for f in flows] == [flow["identifier"]]
