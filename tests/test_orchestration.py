"""Orchestration (CONTRACT.md, "Orchestration"): priority, durations, limits, timers.

Through the REST API and the engine on whichever database the run uses; time
passing is simulated by moving a pending timer's due time into the past (the
timer loop of a real server is tested at the end, on its own clock).
"""

import uuid
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from stepstream import engine
from stepstream.engine import durations
from stepstream.errors import Conflict, Invalid
from stepstream.models import FlowInstance, PendingTimer, StepInstance
from tests.test_rules import errors, log, person_flows, publish, put, track, url


def starter(identifier, condition="true", priority=None, **extra):
    body = {
        "identifier": identifier,
        "start_when": condition,
        "steps": [{"identifier": "one"}, {"identifier": "two"}],
        "transitions": [{"identifier": "next", "from": "one", "to": "two"}],
        **extra,
    }
    if priority is not None:
        body["priority"] = priority
    return body


def flow_starts(api, key) -> list[str]:
    """Flows in the order their instances became active in the person's log."""
    return [
        c["flow"]
        for c in log(api, key)
        if c["entity"] == "flow" and c["state"] == "active" and c["previous_state"] == "inactive"
    ]


# --- priority -------------------------------------------------------------------


def test_one_write_starts_flows_in_priority_order_then_identifier(api):
    publish(api, starter("a-low", "has(events.go)", priority=-1))
    publish(api, starter("b-high", "has(events.go)", priority=10))
    publish(api, starter("c-zero", "has(events.go)"))
    publish(api, starter("d-zero", "has(events.go)", priority=0))
    put(api, "p1", {}, 201)
    track(api, "p1", "go")
    assert flow_starts(api, "p1") == ["b-high", "c-zero", "d-zero", "a-low"]


def test_priority_is_returned_when_set_and_checked(api):
    assert publish(api, starter("pri", priority=5))["priority"] == 5
    assert "priority" not in publish(api, starter("plain"))
    for bad in ("high", 1.5, True, 10**9):
        response = api.post(url("flows"), starter("bad", priority=bad), format="json")
        assert any("priority" in e for e in errors(response, 400))


# --- durations ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,seconds", [("1s", 1), ("30m", 1800), ("2h", 7200), ("7d", 604800), ("365d", 31536000)]
)
def test_durations_read(text, seconds):
    assert durations.parse(text, "after") == seconds


@pytest.mark.parametrize("bad", ["0s", "-1s", "1", "1w", "1.5h", " 1s", "01s", "366d", 5, None])
def test_bad_durations_are_400_naming_the_field(bad):
    with pytest.raises(Invalid) as err:
        durations.parse(bad, "transitions[0].after")
    assert "transitions[0].after" in err.value.messages[0]


# --- limits ---------------------------------------------------------------------


def put_limit(api, identifier, body, status):
    response = api.put(url("limits", identifier), body, format="json")
    assert response.status_code == status, response.content
    return response.json() if status < 300 else response


def test_limits_are_put_read_listed_and_deleted(api):
    publish(api, starter("tour"))
    body = {"flows": ["tour"], "max": 2, "window": "24h"}
    assert put_limit(api, "daily", body, 201) == {"identifier": "daily", **body}
    assert put_limit(api, "daily", {**body, "max": 3}, 200)["max"] == 3
    assert api.get(url("limits", "daily")).json()["max"] == 3
    put_limit(api, "all", {"flows": "*", "max": 1, "window": "7d"}, 201)
    assert [lim["identifier"] for lim in api.get(url("limits")).json()] == ["all", "daily"]
    assert api.delete(url("limits", "daily")).status_code == 204
    assert api.get(url("limits", "daily")).status_code == 404
    assert api.delete(url("limits", "daily")).status_code == 404


def test_bad_limits_are_400_naming_the_field(api):
    publish(api, starter("tour"))
    cases = [
        ({"flows": ["nope"], "max": 1, "window": "1h"}, "nope"),
        ({"flows": [], "max": 1, "window": "1h"}, "flows"),
        ({"flows": "all", "max": 1, "window": "1h"}, "flows"),
        ({"flows": "*", "max": 0, "window": "1h"}, "max"),
        ({"flows": "*", "max": "2", "window": "1h"}, "max"),
        ({"flows": "*", "max": 1, "window": "1 hour"}, "window"),
        ({"flows": "*", "max": 1}, "window"),
    ]
    for body, word in cases:
        found = errors(api.put(url("limits", "x"), body, format="json"), 400)
        assert any(word in e for e in found), (body, found)


