"""Flow analytics: how many instances are in each state, how many reach and complete each step.

A few rows and one index answer, whatever the number of instances (an
aggregate over the log took 3.3 s with 100,000 instances; docs/performance-history.md):

* instance states, and per step `active` (now) and `reached`: the `StepCount`
  rows that database triggers keep for the dashboard
  (stepstream/engine/counters.py), summed over their shards. A step
  instance leaves `inactive` only by becoming active and never goes back, so
  it was reached if it is active or completed now;
* per step `completed` (at least once) and the median time from first
  activation to first completion: the step instances whose
  `seconds_to_complete` is set (the engine sets it once, at the first
  completion: store.StepRow.move), through the partial index
  `step_completions` on (flow version, step, seconds): a count per step, then
  the middle one or two values read at their offset in the index's order.

* per step `shown` and `target_missing`: the `ContentSeen` rows (one per
  instance, step and kind, written with the `$shown` / `$target_missing`
  event that reported it; docs/content.md), counted through their index.

Only current rows count: a restart deletes the old instance's rows, deleting
a person deletes theirs, and the triggers take both out of the counters. All
of it is read in one snapshot, so the numbers agree with each other.
"""

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Sum

from stepstream.errors import NotFound
from stepstream.models import ContentSeen, Environment, Flow, Step, StepCount, StepInstance

S = StepInstance._meta.db_table
INSTANCE_STATES = ("active", "inactive", "completed", "exited")


def _flow(environment: Environment, identifier: str, version: int | None) -> Flow:
    versions = Flow.objects.filter(environment=environment, identifier=identifier)
    flow = (
        versions.order_by("-version").first()
        if version is None
        else versions.filter(version=version).first()
    )
    if flow is None:
        which = f"flow '{identifier}'" + (f" version {version}" if version is not None else "")
        raise NotFound(f"No {which} in this environment.")
    return flow


def _counts(flow_id: int) -> dict[str, dict[str, int]]:
    """{step identifier, or "" for the instances: {state: how many now}}, from the counters."""
    # Mapping: the sums' names are made here, beyond what the type checker reads of annotate()
    rows: Iterable[Mapping[str, Any]] = (
        StepCount.objects.filter(flow_id=flow_id)
        .values("identifier")
        .annotate(*(Sum(f"n_{s}") for s in INSTANCE_STATES))
        .order_by()
    )
    return {r["identifier"]: {s: r[f"n_{s}__sum"] or 0 for s in INSTANCE_STATES} for r in rows}


def _completions(flow_id: int) -> dict[str, tuple[int, float]]:
    """{step: (instances that completed it, median seconds to their first completion)}."""
    done = "flow_id = %s AND identifier = %s AND seconds_to_complete IS NOT NULL"
    with connection.cursor() as c:
        c.execute(
            f"SELECT identifier, COUNT(*) FROM {S} "
            "WHERE flow_id = %s AND seconds_to_complete IS NOT NULL GROUP BY identifier",
            [flow_id],
        )
        counts = c.fetchall()
        found = {}
        for identifier, n in counts:
            # the middle value, or the two middle ones of an even count
            c.execute(
                f"SELECT seconds_to_complete FROM {S} WHERE {done} "
                "ORDER BY seconds_to_complete LIMIT %s OFFSET %s",
                [flow_id, identifier, 2 - n % 2, (n - 1) // 2],
            )
            middle = [row[0] for row in c.fetchall()]
            found[identifier] = (n, sum(middle) / len(middle))
    return found


def seen(flow_id: int) -> dict[tuple[str, str], int]:
    """{(step, "shown" or "target_missing"): instances}, for steps with content."""
    rows: Iterable[Mapping[str, Any]] = (
        ContentSeen.objects.filter(flow_id=flow_id)
        .values("identifier", "kind")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {(r["identifier"], r["kind"]): r["n"] for r in rows}


@contextmanager
def _snapshot() -> Iterator[None]:
    """One read transaction, which sees one state of the database in all its queries.

    PostgreSQL's default (READ COMMITTED) gives each statement its own
    snapshot, so a count and the offsets read from it could disagree; a SQLite
    read transaction reads one snapshot already. Inside an enclosing
    transaction, that one's isolation applies.
    """
    repeatable = connection.vendor == "postgresql" and not connection.in_atomic_block
    with transaction.atomic():
        if repeatable:
            with connection.cursor() as c:
                c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def report(environment: Environment, identifier: str, version: int | None = None) -> dict[str, Any]:
    with _snapshot():
        flow = _flow(environment, identifier, version)
        counts = _counts(flow.pk)
        completions = _completions(flow.pk)
        sightings = seen(flow.pk)
        identifiers = list(
            Step.objects.filter(flow=flow).order_by("position").values_list("identifier", flat=True)
        )
    own = counts.get("", {})
    instances = {s: own.get(s, 0) for s in INSTANCE_STATES}
    instances["total"] = sum(instances.values())
    steps = []
    for step in identifiers:
        now = counts.get(step, {})
        completed, median = completions.get(step, (0, None))
        steps.append(
            {
                "identifier": step,
                "reached": now.get("active", 0) + now.get("completed", 0),
                "active": now.get("active", 0),
                "completed": completed,
                "median_seconds_to_complete": round(median, 3) if median is not None else None,
                "shown": sightings.get((step, "shown"), 0),
                "target_missing": sightings.get((step, "target_missing"), 0),
            }
        )
    return {
        "flow": flow.identifier,
        "version": flow.version,
        "instances": instances,
        "steps": steps,
    }
