"""The dashboard's authoring on a flow's page (CONTRACT.md, "Authoring"): versions with
their hash and publisher, the differences between two, switches, archive, promotion and
the audit, each change made by a staff user with a CSRF-checked form."""

import json
import re
from html import unescape

import pytest
from django.contrib.auth.models import User
from django.test import Client

from stepstream.engine import audit, flows
from stepstream.models import AuditEntry, FlowSwitch, StateChange
from stepstream.testing.flows import LINEAR_FLOW

PASSWORD = "correct horse battery staple"


@pytest.fixture
def staff(db):
    return User.objects.create_user("ada", "ada@example.com", PASSWORD, is_staff=True)


@pytest.fixture
def browser(staff):
    client = Client()
    client.force_login(staff)
    return client


SECOND = {
    **LINEAR_FLOW,
    "start_when": 'person.plan == "pro"',
    "steps": [
        {"identifier": "welcome", "name": "Hello"},
        {"identifier": "profile", "name": "Profile"},
        {"identifier": "finish", "name": "Finish"},
    ],
    "transitions": [
        {"identifier": "next", "from": "welcome", "to": "profile", "condition": "true"},
        {"identifier": "next", "from": "profile", "to": "finish"},
    ],
}


def page(browser, env, query: str = "") -> str:
    answer = browser.get(f"/dashboard/{env.pk}/flows/onboarding/{query}")
    assert answer.status_code == 200
    return unescape(answer.content.decode())


def test_versions_and_their_differences(browser, env):
    flows.publish(env, LINEAR_FLOW, "key:sk_abcde")
    flows.publish(env, SECOND, "ada")
    html = page(browser, env)
    latest_hash = flows.latest(env, "onboarding").hash
    assert 'data-version="2"' in html and 'data-version="1"' in html
    assert "key:sk_abcde" in html and ">ada<" in html
    assert f'data-hash="{latest_hash}"' in html
    # version 2 against version 1 by default
    for change, kind, what in [
        ("changed", "step", "welcome"),
        ("added", "step", "finish"),
        ("removed", "step", "done"),
        ("changed", "transition", "next: welcome → profile"),
        ("added", "transition", "next: profile → finish"),
        ("removed", "transition", "next: profile → done"),
        ("added", "start_when", "start_when"),
    ]:
        assert f'data-diff="{change}" data-diff-kind="{kind}"' in html, (change, kind)
        assert what in html
    assert "Hello" in html
    # version 1 against version 2: the other way round
    back = page(browser, env, "?version=1&compare=2")
    pattern = r'data-diff="added" data-diff-kind="step">.*?<td class="mono small">(\w+)'
    assert re.findall(pattern, back) == ["done"]
    flows.publish(env, LINEAR_FLOW)
    same = page(browser, env, "?compare=1")
    assert "have the same content" in same


def test_switches_archive_and_promotion_from_the_page(browser, env, other_env):
    flows.publish(env, LINEAR_FLOW)
    change = f"/dashboard/{env.pk}/flow-change/"
    done = browser.post(
        change,
        {"flow": "onboarding", "op": "switch", "starts_at": "2030-01-01T09:00", "ends_at": ""},
        follow=True,
    )
    assert "Switches saved" in done.content.decode()
    switch = FlowSwitch.objects.get(environment=env, identifier="onboarding")
    assert switch.enabled is False  # the box was not ticked
    assert switch.starts_at.isoformat() == "2030-01-01T09:00:00+00:00"
    html = page(browser, env)
    assert 'value="2030-01-01T09:00"' in html
    refused = browser.post(
        change,
        {
            "flow": "onboarding",
            "op": "switch",
            "enabled": "on",
            "starts_at": "2030-01-01T09:00",
            "ends_at": "2029-01-01T09:00",
        },
        follow=True,
    )
    assert "starts_at must be before ends_at" in unescape(refused.content.decode())

    browser.post(change, {"flow": "onboarding", "op": "archive"})
    flows_page = browser.get(f"/dashboard/{env.pk}/flows/").content.decode()
    assert 'data-section="archived"' in flows_page and "data-archived" in flows_page
    assert "Unarchive" in page(browser, env)
    browser.post(change, {"flow": "onboarding", "op": "unarchive"})
    assert (
        'data-section="archived"' not in browser.get(f"/dashboard/{env.pk}/flows/").content.decode()
    )

    promoted = browser.post(
        change,
        {"flow": "onboarding", "op": "promote", "version": "1", "to": "production"},
        follow=True,
    )
    assert "is now version 1 in production" in promoted.content.decode()
    there = flows.latest(other_env, "onboarding")
    assert there.hash == flows.latest(env, "onboarding").hash and there.published_by == "ada"

    actions = [e["action"] for e in audit.for_object(env.pk, "flow:onboarding")]
    assert actions == ["promote", "unarchive", "archive", "switch", "publish"]
    assert {
        e.actor for e in AuditEntry.objects.filter(environment=env).exclude(action="publish")
    } == {"ada"}
    html = page(browser, env)
    assert 'data-audit-action="promote"' in html and 'data-audit-action="switch"' in html


