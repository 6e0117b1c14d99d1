"""Authoring (CONTRACT.md, "Authoring"): versions, drafts, condition checks, switches,
archive, promotion and the audit, through the REST API on the run's database."""

from datetime import UTC, datetime, timedelta

import pytest

from stepstream.testing.flows import LINEAR_FLOW
from tests.openapi import APIClient

BASE = "/api/v1"


def url(*parts: str) -> str:
    return BASE + "/" + "/".join(parts)


def errors(response, status: int) -> list[str]:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["errors"] and all(isinstance(e, str) for e in body["errors"])
    return body["errors"]


def ok(response, status: int = 200):
    assert response.status_code == status, response.content
    return response.json()


def person(api, key, data=None):
    ok(api.put(url("people", key), {"data": data or {}}, format="json"), 201)


def publish(api, definition, status=201):
    return ok(api.post(url("flows"), definition, format="json"), status)


def actor_of(keys) -> str:
    return "key:" + keys["secret_key"][:8]


def audit(api, **params) -> list[dict]:
    return ok(api.get(url("audit"), params))["entries"]


def other_api(project) -> APIClient:
    client = APIClient()
    secret = project["environments"][1]["secret_key"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- versions -----------------------------------------------------------------


def test_versions_newest_first_with_who_and_a_stable_hash(api, keys):
    publish(api, LINEAR_FLOW)
    publish(api, {**LINEAR_FLOW, "name": "Second"})
    publish(api, LINEAR_FLOW)
    versions = ok(api.get(url("flows", "onboarding", "versions")))
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert all(v["published_by"] == actor_of(keys) for v in versions)
    assert len(keys["secret_key"]) > 8 and keys["secret_key"] not in str(versions)
    # same content, same hash; other content, another hash
    assert versions[0]["hash"] == versions[2]["hash"] != versions[1]["hash"]
    assert all(v["published_at"].endswith("Z") for v in versions)


def test_read_one_version(api):
    publish(api, LINEAR_FLOW)
    publish(api, {**LINEAR_FLOW, "name": "Second"})
    first = ok(api.get(url("flows", "onboarding"), {"version": 1}))
    assert first["version"] == 1 and first["name"] == "Onboarding"
    assert ok(api.get(url("flows", "onboarding")))["version"] == 2
    assert "no version 9" in errors(api.get(url("flows", "onboarding"), {"version": 9}), 404)[0]
    errors(api.get(url("flows", "nothing", "versions")), 404)


# --- drafts -------------------------------------------------------------------


def test_an_incomplete_draft_is_saved_with_its_problems_named_as_publish_names_them(api):
    body = {
        "identifier": "tour",
        "steps": [{"identifier": "a"}, {"identifier": "b"}],
        "transitions": [
            {"identifier": "go", "from": "a", "to": "b"},
            {"identifier": "go", "from": "b", "to": "nowhere"},
            {"identifier": "go", "from": "a", "to": "b", "condition": "person.plan =="},
        ],
    }
    saved = ok(api.put(url("flows", "tour", "draft"), body, format="json"))
    assert saved["draft"]["transitions"] == body["transitions"]
    refused = errors(api.post(url("flows"), body, format="json"), 400)
    assert saved["problems"] == refused
    assert any("'nowhere'" in p for p in saved["problems"])
    assert any(p.startswith("transitions[2].condition") for p in saved["problems"])
    assert ok(api.get(url("flows", "tour", "draft"))) == saved
    # publishing it fails with every problem, and the draft stays
    assert errors(api.post(url("flows", "tour", "draft", "publish")), 400) == refused
    ok(api.get(url("flows", "tour", "draft")))
    errors(api.get(url("flows", "tour")), 404)


def test_a_complete_draft_publishes_and_goes(api, keys):
    saved = ok(api.put(url("flows", "onboarding", "draft"), LINEAR_FLOW, format="json"))
    assert saved["problems"] == []
    flow = ok(api.post(url("flows", "onboarding", "draft", "publish")), 201)
    assert flow["version"] == 1 and flow["name"] == "Onboarding"
    errors(api.get(url("flows", "onboarding", "draft")), 404)
    versions = ok(api.get(url("flows", "onboarding", "versions")))
    assert versions[0]["published_by"] == actor_of(keys)
    actions = [e["action"] for e in audit(api)]
    assert actions == ["publish"]  # the draft save is not audited


def test_draft_rules(api):
    wrong = {**LINEAR_FLOW, "identifier": "other"}
    assert (
        "identifier"
        in errors(api.put(url("flows", "onboarding", "draft"), wrong, format="json"), 400)[0]
    )
    errors(api.get(url("flows", "onboarding", "draft")), 404)
    errors(api.delete(url("flows", "onboarding", "draft")), 404)
    errors(api.post(url("flows", "onboarding", "draft", "publish")), 404)
    # without an identifier, the path's is used
    body = {k: v for k, v in LINEAR_FLOW.items() if k != "identifier"}
    saved = ok(api.put(url("flows", "onboarding", "draft"), body, format="json"))
    assert saved["draft"]["identifier"] == "onboarding" and saved["problems"] == []
    assert api.delete(url("flows", "onboarding", "draft")).status_code == 204
    errors(api.get(url("flows", "onboarding", "draft")), 404)


def test_a_draft_is_bounded_like_a_flow(api, settings):
    most = settings.STEPSTREAM["MAX_FLOW_STEPS"]
    body = {"steps": [{"identifier": f"s{i}"} for i in range(most + 1)]}
    assert "at most" in errors(api.put(url("flows", "big", "draft"), body, format="json"), 400)[0]


def test_a_draft_naming_a_missing_segment_has_that_problem(api):
    body = {**LINEAR_FLOW, "start_when": "segments.pro"}
    saved = ok(api.put(url("flows", "onboarding", "draft"), body, format="json"))
    assert saved["problems"] == ["Unknown segment 'pro': create it with PUT /segments."]
    ok(api.put(url("segments", "pro"), {"condition": "true"}, format="json"), 201)
    assert ok(api.get(url("flows", "onboarding", "draft")))["problems"] == []


# --- conditions ---------------------------------------------------------------


def test_condition_check(api):
    good = ok(
        api.post(
            url("conditions", "check"),
            {"condition": 'person.plan == "pro" && has(events.signup)'},
            format="json",
        )
    )
    assert good == {"ok": True, "errors": [], "variables": ["events.signup", "person.plan"]}
    bad = ok(api.post(url("conditions", "check"), {"condition": "person.plan =="}, format="json"))
    assert bad["ok"] is False and bad["errors"] and bad["variables"] == []
    unknown = ok(api.post(url("conditions", "check"), {"condition": "user.plan"}, format="json"))
    assert unknown["ok"] is False and "unknown variable" in unknown["errors"][0]
    errors(api.post(url("conditions", "check"), {"condition": 3}, format="json"), 400)


def test_condition_check_refuses_what_the_cost_budget_refuses(api):
    from tests.test_condition_budgets import BOMB

    refused = errors(
        api.post(url("flows"), {**LINEAR_FLOW, "start_when": BOMB}, format="json"), 400
    )
    checked = ok(api.post(url("conditions", "check"), {"condition": BOMB}, format="json"))
    assert checked["ok"] is False
    assert checked["errors"] == [refused[0].replace("start_when", "condition", 1)]


# --- switches -----------------------------------------------------------------


def test_a_disabled_flow_does_not_start_until_enabled(api):
    publish(api, {**LINEAR_FLOW, "start_when": 'person.plan == "pro"'})
    person(api, "ann")
    flow = ok(api.patch(url("flows", "onboarding"), {"enabled": False}, format="json"))
    assert flow["enabled"] is False and flow["archived"] is False
    refused = errors(
        api.post(url("people", "ann", "flows"), {"flow": "onboarding"}, format="json"), 409
    )
    assert "disabled" in refused[0]
    ok(api.put(url("people", "bob"), {"data": {"plan": "pro"}}, format="json"), 201)
    assert ok(api.get(url("people", "bob", "flows"))) == []
    ok(api.patch(url("flows", "onboarding"), {"enabled": True}, format="json"))
    ok(api.put(url("people", "bob"), {"data": {"plan": "pro", "n": 1}}, format="json"))
    assert [i["flow"] for i in ok(api.get(url("people", "bob", "flows")))] == ["onboarding"]
    ok(api.post(url("people", "ann", "flows"), {"flow": "onboarding"}, format="json"), 201)


def test_a_running_instance_goes_on_when_disabled(api):
    publish(api, LINEAR_FLOW)
    person(api, "ann")
    ok(api.post(url("people", "ann", "flows"), {"flow": "onboarding"}, format="json"), 201)
    ok(api.patch(url("flows", "onboarding"), {"enabled": False}, format="json"))
    moved = ok(
        api.post(
            url("people", "ann", "flows", "onboarding", "transitions"),
            {"transition": "next"},
            format="json",
        )
    )
    assert [s["state"] for s in moved["steps"]] == ["completed", "active", "inactive"]


def test_the_window(api):
    publish(api, {**LINEAR_FLOW, "start_when": 'person.plan == "pro"'})
    person(api, "ann")
    later = datetime.now(UTC) + timedelta(days=1)
    flow = ok(api.patch(url("flows", "onboarding"), {"starts_at": iso(later)}, format="json"))
    assert flow["starts_at"] == iso(later) and flow["ends_at"] is None
    refused = errors(
        api.post(url("people", "ann", "flows"), {"flow": "onboarding"}, format="json"), 409
    )
    assert "starts_at" in refused[0]
    ok(api.put(url("people", "bob"), {"data": {"plan": "pro"}}, format="json"), 201)
    assert ok(api.get(url("people", "bob", "flows"))) == []
    past = datetime.now(UTC) - timedelta(days=1)
    ok(
        api.patch(
            url("flows", "onboarding"), {"starts_at": None, "ends_at": iso(past)}, format="json"
        )
    )
    assert (
        "ended"
        in errors(
            api.post(url("people", "ann", "flows"), {"flow": "onboarding"}, format="json"), 409
        )[0]
    )
    ok(api.put(url("people", "bob"), {"data": {"plan": "pro", "n": 1}}, format="json"))
    assert ok(api.get(url("people", "bob", "flows"))) == []
    # the window open now: bob's next write (even one that changes nothing it reads) starts it
    ok(
        api.patch(
            url("flows", "onboarding"), {"starts_at": iso(past), "ends_at": None}, format="json"
        )
    )
    ok(api.post(url("people", "bob", "track"), {"event": "seen"}, format="json"))
    assert [i["flow"] for i in ok(api.get(url("people", "bob", "flows")))] == ["onboarding"]


@pytest.mark.parametrize(
    "body, word",
    [
        ({"enabled": "yes"}, "enabled"),
        ({"starts_at": "tomorrow"}, "starts_at"),
        ({"starts_at": "2026-13-45T10:00:00Z"}, "starts_at"),
        ({"ends_at": "2026-01-01T10:00:00"}, "time zone"),
        ({"starts_at": "2026-02-01T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z"}, "before"),
        ([], "JSON object"),
    ],
)
def test_bad_switches_are_400(api, body, word):
    publish(api, LINEAR_FLOW)
    assert word in errors(api.patch(url("flows", "onboarding"), body, format="json"), 400)[0]
    assert audit(api)[-1]["action"] == "publish"  # a refused change is not audited


def test_switching_an_unknown_flow_is_404(api):
    errors(api.patch(url("flows", "nothing"), {"enabled": False}, format="json"), 404)
    errors(api.delete(url("flows", "nothing")), 404)


# --- archive ------------------------------------------------------------------


def test_archive_and_unarchive(api):
    publish(api, {**LINEAR_FLOW, "start_when": 'person.plan == "pro"'})
    person(api, "ann")
    person(api, "bob")
    ok(api.post(url("people", "ann", "flows"), {"flow": "onboarding"}, format="json"), 201)
    assert api.delete(url("flows", "onboarding")).status_code == 204
    assert ok(api.get(url("flows"))) == []
    assert ok(api.get(url("flows", "onboarding")))["archived"] is True
    assert (
        "archived"
        in errors(
            api.post(url("people", "bob", "flows"), {"flow": "onboarding"}, format="json"), 409
        )[0]
    )
    ok(api.put(url("people", "carl"), {"data": {"plan": "pro"}}, format="json"), 201)
    assert ok(api.get(url("people", "carl", "flows"))) == []
    # ann's instance goes on
    ok(
        api.post(
            url("people", "ann", "flows", "onboarding", "transitions"),
            {"transition": "next"},
            format="json",
        )
    )
    back = ok(api.post(url("flows", "onboarding", "unarchive")))
    assert back["archived"] is False
    assert [f["identifier"] for f in ok(api.get(url("flows")))] == ["onboarding"]
    ok(api.post(url("people", "bob", "flows"), {"flow": "onboarding"}, format="json"), 201)
    assert [e["action"] for e in audit(api)] == ["publish", "archive", "unarchive"]


# --- promotion ----------------------------------------------------------------


def test_promotion_copies_the_exact_version(api, project, keys):
    prod = other_api(project)
    publish(api, LINEAR_FLOW)
    publish(api, {**LINEAR_FLOW, "name": "Second"})
    publish(prod, {**LINEAR_FLOW, "name": "Production's own"})
    promoted = ok(
        api.post(
            url("flows", "onboarding", "versions", "1", "promote"),
            {"to": "production"},
            format="json",
        ),
        201,
    )
    assert promoted["version"] == 2 and promoted["name"] == "Onboarding"
    here = ok(api.get(url("flows", "onboarding", "versions")))
    there = ok(prod.get(url("flows", "onboarding", "versions")))
    assert there[0]["hash"] == here[-1]["hash"] and there[0]["published_by"] == actor_of(keys)
    mine = audit(api)[-1]
    assert mine["action"] == "promote" and mine["details"]["to"] == "production"
    theirs = audit(prod)[-1]
    assert theirs["action"] == "promote" and theirs["actor"] == actor_of(keys)
    assert theirs["details"]["from"] == {"environment": "development", "version": 1}


def test_a_version_without_names_promotes_with_its_hash(api, project):
    bare = {
        "identifier": "bare",
        "steps": [{"identifier": "a"}, {"identifier": "b"}],
        "transitions": [{"identifier": "go", "from": "a", "to": "b"}],
    }
    publish(api, bare)
    to = url("flows", "bare", "versions", "1", "promote")
    promoted = ok(api.post(to, {"to": "production"}, format="json"), 201)
    assert promoted["hash"] == ok(api.get(url("flows", "bare")))["hash"]


def test_promotion_refusals(api, project):
    publish(api, {**LINEAR_FLOW, "start_when": "segments.pro"}, status=400)
    ok(api.put(url("segments", "pro"), {"condition": "true"}, format="json"), 201)
    publish(api, {**LINEAR_FLOW, "start_when": "segments.pro"})
    to = url("flows", "onboarding", "versions", "1", "promote")
    assert "segment 'pro'" in errors(api.post(to, {"to": "production"}, format="json"), 400)[0]
    errors(api.post(to, {"to": "staging"}, format="json"), 404)
    assert "already in" in errors(api.post(to, {"to": "development"}, format="json"), 400)[0]
    errors(api.post(to, {}, format="json"), 400)
    errors(
        api.post(
            url("flows", "onboarding", "versions", "7", "promote"),
            {"to": "production"},
            format="json",
        ),
        404,
    )
    assert audit(other_api(project)) == []


def test_another_projects_environment_is_not_a_target(api, db):
    from stepstream.trust.tenants import create_project

    create_project("someone else's")  # has its own "production"
    publish(api, LINEAR_FLOW)
    to = url("flows", "onboarding", "versions", "1", "promote")
    ok(api.post(to, {"to": "production"}, format="json"), 201)  # this project's
    errors(api.post(to, {"to": "nope"}, format="json"), 404)


# --- audit --------------------------------------------------------------------


def test_audit_records_every_kind_of_change_with_its_actor(api, keys, settings):
    settings.STEPSTREAM = {**settings.STEPSTREAM, "WEBHOOK_ALLOW_PRIVATE": True}
    publish(api, LINEAR_FLOW)
    ok(api.put(url("segments", "pro"), {"condition": "true"}, format="json"), 201)
    ok(api.put(url("segments", "pro"), {"condition": "false"}, format="json"))
    assert api.delete(url("segments", "pro")).status_code == 204
    hook = ok(api.post(url("webhooks"), {"url": "http://127.0.0.1:9/hook"}, format="json"), 201)
    assert api.delete(url("webhooks", str(hook["id"]))).status_code == 204
    key = ok(api.post(url("keys"), {"kind": "publishable"}, format="json"), 201)
    ok(api.post(url("keys", str(key["id"]), "revoke")))
    ok(api.patch(url("flows", "onboarding"), {"enabled": False}, format="json"))
    ok(api.put(url("theme"), {"tokens": {"radius": "4px"}}, format="json"))
    entries = audit(api)
    assert [e["action"] for e in entries] == [
        "publish",
        "segment.create",
        "segment.replace",
        "segment.delete",
        "webhook.create",
        "webhook.delete",
        "key.create",
        "key.revoke",
        "switch",
        "theme",
    ]
    assert {e["actor"] for e in entries} == {actor_of(keys)}
    assert entries[0]["object"] == "flow:onboarding" and entries[-2]["details"]["enabled"] is False
    assert entries[-1]["details"] == {"tokens": {"radius": "4px"}}
    assert keys["secret_key"] not in str(entries) and key["key"] not in str(entries)
    # refused changes leave nothing
    errors(api.delete(url("segments", "pro")), 404)
    publish(api, {"identifier": "x"}, status=400)
    assert len(audit(api)) == len(entries)


def test_audit_pages_like_the_change_feed(api, project):
    for i in range(5):
        publish(api, {**LINEAR_FLOW, "name": f"v{i}"})
    first = ok(api.get(url("audit"), {"limit": 2}))
    assert len(first["entries"]) == 2 and first["next"]
    seen = list(first["entries"])
    cursor = first["next"]
    while True:
        page = ok(api.get(url("audit"), {"after": cursor, "limit": 2}))
        seen += page["entries"]
        assert page["next"]
        if not page["entries"]:
            assert page["next"] == cursor  # nothing new: the same place
            break
        cursor = page["next"]
    assert [e["details"]["version"] for e in seen] == [1, 2, 3, 4, 5]
    errors(api.get(url("audit"), {"after": "garbage"}), 400)
    errors(api.get(url("audit"), {"limit": 1001}), 400)
    # another environment's cursor is refused there
    errors(other_api(project).get(url("audit"), {"after": cursor}), 400)
    assert ok(other_api(project).get(url("audit")))["entries"] == []


def test_the_audit_keeps_at_most_its_limit(api, env, settings):
    from stepstream.engine import audit as audit_log
    from stepstream.models import AuditEntry

    settings.STEPSTREAM = {**settings.STEPSTREAM, "AUDIT_MAX_ENTRIES": 10}
    for i in range(200):
        audit_log.record(env.pk, "cli", "theme", "theme", {"n": i})
    kept = AuditEntry.objects.filter(environment=env).count()
    assert 10 <= kept <= 10 + audit_log.PRUNE_EVERY
    newest = audit(api, limit=1000)
    assert newest[-1]["details"] == {"n": 199}


def test_calls_that_take_a_body_refuse_none(api):
    publish(api, LINEAR_FLOW)
    for call in (
        api.patch(url("flows", "onboarding")),
        api.put(url("flows", "onboarding", "draft")),
        api.post(url("conditions", "check")),
        api.post(url("flows", "onboarding", "versions", "1", "promote")),
    ):
        assert "JSON object" in errors(call, 400)[0]
