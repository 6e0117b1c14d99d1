"""The dashboard's pages through Django's test client, and its live socket on a real server.

What a staff user would notice: signing in (and being refused), every page
reachable from the navigation, the numbers on the flow page and the funnel,
search and pages of people, keys rotated and revoked only after a
confirmation, no key ever in a page, and a flow page whose cost in queries
does not grow with the number of people.
"""

import contextlib
import json
import re
import time
import uuid
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from stepstream import engine
from stepstream.engine import flows, people
from stepstream.errors import Conflict
from stepstream.http.dashboard import layout, queries
from stepstream.http.demo import DEMO_FLOW
from stepstream.models import ApiKey, StateChange, StepDuration
from stepstream.testing.flows import LINEAR_FLOW, LOOP_FLOW

PASSWORD = "correct horse battery staple"


@pytest.fixture
def staff(db):
    return User.objects.create_user("ada", "ada@example.com", PASSWORD, is_staff=True)


@pytest.fixture
def browser(staff):
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def demo_flow(env):
    return flows.publish(env, DEMO_FLOW)


def start(env, key, flow="onboarding", data=None):
    engine.do_put_person(env, key, data or {})
    return engine.do_start_flow(env, key, flow)


def links(html: str) -> list[str]:
    return [unescape(h) for h in re.findall(r'href="(/dashboard/[^"]*)"', html)]


def step_counts(html: str) -> dict[str, int]:
    return {
        step: int(n) for step, n in re.findall(r'data-step="([^"]+)" data-active="(\d+)"', html)
    }


