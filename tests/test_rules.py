"""Rules (CONTRACT.md, "Rules"): tracked events, conditions, start_when, segments, restart, cause.

Through the REST API and the engine, on whichever database the run uses.
"""

import pytest

from stepstream import engine
from stepstream.engine import flows
from stepstream.testing.flows import LINEAR_FLOW, states

BASE = "/api/v1"


def url(*parts: str) -> str:
    return BASE + "/" + "/".join(parts)


def errors(response, status: int) -> list[str]:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["errors"] and all(isinstance(e, str) for e in body["errors"])
    return body["errors"]


def publish(api, definition, status=201):
    response = api.post(url("flows"), definition, format="json")
    assert response.status_code == status, response.content
    return response.json()


def track(api, key, event, **body):
    response = api.post(url("people", key, "track"), {"event": event, **body}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def person_flows(api, key) -> dict:
    response = api.get(url("people", key, "flows"))
    assert response.status_code == 200, response.content
    return {i["flow"]: i for i in response.json()}


def log(api, key) -> list[dict]:
    response = api.get(url("people", key, "events"))
    assert response.status_code == 200
    return response.json()


def put(api, key, data, status=None):
    response = api.put(url("people", key), {"data": data}, format="json")
    if status is not None:
        assert response.status_code == status, response.content
    return response


CHECKLIST = {
    "identifier": "checklist",
    "start_when": "true",
    "steps": [
        {"identifier": "start"},
        {"identifier": "invite"},
        {"identifier": "upload"},
        {"identifier": "done"},
    ],
    "transitions": [
        {
            "identifier": "invited",
            "from": "start",
            "to": "invite",
            "type": "automatic",
            "condition": "has(events.invited_teammate)",
        },
        {
            "identifier": "uploaded",
            "from": "invite",
            "to": "upload",
            "type": "automatic",
            "condition": "has(events.uploaded_file) && events.uploaded_file.count >= 2",
        },
        {"identifier": "finish", "from": "upload", "to": "done", "type": "automatic"},
    ],
}

BRANCH = {
    "identifier": "tour",
    "steps": [{"identifier": "welcome"}, {"identifier": "pro_tour"}, {"identifier": "free_tour"}],
    "transitions": [
        {
            "identifier": "next",
            "from": "welcome",
            "to": "pro_tour",
            "condition": 'person.plan == "pro"',
        },
        {
            "identifier": "next",
            "from": "welcome",
            "to": "free_tour",
            "condition": 'person.plan == "free"',
        },
    ],
}


# --- tracked events ----------------------------------------------------------


def test_track_creates_the_person_and_counts(api):
    assert track(api, "ann", "login") == {
        "person_key": "ann",
        "event": "login",
        "count": 1,
        "seq": 0,
    }
    assert track(api, "ann", "login", properties={"page": "/"})["count"] == 2
    assert track(api, "ann", "logout")["count"] == 1
    assert api.get(url("people", "ann")).json() == {"person_key": "ann", "data": {}}


@pytest.mark.parametrize(
    "body, word",
    [
        ({}, "event"),
        ({"event": ""}, "event"),
        ({"event": "x" * 256}, "event"),
        ({"event": 3}, "event"),
        ({"event": "a", "properties": [1]}, "properties"),
    ],
)
def test_track_refuses_bad_input(api, body, word):
    response = api.post(url("people", "ann", "track"), body, format="json")
    assert any(word in e for e in errors(response, 400))


def test_track_under_a_schema_that_refuses_empty_data_is_400(api):
    api.put(url("schema", "person"), {"type": "object", "required": ["email"]}, format="json")
    response = api.post(url("people", "nobody", "track"), {"event": "x"}, format="json")
    assert any("email" in e for e in errors(response, 400))
    assert api.get(url("people", "nobody")).status_code == 404


# --- conditions at publish ---------------------------------------------------


def test_conditions_are_stored_with_the_version_and_returned(api):
    published = publish(api, {**BRANCH, "start_when": 'person.plan != ""'})
    assert published["start_when"] == 'person.plan != ""'
    assert published["transitions"][0]["condition"] == 'person.plan == "pro"'
    assert api.get(url("flows", "tour")).json() == published


@pytest.mark.parametrize(
    "patch, where",
    [
        ({"start_when": "person.plan =="}, "start_when"),
        ({"start_when": "plan == 1"}, "start_when"),
        ({"start_when": ""}, "start_when"),
        ({"start_when": 3}, "start_when"),
    ],
)
def test_bad_start_when_is_400_naming_it(api, patch, where):
    response = api.post(url("flows"), {**BRANCH, **patch}, format="json")
    assert any(e.startswith(where + ":") for e in errors(response, 400))


def test_bad_transition_condition_is_400_naming_its_index(api):
    definition = {**BRANCH, "transitions": [*BRANCH["transitions"]]}
    definition["transitions"][1] = {**definition["transitions"][1], "condition": "user.x == 1"}
    response = api.post(url("flows"), definition, format="json")
    problems = errors(response, 400)
    assert any(e.startswith("transitions[1].condition:") and "user" in e for e in problems)


def test_unknown_segment_in_a_condition_is_400(api):
    response = api.post(url("flows"), {**BRANCH, "start_when": "segments.nope"}, format="json")
    assert any("nope" in e for e in errors(response, 400))


# --- guarded branches ----------------------------------------------------------


def test_a_call_takes_only_transitions_whose_condition_holds(api):
    publish(api, BRANCH)
    put(api, "p", {"plan": "pro"}, 201)
    put(api, "f", {"plan": "free"}, 201)
    for key in ("p", "f"):
        api.post(url("people", key, "flows"), {"flow": "tour"}, format="json")
        response = api.post(
            url("people", key, "flows", "tour", "transitions"),
            {"transition": "next"},
            format="json",
        )
        assert response.status_code == 200
    assert states(person_flows(api, "p")["tour"])["pro_tour"] == "completed"
    assert states(person_flows(api, "p")["tour"])["free_tour"] == "inactive"
    assert states(person_flows(api, "f")["tour"])["free_tour"] == "completed"


def test_no_condition_true_is_409_quoting_the_condition(api):
    publish(api, BRANCH)
    put(api, "x", {"plan": "team"}, 201)
    api.post(url("people", "x", "flows"), {"flow": "tour"}, format="json")
    before = log(api, "x")
    response = api.post(
        url("people", "x", "flows", "tour", "transitions"), {"transition": "next"}, format="json"
    )
    problems = errors(response, 409)
    assert any('person.plan == "pro"' in e and 'person.plan == "free"' in e for e in problems)
    assert log(api, "x") == before


def test_an_evaluation_error_counts_as_false(api):
    definition = {
        **BRANCH,
        "transitions": [
            {**BRANCH["transitions"][0], "condition": "person.missing.deep == 1"},
            {**BRANCH["transitions"][1], "condition": "1 / person.zero == 1 || true"},
        ],
    }
    publish(api, definition)
    put(api, "e", {"zero": 0}, 201)
    api.post(url("people", "e", "flows"), {"flow": "tour"}, format="json")
    response = api.post(
        url("people", "e", "flows", "tour", "transitions"), {"transition": "next"}, format="json"
    )
    assert response.status_code == 200  # the error in || is absorbed; the other is false
    assert states(response.json())["free_tour"] == "completed"
    assert states(response.json())["pro_tour"] == "inactive"


# --- start_when and automatic transitions ------------------------------------


def test_event_driven_checklist(api):
    publish(api, CHECKLIST)
    track(api, "c", "visited")
    steps = states(person_flows(api, "c")["checklist"])
    assert steps == {"flow": "active", "start": "active", "invite": "inactive",
                     "upload": "inactive", "done": "inactive"}  # fmt: skip
    track(api, "c", "invited_teammate")
    assert states(person_flows(api, "c")["checklist"])["invite"] == "active"
    track(api, "c", "uploaded_file")
    assert states(person_flows(api, "c")["checklist"])["invite"] == "active"
    answer = track(api, "c", "uploaded_file")
    instance = person_flows(api, "c")["checklist"]
    assert instance["state"] == "completed"
    assert answer["seq"] == log(api, "c")[-1]["seq"]


def test_start_when_by_data_via_put_and_identify(api, env):
    publish(api, {**LINEAR_FLOW, "start_when": 'has(person.plan) && person.plan == "pro"'})
    put(api, "a", {"plan": "free"}, 201)
    assert person_flows(api, "a") == {}
    put(api, "a", {"plan": "pro"}, 200)
    assert person_flows(api, "a")["onboarding"]["state"] == "active"
    engine.do_identify(env, "b", {"plan": "free"})
    assert person_flows(api, "b") == {}
    engine.do_identify(env, "b", {"name": "B", "plan": "pro"})
    assert person_flows(api, "b")["onboarding"]["state"] == "active"
    assert api.get(url("people", "b")).json()["data"] == {"name": "B", "plan": "pro"}
    cause = log(api, "b")[0]["cause"]
    assert cause == {"kind": "start_when", "data": True}


def test_start_when_starts_a_flow_only_once(api):
    publish(api, {**LINEAR_FLOW, "start_when": "has(events.login)"})
    track(api, "o", "login")
    api.post(url("people", "o", "flows", "onboarding", "exit"))
    track(api, "o", "login")
    put(api, "o", {"x": 1}, 200)
    assert person_flows(api, "o")["onboarding"]["state"] == "exited"


def test_chained_start_in_the_same_transaction(api):
    publish(api, LINEAR_FLOW)
    publish(
        api,
        {
            "identifier": "follow_up",
            "start_when": 'has(flows.onboarding) && flows.onboarding == "completed"',
            "steps": [{"identifier": "tips"}, {"identifier": "end"}],
            "transitions": [{"identifier": "read", "from": "tips", "to": "end"}],
        },
    )
    put(api, "k", {}, 201)
    api.post(url("people", "k", "flows"), {"flow": "onboarding"}, format="json")
    for _ in range(2):
        response = api.post(
            url("people", "k", "flows", "onboarding", "transitions"),
            {"transition": "next"},
            format="json",
        )
    assert response.json()["state"] == "completed"
    rows = log(api, "k")
    assert response.json()["seq"] == rows[-1]["seq"]  # the follow-up's start came with it
    tail = [(r["entity"], r["identifier"], r["state"], r["cause"]["kind"]) for r in rows[-4:]]
    assert tail == [
        ("step", "done", "completed", "call"),
        ("flow", "onboarding", "completed", "call"),
        ("flow", "follow_up", "active", "start_when"),
        ("step", "tips", "active", "start_when"),
    ]


def test_automatic_transition_waits_for_its_condition_across_flows(api):
    publish(api, LINEAR_FLOW)
    publish(
        api,
        {
            "identifier": "gate",
            "steps": [{"identifier": "wait"}, {"identifier": "open"}],
            "transitions": [
                {
                    "identifier": "opened",
                    "from": "wait",
                    "to": "open",
                    "type": "automatic",
                    "condition": 'flows.onboarding == "completed"',
                }
            ],
        },
    )
    put(api, "g", {}, 201)
    api.post(url("people", "g", "flows"), {"flow": "gate"}, format="json")
    api.post(url("people", "g", "flows"), {"flow": "onboarding"}, format="json")
    assert person_flows(api, "g")["gate"]["state"] == "active"
    for _ in range(2):
        api.post(
            url("people", "g", "flows", "onboarding", "transitions"),
            {"transition": "next"},
            format="json",
        )
    gate = person_flows(api, "g")["gate"]
    assert gate["state"] == "completed"
    kinds = [r["cause"] for r in log(api, "g") if r["flow"] == "gate" and r["seq"] > 3]
    assert kinds[0] == {"kind": "automatic", "transition": "opened"}


def test_paused_instance_runs_its_automatic_transition_on_resume(api):
    publish(api, CHECKLIST)
    track(api, "r", "x")
    api.post(url("people", "r", "flows", "checklist", "pause"))
    track(api, "r", "invited_teammate")
    assert states(person_flows(api, "r")["checklist"])["invite"] == "inactive"
    response = api.post(url("people", "r", "flows", "checklist", "resume"))
    assert states(response.json())["invite"] == "active"


def test_rules_published_later_apply_at_the_next_write(api):
    put(api, "late", {"plan": "pro"}, 201)
    publish(api, {**LINEAR_FLOW, "start_when": 'person.plan == "pro"'})
    assert person_flows(api, "late") == {}  # nothing happens without a write
    track(api, "late", "unrelated")
    assert person_flows(api, "late")["onboarding"]["state"] == "active"
    assert log(api, "late")[0]["cause"] == {"kind": "start_when", "event": "unrelated"}


def test_a_failed_write_leaves_no_rule_change(api):
    api.put(url("schema", "person"), {"type": "object", "properties": {"n": {"type": "integer"}}},
            format="json")  # fmt: skip
    publish(api, {**LINEAR_FLOW, "start_when": "has(person.n)"})
    put(api, "s", {}, 201)
    response = put(api, "s", {"n": "not a number"})
    assert response.status_code == 400
    assert person_flows(api, "s") == {}
    assert log(api, "s") == []


# --- segments ------------------------------------------------------------------


def test_segments_crud(api):
    response = api.put(
        url("segments", "pros"), {"condition": 'person.plan == "pro"'}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["condition"] == 'person.plan == "pro"'
    response = api.put(
        url("segments", "pros"),
        {"condition": 'person.plan in ["pro", "team"]', "name": "Paying"},
        format="json",
    )
    assert response.status_code == 200
    assert api.get(url("segments", "pros")).json()["name"] == "Paying"
    assert [s["identifier"] for s in api.get(url("segments")).json()] == ["pros"]
    assert api.get(url("segments", "nope")).status_code == 404
    for body in ({}, {"condition": "person.plan =="}, {"condition": "segments.pros"}):
        assert errors(api.put(url("segments", "bad"), body, format="json"), 400)
    assert api.delete(url("segments", "pros")).status_code == 204
    assert api.get(url("segments", "pros")).status_code == 404


def test_segment_in_a_condition_and_delete_409_while_used(api):
    power = "has(events.export) && events.export.count >= 2"
    api.put(url("segments", "power"), {"condition": power}, format="json")
    publish(api, {**LINEAR_FLOW, "start_when": "segments.power"})
    track(api, "u", "export")
    assert person_flows(api, "u") == {}
    track(api, "u", "export")
    assert person_flows(api, "u")["onboarding"]["state"] == "active"
    assert any("onboarding" in e for e in errors(api.delete(url("segments", "power")), 409))


def test_segment_change_takes_effect_at_each_persons_next_write(api):
    api.put(url("segments", "s"), {"condition": "false"}, format="json")
    publish(api, {**LINEAR_FLOW, "start_when": "segments.s"})
    put(api, "n", {}, 201)
    api.put(url("segments", "s"), {"condition": "true"}, format="json")
    assert person_flows(api, "n") == {}
    put(api, "n", {}, 200)  # no data change, still a write
    assert person_flows(api, "n")["onboarding"]["state"] == "active"


def test_segment_people_pages_through_current_members(api):
    api.put(url("segments", "even"), {"condition": "person.n % 2 == 0"}, format="json")
    for n in range(25):
        put(api, f"p{n:02d}", {"n": n}, 201)
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 4} | ({"after": after} if after else {})
        body = api.get(url("segments", "even", "people"), params).json()
        seen += body["people"]
        pages += 1
        if body["next"] is None:
            break
        after = body["next"]
        if pages == 2:  # people change during the scan: the listing stays correct
            put(api, "p20", {"n": 21}, 200)
            put(api, "p99", {"n": 0}, 201)
    expected = [f"p{n:02d}" for n in range(0, 25, 2) if n != 20] + ["p99"]
    assert seen == expected
    assert errors(api.get(url("segments", "even", "people"), {"after": "garbage"}), 400)


# --- restart ----------------------------------------------------------------------


def test_restart_replaces_the_instance(api):
    publish(api, LINEAR_FLOW)
    put(api, "z", {}, 201)
    first = api.post(url("people", "z", "flows"), {"flow": "onboarding"}, format="json").json()
    api.post(url("people", "z", "flows", "onboarding", "transitions"), {"transition": "next"},
             format="json")  # fmt: skip
    response = api.post(url("people", "z", "flows", "onboarding", "restart"))
    assert response.status_code == 200
    new = response.json()
    assert new["id"] != first["id"] and states(new)["welcome"] == "active"
    assert list(person_flows(api, "z")) == ["onboarding"]
    rows = [r for r in log(api, "z") if r["seq"] > 4]
    assert (rows[0]["entity"], rows[0]["id"], rows[0]["state"]) == ("flow", first["id"], "exited")
    assert all(r["cause"] == {"kind": "call", "via": "rest", "action": "restart"} for r in rows)
    assert new["seq"] == rows[-1]["seq"]


def test_restart_of_a_completed_instance_and_404s(api):
    publish(api, {"identifier": "one", "steps": [{"identifier": "only"}]})
    put(api, "q", {}, 201)
    api.post(url("people", "q", "flows"), {"flow": "one"}, format="json")
    assert person_flows(api, "q")["one"]["state"] == "completed"
    before = log(api, "q")[-1]["seq"]
    api.post(url("people", "q", "flows", "one", "restart"))
    after = [r["previous_state"] + ">" + r["state"] for r in log(api, "q") if r["seq"] > before]
    assert "completed>exited" not in after and after[0] == "inactive>active"
    assert api.post(url("people", "q", "flows", "nope", "restart")).status_code == 404
    assert api.post(url("people", "ghost", "flows", "one", "restart")).status_code == 404


def test_restart_uses_the_latest_version(api):
    publish(api, LINEAR_FLOW)
    put(api, "v", {}, 201)
    api.post(url("people", "v", "flows"), {"flow": "onboarding"}, format="json")
    publish(api, LINEAR_FLOW)
    assert api.post(url("people", "v", "flows", "onboarding", "restart")).json()["version"] == 2


# --- cause -------------------------------------------------------------------------


def test_every_event_carries_its_cause(api, env):
    publish(api, CHECKLIST)
    publish(api, LINEAR_FLOW)
    track(api, "w", "invited_teammate")
    api.post(url("people", "w", "flows"), {"flow": "onboarding"}, format="json")
    engine.do_transition(env, "w", "onboarding", "next", via="websocket")
    api.post(url("people", "w", "flows", "onboarding", "pause"))
    rows = log(api, "w")
    assert all("cause" in r and r["cause"]["kind"] in ("call", "automatic", "start_when")
               for r in rows)  # fmt: skip
    causes = [(r["identifier"], r["state"], r["cause"]) for r in rows]
    assert causes[0] == ("checklist", "active", {"kind": "start_when", "event": "invited_teammate"})
    assert ("start", "completed", {"kind": "automatic", "transition": "invited",
            "event": "invited_teammate"}) in causes  # fmt: skip
    assert causes[-1][2] == {"kind": "call", "via": "rest", "action": "pause"}
    assert {"kind": "call", "via": "websocket", "action": "transition", "transition": "next"} in [
        c for *_, c in causes
    ]


# --- isolation -----------------------------------------------------------------------


def test_rules_and_segments_stay_in_their_environment(api, env, other_env):
    flows.publish(other_env, {**LINEAR_FLOW, "start_when": "true"})
    from stepstream.engine import segments

    segments.put(other_env, "mine", {"condition": "true"})
    track(api, "iso", "x")
    assert person_flows(api, "iso") == {}
    assert api.get(url("segments", "mine")).status_code == 404
    assert api.get(url("segments")).json() == []
    response = api.post(url("flows"), {**LINEAR_FLOW, "start_when": "segments.mine"}, format="json")
    assert errors(response, 400)
    engine.do_track(other_env, "iso", "x")
    assert person_flows(api, "iso") == {}
    assert engine.snapshot(other_env, "iso")["flows"][0]["flow"] == "onboarding"


def test_a_condition_reading_now_is_looked_at_on_any_later_write(api, monkeypatch):
    from datetime import UTC, datetime, timedelta

    from django.utils import timezone

    publish(api, {**LINEAR_FLOW, "start_when": "has(person.due) && now > timestamp(person.due)"})
    due = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    put(api, "t", {"due": due}, 201)
    assert person_flows(api, "t") == {}
    real_now = timezone.now
    # the clock the engine reads `now` from, two hours on: nothing waits for it
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=2))
    track(api, "t", "anything")  # reads nothing the condition names, but time has passed
    assert person_flows(api, "t")["onboarding"]["state"] == "active"