def test_an_explicit_start_over_a_limit_is_409_naming_it(api, env):
    for f in ("one", "two"):
        publish(api, starter(f, condition="false"))
    put_limit(api, "one-a-day", {"flows": "*", "max": 1, "window": "24h"}, 201)
    put(api, "p", {}, 201)
    engine.do_start_flow(env, "p", "one")
    with pytest.raises(Conflict) as err:
        engine.do_start_flow(env, "p", "two")
    assert "one-a-day" in err.value.messages[0]
    response = api.post(url("people", "p", "flows"), {"flow": "two"}, format="json")
    assert "one-a-day" in errors(response, 409)[0]
    # a restart is never held back
    engine.do_restart(env, "p", "one")
    # another person has their own window
    put(api, "q", {}, 201)
    engine.do_start_flow(env, "q", "two")


def time_passes(delta: timedelta) -> None:
    """A simulated clock: every stored time moves back by `delta` (starts, activations, dues)."""
    FlowInstance.objects.update(created_at=F("created_at") - delta)
    StepInstance.objects.filter(activated_at__isnull=False).update(
        activated_at=F("activated_at") - delta
    )
    StepInstance.objects.filter(last_activated_at__isnull=False).update(
        last_activated_at=F("last_activated_at") - delta
    )
    PendingTimer.objects.update(due_at=F("due_at") - delta)


def make_due(**filters):
    """Time passes until the first matching pending row is due."""
    first = PendingTimer.objects.filter(**filters).order_by("due_at").first()
    time_passes(first.due_at - timezone.now() + timedelta(milliseconds=1))


def test_start_when_held_back_is_deferred_then_started_in_priority_order(api, env):
    publish(api, starter("first", "has(events.go)", priority=5))
    publish(api, starter("second", "has(events.go)", priority=1))
    publish(api, starter("third", "has(events.go)"))
    put_limit(api, "calm", {"flows": "*", "max": 1, "window": "1h"}, 201)
    put(api, "p", {}, 201)
    track(api, "p", "go")
    assert set(person_flows(api, "p")) == {"first"}  # the highest priority takes the slot
    deferred = PendingTimer.objects.filter(kind="deferred").order_by("flow_identifier")
    assert [(t.flow_identifier, t.transition) for t in deferred] == [
        ("second", "calm"),
        ("third", "calm"),
    ]
    # one hour after the first start, the window allows one more: the higher priority
    due = deferred[0].due_at
    assert timedelta(minutes=59) < due - timezone.now() <= timedelta(hours=1)
    make_due(kind="deferred")
    engine.do_fire(env, "p")
    assert set(person_flows(api, "p")) == {"first", "second"}
    started = [c for c in log(api, "p") if c["flow"] == "second" and c["entity"] == "flow"]
    assert started[0]["cause"] == {"kind": "start_when", "deferred_by": "calm"}
    # "third" waits for the next free slot: its row moved on, not dropped
    left = PendingTimer.objects.get(kind="deferred")
    assert left.flow_identifier == "third" and left.due_at > timezone.now()


def test_a_deferred_flow_started_explicitly_is_no_longer_deferred(api, env):
    publish(api, starter("first", "has(events.go)", priority=5))
    publish(api, starter("later", "has(events.go)"))
    put_limit(api, "calm", {"flows": ["first", "later"], "max": 1, "window": "1h"}, 201)
    put(api, "p", {}, 201)
    track(api, "p", "go")
    assert PendingTimer.objects.filter(kind="deferred").count() == 1
    put_limit(api, "calm", {"flows": ["first", "later"], "max": 2, "window": "1h"}, 200)
    engine.do_start_flow(env, "p", "later")
    assert not PendingTimer.objects.exists()


