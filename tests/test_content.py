"""Content (docs/content.md): checked at publish, read back, the final-step rule, what was seen.

REST through Django's test client on the real database; the WebSocket side is
tests/test_content_ws.py.
"""

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepstream import engine
from stepstream.engine import content, flows
from stepstream.testing.flows import CONTENT_FLOW, LINEAR_FLOW


def _flow(step_content, *, steps=None, transitions=None):
    """LINEAR_FLOW with `content` on its second step ("profile", left by "next")."""
    flow = copy.deepcopy(LINEAR_FLOW)
    flow["identifier"] = "content-test"
    if steps is not None:
        flow["steps"] = steps
    else:
        flow["steps"][1]["content"] = step_content
    if transitions is not None:
        flow["transitions"] = transitions
    return flow


def _errors(api, flow) -> list[str]:
    response = api.post("/api/v1/flows", flow, format="json")
    assert response.status_code == 400, response.json()
    return response.json()["errors"]


def _one_error(api, step_content, path: str, *words: str) -> str:
    errors = _errors(api, _flow(step_content))
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}: "), errors
    for word in words:
        assert word in errors[0], errors
    return errors[0]


MODAL = {"type": "modal", "title": "Hello", "body": "Text"}


# -- publish --------------------------------------------------------------------------------


def test_the_content_flow_publishes_and_reads_back_with_its_defaults(api):
    response = api.post("/api/v1/flows", CONTENT_FLOW, format="json")
    assert response.status_code == 201, response.json()
    steps = {s["identifier"]: s for s in response.json()["steps"]}
    welcome = steps["welcome"]["content"]
    assert welcome["dismiss"] == "exit"  # the default, filled in
    assert welcome["buttons"][0] == {"label": "Start", "transition": "next", "style": "primary"}
    assert steps["menu"]["content"]["target"] == {
        "selector": "#menu",
        "fallbacks": [],
        "wait_ms": 5000,
        "placement": "bottom",
    }
    assert steps["done"]["content"]["locales"]["fr"]["body"] == "C'est tout."
    detail = api.get("/api/v1/flows/tour").json()
    assert detail["steps"] == response.json()["steps"]


def test_get_flow_reads_one_version_with_its_content(api):
    first = api.post("/api/v1/flows", CONTENT_FLOW, format="json").json()
    changed = copy.deepcopy(CONTENT_FLOW)
    changed["steps"][0]["content"]["title"] = "Welcome back"
    changed["steps"][0]["content"]["locales"]["fr"]["title"] = "Re-bonjour"
    api.post("/api/v1/flows", changed, format="json")
    one = api.get("/api/v1/flows/tour?version=1").json()
    assert one["version"] == 1 and one["steps"] == first["steps"]
    assert api.get("/api/v1/flows/tour").json()["steps"][0]["content"]["title"] == "Welcome back"
    assert api.get("/api/v1/flows/tour?version=3").status_code == 404
    assert api.get("/api/v1/flows/tour?version=x").status_code == 400


def test_a_step_without_content_has_no_content_key(api, linear_flow):
    steps = api.get("/api/v1/flows/onboarding").json()["steps"]
    assert all("content" not in s for s in steps)