def test_admin_shows_tracked_events_and_segments_and_restarts(admin_client, api, env):
    from stepstream.models import FlowInstance, Person

    api.put(url("segments", "pros"), {"condition": 'person.plan == "pro"', "name": "Paying"},
            format="json")  # fmt: skip
    publish(api, LINEAR_FLOW)
    track(api, "adm", "opened_report", properties={"report": "weekly"})
    api.post(url("people", "adm", "flows"), {"flow": "onboarding"}, format="json")
    person = Person.objects.get(environment=env, person_key="adm")
    page = admin_client.get(f"/admin/stepstream/person/{person.pk}/change/").content.decode()
    assert "opened_report" in page and "weekly" in page
    page = admin_client.get("/admin/stepstream/segment/").content.decode()
    assert "pros" in page and "Paying" in page
    instance = FlowInstance.objects.get(person=person)
    response = admin_client.post(
        "/admin/stepstream/flowinstance/",
        {"action": "restart_flows", "_selected_action": [str(instance.pk)]},
    )
    assert response.status_code == 302
    rows = log(api, "adm")
    assert rows[-1]["cause"] == {"kind": "call", "via": "admin", "action": "restart"}
    assert FlowInstance.objects.get(person=person).pk != instance.pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_tracks_create_one_person_and_start_once(transactional_db):
    """Threads tracking for a person who does not exist yet: one creates, all count, one start."""
    from django.db import connection

    from stepstream.models import TrackedEvent
    from stepstream.trust.tenants import create_project, environment_for_key
    from tests.test_concurrency import run_threads

    env = environment_for_key(create_project("race")["environments"][0]["secret_key"], "secret")
    flows.publish(env, {**LINEAR_FLOW, "start_when": "has(events.hit)"})
    answers = []

    def work(i):
        try:
            answers.append(engine.do_track(env, "racer", "hit"))
        finally:
            connection.close()

    assert run_threads(work, 8) == []
    assert sorted(a["count"] for a in answers) == list(range(1, 9))
    assert TrackedEvent.objects.get(person__person_key="racer").count == 8
    snapshot = engine.snapshot(env, "racer")
    assert [f["flow"] for f in snapshot["flows"]] == ["onboarding"] and snapshot["seq"] == 2