def test_a_deferred_start_whose_condition_is_false_then_is_dropped(api, env):
    publish(api, starter("first", "person.want == true", priority=5))
    publish(api, starter("later", "person.want == true"))
    put_limit(api, "calm", {"flows": "*", "max": 1, "window": "1h"}, 201)
    put(api, "p", {"want": True}, 201)
    assert set(person_flows(api, "p")) == {"first"}
    put(api, "p", {"want": False}, 200)
    make_due(kind="deferred")
    engine.do_fire(env, "p")
    assert set(person_flows(api, "p")) == {"first"}
    assert not PendingTimer.objects.filter(kind="deferred").exists()


# --- timers ---------------------------------------------------------------------


def timed_flow(after="2d", condition=None, ttype="automatic"):
    transition = {"identifier": "nudge", "from": "wait", "to": "nudged", "type": ttype}
    if after is not None:
        transition["after"] = after
    if condition:
        transition["condition"] = condition
    return {
        "identifier": "reminder",
        "steps": [{"identifier": "wait"}, {"identifier": "nudged"}, {"identifier": "end"}],
        "transitions": [
            transition,
            {"identifier": "finish", "from": "nudged", "to": "end"},
            {"identifier": "skip", "from": "wait", "to": "end"},
        ],
    }


def states(api, key):
    return {s["identifier"]: s["state"] for s in person_flows(api, key)["reminder"]["steps"]}


def test_after_is_only_for_automatic_transitions_and_checked(api):
    found = errors(api.post(url("flows"), timed_flow(ttype="manual"), format="json"), 400)
    assert any("transitions[0].after" in e and "automatic" in e for e in found)
    found = errors(api.post(url("flows"), timed_flow(after="soon"), format="json"), 400)
    assert any("transitions[0].after" in e for e in found)
    published = publish(api, timed_flow())
    assert published["transitions"][0]["after"] == "2d"


def test_a_timer_is_written_with_the_activation_and_fires_once(api, env):
    publish(api, timed_flow())
    put(api, "p", {}, 201)
    before = timezone.now()
    engine.do_start_flow(env, "p", "reminder")
    timer = PendingTimer.objects.get(kind="timer")
    assert (timer.from_step, timer.transition) == ("wait", "nudge")
    assert before + timedelta(days=2) <= timer.due_at <= timezone.now() + timedelta(days=2)
    engine.do_fire(env, "p")  # not due yet: nothing happens
    assert states(api, "p")["wait"] == "active"
    make_due(kind="timer")
    due = PendingTimer.objects.get().due_at
    assert due <= timezone.now()
    assert engine.do_fire(env, "p")["fired"] == 1
    assert states(api, "p") == {"wait": "completed", "nudged": "active", "end": "inactive"}
    changes = [c for c in log(api, "p") if c["identifier"] in ("wait", "nudged")]
    assert {c["cause"]["kind"] for c in changes[-2:]} == {"timer"}
    assert changes[-1]["cause"]["transition"] == "nudge"
    assert changes[-1]["cause"]["due_at"].startswith(due.strftime("%Y-%m-%dT%H:%M:%S"))
    assert not PendingTimer.objects.exists()  # the step is no longer active
    assert engine.do_fire(env, "p")["fired"] == 0  # once


def test_a_step_that_stops_being_active_cancels_its_timer(api, env):
    publish(api, timed_flow())
    put(api, "p", {}, 201)
    engine.do_start_flow(env, "p", "reminder")
    engine.do_transition(env, "p", "reminder", "skip")
    assert not PendingTimer.objects.exists()
    put(api, "q", {}, 201)
    engine.do_start_flow(env, "q", "reminder")
    engine.do_flow_action(env, "q", "reminder", "exit")
    assert not PendingTimer.objects.exists()


def test_a_paused_instance_timer_waits_and_fires_after_resume(api, env):
    publish(api, timed_flow())
    put(api, "p", {}, 201)
    engine.do_start_flow(env, "p", "reminder")
    engine.do_flow_action(env, "p", "reminder", "pause")
    assert not PendingTimer.objects.exists()
    engine.do_flow_action(env, "p", "reminder", "resume")
    make_due(kind="timer")
    engine.do_fire(env, "p")
    assert states(api, "p")["nudged"] == "active"


