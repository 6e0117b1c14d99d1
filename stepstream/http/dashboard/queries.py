"""Every database read the dashboard makes, in one place.

Counts come from the counters database triggers keep (`counters.py`), summed
over a few rows per step; everything else is an aggregate or a page of rows,
never a query per person, so a page costs the same number of queries
whatever the number of people. `flow_analytics` answers in
the shape of `GET /flows/{identifier}/analytics` (the contract's Analytics
section) so it can be swapped for that module's function at merge.

Segment sizes come from one scan of the first people for all segments
(`engine.segments.sizes`), bounded in evaluations, so a page view never scans a
large environment whole.
"""

import json
from datetime import UTC

from django.db import connection
from django.db.models import Count, Max, Sum

from stepstream.engine import changes, counters, log, segments
from stepstream.models import (
    ApiKey,
    Environment,
    Flow,
    FlowInstance,
    Person,
    Project,
    Segment,
    StateChange,
    StepCount,
    StepDuration,
    StepInstance,
    TrackedEvent,
    Webhook,
    WebhookAttempt,
)

I = FlowInstance._meta.db_table  # noqa: E741
S = StepInstance._meta.db_table
L = StateChange._meta.db_table
TIMELINE_LIMIT = 200
PEOPLE_PER_PAGE = 50


# -- environments and flows ----------------------------------------------


def environments() -> list[dict]:
    """Projects with their environments, people and flows counted (three queries)."""
    people = dict(
        Person.objects.values("environment_id")
        .annotate(n=Count("id"))
        .values_list("environment_id", "n")
    )
    flows = dict(
        Flow.objects.values("environment_id")
        .annotate(n=Count("identifier", distinct=True))
        .values_list("environment_id", "n")
    )
    projects = []
    for project in Project.objects.prefetch_related("environments").order_by("name", "pk"):
        projects.append(
            {
                "project": project,
                "environments": [
                    {"env": env, "people": people.get(env.pk, 0), "flows": flows.get(env.pk, 0)}
                    for env in sorted(project.environments.all(), key=lambda e: e.pk)
                ],
            }
        )
    return projects


def environment(env_id: int) -> Environment | None:
    return Environment.objects.select_related("project").filter(pk=env_id).first()


def flows(env: Environment) -> list[dict]:
    """Each flow's latest version with its instances (all versions) by state (three queries)."""
    latest: dict[str, Flow] = {}
    for found in Flow.objects.filter(environment=env).annotate(n_steps=Count("steps")):
        if found.identifier not in latest or found.version > latest[found.identifier].version:
            latest[found.identifier] = found
    versions = dict(Flow.objects.filter(environment=env).values_list("pk", "identifier"))
    counts: dict[str, dict] = {}
    for flow_id, per_step in state_counts(versions).items():
        totals = counts.setdefault(versions[flow_id], {})
        for state, n in per_step.get("", {}).items():
            totals[state] = totals.get(state, 0) + n
    answer = []
    for identifier in sorted(latest):
        flow = latest[identifier]
        by_state = counts.get(identifier, {})
        answer.append(
            {
                "flow": flow,
                "active": by_state.get("active", 0),
                "completed": by_state.get("completed", 0),
                "total": sum(by_state.values()),
            }
        )
    return answer


def flow_version(env: Environment, identifier: str, version: int | None = None):
    """A flow version with its steps and transitions, and the list of versions (three queries)."""
    versions = list(
        Flow.objects.filter(environment=env, identifier=identifier)
        .order_by("version")
        .values_list("version", flat=True)
    )
    if not versions:
        return None, []
    wanted = version if version in versions else versions[-1]
    flow = (
        Flow.objects.filter(environment=env, identifier=identifier, version=wanted)
        .prefetch_related("steps", "transitions")
        .first()
    )
    return flow, versions


def state_counts(flow_ids) -> dict[int, dict[str, dict[str, int]]]:
    """{flow version id: {step identifier or "" (the flow): {state: n}}} from the trigger-kept
    counters (`counters.py`): a few rows per step, whatever the number of people."""
    flow_ids = list(flow_ids)
    if not flow_ids:
        return {}
    rows = (
        StepCount.objects.filter(flow_id__in=flow_ids)
        .values_list("flow_id", "identifier")
        .annotate(
            inactive=Sum("n_inactive"),
            active=Sum("n_active"),
            completed=Sum("n_completed"),
            exited=Sum("n_exited"),
        )
    )
    answer: dict[int, dict[str, dict[str, int]]] = {pk: {} for pk in flow_ids}
    for flow_id, identifier, inactive, active, completed, exited in rows:
        answer[flow_id][identifier] = {
            "inactive": int(inactive or 0),
            "active": int(active or 0),
            "completed": int(completed or 0),
            "exited": int(exited or 0),
        }
    return answer