@pytest.mark.parametrize(
    ("step_content", "path", "words"),
    [
        ({"type": "popup", "title": "x"}, "steps[1].content.type", ["'popup'", "modal"]),
        ({"type": "tooltip", "title": "x"}, "steps[1].content.target", ["required"]),
        ({"type": "hotspot", "title": "x"}, "steps[1].content.target", ["required"]),
        (
            {"type": "tooltip", "title": "x", "target": {"selector": "div[["}},
            "steps[1].content.target.selector",
            ["not a valid CSS selector"],
        ),
        (
            {"type": "tooltip", "title": "x", "target": {"selector": "a;b"}},
            "steps[1].content.target.selector",
            ["not a valid CSS selector"],
        ),
        (
            {"type": "tooltip", "title": "x", "target": {"selector": "p::before"}},
            "steps[1].content.target.selector",
            ["pseudo-element"],
        ),
        (
            {"type": "tooltip", "title": "x", "target": {"selector": "#a", "fallbacks": ["}"]}},
            "steps[1].content.target.fallbacks[0]",
            ["CSS selector"],
        ),
        (
            {"type": "tooltip", "title": "x", "target": {"selector": "#a", "wait_ms": 60001}},
            "steps[1].content.target.wait_ms",
            ["60000"],
        ),
        (
            {"type": "tooltip", "title": "x", "target": {"selector": "#a", "placement": "up"}},
            "steps[1].content.target.placement",
            [],
        ),
        (
            {**MODAL, "buttons": [{"label": "Back", "transition": "back"}]},
            "steps[1].content.buttons[0].transition",
            ["'back'", "does not leave", "next"],
        ),
        (
            {**MODAL, "buttons": [{"label": "Done", "action": "complete"}]},
            "steps[1].content.buttons[0].action",
            ["final step"],
        ),
        (
            {**MODAL, "buttons": [{"label": "Go"}]},
            "steps[1].content.buttons[0]",
            ["needs a transition"],
        ),
        (
            {**MODAL, "buttons": [{"label": "", "transition": "next"}]},
            "steps[1].content.buttons[0].label",
            ["non-empty"],
        ),
        (
            {**MODAL, "buttons": [{"label": "x", "transition": "next", "style": "big"}]},
            "steps[1].content.buttons[0].style",
            [],
        ),
        ({**MODAL, "dismiss": "close"}, "steps[1].content.dismiss", ["exit, hide, none"]),
        (
            {"type": "checklist", "items": [{"label": "Profile", "step": "nowhere"}]},
            "steps[1].content.items[0].step",
            ["'nowhere'", "not a step"],
        ),
        ({"type": "checklist", "title": "x"}, "steps[1].content.items", ["list"]),
        ({**MODAL, "items": []}, "steps[1].content.items", ["only for a checklist"]),
        ({**MODAL, "colour": "red"}, "steps[1].content.colour", ["not a known key"]),
        ({"type": "modal"}, "steps[1].content", ["nothing to show"]),
        ({**MODAL, "title": "x" * 201}, "steps[1].content.title", ["at most 200"]),
        ({**MODAL, "body": "x" * 5001}, "steps[1].content.body", ["at most 5000"]),
        ({**MODAL, "title": "a\x07b"}, "steps[1].content.title", ["control characters"]),
        (
            {**MODAL, "body": "Click [here](javascript:alert(1))"},
            "steps[1].content.body",
            ["javascript:alert(1", "http, https or mailto"],
        ),
        (
            {**MODAL, "body": "[a][x]\n\n[x]: data:text/html,hi"},
            "steps[1].content.body",
            ["data:text/html"],
        ),
        ({**MODAL, "body": "<vbscript:run>"}, "steps[1].content.body", ["vbscript:run"]),
        (
            {**MODAL, "body": "[a](JaVaScRiPt:x)"},
            "steps[1].content.body",
            ["refused"],
        ),
        (
            {**MODAL, "locales": {"fr": {"title": "Bonjour"}}},
            "steps[1].content.locales.fr",
            ["body untranslated"],
        ),
        (
            {
                **MODAL,
                "buttons": [{"label": "Next", "transition": "next"}],
                "locales": {"fr": {"title": "Bonjour", "body": "Texte"}},
            },
            "steps[1].content.locales.fr",
            ["buttons untranslated"],
        ),
        (
            {
                **MODAL,
                "buttons": [{"label": "Next", "transition": "next"}],
                "locales": {"fr": {"title": "Bonjour", "body": "Texte", "buttons": []}},
            },
            "steps[1].content.locales.fr.buttons",
            ["each of the 1 buttons"],
        ),
        (
            {**MODAL, "locales": {"french": {"title": "Bonjour", "body": "Texte"}}},
            "steps[1].content.locales.french",
            ["BCP 47"],
        ),
        (
            {**MODAL, "locales": {"default": {"title": "Bonjour", "body": "Texte"}}},
            "steps[1].content.locales.default",
            ["BCP 47"],
        ),
        (
            {**MODAL, "locales": {"fr": {"title": "B", "body": "T", "subtitle": "S"}}},
            "steps[1].content.locales.fr.subtitle",
            ["not a known key"],
        ),
        (
            {**MODAL, "locales": {"fr": {"title": "B", "body": "[a](ftp://x)"}}},
            "steps[1].content.locales.fr.body",
            ["ftp://x"],
        ),
        ("modal", "steps[1].content", ["object"]),
    ],
)
def test_publish_refuses_bad_content_naming_its_path(api, step_content, path, words):
    _one_error(api, step_content, path, *words)