def test_distinct_event_names_per_person_are_bounded(api, env, settings):
    settings.STEPSTREAM = {**settings.STEPSTREAM, "MAX_EVENT_NAMES": 3}
    for name in ("a", "b", "c"):
        track(api, "many", name)
    response = api.post(url("people", "many", "track"), {"event": "d"}, format="json")
    assert any("3 different event names" in e for e in errors(response, 400))
    assert track(api, "many", "a")["count"] == 2  # known names still count
    from stepstream.models import TrackedEvent

    assert sorted(TrackedEvent.objects.values_list("name", flat=True)) == ["a", "b", "c"]


def test_segments_per_environment_are_bounded(api, monkeypatch):
    from stepstream.engine import segments

    monkeypatch.setattr(segments, "MAX_SEGMENTS", 2)
    for name in ("one", "two"):
        assert (
            api.put(url("segments", name), {"condition": "true"}, format="json").status_code == 201
        )
    assert errors(api.put(url("segments", "three"), {"condition": "true"}, format="json"), 400)
    assert api.put(url("segments", "two"), {"condition": "false"}, format="json").status_code == 200


def test_rules_run_in_the_documented_order_within_a_round(api):
    """A completes by an automatic transition; B (later in order) waits on A in the same
    round; C starts by start_when on A in the next round: B's changes come before C's."""

    def two_steps(identifier, condition=None, start_when=None):
        transition = {"identifier": "go", "from": "x", "to": "y", "type": "automatic"}
        if condition:
            transition["condition"] = condition
        flow = {
            "identifier": identifier,
            "steps": [{"identifier": "x"}, {"identifier": "y"}],
            "transitions": [transition],
        }
        return flow | ({"start_when": start_when} if start_when else {})

    done = 'has(flows.a) && flows.a == "completed"'
    publish(api, two_steps("a", condition="has(events.e)", start_when="true"))
    publish(api, two_steps("b", condition=done, start_when="true"))
    publish(api, two_steps("c", start_when=done))
    put(api, "o", {}, 201)
    assert {f: i["state"] for f, i in person_flows(api, "o").items()} == {
        "a": "active",
        "b": "active",
    }
    before = log(api, "o")[-1]["seq"]
    track(api, "o", "e")
    flows_in_order = list(dict.fromkeys(r["flow"] for r in log(api, "o") if r["seq"] > before))
    assert flows_in_order == ["a", "b", "c"]
