"""Flow definitions and helpers shared by the tests (and bench/latency.py, bench/scaleout.py)."""

from datetime import UTC, datetime

LINEAR_FLOW = {
    "identifier": "onboarding",
    "name": "Onboarding",
    "steps": [
        {"identifier": "welcome", "name": "Welcome"},
        {"identifier": "profile", "name": "Profile"},
        {"identifier": "done", "name": "Done"},
    ],
    "transitions": [
        {"identifier": "next", "from": "welcome", "to": "profile"},
        {"identifier": "next", "from": "profile", "to": "done"},
    ],
}

# "go" leaves the start step by hand; then "flip" moves between a and b forever.
LOOP_FLOW = {
    "identifier": "loop",
    "steps": [{"identifier": "begin"}, {"identifier": "a"}, {"identifier": "b"}],
    "transitions": [
        {"identifier": "go", "from": "begin", "to": "a"},
        {"identifier": "flip", "from": "a", "to": "b"},
        {"identifier": "flip", "from": "b", "to": "a"},
    ],
}

# A tour whose steps show content (docs/content.md): a modal, a tooltip, and a final
# banner that stays active until completed (its button completes it).
CONTENT_FLOW = {
    "identifier": "tour",
    "name": "Product tour",
    "steps": [
        {
            "identifier": "welcome",
            "content": {
                "type": "modal",
                "title": "Welcome",
                "body": "Take the **tour**: see [the docs](https://example.com/docs).",
                "buttons": [
                    {"label": "Start", "transition": "next"},
                    {"label": "Skip", "transition": "skip", "style": "link"},
                ],
                "locales": {
                    "fr": {
                        "title": "Bienvenue",
                        "body": "Suivez la **visite**.",
                        "buttons": [{"label": "Commencer"}, {"label": "Passer"}],
                    }
                },
            },
        },
        {
            "identifier": "menu",
            "content": {
                "type": "tooltip",
                "title": "The menu",
                "target": {"selector": "#menu", "placement": "bottom"},
                "buttons": [{"label": "Next", "transition": "next"}],
                "dismiss": "hide",
            },
        },
        {
            "identifier": "done",
            "content": {
                "type": "banner",
                "body": "You are all set.",
                "buttons": [{"label": "Got it", "action": "complete"}],
                "locales": {"fr": {"body": "C'est tout.", "buttons": [{"label": "Compris"}]}},
            },
        },
    ],
    "transitions": [
        {"identifier": "next", "from": "welcome", "to": "menu"},
        {"identifier": "skip", "from": "welcome", "to": "done"},
        {"identifier": "next", "from": "menu", "to": "done"},
    ],
}


def occurred_at(text: str) -> float:
    """An event's `occurred_at` as a Unix timestamp."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def log_rows(person):
    """The person's log as (seq, entity, identifier, previous_state, state) tuples."""
    from stepstream.models import StateChange

    return [
        (r.seq, r.entity, r.identifier, r.previous_state, r.state)
        for r in StateChange.objects.filter(person=person).order_by("seq")
    ]


def states(instance: dict) -> dict:
    """An instance's flow state and step states, for compact assertions."""
    return {"flow": instance["state"], **{s["identifier"]: s["state"] for s in instance["steps"]}}