def test_a_timer_written_again_on_resume_counts_from_the_latest_activation(api, env):
    flow = timed_flow(after="2d")
    flow["steps"].insert(0, {"identifier": "intro"})
    flow["transitions"] += [
        {"identifier": "in", "from": "intro", "to": "wait", "type": "automatic"},
        {"identifier": "ahead", "from": "wait", "to": "nudged"},
        {"identifier": "back", "from": "nudged", "to": "wait"},
    ]
    publish(api, flow)
    put(api, "p", {}, 201)
    engine.do_start_flow(env, "p", "reminder")
    time_passes(timedelta(days=1))  # the first activation was a day ago
    engine.do_transition(env, "p", "reminder", "ahead")
    reactivated = timezone.now()
    engine.do_transition(env, "p", "reminder", "back")  # a manual cycle: wait is active again
    engine.do_flow_action(env, "p", "reminder", "pause")
    engine.do_flow_action(env, "p", "reminder", "resume")
    due = PendingTimer.objects.get(kind="timer").due_at
    assert reactivated + timedelta(days=2) <= due <= timezone.now() + timedelta(days=2)
    engine.do_fire(env, "p")  # one day after the first activation plus `after`: not due
    assert states(api, "p")["wait"] == "active"
    step = StepInstance.objects.get(identifier="wait")
    assert step.activated_at < reactivated <= step.last_activated_at  # analytics keep the first


def test_a_timer_whose_condition_is_false_waits_for_it(api, env):
    publish(api, timed_flow(condition="person.ready == true"))
    put(api, "p", {"ready": False}, 201)
    engine.do_start_flow(env, "p", "reminder")
    make_due(kind="timer")
    engine.do_fire(env, "p")
    assert states(api, "p")["wait"] == "active"
    assert PendingTimer.objects.get().waiting  # no longer polled
    put(api, "p", {"ready": True}, 200)  # the write that makes it true runs it
    assert states(api, "p")["nudged"] == "active"
    last = [c for c in log(api, "p") if c["identifier"] == "nudged"][-1]
    assert last["cause"]["kind"] == "timer"
    assert not PendingTimer.objects.exists()


def test_a_condition_true_before_due_does_not_run_early(api, env):
    publish(api, timed_flow(condition="person.ready == true"))
    put(api, "p", {"ready": True}, 201)
    engine.do_start_flow(env, "p", "reminder")
    put(api, "p", {"ready": True, "x": 1}, 200)
    assert states(api, "p")["wait"] == "active"


def test_a_deleted_person_timers_go_and_restart_replaces_them(api, env):
    publish(api, timed_flow())
    put(api, "p", {}, 201)
    engine.do_start_flow(env, "p", "reminder")
    engine.do_restart(env, "p", "reminder")
    assert PendingTimer.objects.count() == 1
    assert api.delete(url("people", "p")).status_code == 204
    assert not PendingTimer.objects.exists()


def test_a_timer_keeps_its_flow_version(api, env):
    publish(api, timed_flow(after="1h"))
    put(api, "p", {}, 201)
    engine.do_start_flow(env, "p", "reminder")
    changed = timed_flow(after="5d")
    changed["transitions"][0]["to"] = "end"
    publish(api, changed)
    make_due(kind="timer")
    engine.do_fire(env, "p")
    assert states(api, "p")["nudged"] == "active"  # version 1's transition


@pytest.mark.parametrize("switch", ["disabled", "archived", "before_window", "after_window"])
def test_a_deferred_start_of_a_flow_that_may_not_start_now_is_dropped(api, env, switch):
    publish(api, starter("first", "has(events.go)", priority=5))
    publish(api, starter("later", "has(events.go)"))
    put_limit(api, "calm", {"flows": "*", "max": 1, "window": "1h"}, 201)
    put(api, "p", {}, 201)
    track(api, "p", "go")
    assert PendingTimer.objects.filter(kind="deferred", flow_identifier="later").exists()
    make_due(kind="deferred")
    now = timezone.now()
    if switch == "disabled":
        body = {"enabled": False}
    elif switch == "before_window":
        body = {"starts_at": (now + timedelta(days=1)).isoformat()}
    else:
        body = {"ends_at": (now - timedelta(seconds=1)).isoformat()}
    if switch == "archived":
        assert api.delete(url("flows", "later")).status_code == 204
    else:
        assert api.patch(url("flows", "later"), body, format="json").status_code == 200
    engine.do_fire(env, "p")
    assert set(person_flows(api, "p")) == {"first"}
    assert not PendingTimer.objects.filter(kind="deferred").exists()


