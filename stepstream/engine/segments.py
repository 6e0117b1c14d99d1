"""Segments: named conditions over a person, reusable as `segments.X` in any flow condition.

A segment's condition reads `person`, `events`, `flows` and `now` (not other
segments, so a segment's value never depends on another's and no cycle can
form). Changing or deleting one bumps the environment's `rules_version`: the
change takes effect for each person at their next write (docs/rules.md).
Listing members scans people in id order and evaluates the condition for
each, so the listing is what matches now, and a cursor (the last id scanned)
stays valid while people are added or deleted.
"""

import base64
from collections.abc import Collection
from typing import Any

from django.db import transaction
from django.utils import timezone

from stepstream import strictjson
from stepstream.engine import audit, conditions, rules
from stepstream.errors import Conflict, Invalid, NotFound
from stepstream.models import Environment, Flow, FlowInstance, Person, Segment, TrackedEvent

MAX_SEGMENTS = conditions.MAX_SEGMENTS
SCAN_BUDGET = 5000  # people evaluated per page request at most (bounds its time)
SIZES_BUDGET = 10_000  # (person, segment) evaluations per count of every segment's size
SEGMENT_ROOTS = rules.SEGMENT_ROOTS
compiled = rules.compiled


def _identifier(value: object) -> str:
    if isinstance(value, str) and not value.strip():
        raise Invalid("The segment identifier must not be blank.")
    return strictjson.validate_identifier(value, "The segment identifier")


def describe(segment: Segment) -> dict[str, Any]:
    return {
        "identifier": segment.identifier,
        "name": segment.name,
        "condition": segment.condition,
        "version": segment.version,
    }


def put(
    environment: Environment, identifier: object, body: object, actor: str = "cli"
) -> tuple[dict[str, Any], bool]:
    """Creates or replaces a segment; True when created."""
    identifier = _identifier(identifier)
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object.")
    condition = body.get("condition")
    if condition is None:
        raise Invalid("condition is required: a CEL expression.")
    # `segments` is not among a segment's variables: naming it is an unknown variable (400)
    conditions.compile_condition(condition, "condition", SEGMENT_ROOTS)
    name = body.get("name")
    if name is None:
        name = ""
    if not isinstance(name, str) or len(name) > 255:  # {"name": {}} was taken as ""
        raise Invalid("name must be a string of at most 255 characters.")
    strictjson.check(name, "name")
    with transaction.atomic():
        segment = (
            Segment.objects.select_for_update()
            .filter(environment=environment, identifier=identifier)
            .first()
        )
        created = segment is None
        if created and Segment.objects.filter(environment=environment).count() >= MAX_SEGMENTS:
            raise Invalid(f"An environment may have at most {MAX_SEGMENTS} segments.")
        if segment is None:
            segment = Segment.objects.create(
                environment=environment, identifier=identifier, name=name, condition=condition
            )
        else:
            segment.name, segment.condition = name, condition
            segment.version += 1
            segment.save()
        audit.record(
            environment.pk,
            actor,
            "segment.create" if created else "segment.replace",
            f"segment:{identifier}",
            {"condition": condition, "version": segment.version},
        )
        rules.bump(environment.pk)
    return describe(segment), created


def get(environment: Environment, identifier: str) -> Segment:
    segment = Segment.objects.filter(environment=environment, identifier=identifier).first()
    if segment is None:
        raise NotFound(f"No segment '{identifier}' in this environment.")
    return segment


def list_all(environment: Environment) -> list[dict[str, Any]]:
    return [describe(s) for s in Segment.objects.filter(environment=environment)]


def users(environment: Environment, identifier: str) -> list[str]:
    """Flow identifiers whose versions name the segment in a condition."""
    names = set()
    for ident, used in Flow.objects.filter(environment=environment).values_list(
        "identifier", "uses_segments"
    ):
        if identifier in (used or []):
            names.add(ident)
    return sorted(names)


def delete(environment: Environment, identifier: str, actor: str = "cli") -> None:
    with transaction.atomic():
        segment = get(environment, identifier)
        using = users(environment, identifier)
        if using:
            raise Conflict(
                f"Segment '{identifier}' is used by a condition of flow "
                + ", ".join(f"'{f}'" for f in using)
                + "; publish versions that do not use it first."
            )
        segment.delete()
        audit.record(environment.pk, actor, "segment.delete", f"segment:{identifier}")
        rules.bump(environment.pk)