def active_counts(flow_id: int) -> dict[str, int]:
    """How many current instances of this version have each step active (one small query)."""
    counts = state_counts([flow_id])[flow_id]
    return {step: c["active"] for step, c in counts.items() if step and c["active"]}


def estimated_medians(flow_id: int) -> dict[str, float]:
    """Median seconds from active to completed per step, from the trigger-kept histogram
    (within about 9 % of the exact value; `median_seconds` computes the exact one)."""
    buckets: dict[str, dict[int, int]] = {}
    rows = (
        StepDuration.objects.filter(flow_id=flow_id)
        .values_list("identifier", "bucket")
        .annotate(total=Sum("n"))
    )
    for identifier, bucket, total in rows:
        buckets.setdefault(identifier, {})[bucket] = int(total or 0)
    answer = {}
    for identifier, histogram in buckets.items():
        median = counters.median_from_histogram(histogram)
        if median is not None:
            answer[identifier] = median
    return answer


def _seconds_between(later: str, earlier: str) -> str:
    if connection.vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
    return f"(julianday({later}) - julianday({earlier})) * 86400.0"


def median_seconds(flow_id: int) -> dict[str, float]:
    """Median time from a step becoming active to its completion, per step, in one query.

    Each completion is paired with the change just before it for the same step
    instance (the engine only ever completes an active step). The log is
    reached through the person's (person, seq) index, so no extra index is needed.
    """
    secs = _seconds_between("occurred_at", "prev_at")
    sql = f"""
        WITH moves AS (
            SELECT l.identifier, l.state, l.occurred_at,
                   LAG(l.state) OVER w AS prev_state, LAG(l.occurred_at) OVER w AS prev_at
            FROM {I} i JOIN {L} l ON l.person_id = i.person_id AND l.flow_instance_id = i.id
            WHERE i.flow_id = %s AND l.entity = 'step'
            WINDOW w AS (PARTITION BY l.object_id ORDER BY l.seq)
        ), durations AS (
            SELECT identifier, {secs} AS secs FROM moves
            WHERE state = 'completed' AND prev_state = 'active'
        ), ranked AS (
            SELECT identifier, secs,
                   ROW_NUMBER() OVER (PARTITION BY identifier ORDER BY secs) AS n,
                   COUNT(*) OVER (PARTITION BY identifier) AS c
            FROM durations
        )
        SELECT identifier, AVG(secs) FROM ranked
        WHERE n IN ((c + 1) / 2, (c + 2) / 2) GROUP BY identifier
    """
    with connection.cursor() as c:
        c.execute(sql, [flow_id])
        return {identifier: float(value) for identifier, value in c.fetchall()}


def flow_analytics(flow: Flow, exact_medians: bool = False) -> dict:
    """The contract's analytics answer for one version, from the trigger-kept counters.

    `reached` counts step instances no longer inactive: a step only ever
    leaves `inactive` by becoming active, and never returns to it. Medians
    are estimated from the histogram unless `exact_medians` (a scan of the
    version's log: seconds with 100,000 people).
    """
    from stepstream.engine.analytics import seen

    counts = state_counts([flow.pk])[flow.pk]
    median = median_seconds(flow.pk) if exact_medians else estimated_medians(flow.pk)
    sightings = seen(flow.pk)
    steps = []
    for step in flow.steps.all():
        c = counts.get(step.identifier, {})
        active, completed = c.get("active", 0), c.get("completed", 0)
        steps.append(
            {
                "identifier": step.identifier,
                "reached": active + completed,
                "active": active,
                "completed": completed,
                "median_seconds_to_complete": median.get(step.identifier),
                "shown": sightings.get((step.identifier, "shown"), 0),
                "target_missing": sightings.get((step.identifier, "target_missing"), 0),
            }
        )
    own = counts.get("", {})
    instances = {s: own.get(s, 0) for s in ("active", "inactive", "completed", "exited")}
    instances["total"] = sum(instances.values())
    return {
        "flow": flow.identifier,
        "version": flow.version,
        "instances": instances,
        "steps": steps,
    }


# -- people ----------------------------------------------------------------


def people(env: Environment, q: str = ""):
    """People of the environment, newest first, filtered by a part of their key.

    A queryset: Django's Paginator adds one COUNT and one page query; the
    page's flow counts come from `flow_counts` (one more query for 50 people,
    not a GROUP BY over everyone).
    """
    query = Person.objects.filter(environment=env)
    if q:
        query = query.filter(person_key__icontains=q)
    return query.order_by("-pk")


def flow_counts(person_ids) -> dict[int, tuple[int, int]]:
    """{person id: (flows, active flows)} for a page of people, in one query."""
    rows = (
        FlowInstance.objects.filter(person_id__in=list(person_ids))
        .values_list("person_id", "state")
        .annotate(n=Count("id"))
    )
    answer: dict[int, list[int]] = {}
    for person_id, state, n in rows:
        totals = answer.setdefault(person_id, [0, 0])
        totals[0] += n
        if state == "active":
            totals[1] += n
    return {pk: (t[0], t[1]) for pk, t in answer.items()}