def test_a_deferred_start_inside_its_window_starts(api, env):
    publish(api, starter("first", "has(events.go)", priority=5))
    publish(api, starter("later", "has(events.go)"))
    put_limit(api, "calm", {"flows": "*", "max": 1, "window": "1h"}, 201)
    window = {"ends_at": (timezone.now() + timedelta(days=1)).isoformat()}
    assert api.patch(url("flows", "later"), window, format="json").status_code == 200
    put(api, "p", {}, 201)
    track(api, "p", "go")
    make_due(kind="deferred")
    engine.do_fire(env, "p")
    assert set(person_flows(api, "p")) == {"first", "later"}


@pytest.mark.parametrize("switch", ["disabled", "archived"])
def test_timers_of_a_running_instance_fire_after_its_flow_is_switched_off(api, env, switch):
    publish(api, timed_flow())
    put(api, "p", {}, 201)
    engine.do_start_flow(env, "p", "reminder")
    if switch == "archived":
        assert api.delete(url("flows", "reminder")).status_code == 204
    else:
        off = {"enabled": False}
        assert api.patch(url("flows", "reminder"), off, format="json").status_code == 200
    make_due(kind="timer")
    assert engine.do_fire(env, "p")["fired"] == 1
    assert states(api, "p")["nudged"] == "active"


# --- the firing loop of a real server --------------------------------------------


def test_a_running_server_fires_a_due_timer_once(rest, person_key):
    import uuid

    from tests.waiting import wait_until

    flow = timed_flow(after="1s")
    flow["identifier"] = f"reminder-{uuid.uuid4().hex[:8]}"
    assert rest.post("/flows", json=flow).status_code == 201
    started = rest.post(f"/people/{person_key}/flows", json={"flow": flow["identifier"]})
    assert started.status_code == 201, started.text

    def nudged():
        found = rest.get(f"/people/{person_key}/flows").json()
        steps = {s["identifier"]: s["state"] for i in found for s in i["steps"]}
        return steps.get("nudged") == "active"

    wait_until(nudged, timeout=10, what="the 1 s timer fired")
    changes = rest.get(f"/people/{person_key}/events").json()
    timer_changes = [c for c in changes if c.get("cause", {}).get("kind") == "timer"]
    assert [c["identifier"] for c in timer_changes] == ["wait", "nudged"]  # once


@pytest.mark.django_db(transaction=True)
async def test_a_timer_written_in_this_process_wakes_the_sleeping_loop():
    """The loop polls only once an hour here: the timer fires because its write woke it."""
    from stepstream.dbthreads import DbThreads
    from stepstream.engine import flows
    from stepstream.engine.firing import Firing
    from stepstream.trust.tenants import create_project, environment_for_key
    from tests.waiting import until

    db = DbThreads(2)
    firing = Firing(db, poll=3600)

    def setup():
        keys = create_project("wake")["environments"][0]
        environment = environment_for_key(keys["secret_key"], "secret")
        flows.publish(environment, timed_flow(after="1s"))
        engine.do_track(environment, "p", "hello")
        return environment

    environment = await db.run(setup)
    await firing.start()
    try:
        await until(lambda: firing._next_look is not None, what="the loop sleeps")
        await db.run(engine.do_start_flow, environment, "p", "reminder")

        await until(lambda: firing.fired >= 1, what="the 1 s timer fired")
        nudged = StepInstance.objects.filter(identifier="nudged", state="active").exists
        assert await db.run(nudged)
        assert firing.wakeups >= 1
    finally:
        await firing.stop()
        db.shutdown()