def _cursor(segment: Segment, person_id: int) -> str:
    raw = f"{segment.pk}:{person_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(segment: Segment, cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        seg, pid = base64.urlsafe_b64decode(padded.encode()).decode().split(":")
        if int(seg) != segment.pk:
            raise ValueError
        return int(pid)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("after is not a cursor of this segment's listing.") from None


def people_page(
    environment: Environment, identifier: str, limit: int, after: str | None
) -> dict[str, Any]:
    """Up to `limit` members after the cursor; `next` is None once every person was scanned.

    A page may hold fewer than `limit` people with a `next` cursor: the scan
    stops after SCAN_BUDGET people so one request stays short.
    """
    segment = get(environment, identifier)
    condition = compiled(segment)
    position = _after(segment, after)
    members: list[str] = []
    scanned = 0
    now = timezone.now()
    batch = 500
    while len(members) < limit and scanned < SCAN_BUDGET:
        rows = list(
            Person.objects.filter(environment=environment, pk__gt=position)
            .order_by("pk")
            .values_list("pk", "person_key", "data")[:batch]
        )
        if not rows:
            return {"people": members, "next": None}
        events, states = _events_and_flows([r[0] for r in rows], condition.roots)
        for pid, key, data in rows:
            position = pid
            scanned += 1
            variables = {"person": data, "events": events.get(pid, {}), "now": now}
            variables["flows"] = states.get(pid, {})
            if condition.evaluate(conditions.context(variables)):
                members.append(key)
                if len(members) >= limit:
                    break
            if scanned >= SCAN_BUDGET:
                break
    more = Person.objects.filter(environment=environment, pk__gt=position).exists()
    return {"people": members, "next": _cursor(segment, position) if more else None}


def _events_and_flows(
    ids: list[int], roots: Collection[str]
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The `events` and `flows` variables of these people, read only when `roots` has them."""
    events: dict[int, dict[str, Any]] = {}
    if "events" in roots:
        for e in TrackedEvent.objects.filter(person_id__in=ids):
            events.setdefault(e.person_id, {})[e.name] = {
                "count": e.count,
                "first_at": e.first_at,
                "last_at": e.last_at,
            }
    states: dict[int, dict[str, Any]] = {}
    if "flows" in roots:
        for pid, flow, state in FlowInstance.objects.filter(person_id__in=ids).values_list(
            "person_id", "flow_identifier", "state"
        ):
            states.setdefault(pid, {})[flow] = state
    return events, states


def sizes(
    environment: Environment, rows: list[Segment], budget: int | None = None
) -> dict[str, Any]:
    """How many of the first people match each segment now, in one scan for all of them.

    The first `budget // len(rows)` people (by id, the members listing's order) are read
    once and each segment's condition is evaluated for each of them: at most `budget`
    evaluations (SIZES_BUDGET) and a few queries per 1,000 people read, whatever the
    numbers of people and segments. Answers {"sizes": {identifier: matches}, "scanned": people
    scanned, "people": people in the environment}; when `scanned` < `people`, each size
    counts matches among the scanned only, so the segment has at least that many members.
    """
    total = Person.objects.filter(environment=environment).count()
    counts = dict.fromkeys((s.identifier for s in rows), 0)
    if not rows:
        return {"sizes": counts, "scanned": 0, "people": total}
    scan = max(1, (SIZES_BUDGET if budget is None else budget) // len(rows))
    people = list(
        Person.objects.filter(environment=environment)
        .order_by("pk")
        .values_list("pk", "data")[:scan]
    )
    checks = [(s.identifier, compiled(s)) for s in rows]
    roots = set().union(*(c.roots for _, c in checks))
    now = timezone.now()
    batch = 1000
    for start in range(0, len(people), batch):
        chunk = people[start : start + batch]
        events, states = _events_and_flows([pid for pid, _ in chunk], roots)
        for pid, data in chunk:
            variables = {"person": data, "events": events.get(pid, {}), "now": now}
            variables["flows"] = states.get(pid, {})
            context = conditions.context(variables)  # one for every segment's condition
            for identifier, condition in checks:
                if condition.evaluate(context):
                    counts[identifier] += 1
    return {"sizes": counts, "scanned": len(people), "people": total}