def test_the_environment_audit_page(browser, env):
    flows.publish(env, LINEAR_FLOW, "key:sk_abcde")
    browser.post(f"/dashboard/{env.pk}/flow-change/", {"flow": "onboarding", "op": "archive"})
    html = browser.get(f"/dashboard/{env.pk}/audit/").content.decode()
    assert html.index('data-audit-action="archive"') < html.index('data-audit-action="publish"')
    assert "key:sk_abcde" in html and "ada" in html


def test_changes_need_the_csrf_token_and_staff(staff, env):
    flows.publish(env, LINEAR_FLOW)
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    url = f"/dashboard/{env.pk}/flow-change/"
    assert client.post(url, {"flow": "onboarding", "op": "archive"}).status_code == 403
    anonymous = Client()
    assert anonymous.post(url, {"flow": "onboarding", "op": "archive"}).status_code == 302
    assert not FlowSwitch.objects.filter(environment=env).exists()
    assert client.get(url).status_code == 405


# --- the builder --------------------------------------------------------------


def builder_call(client, env, body):
    return client.post(
        f"/dashboard/{env.pk}/builder-api/", json.dumps(body), content_type="application/json"
    )


def test_the_builder_saves_checks_and_publishes_a_draft(browser, env):
    assert browser.get(f"/dashboard/{env.pk}/new-flow/").status_code == 200
    incomplete = {
        "identifier": "tour",
        "steps": [{"identifier": "a"}],
        "transitions": [{"identifier": "go", "from": "a", "to": "nowhere", "type": "manual"}],
    }
    saved = builder_call(browser, env, {"op": "save", "draft": incomplete}).json()
    assert saved["problems"] and "'nowhere'" in saved["problems"][0]
    refused = builder_call(
        browser, env, {"op": "publish", "draft": incomplete, "etag": saved["etag"]}
    )
    assert refused.status_code == 400 and refused.json()["problems"] == saved["problems"]
    checked = builder_call(browser, env, {"op": "check", "condition": "person.plan =="}).json()
    assert checked["ok"] is False and checked["errors"]
    stale = builder_call(browser, env, {"op": "save", "draft": incomplete})
    assert stale.status_code == 409  # the draft exists and this call named no ETag of it
    published = builder_call(browser, env, {"op": "publish", "draft": LINEAR_FLOW})
    assert published.status_code == 201 and published.json()["version"] == 1
    assert flows.latest(env, "onboarding").published_by == "ada"
    # the edit page opens the latest version (no draft left)
    page = browser.get(f"/dashboard/{env.pk}/flows/onboarding/edit/").content.decode()
    assert 'id="builder-config"' in page and '"identifier": "welcome"' in page


def test_the_later_of_two_builder_saves_is_refused_with_a_way_to_reload(browser, env):
    grace = User.objects.create_user("grace", "grace@example.com", PASSWORD, is_staff=True)
    other = Client()
    other.force_login(grace)
    flows.publish(env, LINEAR_FLOW, "ada")
    # both open the edit page of a flow with no draft: their pages carry no ETag
    for client in (browser, other):
        config = builder_config(client, env)
        assert config["etag"] is None and config["draft"]["identifier"] == "onboarding"
    first = builder_call(browser, env, {"op": "save", "draft": {**LINEAR_FLOW, "name": "A"}})
    assert first.status_code == 200 and first.json()["revision"] == 1
    late = builder_call(other, env, {"op": "save", "draft": {**LINEAR_FLOW, "name": "B"}})
    assert late.status_code == 409
    assert "ada" in late.json()["conflict"] and "revision 1" in late.json()["conflict"]
    assert late.json()["reload"] == f"/dashboard/{env.pk}/flows/onboarding/edit/"
    # reloading opens ada's draft with its ETag; a save from there is accepted
    config = builder_config(other, env)
    assert config["draft"]["name"] == "A" and config["etag"] == first.json()["etag"]
    body = {"op": "save", "draft": {**LINEAR_FLOW, "name": "B"}, "etag": config["etag"]}
    assert builder_call(other, env, body).json()["revision"] == 2
    # ada's next save names revision 1: refused, naming grace
    body = {"op": "publish", "draft": LINEAR_FLOW, "etag": first.json()["etag"]}
    stale = builder_call(browser, env, body)
    assert stale.status_code == 409 and "grace" in stale.json()["conflict"]
    assert flows.latest(env, "onboarding").version == 1  # nothing published