@pytest.mark.django_db(transaction=True)
def test_a_write_commits_even_when_a_timer_loop_s_event_loop_has_ended():
    """A firing loop whose event loop ended without `stop()` (a test's, or a crashed
    process's runtime) is still a due-time listener: a later write that commits a timer
    succeeds for its caller, and the timer is in the database for another loop to fire."""
    import asyncio

    from stepstream.dbthreads import DbThreads
    from stepstream.engine import commits, flows
    from stepstream.engine.firing import Firing
    from stepstream.trust.tenants import create_project, environment_for_key

    keys = create_project("ended")["environments"][0]
    environment = environment_for_key(keys["secret_key"], "secret")
    flows.publish(environment, timed_flow(after="1h"))
    engine.do_track(environment, "p", "hello")

    threads = DbThreads(1)
    firing = Firing(threads, poll=3600)
    ended = asyncio.new_event_loop()
    try:
        ended.run_until_complete(firing.start())
        assert firing.task is not None
        firing.task.cancel()
        ended.run_until_complete(asyncio.gather(firing.task, return_exceptions=True))
        firing._next_look = timezone.now() + timedelta(days=1)  # asleep, as it was left
        ended.close()

        engine.do_start_flow(environment, "p", "reminder")  # commits a timer due in 1 h
        assert PendingTimer.objects.filter(person__person_key="p").count() == 1
    finally:
        commits.unlisten_due(firing._written)
        threads.shutdown()


# --- pages ------------------------------------------------------------------------


def test_a_page_write_creates_the_person_and_starts_flows_reading_page(api, env):
    publish(api, starter("pricing-tour", 'page.path == "/pricing" && page.query.plan == "pro"'))
    answer = engine.do_page(env, "visitor", "https://shop.example/pricing?plan=free&plan=pro#x")
    assert answer["person_key"] == "visitor" and answer["seq"] >= 1
    assert set(person_flows(api, "visitor")) == {"pricing-tour"}
    started = [c for c in log(api, "visitor") if c["entity"] == "flow"][0]
    assert started["cause"] == {"kind": "start_when", "page": True}
    assert engine.do_page(env, "other", "/home")["seq"] == 0  # nothing started
    assert person_flows(api, "other") == {}


def test_page_is_absent_before_any_and_the_latest_counts(api, env):
    # before any page, a condition reading `page` fails to evaluate: false
    publish(api, starter("not-docs", '!page.path.startsWith("/docs") || has(events.go)'))
    publish(api, starter("on-docs", 'page.path.startsWith("/docs")'))
    put(api, "p", {}, 201)
    assert person_flows(api, "p") == {}
    engine.do_page(env, "p", "/blog")
    assert set(person_flows(api, "p")) == {"not-docs"}
    engine.do_page(env, "p", "/docs/start")
    assert set(person_flows(api, "p")) == {"not-docs", "on-docs"}


def test_before_any_page_a_clause_reading_it_is_false_and_explain_says_why(api, env):
    """CONTRACT.md: `page` is absent before any; an `||` with another true clause holds."""
    from stepstream.engine import explain

    publish(api, starter("docs-or-go", 'page.path == "/docs" || has(events.go)'))
    put(api, "p", {}, 201)
    clause = explain.explain(env, "p", "docs-or-go")["start_when"]["clauses"][0]
    assert clause["text"] == 'page.path == "/docs"'
    assert clause["value"].startswith("error: no page yet")  # not "Undefined variable"
    assert person_flows(api, "p") == {}
    track(api, "p", "go")  # the other clause: starts with no page reported
    assert set(person_flows(api, "p")) == {"docs-or-go"}
    engine.do_page(env, "p", "https://app.test/docs")
    clause = explain.explain(env, "p", "docs-or-go")["start_when"]["clauses"][0]
    assert clause["value"] is True


@pytest.mark.parametrize("bad", ["", None, 7, "/x" + "a" * 2048, "/a\nb"])
def test_a_bad_page_url_is_400(env, bad):
    with pytest.raises(Invalid) as err:
        engine.do_page(env, "p", bad)
    assert "url" in err.value.messages[0]


def test_the_websocket_page_action(ws, rest, person_key):
    import uuid

    flow = starter(f"page-{uuid.uuid4().hex[:8]}", 'page.query.step == "2"')
    assert rest.post("/flows", json=flow).status_code == 201
    response = ws.request("page", {"person_key": person_key, "url": "/a?step=2"})
    assert response["status"] == 200, response
    assert response["data"]["person_key"] == person_key and response["data"]["seq"] >= 1
    found = rest.get(f"/people/{person_key}/flows").json()
    assert flow["identifier"] in {i["flow"] for i in found}
    response = ws.request("page", {"person_key": person_key, "url": "x" * 5000})
    assert response["status"] == 400 and "url" in response["errors"][0]


