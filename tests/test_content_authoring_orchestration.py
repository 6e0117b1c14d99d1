"""Integration of content (25), authoring (26) and orchestration (27): what each promised
about the others' fields, through the REST API on the run's database."""

import copy

import pytest
from django.contrib.auth.models import User
from django.test import Client

from stepstream.testing.flows import CONTENT_FLOW
from tests.test_authoring import audit, errors, ok, other_api, publish, url


@pytest.fixture
def staff_browser(db):
    client = Client()
    client.force_login(User.objects.create_user("eve", "eve@example.com", "x", is_staff=True))
    return client


def rich_flow() -> dict:
    """Content, priority, a timer and a condition: every field a version carries."""
    flow = copy.deepcopy(CONTENT_FLOW)
    flow["identifier"] = "rich"
    flow["priority"] = 7
    flow["start_when"] = 'page.path == "/home"'
    flow["transitions"].append(
        {
            "identifier": "later",
            "from": flow["steps"][0]["identifier"],
            "to": flow["steps"][1]["identifier"],
            "type": "automatic",
            "after": "2d",
        }
    )
    return flow


def test_a_version_reads_with_content_priority_and_after(api):
    publish(api, rich_flow())
    read = ok(api.get(url("flows", "rich"), {"version": 1}))
    assert read["priority"] == 7
    assert read["steps"][0]["content"]["title"] == "Welcome"
    assert any(t.get("after") == "2d" for t in read["transitions"])


def test_promotion_copies_content_priority_and_after_with_the_same_hash(api, project):
    prod = other_api(project)
    mine = publish(api, rich_flow())
    to = url("flows", "rich", "versions", "1", "promote")
    promoted = ok(api.post(to, {"to": "production"}, format="json"), 201)
    assert promoted["hash"] == mine["hash"]
    there = ok(prod.get(url("flows", "rich")))
    here = ok(api.get(url("flows", "rich")))
    assert {k: v for k, v in there.items() if k not in ("version",)} == {
        k: v for k, v in here.items() if k not in ("version",)
    } or (there["steps"] == here["steps"] and there["transitions"] == here["transitions"])
    assert there["priority"] == 7 and there["steps"][0]["content"] == here["steps"][0]["content"]
    assert ok(prod.get(url("flows", "rich", "versions")))[0]["hash"] == mine["hash"]


def test_a_draft_names_content_problems_by_path_as_publish_does(api):
    flow = rich_flow()
    flow["steps"][0]["content"]["type"] = "popover"
    flow["steps"][1]["content"]["target"] = {"selector": "###"}
    refused = errors(api.post(url("flows"), flow, format="json"), 400)
    draft = ok(api.put(url("flows", "rich", "draft"), flow, format="json"))
    assert sorted(draft["problems"]) == sorted(refused)
    assert any(p.startswith("steps[0].content.type") for p in draft["problems"])


def test_the_condition_check_knows_page(api):
    checked = ok(
        api.post(url("conditions", "check"), {"condition": 'page.path == "/x"'}, format="json")
    )
    assert checked["ok"] is True and checked["variables"] == ["page.path"], checked


def test_explain_an_archived_flow_with_content(api):
    publish(api, rich_flow())
    ok(api.put(url("people", "ann"), {"data": {}}, format="json"), 201)
    ok(api.post(url("people", "ann", "flows"), {"flow": "rich"}, format="json"), 201)
    assert api.delete(url("flows", "rich")).status_code in (200, 204)
    explained = ok(api.get(url("people", "ann", "explain"), {"flow": "rich"}))
    assert explained["enabled"] is False and explained["instance"]["state"] == "active"
    assert [t["identifier"] for t in explained["transitions"]] == ["next", "later"] or len(
        explained["transitions"]
    ) >= 1


def test_limit_changes_are_audited(api, keys):
    body = {"flows": "*", "max": 2, "window": "1h"}
    ok(api.put(url("limits", "daily"), body, format="json"), 201)
    ok(api.put(url("limits", "daily"), {**body, "max": 3}, format="json"), 200)
    errors(api.put(url("limits", "daily"), {**body, "max": 0}, format="json"), 400)
    assert api.delete(url("limits", "daily")).status_code == 204
    entries = audit(api)
    assert [e["action"] for e in entries] == ["limit.create", "limit.replace", "limit.delete"]
    assert {e["object"] for e in entries} == {"limit:daily"}
    assert entries[1]["details"] == {"flows": "*", "max": 3, "window": "1h"}
    assert all(e["actor"] == "key:" + keys["secret_key"][:8] for e in entries)