def test_publish_names_every_content_problem_at_once(api):
    flow = _flow(None)
    flow["steps"][0]["content"] = {"type": "tooltip", "title": "x"}
    flow["steps"][2]["content"] = {**MODAL, "buttons": [{"label": "x", "transition": "next"}]}
    errors = _errors(api, flow)
    assert [e.split(":")[0] for e in errors] == [
        "steps[0].content.target",
        "steps[2].content.buttons[0].transition",
    ]


def test_limits_on_buttons_items_and_locales(api):
    many = [{"label": str(i), "transition": "next"} for i in range(content.MAX_BUTTONS + 1)]
    _one_error(api, {**MODAL, "buttons": many}, "steps[1].content.buttons", "at most 5")
    items = [{"label": "x", "step": "done"}] * (content.MAX_ITEMS + 1)
    _one_error(api, {"type": "checklist", "items": items}, "steps[1].content.items", "1 to 50")
    locales = {
        f"x{chr(97 + i // 26)}{chr(97 + i % 26)}": {"title": "t", "body": "b"} for i in range(51)
    }
    _one_error(api, {**MODAL, "locales": locales}, "steps[1].content.locales", "at most 50")


def test_the_whole_content_of_a_version_is_bounded(api, settings):
    settings.STEPSTREAM = {**settings.STEPSTREAM, "MAX_CONTENT_BYTES": 1000}
    flow = _flow(None)
    for step in flow["steps"]:
        step["content"] = {"type": "banner", "body": "x" * 400}
    errors = _errors(api, flow)
    assert len(errors) == 1 and "STEPSTREAM_MAX_CONTENT_BYTES" in errors[0], errors


def test_accepted_markdown_links_and_selectors(api):
    body = (
        "See [docs](https://example.com/a_(b)), [mail](mailto:help@example.com), "
        "[home](/start), [here](#top), <https://example.com>, and `[x](javascript:y)` in code."
    )
    target = {
        "selector": "nav > a[href^='/settings']:not(.hidden)",
        "fallbacks": ["#settings", "button:has(> svg)", ':is(a, button)[data-x="1"]'],
        "text": "Settings",
        "wait_ms": 0,
    }
    step_content = {"type": "tooltip", "title": "T", "body": body, "target": target}
    response = api.post("/api/v1/flows", _flow(step_content), format="json")
    assert response.status_code == 201, response.json()


def test_locale_codes_are_bcp47(api):
    texts = {"title": "T", "body": "B"}
    codes = {"fr": texts, "pt-BR": texts, "zh-Hant-TW": texts, "de-CH-1996": texts, "es-419": texts}
    response = api.post("/api/v1/flows", _flow({**MODAL, "locales": codes}), format="json")
    assert response.status_code == 201, response.json()
    _one_error(
        api,
        {**MODAL, "locales": {"fr": texts, "FR": texts}},
        "steps[1].content.locales.FR",
        "twice",
    )


# -- the final-step rule --------------------------------------------------------------------


def _states(instance) -> dict[str, str]:
    return {s["identifier"]: s["state"] for s in instance["steps"]}


def test_a_final_step_with_content_stays_active_until_completed(api, env):
    api.post("/api/v1/flows", CONTENT_FLOW, format="json")
    api.put("/api/v1/people/ann", {"data": {}}, format="json")
    assert api.post("/api/v1/people/ann/flows", {"flow": "tour"}, format="json").status_code == 201
    path = "/api/v1/people/ann/flows/tour"
    # not final, not active: 409
    assert api.post(f"{path}/steps/welcome/complete").status_code == 409
    assert api.post(f"{path}/steps/done/complete").status_code == 409
    assert api.post(f"{path}/steps/nowhere/complete").status_code == 409
    instance = api.post(f"{path}/transitions", {"transition": "skip"}, format="json").json()
    assert instance["state"] == "active"
    assert _states(instance) == {"welcome": "completed", "menu": "inactive", "done": "active"}
    api.post(f"{path}/pause")
    refused = api.post(f"{path}/steps/done/complete")
    assert refused.status_code == 409 and "inactive" in refused.json()["errors"][0]
    api.post(f"{path}/resume")
    done = api.post(f"{path}/steps/done/complete")
    assert done.status_code == 200, done.json()
    assert done.json()["state"] == "completed"
    assert _states(done.json())["done"] == "completed"
    assert api.post(f"{path}/steps/done/complete").status_code == 409
    assert api.post("/api/v1/people/bob/flows/tour/steps/done/complete").status_code == 404
    assert api.post("/api/v1/people/ann/flows/nope/steps/done/complete").status_code == 404
    causes = [e["cause"] for e in api.get("/api/v1/people/ann/events").json()]
    assert causes[-2] == {"kind": "call", "via": "rest", "action": "complete_step", "step": "done"}


