"""The demo project: created once, reused after, its keys kept in the data directory."""

import contextlib
import json
import os
import secrets
from typing import Any

from stepstream import config, engine
from stepstream.engine import flows, people
from stepstream.errors import Conflict, NotFound, StepstreamError
from stepstream.models import Environment
from stepstream.trust import tenants

DEMO_FLOW = {
    "identifier": "onboarding",
    "name": "Acme onboarding",
    "steps": [
        {"identifier": "welcome", "name": "Welcome to Acme"},
        {"identifier": "create-task", "name": "Create your first task"},
        {"identifier": "invite", "name": "Invite a teammate"},
        {"identifier": "due-date", "name": "Set a due date"},
        {"identifier": "task-done", "name": "First task created"},
        {"identifier": "invite-done", "name": "Teammate invited"},
        {"identifier": "due-date-done", "name": "Due date set"},
    ],
    "transitions": [
        {"identifier": "start", "from": "welcome", "to": "create-task"},
        {"identifier": "start", "from": "welcome", "to": "invite"},
        {"identifier": "start", "from": "welcome", "to": "due-date"},
        {"identifier": "task-created", "from": "create-task", "to": "task-done"},
        {"identifier": "invited", "from": "invite", "to": "invite-done"},
        {"identifier": "due-date-set", "from": "due-date", "to": "due-date-done"},
    ],
}
DEMO_PERSON = "demo-user"

# Rules at work (docs/rules.md): flows the server starts and moves by itself.
# A checklist whose items complete when the app tracks the matching events...
HABITS_FLOW = {
    "identifier": "habits",
    "name": "Good habits",
    "start_when": "has(events.searched) || has(events.commented)",
    "steps": [
        {"identifier": "begin", "name": "Good habits"},
        {"identifier": "search", "name": "Search your tasks"},
        {"identifier": "comment", "name": "Comment on a task"},
        {"identifier": "search-done", "name": "Searched"},
        {"identifier": "comment-done", "name": "Commented"},
    ],
    "transitions": [
        {"identifier": "open", "from": "begin", "to": "search", "type": "automatic"},
        {"identifier": "open", "from": "begin", "to": "comment", "type": "automatic"},
        {
            "identifier": "searched",
            "from": "search",
            "to": "search-done",
            "type": "automatic",
            "condition": "has(events.searched)",
        },
        {
            "identifier": "commented",
            "from": "comment",
            "to": "comment-done",
            "type": "automatic",
            "condition": "has(events.commented)",
        },
    ],
}
# ... and a branch chosen by the person's plan, started when the app says a plan was chosen.
PLAN_TIP_FLOW = {
    "identifier": "plan-tip",
    "name": "A tip for your plan",
    "start_when": "has(events.chose_plan)",
    "steps": [
        {"identifier": "tip", "name": "Pick a tip"},
        {"identifier": "pro-tip", "name": "Pro: automate recurring tasks"},
        {"identifier": "free-tip", "name": "Free: upgrade for recurring tasks"},
    ],
    "transitions": [
        {
            "identifier": "by-plan",
            "from": "tip",
            "to": "pro-tip",
            "type": "automatic",
            "condition": 'person.plan == "pro"',
        },
        {
            "identifier": "by-plan",
            "from": "tip",
            "to": "free-tip",
            "type": "automatic",
            "condition": '!has(person.plan) || person.plan != "pro"',
        },
    ],
}
# A guided tour the SDK renders itself (client.render(), docs/clients.md): a modal, a
# tooltip on the page's checklist and a checklist of the tour beside it, then a
# banner; in English and French. "Take the tour" on /demo tracks `tour_requested`.
TOUR_FLOW = {
    "identifier": "tour",
    "name": "A tour of Acme",
    "start_when": "has(events.tour_requested)",
    "steps": [
        {
            "identifier": "intro",
            "name": "Welcome",
            "content": {
                "type": "modal",
                "title": "A quick tour of Acme",
                "body": "Two things to know, in **thirty seconds**. Close this to skip it.",
                "buttons": [{"label": "Show me", "transition": "next"}],
                "locales": {
                    "fr": {
                        "title": "Une visite rapide d'Acme",
                        "body": "Deux choses à savoir, en **trente secondes**. Fermez pour passer.",
                        "buttons": [{"label": "Montrez-moi"}],
                    }
                },
            },
        },
        {
            "identifier": "checklist-tip",
            "name": "The checklist",
            "content": {
                "type": "tooltip",
                "title": "Your checklist",
                "body": "It follows your progress *live*: a change made anywhere shows here.",
                "target": {"selector": "#checklist-card h3", "placement": "bottom"},
                "buttons": [{"label": "Next", "transition": "next"}],
                "locales": {
                    "fr": {
                        "title": "Votre liste",
                        "body": "Elle suit vos progrès *en direct* : un changement fait "
                        "ailleurs s'affiche ici.",
                        "buttons": [{"label": "Suivant"}],
                    }
                },
            },
        },
        {
            "identifier": "progress",
            "name": "Tour progress",
            "content": {
                "type": "checklist",
                "title": "The tour",
                "items": [
                    {"label": "Meet the checklist", "step": "checklist-tip"},
                    {"label": "Finish the tour", "step": "wrap-up"},
                ],
                "locales": {
                    "fr": {
                        "title": "La visite",
                        "items": [{"label": "Voir la liste"}, {"label": "Finir la visite"}],
                    }
                },
            },
        },
        {
            "identifier": "wrap-up",
            "name": "That's it",
            "content": {
                "type": "banner",
                "title": "That's the tour.",
                "body": "The events panel on the right lists every change as it happens.",
                "dismiss": "hide",
                "buttons": [{"label": "Finish", "action": "complete"}],
                "locales": {
                    "fr": {
                        "title": "C'est tout.",
                        "body": "Le panneau des événements, à droite, montre chaque changement.",
                        "buttons": [{"label": "Terminer"}],
                    }
                },
            },
        },
    ],
    "transitions": [
        {"identifier": "next", "from": "intro", "to": "checklist-tip"},
        {"identifier": "next", "from": "intro", "to": "progress"},
        {"identifier": "next", "from": "checklist-tip", "to": "wrap-up"},
    ],
}
RULE_FLOWS: tuple[dict[str, Any], ...] = (HABITS_FLOW, PLAN_TIP_FLOW, TOUR_FLOW)


