"""Flow definitions and helpers shared by the tests."""

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