def test_final_steps_without_content_still_complete_at_once(env, linear_flow):
    engine.do_put_person(env, "cy", {})
    engine.do_start_flow(env, "cy", "onboarding")
    engine.do_transition(env, "cy", "onboarding", "next")
    instance = engine.do_transition(env, "cy", "onboarding", "next")
    assert instance["state"] == "completed"


def test_an_automatic_transition_into_a_final_step_with_content_leaves_it_active(env):
    flows.publish(
        env,
        {
            "identifier": "auto",
            "steps": [{"identifier": "a"}, {"identifier": "b", "content": MODAL}],
            "transitions": [{"identifier": "go", "from": "a", "to": "b", "type": "automatic"}],
        },
    )
    engine.do_put_person(env, "dee", {})
    instance = engine.do_start_flow(env, "dee", "auto")
    assert instance["state"] == "active" and _states(instance) == {"a": "completed", "b": "active"}


# -- reserved event names and what was seen ---------------------------------------------------


def _track(api, key, event, **properties):
    return api.post(
        f"/api/v1/people/{key}/track", {"event": event, "properties": properties}, format="json"
    )


def test_dollar_names_are_reserved_for_the_sdk(api):
    for name in ("$clicked", "$", "$Shown"):
        response = _track(api, "eve", name)
        assert response.status_code == 400 and "reserved" in response.json()["errors"][0]
    response = _track(api, "eve", "$shown", flow="tour", step="welcome")
    assert response.status_code == 400
    assert "properties.version" in response.json()["errors"][0]
    response = _track(api, "eve", "$dismissed", flow="tour", version=1)
    assert response.status_code == 400 and "properties.step" in response.json()["errors"][0]
    ok = _track(api, "eve", "$dismissed", flow="tour", version=1, step="welcome")
    assert ok.status_code == 200 and ok.json()["count"] == 1


def test_analytics_count_instances_that_saw_each_step(api):
    api.post("/api/v1/flows", CONTENT_FLOW, format="json")
    for key in ("p1", "p2", "p3"):
        api.post(f"/api/v1/people/{key}/flows", {"flow": "tour"}, format="json") if api.put(
            f"/api/v1/people/{key}", {"data": {}}, format="json"
        ) else None
    seen = {"flow": "tour", "version": 1}
    for _ in range(3):  # shown three times: one instance
        assert _track(api, "p1", "$shown", **seen, step="welcome").status_code == 200
    _track(api, "p2", "$shown", **seen, step="welcome")
    _track(api, "p2", "$target_missing", **seen, step="menu")
    _track(api, "p2", "$target_missing", **seen, step="menu")
    _track(api, "p3", "$shown", flow="tour", version=2, step="welcome")  # not its version
    _track(api, "p3", "$shown", **seen, step="nowhere")  # not a step
    _track(api, "p4", "$shown", **seen, step="welcome")  # no instance (p4 created by track)
    _track(api, "p3", "$dismissed", **seen, step="welcome")  # counted as an event only
    steps = {s["identifier"]: s for s in api.get("/api/v1/flows/tour/analytics").json()["steps"]}
    assert {k: (s["shown"], s["target_missing"]) for k, s in steps.items()} == {
        "welcome": (2, 0),
        "menu": (0, 1),
        "done": (0, 0),
    }
    # a restart starts a new instance: the old one's sightings no longer count
    api.post("/api/v1/people/p1/flows/tour/restart")
    steps = api.get("/api/v1/flows/tour/analytics").json()["steps"]
    assert steps[0]["shown"] == 1