def test_sign_in_with_the_form_and_refusals(staff):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/dashboard/login/")
    assert page.status_code == 200
    token = page.cookies["csrftoken"].value
    html = page.content.decode()
    assert 'name="username"' in html and 'name="password"' in html
    assert '<label for="id_username">' in html and '<label for="id_password">' in html

    wrong = client.post(
        "/dashboard/login/",
        {"username": "ada", "password": "nope", "csrfmiddlewaretoken": token},
    )
    assert wrong.status_code == 200
    assert "do not match a staff account" in wrong.content.decode()
    assert client.get("/dashboard/").status_code == 302  # still signed out

    User.objects.create_user("bob", "bob@example.com", PASSWORD)  # not staff
    not_staff = client.post(
        "/dashboard/login/",
        {"username": "bob", "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert not_staff.status_code == 200
    assert client.get("/dashboard/").status_code == 302

    no_token = Client(enforce_csrf_checks=True).post(
        "/dashboard/login/", {"username": "ada", "password": PASSWORD}
    )
    assert no_token.status_code == 403  # CSRF on

    signed_in = client.post(
        "/dashboard/login/",
        {"username": "ada", "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert signed_in.status_code == 302 and signed_in["Location"] == "/dashboard/"
    cookie = signed_in.cookies["sessionid"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert client.get("/dashboard/").status_code == 200

    token = client.cookies["csrftoken"].value
    out = client.post("/dashboard/logout/", {"csrfmiddlewaretoken": token})
    assert out.status_code == 302
    assert client.get("/dashboard/").status_code == 302


def test_pages_are_refused_without_a_session(env, demo_flow):
    start(env, "p-1")
    anonymous = Client()
    urls = [
        "/dashboard/",
        f"/dashboard/{env.pk}/",
        f"/dashboard/{env.pk}/flows/",
        f"/dashboard/{env.pk}/flows/onboarding/",
        f"/dashboard/{env.pk}/people/",
        f"/dashboard/{env.pk}/people/p-1/",
        f"/dashboard/{env.pk}/segments/",
        f"/dashboard/{env.pk}/webhooks/",
        f"/dashboard/{env.pk}/keys/",
        f"/dashboard/{env.pk}/keys/rotate/",
    ]
    for url in urls:
        answer = anonymous.get(url)
        assert answer.status_code == 302, url
        assert answer["Location"].startswith("/dashboard/login/?next="), url
    key = ApiKey.objects.filter(environment=env).first()
    assert anonymous.post(f"/dashboard/{env.pk}/keys/{key.pk}/revoke/").status_code == 302
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_every_page_is_reached_from_the_navigation_and_none_shows_a_key(
    browser, env, keys, demo_flow
):
    start(env, "someone@example.com")
    start(env, "with/slash")
    home = browser.get("/dashboard/").content.decode()
    match = re.search(r'href="([^"]+)" data-environment="development"', home)
    assert match, home
    seen, queue, pages = set(), [match.group(1)], {}
    while queue:
        url = queue.pop()
        if url in seen or "/logout/" in url or "/rotate/" in url or "/revoke/" in url:
            continue
        seen.add(url)
        answer = follow(browser, url)  # as a browser sends it, through the ASGI layer
        assert answer.status_code == 200, url
        html = answer.content.decode()
        pages[url] = html
        queue.extend(u for u in links(html) if u.startswith(f"/dashboard/{env.pk}/"))
    reached = {re.sub(r"\?.*", "", u) for u in pages}
    for path in ("flows/", "flows/onboarding/", "people/", "segments/", "webhooks/", "keys/"):
        assert f"/dashboard/{env.pk}/{path}" in reached, path
    assert f"/dashboard/{env.pk}/people/someone@example.com/" in reached
    assert f"/dashboard/{env.pk}/people/with%2Fslash/" in reached  # one segment
    for url, html in pages.items():
        assert keys["secret_key"] not in html, url
        assert keys["publishable_key"] not in html, url
        assert "sk_" not in html.replace(keys["secret_key"][:7], ""), url
        for row in ApiKey.objects.all():
            assert row.digest not in html, url


def test_flow_page_draws_the_steps_with_current_counts(browser, env, demo_flow):
    for i in range(3):
        start(env, f"p-{i}")
    engine.do_transition(env, "p-0", "onboarding", "start")
    engine.do_transition(env, "p-0", "onboarding", "task-created")
    engine.do_flow_action(env, "p-2", "onboarding", "exit")  # exited: still current, steps kept
    html = browser.get(f"/dashboard/{env.pk}/flows/onboarding/").content.decode()
    assert step_counts(html) == {
        "welcome": 2,
        "create-task": 0,
        "invite": 1,
        "due-date": 1,
        "task-done": 0,
        "invite-done": 0,
        "due-date-done": 0,
    }
    assert html.count("<path d=") >= 6  # one edge per transition pair
    assert 'data-flow="onboarding"' in browser.get(f"/dashboard/{env.pk}/flows/").content.decode()


def test_flow_page_of_an_unknown_flow_or_environment_is_a_404_page(browser, env):
    answer = browser.get(f"/dashboard/{env.pk}/flows/nope/")
    assert answer.status_code == 404
    assert "No flow 'nope'" in unescape(answer.content.decode())
    assert browser.get("/dashboard/999999/flows/").status_code == 404
    assert browser.get(f"/dashboard/{env.pk}/people/nobody/").status_code == 404


def test_the_funnel_counts_reached_completed_and_median_time(env):
    flow = flows.publish(env, LINEAR_FLOW)
    for i in range(4):
        start(env, f"p-{i}")
    for i in range(3):
        engine.do_transition(env, f"p-{i}", "onboarding", "next")  # welcome done
    engine.do_transition(env, "p-0", "onboarding", "next")  # profile done, flow completed
    # welcome took 10, 20 and 40 seconds for p-0, p-1, p-2: median 20
    for i, seconds in enumerate((10, 20, 40)):
        step = StateChange.objects.filter(
            person__person_key=f"p-{i}", entity="step", identifier="welcome"
        )
        began = step.get(state="active").occurred_at  # exactly: not the machine's own pace
        step.filter(state="completed").update(occurred_at=began + timedelta(seconds=seconds))
    assert flow["version"] == 1
    answer = queries.flow_analytics(env.flows.get(identifier="onboarding"), exact_medians=True)
    steps = {s["identifier"]: s for s in answer["steps"]}
    assert answer["instances"] == {
        "active": 3,
        "inactive": 0,
        "completed": 1,
        "exited": 0,
        "total": 4,
    }
    assert (steps["welcome"]["reached"], steps["welcome"]["completed"]) == (4, 3)
    assert steps["welcome"]["active"] == 1
    assert steps["welcome"]["median_seconds_to_complete"] == pytest.approx(20, abs=0.05)
    assert (steps["profile"]["reached"], steps["profile"]["completed"]) == (3, 1)
    assert steps["done"]["reached"] == 1 and steps["done"]["completed"] == 1
    assert steps["done"]["median_seconds_to_complete"] == pytest.approx(0, abs=0.05)


def test_median_of_an_even_number_of_durations_and_of_loops(env):
    from django.utils import timezone

    from stepstream.engine import clock

    flows.publish(env, LOOP_FLOW)
    # every change at one instant (the engine's clock), so the durations are exactly the
    # shifts below, whatever the machine's pace
    with clock.at(timezone.now()):
        for i in range(2):
            start(env, f"p-{i}", flow="loop")
            engine.do_transition(env, f"p-{i}", "loop", "go")
        for _ in range(2):
            engine.do_transition(env, "p-0", "loop", "flip")  # a -> b -> a: a completed twice
    for row in StateChange.objects.filter(entity="step", identifier="begin", state="completed"):
        extra = 10 if row.person.person_key == "p-0" else 30
        StateChange.objects.filter(pk=row.pk).update(
            occurred_at=row.occurred_at + timedelta(seconds=extra)
        )
    analytics = queries.flow_analytics(env.flows.get(identifier="loop"), exact_medians=True)
    steps = {s["identifier"]: s for s in analytics["steps"]}
    assert steps["begin"]["median_seconds_to_complete"] == pytest.approx(20, abs=0.05)
    assert steps["a"]["reached"] == 2 and steps["a"]["active"] == 2
    assert steps["b"]["reached"] == 1 and steps["b"]["completed"] == 1


def test_counters_kept_by_triggers_match_the_instances_whatever_happens(env, demo_flow):
    """Starts, transitions, pauses, exits, deletions and a new version: the counts the
    dashboard reads (kept by triggers) equal a GROUP BY over the instances themselves."""
    import random

    from django.db.models import Count

    from stepstream.models import Flow, FlowInstance, StepInstance

    rng = random.Random(5)
    moves = ["start", "task-created", "invited", "due-date-set"]
    for i in range(40):
        start(env, f"p-{i}")
        for move in moves[: rng.randrange(5)]:
            engine.do_transition(env, f"p-{i}", "onboarding", move)
        for action, every in (("pause", 7), ("exit", 9)):
            if i % every == 3:
                with contextlib.suppress(Conflict):  # a completed flow cannot
                    engine.do_flow_action(env, f"p-{i}", "onboarding", action)
    for i in range(0, 40, 6):
        people.delete(env, f"p-{i}")
    flows.publish(env, {**DEMO_FLOW, "name": "v2"})
    start(env, "late")

    for flow in Flow.objects.filter(environment=env):
        expected: dict[str, dict[str, int]] = {}
        steps = (
            StepInstance.objects.filter(instance__flow=flow)
            .values_list("identifier", "state")
            .annotate(n=Count("id"))
        )
        for identifier, state, n in steps:
            if state != "inactive":  # steps count only active and completed
                expected.setdefault(identifier, {})[state] = n
        own = FlowInstance.objects.filter(flow=flow).values_list("state").annotate(n=Count("id"))
        for state, n in own:
            expected.setdefault("", {})[state] = n
        got = {
            identifier: {state: n for state, n in by_state.items() if n}
            for identifier, by_state in queries.state_counts([flow.pk])[flow.pk].items()
        }
        assert {k: v for k, v in got.items() if v} == expected, flow.version


def test_estimated_medians_are_close_to_the_exact_ones(env):
    flows.publish(env, LINEAR_FLOW)
    for i, pause in enumerate((0.02, 0.08, 0.3)):
        start(env, f"p-{i}")
        time.sleep(pause)
        engine.do_transition(env, f"p-{i}", "onboarding", "next")
    flow = env.flows.get(identifier="onboarding")
    exact = queries.median_seconds(flow.pk)
    estimate = queries.estimated_medians(flow.pk)
    assert exact["welcome"] >= 0.08
    assert estimate["welcome"] == pytest.approx(exact["welcome"], rel=0.1)
    assert set(estimate) == set(exact) == {"welcome"}


def test_flow_page_queries_do_not_grow_with_people(browser, env, demo_flow, django_db_setup):
    url = f"/dashboard/{env.pk}/flows/onboarding/"
    for i in range(5):
        start(env, f"few-{i}")
    with CaptureQueriesContext(connection) as few:
        assert browser.get(url).status_code == 200
    for i in range(300):
        start(env, f"many-{i}")
        if i % 3 == 0:
            engine.do_transition(env, f"many-{i}", "onboarding", "start")
    with CaptureQueriesContext(connection) as many:
        answer = browser.get(url)
    assert answer.status_code == 200
    assert step_counts(answer.content.decode())["invite"] == 100
    # 12, and the authoring sections' constant few: versions, switches, the project's
    # other environments, the flow's audit, the compared version's steps and transitions
    assert len(many.captured_queries) == len(few.captured_queries) <= 17


def test_flow_page_and_people_page_within_a_fixed_query_budget(
    browser, env, demo_flow, django_assert_max_num_queries
):
    for i in range(120):
        start(env, f"user-{i:03}")
    with django_assert_max_num_queries(17):  # 12 and the authoring sections (above)
        browser.get(f"/dashboard/{env.pk}/flows/onboarding/")
    with django_assert_max_num_queries(8):
        browser.get(f"/dashboard/{env.pk}/people/?page=2")
    with django_assert_max_num_queries(12):
        browser.get(f"/dashboard/{env.pk}/people/user-007/")


def test_people_search_and_pages(browser, env, demo_flow):
    for i in range(60):
        engine.do_put_person(env, f"user-{i:03}@acme.test", {})
    engine.do_put_person(env, "Someone.Else", {})
    first = browser.get(f"/dashboard/{env.pk}/people/").content.decode()
    assert len(re.findall(r"data-person=", first)) == queries.PEOPLE_PER_PAGE
    assert '<input id="people-q" name="q" type="search"' in first
    assert 'rel="next"' in first
    second = browser.get(f"/dashboard/{env.pk}/people/?page=2").content.decode()
    assert len(re.findall(r"data-person=", second)) == 61 - queries.PEOPLE_PER_PAGE
    found = browser.get(f"/dashboard/{env.pk}/people/?q=someone").content.decode()
    assert re.findall(r'data-person="([^"]+)"', found) == ["Someone.Else"]
    none = browser.get(f"/dashboard/{env.pk}/people/?q=zzz").content.decode()
    assert "No person&#x27;s key contains" in none or "No person's key contains" in none
    assert browser.get(f"/dashboard/{env.pk}/people/?page=999").status_code == 200


def test_person_page_shows_flows_and_timeline(browser, env, demo_flow):
    start(env, "p-1", data={"plan": "pro"})
    engine.do_transition(env, "p-1", "onboarding", "start")
    html = browser.get(f"/dashboard/{env.pk}/people/p-1/").content.decode()
    seqs = [int(s) for s in re.findall(r'<li data-seq="(\d+)"', html)]
    assert seqs == list(range(seqs[0], 0, -1)) and seqs[0] == 6  # newest first, all of them
    assert 'data-flow="onboarding"' in html
    assert re.search(r'data-step-instance="[^"]+" data-state="active"', html)
    assert "&quot;plan&quot;: &quot;pro&quot;" in html
    config = json.loads(re.search(r'id="live-config"[^>]*>(.*?)</script>', html).group(1))
    assert config == {
        "watch": "person",
        "environment": env.pk,
        "person_key": "p-1",
        "since_seq": 6,
    }


def test_cause_is_shown_in_words_when_the_event_has_one():
    from stepstream.http.dashboard.views import cause_text

    assert cause_text({"kind": "call", "via": "rest"}) == "called via rest"
    assert (
        cause_text({"kind": "automatic", "transition": "go", "event": "signed_up"})
        == "automatic transition go, after event signed_up"
    )
    assert cause_text({"kind": "start_when", "data": True}) == (
        "started by its start condition, after a data change"
    )
    assert cause_text(None) == ""


def test_empty_states_say_what_to_do(browser, env):
    flows_page = browser.get(f"/dashboard/{env.pk}/flows/").content.decode()
    assert "No flows yet" in flows_page and "/api/v1/flows" in flows_page
    assert "No people yet" in browser.get(f"/dashboard/{env.pk}/people/").content.decode()
    assert "No segments yet" in browser.get(f"/dashboard/{env.pk}/segments/").content.decode()
    assert "No webhooks yet" in browser.get(f"/dashboard/{env.pk}/webhooks/").content.decode()


def test_segments_show_their_sizes_webhooks_their_attempts_people_their_events(browser, env):
    from django.utils import timezone

    from stepstream.engine import segments
    from stepstream.models import Webhook, WebhookAttempt

    for key, plan in (("ann", "pro"), ("bob", "free"), ("cy", "pro")):
        engine.do_put_person(env, key, {"plan": plan})
    engine.do_track(env, "ann", "searched", {"q": "roadmap"})
    engine.do_track(env, "ann", "searched")
    segments.put(env, "pro", {"condition": 'has(person.plan) && person.plan == "pro"'})
    page = browser.get(f"/dashboard/{env.pk}/segments/").content.decode()
    assert re.search(r'<td class="num">\s*2\s*</td>', page), page

    hook = Webhook.objects.create(environment=env, url="https://hooks.example/x", secret="whsec_A")
    WebhookAttempt.objects.create(
        webhook=hook,
        message_id="msg_1",
        person_key="ann",
        seq=1,
        attempt=2,
        status_code=503,
        error="HTTP 503",
        at=timezone.now(),
    )
    page = browser.get(f"/dashboard/{env.pk}/webhooks/").content.decode()
    assert "https://hooks.example/x" in page and "503" in page and "whsec_A" not in page
    when = re.search(r"<td><time datetime=\"[^\"]+\">([^<]+)</time></td>", page)
    assert when and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", when.group(1)), when

    person = browser.get(f"/dashboard/{env.pk}/people/ann/").content.decode()
    assert "searched" in person and "×2" in person
    # the latest properties as JSON, not as a Python dict (one key: PostgreSQL reorders keys)
    engine.do_track(env, "ann", "exported", {"format": "csv"})
    person = browser.get(f"/dashboard/{env.pk}/people/ann/").content.decode()
    assert "{&quot;format&quot;: &quot;csv&quot;}" in person, person
    # when it was last tracked, written like the page's other dates (not an ISO string)
    last = re.search(r'<time class="muted small" datetime="([^"]+)">([^<]+)</time>', person)
    assert last and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", last.group(2)), last


class CountedCondition:
    """A compiled condition that counts its evaluations."""

    evaluations = 0

    def __init__(self, condition):
        self.condition = condition

    def __getattr__(self, name):
        return getattr(self.condition, name)

    def evaluate(self, context) -> bool:
        CountedCondition.evaluations += 1
        return self.condition.evaluate(context)


def test_segments_page_scans_a_bounded_number_of_people(browser, env, monkeypatch):
    """20 segments over 10,000 people took 4.6 s: every segment scanned everyone (its cap
    counted matches). Now a view evaluates at most SIZES_BUDGET (person, segment) pairs in
    all, the same first people for every segment, and says how many it scanned."""
    from stepstream.engine import segments
    from stepstream.models import Person

    monkeypatch.setattr(segments, "SIZES_BUDGET", 300, raising=False)
    compiled = segments.compiled
    monkeypatch.setattr(segments, "compiled", lambda s: CountedCondition(compiled(s)))
    for n in range(3):
        segments.put(env, f"s{n}", {"condition": f"has(person.n) && person.n % 3 == {n}"})

    def view(people: int) -> tuple[str, int]:
        have = Person.objects.filter(environment=env).count()
        Person.objects.bulk_create(
            Person(environment=env, person_key=f"u-{i:05}", data={"n": i})
            for i in range(have, people)
        )
        CountedCondition.evaluations = 0
        with CaptureQueriesContext(connection) as queries_made:
            page = browser.get(f"/dashboard/{env.pk}/segments/")
        assert page.status_code == 200
        assert CountedCondition.evaluations <= 300  # 100 people for each of 3 segments
        return page.content.decode(), len(queries_made.captured_queries)

    few, few_queries = view(60)  # everyone scanned: exact sizes
    sizes = dict(re.findall(r'data-segment="(s\d)".*?<td class="num"[^>]*>\s*(\d+)\s*<', few, re.S))
    assert sizes == {"s0": "20", "s1": "20", "s2": "20"}
    assert "first" not in few

    many, many_queries = view(1500)
    assert many_queries == few_queries  # the scan reads the same batches whatever the people
    text = " ".join(unescape(re.sub(r"<[^>]+>", " ", many)).split())
    assert "first 100 of 1500 people" in text, text
    assert re.findall(r"at least (\d+)", text) == ["34", "33", "33"]  # of u-00000 … u-00099


def test_keys_are_rotated_and_revoked_only_after_confirming(browser, env, keys):
    from stepstream.trust import tenants

    page = browser.get(f"/dashboard/{env.pk}/keys/").content.decode()
    assert keys["publishable_key"][:7] in page  # the hint, never the key
    confirm = browser.get(f"/dashboard/{env.pk}/keys/rotate/")
    assert "Make a new publishable key?" in confirm.content.decode()
    assert env.keys.count() == 2  # a GET changes nothing
    rotated = browser.post(f"/dashboard/{env.pk}/keys/rotate/").content.decode()
    new_key = re.search(r'id="new-key" class="mono wide" readonly value="(pk_[^"]+)"', rotated)
    assert new_key, rotated
    assert tenants.environment_for_key(new_key.group(1), "publishable") == env
    assert "sk_" not in rotated

    old = env.keys.get(kind="publishable", hint=keys["publishable_key"][:7])
    assert "Revoke" in browser.get(f"/dashboard/{env.pk}/keys/{old.pk}/revoke/").content.decode()
    assert tenants.environment_for_key(keys["publishable_key"], "publishable") == env
    done = browser.post(f"/dashboard/{env.pk}/keys/{old.pk}/revoke/", follow=True)
    assert "is revoked" in done.content.decode()
    assert tenants.environment_for_key(keys["publishable_key"], "publishable") is None

    secret = env.keys.get(kind="secret")
    refused = browser.post(f"/dashboard/{env.pk}/keys/{secret.pk}/revoke/", follow=True)
    assert "only live secret key" in refused.content.decode()
    assert tenants.environment_for_key(keys["secret_key"], "secret") == env


def test_revoking_needs_the_csrf_token(staff, env):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    key = env.keys.first()
    assert client.post(f"/dashboard/{env.pk}/keys/{key.pk}/revoke/").status_code == 403
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_pages_forbid_framing_and_inline_scripts(browser, env):
    answer = browser.get(f"/dashboard/{env.pk}/flows/")
    assert answer["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in answer["Content-Security-Policy"]
    assert "no-cache" in answer["Cache-Control"] or "max-age=0" in answer["Cache-Control"]


# -- links to any key or identifier ---------------------------------------------

# any browser can make such a person with `identify`; flow identifiers may hold them too
ODD_KEYS = [
    "x/../../keys/rotate",
    ".",
    "..",
    "a%b",
    "a?b#c",
    "%2E%2E",
    ".%2e",
    "...",
    "a%2Fb",
    "a/b",
    "/",
    "first last",
    "ünï cødé ✓",
    "50%off?&#=;",
]


def _browser_path(path: str) -> str:
    """What a browser sends for a link's path: dot segments removed, "%2E" spelled ones
    too (the URL standard's single- and double-dot segments)."""
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, segment in enumerate(segments):
        dots = segment.lower().replace("%2e", ".")
        if dots in (".", ".."):
            if dots == ".." and out:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def follow(client, href: str):
    """GET an href from a page as a browser sends it and the server routes it.

    The test client would decode the whole path (a %2F too); the server's ASGI layer keeps
    %2F and %25 (stepstream.http.convertors.routing_path), so the path is handed over as
    that layer hands it to Django.
    """
    from urllib.parse import urlsplit

    from stepstream.http.convertors import routing_path

    assert href.isascii() and " " not in href, href  # every character percent-encoded
    parts = urlsplit(href)
    assert not parts.scheme and not parts.netloc and parts.path.startswith("/"), href
    raw = _browser_path(parts.path).encode()
    routed = routing_path(raw) if b"%" in raw else raw.decode()
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    return client.get(target, PATH_INFO=routed.encode().decode("latin-1"))


def live_config(html: str) -> dict:
    return json.loads(re.search(r'id="live-config"[^>]*>(.*?)</script>', html).group(1))


def test_every_person_key_is_linked_to_its_own_page(browser, env):
    """`x/../../keys/rotate` linked to the keys page, "." and ".." elsewhere, "%" to a 404."""
    for key in ODD_KEYS:
        engine.do_put_person(env, key, {"key": key})
    html = browser.get(f"/dashboard/{env.pk}/people/").content.decode()
    found = {
        unescape(person): unescape(href)
        for href, person in re.findall(r'<a href="([^"]+)" data-person="([^"]*)"', html)
    }
    assert set(found) == set(ODD_KEYS)
    for key, href in found.items():
        page = follow(browser, href)
        assert page.status_code == 200, (key, href)
        shown = page.content.decode()
        assert live_config(shown)["person_key"] == key, (key, href)
        assert unescape(re.search(r'<h1 class="mono">(.*?)</h1>', shown).group(1)) == key


def test_every_flow_identifier_is_linked_to_its_own_page(browser, env):
    odd = [i for i in ODD_KEYS if i.strip()]
    for identifier in odd:
        flows.publish(env, dict(LINEAR_FLOW, identifier=identifier))
        flows.publish(env, dict(LINEAR_FLOW, identifier=identifier))  # version 2
        engine.do_put_person(env, "p", {})
        engine.do_start_flow(env, "p", identifier)
    html = browser.get(f"/dashboard/{env.pk}/flows/").content.decode()
    listed = {
        unescape(flow): unescape(href)
        for href, flow in re.findall(r'<a href="([^"]+)" data-flow="([^"]*)"', html)
    }
    assert set(listed) == set(odd)
    person = browser.get(f"/dashboard/{env.pk}/people/p/").content.decode()
    started = {
        unescape(flow): unescape(href)
        for href, flow in re.findall(r'<a href="([^"]+)" data-flow="([^"]*)"', person)
    }
    assert set(started) == set(odd)
    for identifier in odd:
        page = follow(browser, listed[identifier])
        assert page.status_code == 200, (identifier, listed[identifier])
        assert live_config(page.content.decode())["flow"] == identifier
        # the person's flow card links to the version they are in
        page = follow(browser, started[identifier])
        assert page.status_code == 200, (identifier, started[identifier])
        config = live_config(page.content.decode())
        assert (config["flow"], config["version"]) == (identifier, 2)
        # and the flow page's own version links stay on the flow
        versions = re.findall(r'<a href="([^"]+)"[^>]*>v(\d+)', page.content.decode())
        assert [int(v) for _, v in versions] == [1, 2]
        for href, version in versions:
            config = live_config(follow(browser, unescape(href)).content.decode())
            assert (config["flow"], config["version"]) == (identifier, int(version))


def test_signing_in_from_a_link_to_an_odd_key_comes_back_to_it(staff, env):
    engine.do_put_person(env, "a?b#c", {})
    anonymous = Client()
    refused = follow(anonymous, f"/dashboard/{env.pk}/people/a%3Fb%23c/")
    assert refused.status_code == 302
    from urllib.parse import parse_qs, urlsplit

    back = parse_qs(urlsplit(refused["Location"]).query)["next"][0]
    anonymous.force_login(staff)
    assert live_config(follow(anonymous, back).content.decode())["person_key"] == "a?b#c"


# -- the layered layout ---------------------------------------------------------


def test_layout_puts_branches_side_by_side_and_joins_after_them():
    steps = [(s, s) for s in ("a", "b", "c", "d", "e")]
    transitions = [
        ("t", "a", "b", "manual"),
        ("t", "a", "c", "manual"),
        ("u", "b", "d", "manual"),
        ("v", "c", "e", "automatic"),
        ("w", "e", "d", "manual"),
    ]
    drawn = layout.layout(steps, transitions)
    n = drawn.by_identifier
    assert [n[s].layer for s in "abcde"] == [0, 1, 1, 3, 2]  # the join d after its longest branch
    assert n["b"].y != n["c"].y and n["b"].x == n["c"].x
    assert n["a"].start and n["d"].final and not n["b"].final
    assert all(n[a].x < n[b].x for _, a, b, _ in transitions)
    auto = next(e for e in drawn.edges if e.source == "c")
    assert auto.automatic and not auto.back
    long_edge = next(e for e in drawn.edges if (e.source, e.target) == ("b", "d"))
    assert long_edge.path.count("C") + long_edge.path.count("L") >= 2  # through a hidden point


def test_layout_of_loops_and_a_crossing_free_order():
    drawn = layout.layout(
        [("begin", ""), ("a", ""), ("b", "")],
        [
            ("go", "begin", "a", "manual"),
            ("flip", "a", "b", "manual"),
            ("flip", "b", "a", "manual"),
        ],
    )
    back = [e for e in drawn.edges if e.back]
    assert [(e.source, e.target) for e in back] == [("b", "a")]
    assert drawn.height > 2 * layout.MARGIN + layout.NODE_H  # room for the arc under the steps

    # two chains published interleaved: barycenter ordering keeps each on its own row
    steps = [(s, "") for s in ("s1", "s2", "x1", "y2", "x2", "y1")]
    transitions = [
        ("t", "s1", "x1", "manual"),
        ("t", "s2", "y2", "manual"),
        ("t", "x1", "x2", "manual"),
        ("t", "y2", "y1", "manual"),
    ]
    drawn = layout.layout(steps, transitions)
    n = drawn.by_identifier
    assert (n["s1"].y < n["s2"].y) == (n["x1"].y < n["y2"].y) == (n["x2"].y < n["y1"].y)


def test_layout_of_a_large_flow_is_quick_and_complete():
    count = 200
    steps = [(f"s{i}", "") for i in range(count)]
    transitions = [("n", f"s{i}", f"s{i + 1}", "manual") for i in range(count - 1)]
    transitions += [("skip", f"s{i}", f"s{i + 7}", "manual") for i in range(0, count - 7, 5)]
    drawn = layout.layout(steps, transitions)
    assert len(drawn.nodes) == count and drawn.layers == count
    assert len(drawn.edges) == len(transitions)


LONG_FLOW = {
    "identifier": "long-names",
    "steps": [
        {"identifier": "welcome", "name": "Welcome to the Acme onboarding tour"},
        {"identifier": "connect-your-calendar-and-mail", "name": "Connect your calendar"},
        {"identifier": "supercalifragilistic", "name": "Supercalifragilisticexpialidociously"},
        {"identifier": "done", "name": "All set"},
    ],
    "transitions": [
        {
            "identifier": "calendar-connected-by-the-person",
            "from": "welcome",
            "to": "connect-your-calendar-and-mail",
        },
        {"identifier": "skip", "from": "welcome", "to": "supercalifragilistic", "type": "manual"},
        {"identifier": "later", "from": "welcome", "to": "supercalifragilistic"},
        {
            "identifier": "auto",
            "from": "connect-your-calendar-and-mail",
            "to": "done",
            "type": "automatic",
        },
        {
            "identifier": "again",
            "from": "connect-your-calendar-and-mail",
            "to": "supercalifragilistic",
        },
        {
            "identifier": "back",
            "from": "supercalifragilistic",
            "to": "connect-your-calendar-and-mail",
        },
        {"identifier": "finish", "from": "supercalifragilistic", "to": "done"},
    ],
}


def _unfitted(line: str) -> str:
    return line.removesuffix(layout.ELLIPSIS)


@given(
    st.lists(
        st.text(
            st.characters(codec="utf-8", exclude_categories=("Z", "C"), exclude_characters="…"),
            min_size=1,
            max_size=30,
        ),
        min_size=1,
        max_size=12,
    )
)
@hsettings(max_examples=300, deadline=None)
def test_step_names_wrap_between_words_and_fit_their_box(words):
    """At most two lines, each estimated to fit, none only "…". When every word can be
    shown whole (with a "…" after it), the lines hold the name's first words, whole
    and in order, and end in "…" exactly when words were left out; a word too wide
    for that is the only one cut, on its own line."""
    name = " ".join(words)
    lines = layout.wrap(name, layout.NAME_W, layout.NAME_SIZE)
    assert 1 <= len(lines) <= 2
    assert all(layout.text_width(line, layout.NAME_SIZE) <= layout.NAME_W for line in lines)
    shown = [_unfitted(line) for line in lines]
    assert all(shown), lines
    assert all(part in name for part in shown)
    width = layout.NAME_W
    if all(layout.text_width(w + layout.ELLIPSIS, layout.NAME_SIZE) <= width for w in words):
        whole = " ".join(shown).split()
        assert whole == name.split()[: len(whole)], (name, lines)
        assert lines[-1].endswith(layout.ELLIPSIS) == (len(whole) < len(name.split()))
        assert not lines[0].endswith(layout.ELLIPSIS)


def test_names_identifiers_and_edge_labels_are_shortened_at_a_word_or_a_part():
    wrap = lambda name: layout.wrap(name, layout.NAME_W, layout.NAME_SIZE)  # noqa: E731
    assert wrap("Welcome to Acme") == ["Welcome to Acme"]
    assert wrap("Welcome to the Acme onboarding tour") == ["Welcome to the Acme", "onboarding tour"]
    assert wrap("Invite a teammate to your workspace and start collaborating") == [
        "Invite a teammate to",
        "your workspace and…",
    ]
    assert wrap("Set-up-your-account-preferences-now") == [
        "Set-up-your-account-",
        "preferences-now",
    ]
    node = layout.Node("due-date-done", "", final=True)
    assert layout.subtitle(node) == "final · due-date…"  # was "final · due-date-do…"
    assert layout.subtitle(layout.Node("due-date", "", final=True)) == "final · due-date"
    assert layout.edge_text(["task-created"]) == "task-created"
    assert layout.edge_text(["next", "back", "skip"]) == "next +2"
    assert layout.edge_text(["calendar-connected-by-the-person"]) == "calendar…"


@pytest.mark.django_db
def test_flow_graph_draws_whole_words_matching_keys_and_no_median_for_nobody(browser, env):
    """The graph: names in whole words on up to two lines (the whole name in the
    tooltip), identifiers shortened at a part, edge labels in whole names; legend
    keys drawn with the edges' own classes. The funnel: "not reached" for a step
    nobody has reached (even with durations an earlier instance left), "—" for one
    reached but not completed, "< 1 ms" rather than "≈ 0 ms"."""
    flows.publish(env, LONG_FLOW)
    start(env, "p-1", flow="long-names")  # on to "connect…", then "done" automatically
    engine.do_transition(env, "p-1", "long-names", "calendar-connected-by-the-person")
    start(env, "p-2", flow="long-names")
    engine.do_transition(env, "p-2", "long-names", "skip")
    engine.do_transition(env, "p-2", "long-names", "finish")
    start(env, "p-3", flow="long-names")  # stays on "welcome"
    people.delete(env, "p-2")  # the only one who reached "supercalifragilistic"
    left = StepDuration.objects.filter(identifier="supercalifragilistic")
    assert left.exists()  # its time there stays in the histogram: a median with no one
    html = browser.get(f"/dashboard/{env.pk}/flows/long-names/").content.decode()

    names = dict(
        re.findall(r'data-step="([^"]+)".*?<text class="step-name">(.*?)</text>', html, re.S)
    )
    lines = {
        step: re.findall(r"<tspan [^>]*>([^<]*)</tspan>", text) for step, text in names.items()
    }
    assert lines["welcome"] == ["Welcome to the Acme", "onboarding tour"]
    assert lines["connect-your-calendar-and-mail"] == ["Connect your calendar"]
    assert lines["done"] == ["All set"]
    assert "<title>welcome — Welcome to the Acme onboarding tour</title>" in html
    subs = re.findall(r'class="step-id">([^<]*)<', html)
    assert "connect-your…" in [unescape(s) for s in subs]
    labels = [unescape(t) for t in re.findall(r'class="edge-label">([^<]*)<', html)]
    assert "calendar…" in labels and "skip, later" in labels
    assert "calendar-connected-by-the-person: welcome" in html  # in the edge's tooltip
    assert not re.search(r"\w…\w", " ".join(labels + subs))

    keys = dict(re.findall(r'data-key="(\w+)"><line [^>]*class="([^"]+)"', html))
    drawn = set(re.findall(r'<path d="[^"]*" class="(edge[^"]*)"', html))
    assert keys == {"manual": "edge", "auto": "edge auto", "back": "edge back"}
    assert set(keys.values()) <= drawn  # each key drawn as edges of the graph are

    rows = {
        step: unescape(text)
        for step, text in re.findall(
            r'data-funnel-step="([^"]+)".*?data-numbers>([^<]*)<', html, re.S
        )
    }
    assert rows["supercalifragilistic"] == "0 / 0 · — · not reached", rows
    assert rows["done"] == "1 / 1 · 100% · < 1 ms", rows  # a final step completes at once
    assert rows["connect-your-calendar-and-mail"] == "1 / 1 · 100% · < 1 ms", rows
    assert rows["welcome"].startswith("1 / 2 · 50% · "), rows
    assert "≈ 0 ms" not in html
    cells = {
        step: unescape(text)
        for step, text in re.findall(r'data-row-step="([^"]+)".*?data-cell="median">([^<]*)<', html)
    }
    assert cells["supercalifragilistic"] == "not reached" and cells["done"] == "< 1 ms"


def test_the_median_under_a_millisecond_is_not_zero():
    from stepstream.http.dashboard.views import _estimate, _median_shown

    assert _estimate(0.0) == "< 1 ms" and _estimate(0.0005) == "< 1 ms"
    assert _estimate(0.003) == "≈ 3 ms" and _estimate(None) == "—"
    assert _median_shown(0, 0, "≈ 3 ms") == "not reached"
    assert _median_shown(4, 0, "≈ 3 ms") == "—"
    assert _median_shown(4, 2, "≈ 3 ms") == "≈ 3 ms"


# -- the live socket, on a real server ---------------------------------------------


LIVE_USER = f"ada-{uuid.uuid4().hex[:8]}"  # servers on PostgreSQL share one database


@pytest.fixture(scope="module")
def live_server_with_staff(tmp_path_factory):
    from stepstream.testing.servers import Server

    server = Server(tmp_path_factory.mktemp("dashboard-live")).start()
    try:
        made = server.command(
            "manage",
            "createsuperuser",
            "--noinput",
            "--username",
            LIVE_USER,
            "--email",
            "ada@example.com",
            DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        )
        assert made.returncode == 0, made.stderr
        keys = server.init_project("live")["environments"][0]
        with server.rest(keys["secret_key"]) as rest:
            assert rest.post("/flows", json=LINEAR_FLOW).status_code == 201
        out = server.shell(
            "from stepstream.trust import tenants\n"
            f"print(tenants.environment_for_key({keys['secret_key']!r}, 'secret').pk)"
        )
        env_id = int(out.strip().splitlines()[-1])
        yield server, keys, env_id
    finally:
        server.stop()  # also when the setup above fails


def sign_in(server) -> str:
    """Signs in with the form, as a browser does; the session cookie's value."""
    import httpx

    with httpx.Client(base_url=server.url) as http:
        form = http.get("/dashboard/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        done = http.post(
            "/dashboard/login/",
            data={"username": LIVE_USER, "password": PASSWORD, "csrfmiddlewaretoken": token},
        )
        assert done.status_code == 302, done.text
        return http.cookies["sessionid"]


def open_live(server, session: str | None, origin: str | None = None):
    from websockets.sync.client import connect

    headers = {}
    if session:
        headers["Cookie"] = f"sessionid={session}"
    return connect(
        f"{server.ws_url}/dashboard/live",
        additional_headers=headers,
        origin=origin or server.url,
        open_timeout=5,
    )


def receive(socket, timeout=5.0) -> dict:
    return json.loads(socket.recv(timeout=timeout))


def closed_with(socket) -> int:
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=10)
    return closed.value.rcvd.code


def test_live_socket_refuses_without_a_staff_session_or_from_another_site(
    live_server_with_staff,
):
    server, _, _ = live_server_with_staff
    with open_live(server, None) as socket:
        assert closed_with(socket) == 4401
    with open_live(server, "not-a-session") as socket:
        assert closed_with(socket) == 4401
    session = sign_in(server)
    with open_live(server, session, origin="http://evil.example") as socket:
        assert closed_with(socket) == 4403


def test_live_socket_sends_counts_on_watch_and_after_each_change(live_server_with_staff):
    server, keys, env_id = live_server_with_staff
    session = sign_in(server)
    with server.rest(keys["secret_key"]) as rest, open_live(server, session) as socket:
        for key in ("c-1", "c-2"):
            rest.put(f"/people/{key}", json={"data": {}})
            rest.post(f"/people/{key}/flows", json={"flow": "onboarding"})
        socket.send(
            json.dumps(
                {"action": "watch_flow", "environment": env_id, "flow": "onboarding", "version": 1}
            )
        )
        first = receive(socket)
        assert first["event"] == "counts" and first["flow"] == "onboarding"
        welcome = first["active"].get("welcome", 0)
        assert welcome >= 2, first
        assert welcome >= 2
        transition = "/people/c-1/flows/onboarding/transitions"
        assert rest.post(transition, json={"transition": "next"}).status_code == 200
        while True:
            counts = receive(socket)["active"]
            if counts.get("welcome") == welcome - 1:
                break
        assert counts["profile"] >= 1

        # bad requests get a sentence, not a closed socket
        socket.send("not json")
        assert receive(socket)["event"] == "error"
        socket.send(json.dumps({"action": "watch_flow", "environment": env_id, "flow": "nope"}))
        assert "No flow" in receive(socket)["errors"][0]


def test_live_socket_sends_a_persons_backlog_then_live_changes_once_each(live_server_with_staff):
    server, keys, env_id = live_server_with_staff
    session = sign_in(server)
    with server.rest(keys["secret_key"]) as rest, open_live(server, session) as socket:
        rest.put("/people/t-1", json={"data": {}})
        rest.post("/people/t-1/flows", json={"flow": "onboarding"})  # seq 1, 2
        request = {"action": "watch_person", "environment": env_id, "person_key": "t-1"}
        socket.send(json.dumps({**request, "since_seq": 0}))
        assert receive(socket)["event"] == "watching"
        seqs = {receive(socket)["data"]["seq"] for _ in range(2)}
        assert seqs == {1, 2}
        rest.post("/people/t-1/flows/onboarding/transitions", json={"transition": "next"})
        live = [receive(socket) for _ in range(2)]  # welcome completed, profile active
        assert sorted(e["data"]["seq"] for e in live) == [3, 4]
        assert {e["event"] for e in live} == {"state_change"}
        socket.send(json.dumps({**request, "since_seq": 99}))
        assert receive(socket)["event"] == "restarted"  # beyond the log: the page reloads


def test_live_socket_closes_when_the_session_ends(live_server_with_staff):
    server, _, _ = live_server_with_staff
    session = sign_in(server)
    with open_live(server, session) as socket:
        server.shell(
            "from django.contrib.sessions.models import Session\n"
            f"Session.objects.filter(session_key={session!r}).delete()\n"
        )
        assert closed_with(socket) == 4401
