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

from django.db import transaction
from django.utils import timezone

from stepstream import text
from stepstream.engine import conditions, rules
from stepstream.errors import Conflict, Invalid, NotFound
from stepstream.models import Environment, Flow, FlowInstance, Person, Segment, TrackedEvent

MAX_SEGMENTS = conditions.MAX_SEGMENTS
SCAN_BUDGET = 5000  # people evaluated per page request at most (bounds its time)
SEGMENT_ROOTS = rules.SEGMENT_ROOTS
compiled = rules.compiled


def _identifier(value) -> str:
    if isinstance(value, str) and not value.strip():
        raise Invalid("The segment identifier must not be blank.")
    return text.validate_identifier(value, "The segment identifier")


def describe(segment: Segment) -> dict:
    return {
        "identifier": segment.identifier,
        "name": segment.name,
        "condition": segment.condition,
        "version": segment.version,
    }


def put(environment: Environment, identifier, body) -> tuple[dict, bool]:
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
    text.check(name, "name")
    with transaction.atomic():
        segment = (
            Segment.objects.select_for_update()
            .filter(environment=environment, identifier=identifier)
            .first()
        )
        created = segment is None
        if created and Segment.objects.filter(environment=environment).count() >= MAX_SEGMENTS:
            raise Invalid(f"An environment may have at most {MAX_SEGMENTS} segments.")
        if created:
            segment = Segment.objects.create(
                environment=environment, identifier=identifier, name=name, condition=condition
            )
        else:
            segment.name, segment.condition = name, condition
            segment.version += 1
            segment.save()
        rules.bump(environment.pk)
    return describe(segment), created


def get(environment: Environment, identifier: str) -> Segment:
    segment = Segment.objects.filter(environment=environment, identifier=identifier).first()
    if segment is None:
        raise NotFound(f"No segment '{identifier}' in this environment.")
    return segment


def list_all(environment: Environment) -> list[dict]:
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


def delete(environment: Environment, identifier: str) -> None:
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


def people_page(environment: Environment, identifier: str, limit: int, after: str | None):
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
        ids = [r[0] for r in rows]
        events: dict[int, dict] = {}
        if "events" in condition.roots:
            for e in TrackedEvent.objects.filter(person_id__in=ids):
                events.setdefault(e.person_id, {})[e.name] = {
                    "count": e.count,
                    "first_at": e.first_at,
                    "last_at": e.last_at,
                }
        states: dict[int, dict] = {}
        if "flows" in condition.roots:
            for pid, flow, state in FlowInstance.objects.filter(person_id__in=ids).values_list(
                "person_id", "flow_identifier", "state"
            ):
                states.setdefault(pid, {})[flow] = state
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


def size(environment: Environment, identifier: str, cap: int = 10_000) -> tuple[int, bool]:
    """How many people match now, by the same scan as the members listing: (count, exact).

    Stops at `cap` (then `exact` is False): the dashboard shows "10,000+" rather
    than scan a large environment on every page view.
    """
    count, after = 0, None
    while count < cap:
        page = people_page(environment, identifier, min(1000, cap - count), after)
        count += len(page["people"])
        after = page["next"]
        if after is None:
            return count, True
    return count, False