# --- explain ------------------------------------------------------------------------


def explain(api, key, flow, status=200):
    response = api.get(url("people", key, "explain") + f"?flow={flow}")
    assert response.status_code == status, response.content
    return response.json()


def test_clauses_split_the_top_level_operator_only():
    from stepstream.engine.explain import clauses

    assert clauses('a && (b || c) && "x && y"') == ["a", "(b || c)", '"x && y"']
    assert clauses("a && b || c") == ["a && b", "c"]
    assert clauses("f(a, b && c)") == ["f(a, b && c)"]


def test_explain_says_why_a_flow_has_not_started(api, env):
    publish(api, starter("upsell", 'person.plan == "free" && has(events.go) && person.n > 2'))
    publish(api, starter("other", "false"))
    put_limit(api, "calm", {"flows": ["upsell", "other"], "max": 1, "window": "1h"}, 201)
    put_limit(api, "unrelated", {"flows": ["other"], "max": 1, "window": "1h"}, 201)
    put(api, "p", {"plan": "free"}, 201)
    found = explain(api, "p", "upsell")
    assert found["flow"] == "upsell" and found["instance"] is None and found["enabled"] is True
    assert found["window"] == {"starts_at": None, "ends_at": None}
    when = found["start_when"]
    assert when["value"] is False
    assert [c["text"] for c in when["clauses"]] == [
        'person.plan == "free"',
        "has(events.go)",
        "person.n > 2",
    ]
    assert when["clauses"][0]["value"] is True and when["clauses"][1]["value"] is False
    assert when["clauses"][2]["value"].startswith("error: ")  # no such key
    assert found["limits"] == [{"identifier": "calm", "used": 0, "max": 1, "next_free_at": None}]
    assert found["deferred"] is False and found["transitions"] == []
    # started explicitly: the limit is used up; the transitions of the active step show
    engine.do_start_flow(env, "p", "upsell")
    found = explain(api, "p", "upsell")
    assert found["instance"]["flow"] == "upsell"
    assert found["limits"][0]["used"] == 1 and found["limits"][0]["next_free_at"]
    assert [t["identifier"] for t in found["transitions"]] == ["next"]
    assert found["transitions"][0]["value"] is True and found["transitions"][0]["due_at"] is None
    # another flow, held back by the limit: deferred
    publish(api, starter("other", "has(events.go)"))
    track(api, "p", "go")
    assert explain(api, "p", "other")["deferred"] is True
    # the switches (issue 26) say why too: off, or outside a window
    window = {"enabled": False, "starts_at": "2031-01-01T00:00:00Z", "ends_at": None}
    assert api.patch("/api/v1/flows/upsell", window, format="json").status_code == 200
    found = explain(api, "p", "upsell")
    assert found["enabled"] is False and found["archived"] is False
    assert found["window"] == {"starts_at": "2031-01-01T00:00:00Z", "ends_at": None}
    assert api.delete("/api/v1/flows/other").status_code == 204
    assert explain(api, "p", "other")["archived"] is True


def test_explain_shows_a_timer_due_at_and_refuses_bad_requests(api, env):
    publish(api, timed_flow(after="2d", condition="person.ready == true"))
    put(api, "p", {"ready": False}, 201)
    engine.do_start_flow(env, "p", "reminder")
    found = explain(api, "p", "reminder")
    nudge = next(t for t in found["transitions"] if t["identifier"] == "nudge")
    assert nudge["due_at"] and nudge["after"] == "2d" and nudge["value"] is False
    assert nudge["clauses"] == [{"text": "person.ready == true", "value": False}]
    assert found["start_when"] is None
    assert "flow" in errors(api.get(url("people", "p", "explain")), 400)[0]
    explain(api, "p", "nope", 404)
    explain(api, "nobody", "reminder", 404)


