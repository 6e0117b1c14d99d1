"""Flow analytics: how many instances are in each state, how many reach and complete each step.

Every number is an SQL aggregate over the current tables, so it is right
after restarts and deletions (deleting a person deletes their instances and
log, and they stop counting):

* instance states: `FlowInstance` grouped by state;
* steps: one pass over the log's step rows of the version's instances,
  grouped per step instance and then per step. A step instance's log rows
  alternate `active` and `completed`, so it was *reached* if it has any row,
  is *active now* if it has more activations than completions, and
  *completed* if it has a completion; its time to complete is from its first
  activation to its first completion, and the median is taken over those.
"""

import statistics

from django.db import connection, transaction
from django.db.models import Count

from stepstream.errors import NotFound
from stepstream.models import Environment, Flow, FlowInstance, StateChange, Step

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


_PER_STEP_INSTANCE = f"""
    SELECT l.identifier, l.object_id,
           COUNT(*) FILTER (WHERE l.state = 'active') AS activations,
           COUNT(*) FILTER (WHERE l.state = 'completed') AS completions,
           MIN(l.occurred_at) FILTER (WHERE l.state = 'active') AS activated,
           MIN(l.occurred_at) FILTER (WHERE l.state = 'completed') AS completed
    FROM {L} l JOIN {I} i ON i.id = l.flow_instance_id
    WHERE i.flow_id = %s AND l.entity = 'step'
    GROUP BY l.identifier, l.object_id
"""


def _steps(flow_id: int) -> dict[str, tuple[int, int, int, float | None]]:
    """{step: (reached, active now, completed, median seconds)} in one pass over the log."""
    with connection.cursor() as c:
        if connection.vendor == "postgresql":
            c.execute("SET LOCAL work_mem = '64MB'")  # the aggregate's hash table in memory
            c.execute(
                f"""WITH per AS ({_PER_STEP_INSTANCE})
                SELECT identifier, COUNT(*), COUNT(*) FILTER (WHERE activations > completions),
                       COUNT(completed), percentile_cont(0.5) WITHIN GROUP (
                           ORDER BY EXTRACT(EPOCH FROM completed - activated))
                FROM per GROUP BY identifier""",
                [flow_id],
            )
            return {
                ident: (reached, active, done, float(m) if m is not None else None)
                for ident, reached, active, done, m in c
            }
        c.execute(
            f"""WITH per AS ({_PER_STEP_INSTANCE})
            SELECT identifier, activations > completions,
                   (julianday(completed) - julianday(activated)) * 86400.0
            FROM per""",
            [flow_id],
        )
        found: dict[str, list] = {}
        for ident, active, seconds in c:
            entry = found.setdefault(ident, [0, 0, []])
            entry[0] += 1
            entry[1] += bool(active)
            if seconds is not None:
                entry[2].append(max(seconds, 0.0))
    return {
        k: (reached, active, len(d), statistics.median(d) if d else None)
        for k, (reached, active, d) in found.items()
    }


def report(environment: Environment, identifier: str, version: int | None = None) -> dict:
    flow = _flow(environment, identifier, version)
    instances = {s: 0 for s in ("active", "inactive", "completed", "exited")}
    for row in FlowInstance.objects.filter(flow=flow).values("state").annotate(n=Count("pk")):
        instances[row["state"]] = row["n"]
    instances["total"] = sum(instances.values())
    with transaction.atomic():
        per_step = _steps(flow.pk)
    steps = []
    for identifier in (
        Step.objects.filter(flow=flow).order_by("position").values_list("identifier", flat=True)
    ):
        reached, active, completed, median = per_step.get(identifier, (0, 0, 0, None))
        steps.append(
            {
                "identifier": identifier,
                "reached": reached,
                "active": active,
                "completed": completed,
                # milliseconds: julianday() on SQLite is exact to about 10 µs
                "median_seconds_to_complete": round(median, 3) if median is not None else None,
            }
        )
    return {
        "flow": flow.identifier,
        "version": flow.version,
        "instances": instances,
        "steps": steps,
    }
