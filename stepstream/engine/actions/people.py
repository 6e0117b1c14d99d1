"""Engine actions on a person: their data replaced or merged, an event tracked.

These write the person, then settle the rules in the same transaction
(stepstream.engine.sessions), so a write may start flows and move steps: the
only writers of person data, as the engine is of states.
"""

from typing import Any

from django.conf import settings

from stepstream import strictjson
from stepstream.engine import db, flows, groupcommit, pages, people, store
from stepstream.engine.sessions import Session
from stepstream.errors import Invalid
from stepstream.models import ContentSeen, Environment, FlowInstance


def _data_changes(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    return {k for k in old.keys() | new.keys() if old.get(k, _MISSING) != new.get(k, _MISSING)}


_MISSING = object()


@groupcommit.grouped
@db.retried
def do_put_person(
    environment: Environment, person_key: str, data: Any, via: str = "admin"
) -> tuple[dict[str, Any], bool]:
    """Creates or replaces a person's data; (their description, True when created)."""
    people.check_person_key(person_key)
    people.check_data(environment, data)
    with db.writing():
        person, created = store.lock_or_create_person(environment.pk, person_key, data)
        session = Session(environment, person, via, {"data": True}, created)
        if not created:
            old = store.person_data(person.pk)
            changes = _data_changes(old, data)
            if changes:
                store.write_person_data(person.pk, data)
            for key in changes:
                session.changed("person", key)
        session.set_data(data)
        session.settle()
        session.save()
    return {"person_key": person_key, "data": data}, created


@groupcommit.grouped
@db.retried
def do_identify(
    environment: Environment, person_key: str, data: object, via: str = "admin"
) -> dict[str, Any]:
    """Creates the person, or merges top-level keys of `data` into theirs; their data."""
    people.check_person_key(person_key)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise Invalid("data must be a JSON object.")
    with db.writing():
        person, created = store.lock_or_create_person(
            environment.pk, person_key, data, lambda d: people.check_data(environment, d)
        )
        session = Session(environment, person, via, {"data": True}, created)
        merged = data
        if not created and data:
            old = store.person_data(person.pk)
            merged = {**old, **data}
            changes = _data_changes(old, merged)
            if changes:
                people.check_data(environment, merged)
                store.write_person_data(person.pk, merged)
            for key in changes:
                session.changed("person", key)
        elif not created:
            merged = store.person_data(person.pk)
        session.set_data(merged)
        session.settle()
        session.save()
    return merged


# the SDK's own event names (docs/content.md, "What was seen"); every other `$` name is reserved
SEEN_EVENTS = {"$shown": "shown", "$target_missing": "target_missing", "$dismissed": None}


def check_event_name(name: object) -> str:
    name = strictjson.validate_identifier(name, "event")
    if name.startswith("$") and name not in SEEN_EVENTS:
        raise Invalid(
            f"event: names starting with $ are reserved for the SDK ({', '.join(SEEN_EVENTS)}); "
            "name your own events without it."
        )
    return name


def _seen_properties(properties: dict[str, Any]) -> tuple[str, int, str]:
    """A `$` event's properties: the flow, version and step whose content it is about."""
    flow, version, step = (properties.get(k) for k in ("flow", "version", "step"))
    for key, value in (("flow", flow), ("step", step)):
        strictjson.validate_identifier(value, f"properties.{key}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise Invalid("properties.version must be the flow version's number (an integer from 1).")
    assert isinstance(flow, str) and isinstance(step, str)
    return flow, version, step


def _record_seen(person_id: int, kind: str, flow: str, version: int, step: str) -> None:
    """Marks the step's content as shown (or its target missing) in the person's instance.

    Only the person's current instance of that version counts, and only once
    per instance and step (GET /flows/{identifier}/analytics counts the rows).
    """
    instance = (
        FlowInstance.objects.filter(person_id=person_id, flow_identifier=flow)
        .values("id", "flow_id", "flow__version")
        .first()
    )
    if instance is None or instance["flow__version"] != version:
        return
    if step not in {s for s, _ in flows.graph(instance["flow_id"]).steps}:
        return
    ContentSeen.objects.bulk_create(
        [
            ContentSeen(
                instance_id=instance["id"], flow_id=instance["flow_id"], identifier=step, kind=kind
            )
        ],
        ignore_conflicts=True,
    )


@groupcommit.grouped
@db.retried
def do_track(
    environment: Environment,
    person_key: str,
    event: object,
    properties: object = None,
    via: str = "admin",
) -> dict[str, Any]:
    """Counts one tracked event for the person (created with {} if unknown), then the rules."""
    people.check_person_key(person_key)
    event = check_event_name(event)  # the same string, once checked
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise Invalid("properties must be a JSON object.")
    strictjson.check(properties, "properties")
    people.check_sizes(properties, "properties")
    seen = _seen_properties(properties) if event in SEEN_EVENTS else None
    most_names = settings.STEPSTREAM["MAX_EVENT_NAMES"]
    with db.writing():
        person, created = store.lock_or_create_person(
            environment.pk, person_key, {}, lambda d: people.check_data(environment, d)
        )
        session = Session(environment, person, via, {"event": event}, created)
        count = store.bump_event(person.pk, event, session.recorder.now, properties)
        if count == 1 and store.tracked_event_names(person.pk) > most_names:
            raise Invalid(  # rolls the whole write back
                f"Person '{person_key}' has tracked {most_names} different event names, "
                "the most one person may have (STEPSTREAM_MAX_EVENT_NAMES); track a known name."
            )
        kind = SEEN_EVENTS.get(event)
        if seen is not None and kind is not None:
            _record_seen(person.pk, kind, *seen)
        session.changed("events", event)
        session.settle()
        seq = session.save()
    return {"person_key": person_key, "event": event, "count": count, "seq": seq}


@groupcommit.grouped
@db.retried
def do_page(
    environment: Environment, person_key: str, url: object, via: str = "websocket"
) -> dict[str, Any]:
    """Stores the person's latest page (created with {} if unknown), then the rules."""
    people.check_person_key(person_key)
    url = pages.check_url(url)
    with db.writing():
        person, created = store.lock_or_create_person(
            environment.pk, person_key, {}, lambda d: people.check_data(environment, d)
        )
        session = Session(environment, person, via, {"page": True}, created)
        if pages.write(person.pk, url):
            session.changed("page", None)
        session.settle()
        seq = session.save()
    return {"person_key": person_key, "seq": seq}
