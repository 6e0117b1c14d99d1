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