# -- theme ------------------------------------------------------------------------------------


def test_theme_defaults_then_replaced_tokens(api, other_env):
    from stepstream.engine import theme

    default = api.get("/api/v1/theme")
    assert default.status_code == 200 and default.json() == {"tokens": theme.defaults()}
    tokens = {
        "color-primary": "#0f766e",
        "color-backdrop": "rgba(0, 0, 0, 0.4)",
        "font-family": '"Inter", system-ui, sans-serif',
        "radius": "4px",
        "spacing": "1.5rem",
        "z-index": 1000,
    }
    put = api.put("/api/v1/theme", {"tokens": tokens}, format="json")
    assert put.status_code == 200, put.json()
    assert put.json()["tokens"]["z-index"] == "1000"
    assert put.json()["tokens"]["color-text"] == theme.defaults()["color-text"]
    assert api.get("/api/v1/theme").json() == put.json()
    # PUT replaces: a token left out is back to its default
    again = api.put("/api/v1/theme", {"tokens": {"radius": "0"}}, format="json").json()
    assert again["tokens"]["color-primary"] == theme.defaults()["color-primary"]
    assert theme.get(other_env) == {"tokens": theme.defaults()}  # per environment


@pytest.mark.parametrize(
    ("tokens", "words"),
    [
        ({"colour-primary": "red"}, ["tokens.colour-primary", "not a theme token"]),
        ({"color-primary": "red; background: url(x)"}, ["tokens.color-primary", "colour"]),
        ({"color-primary": "url(https://evil)"}, ["colour"]),
        ({"color-text": "#12345"}, ["colour"]),
        ({"font-family": "x}</style><script>"}, ["tokens.font-family"]),
        ({"font-family": "a\\62 c"}, ["tokens.font-family"]),
        ({"radius": "8"}, ["tokens.radius", "length"]),
        ({"spacing": "calc(1px+var(--x))"}, ["tokens.spacing"]),
        ({"z-index": "1e9"}, ["tokens.z-index", "integer"]),
        ({"z-index": True}, ["tokens.z-index"]),
    ],
)
def test_theme_refuses_unknown_tokens_and_unsafe_values(api, tokens, words):
    response = api.put("/api/v1/theme", {"tokens": tokens}, format="json")
    assert response.status_code == 400, response.json()
    for word in words:
        assert word in response.json()["errors"][0]
    assert api.put("/api/v1/theme", {"radius": "4px"}, format="json").status_code == 400


# -- get_content: what the SDK reads --------------------------------------------------------------


def test_get_content_merges_a_locale_over_the_defaults(env):
    flows.publish(env, CONTENT_FLOW)
    french = flows.get_content(env, "tour", 1, "fr-CA")  # no fr-CA: its language, fr
    assert french["locale"] == "fr" and french["version"] == 1
    by_step = {s["identifier"]: s for s in french["steps"]}
    assert by_step["welcome"]["content"]["title"] == "Bienvenue"
    assert by_step["welcome"]["content"]["buttons"][1] == {
        "label": "Passer",
        "transition": "skip",
        "style": "link",
    }
    assert by_step["menu"]["locale"] == "default"  # that step has no French
    assert by_step["menu"]["content"]["title"] == "The menu"
    assert "locales" not in by_step["welcome"]["content"]
    german = flows.get_content(env, "tour", None, "de")
    assert german["locale"] == "default"
    assert german["steps"][0]["content"]["title"] == "Welcome"


def _text_strategy(most):
    return st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=most
    ).filter(lambda t: t.strip() and "](" not in t and "<" not in t and "]:" not in t)


