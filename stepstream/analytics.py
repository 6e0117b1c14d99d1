"""Flow analytics: how many instances are in each state, how many reach and complete each step.

Every number is an SQL aggregate over the current tables, so it is right
after restarts and deletions (deleting a person deletes their instances and
log, and they stop counting):

* instance states: `FlowInstance` grouped by state;
* `reached` and `active`: `StepInstance` grouped by identifier and state (a
  step never goes back to `inactive`, so "ever active" is "not inactive");
* `completed` and `median_seconds_to_complete`: the log's step rows of the
  version's instances (index `statechange_instance`), each completion paired
  with the activation before it for the same step instance (a window
  function), so a step completed several times (loops) counts each time
  for the median and once for `completed`.
"""

import statistics

from django.db import connection
from django.db.models import Count

from stepstream.errors import NotFound
from stepstream.models import Environment, Flow, FlowInstance, StateChange, Step, StepInstance

I = FlowInstance._meta.db_table  # noqa: E741
L = StateChange._meta.db_table


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


_PAIRS = f"""
    SELECT l.identifier, l.object_id, l.state, l.occurred_at,
           LAG(l.occurred_at) OVER (PARTITION BY l.object_id ORDER BY l.seq) AS since,
           LAG(l.state) OVER (PARTITION BY l.object_id ORDER BY l.seq) AS before
    FROM {L} l JOIN {I} i ON i.id = l.flow_instance_id
    WHERE i.flow_id = %s AND l.entity = 'step'
"""


def _completions(flow_id: int) -> dict[str, tuple[int, float | None]]:
    """{step identifier: (step instances that completed, median seconds active to completed)}."""
    with connection.cursor() as c:
        if connection.vendor == "postgresql":
            c.execute(
                f"""WITH pairs AS ({_PAIRS})
                SELECT identifier, COUNT(DISTINCT object_id),
                       percentile_cont(0.5) WITHIN GROUP (
                           ORDER BY EXTRACT(EPOCH FROM occurred_at - since))
                FROM pairs WHERE state = 'completed' AND before = 'active'
                GROUP BY identifier""",
                [flow_id],
            )
            return {ident: (n, float(m) if m is not None else None) for ident, n, m in c}
        c.execute(
            f"""WITH pairs AS ({_PAIRS})
            SELECT identifier, object_id, (julianday(occurred_at) - julianday(since)) * 86400.0
            FROM pairs WHERE state = 'completed' AND before = 'active'""",
            [flow_id],
        )
        found: dict[str, tuple[set, list]] = {}
        for ident, object_id, seconds in c:
            objects, durations = found.setdefault(ident, (set(), []))
            objects.add(object_id)
            durations.append(max(seconds, 0.0))
    return {k: (len(o), statistics.median(d)) for k, (o, d) in found.items()}


def report(environment: Environment, identifier: str, version: int | None = None) -> dict:
    flow = _flow(environment, identifier, version)
    instances = {s: 0 for s in ("active", "inactive", "completed", "exited")}
    for row in FlowInstance.objects.filter(flow=flow).values("state").annotate(n=Count("pk")):
        instances[row["state"]] = row["n"]
    instances["total"] = sum(instances.values())
    steps: dict[str, dict] = {}
    counts = (
        StepInstance.objects.filter(instance__flow=flow)
        .values("identifier", "state")
        .annotate(n=Count("pk"))
    )
    by_step: dict[str, dict[str, int]] = {}
    for row in counts:
        by_step.setdefault(row["identifier"], {})[row["state"]] = row["n"]
    completions = _completions(flow.pk)
    for step in Step.objects.filter(flow=flow).order_by("position"):
        states = by_step.get(step.identifier, {})
        completed, median = completions.get(step.identifier, (0, None))
        steps[step.identifier] = {
            "identifier": step.identifier,
            "reached": states.get("active", 0) + states.get("completed", 0),
            "active": states.get("active", 0),
            "completed": completed,
            # milliseconds: julianday() on SQLite is exact to about 10 µs
            "median_seconds_to_complete": round(median, 3) if median is not None else None,
        }
    return {
        "flow": flow.identifier,
        "version": flow.version,
        "instances": instances,
        "steps": list(steps.values()),
    }