def person(env: Environment, person_key: str) -> Person | None:
    return Person.objects.filter(environment=env, person_key=person_key).first()


def person_flows(p: Person) -> list[FlowInstance]:
    """The person's instances with their steps and versions (two queries)."""
    return list(
        FlowInstance.objects.filter(person=p)
        .select_related("flow")
        .prefetch_related("steps")
        .order_by("created_at", "id")
    )


def timeline(p: Person, limit: int = TIMELINE_LIMIT) -> list[dict]:
    """The person's latest state changes, newest first, as the event data every client sees.

    `log.row_event_data` is the one event shape: once the log records a
    `cause`, it is here (and in the live events) without a change.
    """
    rows = StateChange.objects.filter(person=p).order_by("-seq")[:limit]
    return [log.row_event_data(row, p.person_key) for row in rows]


def tracked_events(p: Person, limit: int = TIMELINE_LIMIT) -> list[dict]:
    """The person's tracked events, latest first: {"event", "count", "properties", "occurred_at",
    "last_at"} (`properties` and `occurred_at` of the latest time it was tracked, `properties` as
    JSON text, "" when none, as the page shows it; `last_at` that moment as a datetime, for the
    page to show it like its other dates)."""
    rows = TrackedEvent.objects.filter(person=p).order_by("-last_at")[:limit]
    return [
        {
            "event": row.name,
            "count": row.count,
            "properties": json.dumps(row.last_properties, ensure_ascii=False)
            if row.last_properties
            else "",
            "occurred_at": changes.timestamp(row.last_at),
            "last_at": row.last_at,
        }
        for row in rows
    ]


# -- segments, webhooks, keys ------------------------------------------------


def segment_list(env: Environment) -> dict:
    """Segments with their sizes: {"segments": [{"identifier", "name", "condition", "size"}],
    "scanned", "people"}, each size how many of the first `scanned` people match now (all of
    them when `scanned` == `people`; engine.segments.sizes bounds the scan)."""
    rows = list(Segment.objects.filter(environment=env).order_by("identifier"))
    counted = segments.sizes(env, rows)
    return {
        "segments": [
            {
                "identifier": row.identifier,
                "name": row.name,
                "condition": row.condition,
                "size": counted["sizes"][row.identifier],
            }
            for row in rows
        ],
        "scanned": counted["scanned"],
        "people": counted["people"],
    }


def webhooks(env: Environment, deliveries: int = 5) -> list[dict]:
    """Webhooks with their state and latest delivery attempts.

    Each item: {"id", "url", "state", "description", "failing_since",
    "deliveries": [{"seq", "person_key", "attempt", "status_code", "error", "at", "at_time"}]}
    (`at` the log's timestamp text, `at_time` the datetime the page shows).
    One query for the webhooks and one per webhook for its latest attempts
    (webhooks are few; people are many).
    """
    answer = []
    for row in Webhook.objects.filter(environment=env).order_by("pk"):
        latest = [
            {
                "seq": d.seq,
                "person_key": d.person_key,
                "attempt": d.attempt,
                "status_code": d.status_code,
                "error": d.error,
                "at": changes.timestamp(d.at),
                "at_time": d.at,
            }
            for d in WebhookAttempt.objects.filter(webhook=row).order_by("-id")[:deliveries]
        ]
        answer.append(
            {
                "id": row.pk,
                "url": row.url,
                "state": row.state,
                "description": row.description,
                "failing_since": row.failing_since.astimezone(UTC) if row.failing_since else None,
                "deliveries": latest,
            }
        )
    return answer


def keys(env: Environment) -> list[ApiKey]:
    """The environment's keys: only hints and dates, never a key.

    `last_secret` marks the only live secret key, which cannot be revoked.
    """
    rows = list(env.keys.order_by("revoked_at", "kind", "-pk"))
    live_secret = [r for r in rows if r.kind == "secret" and r.revoked_at is None]
    for row in rows:
        # a mark for the template, not a field of the model
        row.last_secret = len(live_secret) == 1 and row is live_secret[0]  # type: ignore[attr-defined]
    return rows


def log_position() -> int:
    return StateChange.objects.aggregate(m=Max("id"))["m"] or 0


def touched_flows(after_id: int, upto_id: int, environment_ids) -> set[tuple[int, str]]:
    """(environment id, flow identifier) pairs changed by log rows in (after_id, upto_id]."""
    if not environment_ids:
        return set()
    rows = (
        StateChange.objects.filter(
            id__gt=after_id, id__lte=upto_id, person__environment_id__in=list(environment_ids)
        )
        .values_list("person__environment_id", "flow_identifier")
        .distinct()
    )
    return set(rows)