@st.composite
def _contents(draw, final: bool):
    """Content that publishes on step "a" (left by "next") or, `final`, on step "b"."""
    kind = draw(st.sampled_from(content.TYPES))
    out = {"type": kind, "title": draw(_text_strategy(40)), "body": draw(_text_strategy(80))}
    if kind in content.NEEDS_TARGET or draw(st.booleans()):
        out["target"] = {
            "selector": draw(st.sampled_from(["#a", ".b > c", "[data-x='1']", "nav a:hover"])),
            "wait_ms": draw(st.integers(0, content.MAX_WAIT_MS)),
            "placement": draw(st.sampled_from(content.PLACEMENTS)),
        }
    press = {"action": "complete"} if final else {"transition": "next"}
    buttons = [{"label": draw(_text_strategy(20)), **press} for _ in range(draw(st.integers(0, 3)))]
    if buttons:
        out["buttons"] = buttons
    if draw(st.booleans()):
        out["dismiss"] = draw(st.sampled_from(content.DISMISS))
    if kind == "checklist":
        out["items"] = [
            {"label": draw(_text_strategy(20)), "step": draw(st.sampled_from(["a", "b"]))}
            for _ in range(draw(st.integers(1, 3)))
        ]
    codes = draw(st.lists(st.sampled_from(["fr", "pt-BR", "ja"]), unique=True, max_size=2))
    out["locales"] = {}
    for code in codes:
        texts = {"title": draw(_text_strategy(40)), "body": draw(_text_strategy(80))}
        if buttons:
            texts["buttons"] = [{"label": draw(_text_strategy(20))} for _ in buttons]
        if "items" in out:
            texts["items"] = [{"label": draw(_text_strategy(20))} for _ in out["items"]]
        out["locales"][code] = texts
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=_contents(final=False),
    second=_contents(final=True),
    locale=st.sampled_from(["fr", "pt-BR", "ja", "de"]),
)
def test_random_content_accepted_at_publish_round_trips_through_get_content(
    env, first, second, locale
):
    published = flows.publish(
        env,
        {
            "identifier": "random",
            "steps": [
                {"identifier": "a", "content": first},
                {"identifier": "b", "content": second},
            ],
            "transitions": [{"identifier": "next", "from": "a", "to": "b"}],
        },
    )
    answer = flows.get_content(env, "random", published["version"], locale)
    assert answer["version"] == published["version"]
    for step, given_content in zip(answer["steps"], (first, second), strict=True):
        texts = given_content["locales"].get(locale)
        assert step["locale"] == (locale if texts is not None else "default")
        # what was given, its defaults filled in, the locale's texts over the default's
        expected = {k: v for k, v in given_content.items() if k != "locales"}
        expected.setdefault("dismiss", "exit")
        if "target" in expected:
            expected["target"] = {"fallbacks": [], **expected["target"]}
        for key in ("buttons", "items"):
            if key in expected:
                labels = (texts or {}).get(key) or expected[key]
                expected[key] = [
                    {**({"style": "primary"} if key == "buttons" else {}), **b, "label": t["label"]}
                    for b, t in zip(expected[key], labels, strict=True)
                ]
        if texts is not None:
            expected.update(title=texts["title"], body=texts["body"])
        assert step["content"] == expected


def test_the_list_of_flows_leaves_content_out(api):
    api.post("/api/v1/flows", CONTENT_FLOW, format="json")
    listed = api.get("/api/v1/flows").json()
    assert [f["identifier"] for f in listed] == ["tour"]
    assert all("content" not in s for s in listed[0]["steps"])


def test_the_docs_example_publishes(api):
    import json
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "content.md").read_text()
    example = json.loads(re.search(r"```json\n(.*?)```", doc, re.S).group(1))
    response = api.post("/api/v1/flows", example, format="json")
    assert response.status_code == 201, response.json()


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
_content_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from([*content.TYPES, "x"]) | _json,
        "title": _json,
        "body": st.text(max_size=60) | _json,
        "target": st.fixed_dictionaries({}, optional={"selector": st.text(max_size=20) | _json})
        | _json,
        "buttons": st.lists(
            st.fixed_dictionaries(
                {}, optional={"label": _json, "transition": _json, "action": _json, "style": _json}
            ),
            max_size=3,
        )
        | _json,
        "dismiss": _json,
        "items": _json,
        "locales": st.dictionaries(st.sampled_from(["fr", "x", "", "pt-BR"]), _json, max_size=2)
        | _json,
    },
)


@settings(max_examples=150, deadline=None)
@given(step_content=_content_like)
def test_any_content_is_published_or_refused_naming_paths_never_an_error(step_content):
    from stepstream.errors import Invalid

    try:
        flows.validate_definition(_flow(step_content))
    except Invalid as e:
        assert e.messages and all(m.startswith(("steps[1].content", "steps:")) for m in e.messages)