def builder_config(client, env) -> dict:
    html = client.get(f"/dashboard/{env.pk}/flows/onboarding/edit/").content.decode()
    found = re.search(r'<script id="builder-config" type="application/json">(.*?)</script>', html)
    assert found
    return json.loads(found.group(1))


def test_the_builder_needs_staff_and_the_csrf_token(staff, env):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert builder_call(client, env, {"op": "save", "draft": LINEAR_FLOW}).status_code == 403
    assert builder_call(Client(), env, {"op": "save", "draft": LINEAR_FLOW}).status_code == 302


@pytest.mark.parametrize(
    "draft, drawn",
    [
        (None, []),
        (7, []),
        ({"steps": 3, "transitions": "x"}, []),
        ({"steps": [{"identifier": ""}, 4, {"identifier": "a"}, {"identifier": "a"}]}, ["a"]),
        ({"steps": [{"identifier": "a"}], "transitions": [{"from": "a", "to": "b"}, None]}, ["a"]),
    ],
)
def test_the_builders_graph_draws_what_an_unfinished_draft_holds(browser, env, draft, drawn):
    answer = builder_call(browser, env, {"op": "graph", "draft": draft})
    assert answer.status_code == 200
    html = answer.json()["html"]
    assert re.findall(r'data-step="([^"]*)"', html) == drawn
    assert "data-edge-from" not in html and "data-count" not in html


def test_the_builders_graph_is_the_flow_pages_drawing(browser, env):
    flows.publish(env, LINEAR_FLOW, "ada")
    html = builder_call(browser, env, {"op": "graph", "draft": LINEAR_FLOW}).json()["html"]
    flow_page = page(browser, env)
    for fragment in re.findall(r'<path d="[^"]*" class="edge[^"]*"', html):
        assert fragment in flow_page  # the same routes, from the same layout
    assert re.findall(r'data-step="([^"]*)"', html) == [
        s["identifier"] for s in LINEAR_FLOW["steps"]
    ]


def test_a_flow_is_started_for_a_person_from_its_page(browser, env):
    """A team tries a flow without a terminal: "Start it for the person" on the flow's page
    makes the same start as REST (cause: admin), refusals shown as the page's message."""
    from stepstream import engine

    flows.publish(env, LINEAR_FLOW)
    html = page(browser, env)
    assert 'data-form="start"' in html and 'for="start-person"' in html
    change = f"/dashboard/{env.pk}/flow-change/"
    unknown_person = browser.post(
        change, {"flow": "onboarding", "op": "start", "person_key": "ann"}, follow=True
    )
    assert "No person with person_key &#x27;ann&#x27;" in unknown_person.content.decode()
    engine.do_put_person(env, "ann", {})
    done = browser.post(change, {"flow": "onboarding", "op": "start", "person_key": "ann"})
    assert done.status_code == 302 and done["Location"].endswith("/people/ann/")
    followed = browser.get(done["Location"]).content.decode()
    assert "Flow onboarding started for ann." in followed
    state = engine.snapshot(env, "ann")
    assert [f["flow"] for f in state["flows"]] == ["onboarding"]
    first = StateChange.objects.filter(person__person_key="ann", person__environment=env).first()
    assert first is not None and first.cause["kind"] == "call" and first.cause["via"] == "admin"

    again = browser.post(
        change, {"flow": "onboarding", "op": "start", "person_key": "ann"}, follow=True
    )
    assert "already has flow" in unescape(again.content.decode())
    bad = browser.post(change, {"flow": "onboarding", "op": "start", "person_key": ""}, follow=True)
    assert "person_key" in unescape(bad.content.decode())
    unknown = browser.post(
        change, {"flow": "nope", "op": "start", "person_key": "bob"}, follow=True
    )
    assert unknown.status_code == 404  # back to that flow's page, which does not exist
    assert [f["flow"] for f in engine.snapshot(env, "ann")["flows"]] == ["onboarding"]