def test_the_dashboard_says_timer_deferred_and_page_causes_in_words():
    from stepstream.http.dashboard.views import cause_text

    assert cause_text({"kind": "timer", "transition": "nudge", "due_at": "D"}) == (
        "timer of nudge, due D"
    )
    assert cause_text({"kind": "start_when", "deferred_by": "calm"}) == (
        "started by its start condition, deferred by limit calm"
    )
    assert cause_text({"kind": "automatic", "transition": "t", "page": True}) == (
        "automatic transition t, after a page view"
    )


def test_a_pass_fires_each_due_person_once_and_a_failing_one_is_held_back(api, env, monkeypatch):
    from stepstream.engine import timers
    from stepstream.engine.firing import fire_due

    publish(api, timed_flow(after="1h"))
    for key in ("a", "b", "c"):
        put(api, key, {}, 201)
        engine.do_start_flow(env, key, "reminder")
    make_due(kind="timer")
    time_passes(timedelta(hours=1))  # all three due
    assert fire_due(batch=2)[0] == 2  # the most overdue two
    assert fire_due(batch=2)[0] == 1  # then the third
    assert fire_due()[0] == 0  # nothing twice
    assert {states(api, k)["nudged"] for k in ("a", "b", "c")} == {"active"}
    fired = [c for c in log(api, "a") if c["cause"]["kind"] == "timer"]
    assert [c["identifier"] for c in fired] == ["wait", "nudged"]

    put(api, "d", {}, 201)
    engine.do_start_flow(env, "d", "reminder")
    make_due(kind="timer")
    time_passes(timedelta(hours=1))
    with monkeypatch.context() as patched:
        patched.setattr(timers, "set_waiting", lambda ids: 1 / 0)  # a bug, after the changes
        assert fire_due()[0] == 1  # tried, rolled back (its changes too), held back
    assert states(api, "d")["nudged"] == "inactive"
    assert fire_due() == (0, None)  # not tried again at once: held back for a while
    PendingTimer.objects.update(claimed_until=None)  # the hold lapses
    assert fire_due()[0] == 1
    assert states(api, "d")["nudged"] == "active"


def test_an_idle_loop_only_reads_the_next_due_time(api, env):
    from stepstream.engine.firing import fire_due

    publish(api, timed_flow(after="1h"))
    put(api, "p", {}, 201)
    engine.do_start_flow(env, "p", "reminder")
    timer = PendingTimer.objects.get()
    assert fire_due() == (0, timer.due_at)  # sleeps until then (at most POLL)
    assert PendingTimer.objects.get().claimed_until is None  # nothing written


def test_a_server_that_was_down_fires_overdue_timers_when_it_starts(tmp_path):
    from stepstream.testing.servers import Server
    from tests.waiting import wait_until

    server = Server(tmp_path / "data")
    try:
        server.start()
        name = f"down-{uuid.uuid4().hex[:8]}"  # servers on PostgreSQL share one database
        keys = server.init_project(name)["environments"][0]
        with server.rest(keys["secret_key"]) as rest:
            assert rest.post("/flows", json=timed_flow(after="1h")).status_code == 201
            assert rest.put("/people/p", json={"data": {}}).status_code == 201
            assert rest.post("/people/p/flows", json={"flow": "reminder"}).status_code == 201
        server.stop()
        # two hours pass while no server runs
        server.shell(
            "from datetime import timedelta\n"
            "from django.db.models import F\n"
            "from stepstream.models import PendingTimer, StepInstance\n"
            f"project = {{'person__environment__project__name': {name!r}}}\n"
            "moved = PendingTimer.objects.filter(**project).update(\n"
            "    due_at=F('due_at') - timedelta(hours=2))\n"
            "StepInstance.objects.filter(**{'instance__' + k: v for k, v in project.items()})"
            ".update(activated_at=F('activated_at') - timedelta(hours=2))\n"
            "assert moved == 1\n"
        )
        server.start()
        with server.rest(keys["secret_key"]) as rest:

            def nudged():
                steps = rest.get("/people/p/flows").json()[0]["steps"]
                return {s["identifier"]: s["state"] for s in steps}["nudged"] == "active"

            wait_until(nudged, timeout=10, what="the overdue timer fired at start")
            kinds = [c["cause"]["kind"] for c in rest.get("/people/p/events").json()]
            assert kinds.count("timer") == 2  # wait completed, nudged active: once
    finally:
        server.stop()