XSS = '<img src=x onerror="alert(1)">'


def test_the_dashboard_escapes_content_names_and_pages(api, env, staff_browser):
    from stepstream import engine

    flow = rich_flow()
    flow["identifier"] = "x" + XSS
    flow["name"] = XSS
    flow["start_when"] = f"page.url == '{XSS}' || person.plan == '</script>{XSS}'"
    flow["steps"][0]["name"] = XSS
    flow["steps"][0]["content"]["title"] = XSS + "</script><script>alert(2)</script>"
    flow["steps"][0]["content"]["body"] = XSS + " [x](https://example.com/?q=</script>)"
    flow["transitions"][-1]["condition"] = f"person.plan != '{XSS}'"
    publish(api, flow)
    ok(api.put(url("people", "p" + XSS), {"data": {"plan": XSS}}, format="json"), 201)
    engine.do_page(env, "p" + XSS, "https://example.com/</script>" + XSS, via="websocket")
    ok(
        api.post(url("people", "p" + XSS, "flows"), {"flow": flow["identifier"]}, format="json"),
        201,
    )
    from urllib.parse import quote

    pages = [
        f"/dashboard/{env.pk}/flows/",
        f"/dashboard/{env.pk}/flow/?flow={quote(flow['identifier'])}",
        f"/dashboard/{env.pk}/person/?key={quote('p' + XSS)}",
        f"/dashboard/{env.pk}/audit/",
        f"/dashboard/{env.pk}/new-flow/",
    ]
    for path in pages:
        answer = staff_browser.get(path, follow=True)
        assert answer.status_code == 200, (path, answer.status_code)
        html = answer.content.decode()
        assert XSS not in html and "<script>alert" not in html, path
        assert "</script><script>" not in html, path


def test_the_builder_escapes_a_draft(api, env, staff_browser):
    flow = rich_flow()
    flow["steps"][0]["content"]["title"] = "</script><script>alert(3)</script>"
    ok(api.put(url("flows", "rich", "draft"), flow, format="json"))
    answer = staff_browser.get(f"/dashboard/{env.pk}/flows/rich/edit/")
    assert answer.status_code == 200
    assert "<script>alert(3)" not in answer.content.decode()


def test_unknown_locales_share_one_kept_answer(api, env):
    """A browser asking get_content in many made-up locales makes the server keep one
    answer per locale the version has, not one per locale asked (memory stays bounded)."""
    from stepstream.engine import flows

    publish(api, rich_flow())
    assert flows.get_content(env, "rich", 1, "fr-CA") is flows.get_content(env, "rich", 1, "FR")
    assert flows.get_content(env, "rich", 1, "fr")["locale"] == "fr"
    answers = [flows.get_content(env, "rich", 1, f"zz-{i}") for i in range(80)]
    assert all(a["locale"] == "default" for a in answers)
    assert len({id(a) for a in answers}) == 1


def test_a_draft_names_orchestration_problems_as_publish_does(api):
    flow = rich_flow()
    flow["priority"] = "high"
    flow["transitions"][0]["after"] = "2d"  # a manual transition
    flow["transitions"][-1]["after"] = "0s"
    refused = errors(api.post(url("flows"), flow, format="json"), 400)
    draft = ok(api.put(url("flows", "rich", "draft"), flow, format="json"))
    assert sorted(draft["problems"]) == sorted(refused) and len(refused) >= 3, refused
    again = errors(api.post(url("flows", "rich", "draft", "publish")), 400)
    assert sorted(again) == sorted(refused)
    assert ok(api.get(url("flows", "rich", "draft")))["draft"]["priority"] == "high"


def test_explain_before_any_page_and_of_an_unknown_flow(api):
    publish(api, rich_flow())
    ok(api.put(url("people", "bo"), {"data": {}}, format="json"), 201)
    explained = ok(api.get(url("people", "bo", "explain"), {"flow": "rich"}))
    assert (
        explained["instance"] is None
        and explained["start_when"]["value"] in (False,)
        or str(explained["start_when"]["value"]).startswith("error: ")
    )
    assert explained["priority"] == 7
    errors(api.get(url("people", "bo", "explain"), {"flow": "nope"}), 404)
    errors(api.get(url("people", "bo", "explain")), 400)
    errors(api.get(url("people", "nobody", "explain"), {"flow": "rich"}), 404)