def _publish_rule_flows(env) -> None:
    """Publishes the rule flows a demo made before them lacks (once)."""
    for flow in RULE_FLOWS:
        try:
            flows.latest(env, flow["identifier"])
        except NotFound:
            flows.publish(env, flow)


def _create() -> dict:
    keys = tenants.create_project("Stepstream demo")
    dev = keys["environments"][0]
    env = tenants.environment_for_key(dev["secret_key"], "secret")
    assert env is not None  # its key was just made
    flows.publish(env, DEMO_FLOW)
    _publish_rule_flows(env)
    engine.do_put_person(env, DEMO_PERSON, {"name": "Demo User"})
    engine.do_start_flow(env, DEMO_PERSON, "onboarding")
    return dev


def _ensure_person(env: Environment) -> None:
    """The demo person with the flow started; made again if someone deleted them."""
    try:
        people.get(env, DEMO_PERSON)
    except NotFound:
        engine.do_put_person(env, DEMO_PERSON, {"name": "Demo User"})
    with contextlib.suppress(Conflict):  # started already: keep its progress
        engine.do_start_flow(env, DEMO_PERSON, "onboarding")


def reset() -> str:
    """Starts the demo over: the demo person is deleted (flows and log) and made again.

    Their log restarts at 1 with a new epoch, so a page that was open reloads
    the state instead of resuming (docs/protocol.md).
    """
    path = config.data_dir() / "demo.json"
    keys = json.loads(path.read_text()) if path.exists() else None
    env = tenants.environment_for_key(keys["secret_key"], "secret") if keys else None
    if env is None:
        raise StepstreamError("There is no demo here yet: start `stepstream serve --demo` once.")
    with contextlib.suppress(NotFound):
        people.delete(env, DEMO_PERSON)
    _ensure_person(env)
    return f"The demo person {DEMO_PERSON!r} starts over."


def _browsable(base_url: str) -> str:
    """The base URL a browser on this machine can open (not the wildcard address)."""
    wildcards = {"//0.0.0.0:": "//127.0.0.1:", "//[::]:": "//[::1]:", "//:::": "//[::1]:"}
    for wildcard, local in wildcards.items():
        base_url = base_url.replace(wildcard, local)
    return base_url


DEMO_STAFF = "demo"


def _demo_staff() -> str:
    """A staff user for the dashboard when there is none yet, so a newcomer can sign in
    without a second terminal. Its random password is told once, when it is made (like a
    new key); later starts say how to set another."""
    from django.contrib.auth import get_user_model

    users = get_user_model()
    if not users.objects.filter(is_staff=True, is_active=True).exists():
        password = secrets.token_urlsafe(12)
        users.objects.create_user(DEMO_STAFF, password=password, is_staff=True)
        return (
            f"sign in as {DEMO_STAFF}, password {password}\n"
            "                   (shown this once; change it with "
            f"stepstream manage changepassword {DEMO_STAFF})"
        )
    if users.objects.filter(username=DEMO_STAFF, is_staff=True).exists():
        return (
            f"sign in as {DEMO_STAFF} (its password was shown when it was made;\n"
            f"                   set another with stepstream manage changepassword {DEMO_STAFF})"
        )
    return "sign in as one of your staff users"


def ensure_demo(base_url: str) -> str:
    """Creates the demo once (keys kept in demo.json) and returns what to tell the user."""
    base_url = _browsable(base_url)
    path = config.data_dir() / "demo.json"
    keys = json.loads(path.read_text()) if path.exists() else None
    if not keys or tenants.environment_for_key(keys["secret_key"], "secret") is None:
        keys = _create()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f)
    env = tenants.environment_for_key(keys["secret_key"], "secret")
    assert env is not None  # its key was found above, or just made
    _publish_rule_flows(env)
    _ensure_person(env)
    sk, pk = keys["secret_key"], keys["publishable_key"]
    people_url = f"{base_url}/api/v1/people/{DEMO_PERSON}"
    return f"""
Demo project ready (development environment).
  publishable key: {pk}
  secret key:      {sk}
  demo person:     {DEMO_PERSON}   flow: onboarding
  demo page:       {base_url}/demo   <- open this in a browser
  dashboard:       {base_url}/dashboard/   {_demo_staff()}

Try:
  curl -s -H 'Authorization: Bearer {sk}' {base_url}/api/v1/flows     # the published flows
  curl -s -H 'Authorization: Bearer {sk}' {people_url}/flows
  curl -s -X POST -H 'Authorization: Bearer {sk}' -H 'Content-Type: application/json' \\
       -d '{{"transition": "start"}}' {people_url}/flows/onboarding/transitions
  curl -s -H 'Authorization: Bearer {sk}' '{people_url}/events?since_seq=0'
  curl -s -X POST -H 'Authorization: Bearer {sk}' -H 'Content-Type: application/json' \\
       -d '{{"event": "searched"}}' {people_url}/track     # a rule starts "habits"
"""
