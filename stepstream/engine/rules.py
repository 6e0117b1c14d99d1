"""An environment's rules as the engine reads them: start_when flows and segments.

Loaded once per `Environment.rules_version` (which every flow publish and
segment change bumps) and shared by every write of that environment; the
compiled conditions themselves are cached by flow version (`flows.graph`)
and by segment version (`segments.compiled`).
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import F

from stepstream.bounded import BoundedMemo
from stepstream.engine import conditions
from stepstream.models import Environment, Flow, FlowSwitch, Limit, Segment

SEGMENT_ROOTS = ("person", "events", "flows", "now")


@dataclass(frozen=True, slots=True)
class LimitRule:
    """A limit (PUT /limits/ID): at most `max` starts of `flows` per person per window."""

    identifier: str
    flows: frozenset[str] | None  # None: every flow ("*")
    max: int
    window_seconds: int

    def covers(self, flow: str) -> bool:
        return self.flows is None or flow in self.flows


@dataclass(frozen=True)
class EnvRules:
    version: int
    # (flow identifier, latest version's id) in start order: priority (higher first),
    # then identifier
    starters: tuple[tuple[str, int], ...]
    segments: dict[str, conditions.Condition]  # by identifier
    # some start_when, segment or latest version's automatic transition reads `now`:
    # then every write of a person looks at the rules, even one that changed nothing they read
    uses_now: bool = False
    # start_when flows with a time window (FlowSwitch starts_at/ends_at): looked at on
    # every write, since the window opens and closes with time; disabled and archived
    # flows are not among `starters` at all (a switch change bumps the rules version)
    windows: dict[str, tuple[datetime | None, datetime | None]] = field(default_factory=dict)
    limits: tuple[LimitRule, ...] = ()  # by identifier

    def limits_of(self, flow: str) -> list[LimitRule]:
        return [limit for limit in self.limits if limit.covers(flow)]


def inside(window: tuple[datetime | None, datetime | None], now: datetime) -> bool:
    starts_at, ends_at = window
    return (starts_at is None or starts_at <= now) and (ends_at is None or now < ends_at)


MAX_ENVIRONMENTS = 10_000  # environments whose rules a process keeps compiled
MAX_SEGMENTS_COMPILED = 20_000  # segment versions kept compiled
_cache: BoundedMemo[EnvRules] = BoundedMemo(MAX_ENVIRONMENTS)
_compiled: BoundedMemo[conditions.Condition] = BoundedMemo(MAX_SEGMENTS_COMPILED)


def compiled(segment: Segment) -> conditions.Condition:
    """A segment's compiled condition, cached by (segment, version, text).

    The text is part of the key because ids of rolled-back rows can be reused.
    """
    key = (segment.pk, segment.version, segment.condition)
    found = _compiled.get(key)
    if found is None:
        found = conditions.compile_condition(
            segment.condition, "condition", SEGMENT_ROOTS, saving=False
        )
        _compiled.put(key, found)
    return found


def bump(environment_id: int) -> None:
    """A flow or segment changed: people settled before get every condition evaluated at
    their next write, and this process's compiled rules are read again.

    The cache entry goes too, not only the version: ids (and so versions) of
    rolled-back rows can come back, and a stale entry must never match them.
    """
    Environment.objects.filter(pk=environment_id).update(rules_version=F("rules_version") + 1)
    _cache.pop(environment_id)


def env_rules(environment_id: int, version: int, graph: Callable[[int], Any]) -> EnvRules:
    """`graph(flow_id)` gives a flow version's compiled graph (engine.flows.graph): passed
    in, because flows imports this module to bump the version on publish."""
    cached = _cache.get(environment_id)
    if cached is not None and cached.version == version:
        return cached
    f = Flow._meta.db_table
    with connection.cursor() as c:
        c.execute(
            f"SELECT f.identifier, f.id, f.start_when, f.priority FROM {f} f "
            "WHERE f.environment_id = %s "
            f"AND f.version = (SELECT MAX(g.version) FROM {f} g "
            "WHERE g.environment_id = f.environment_id AND g.identifier = f.identifier)",
            [environment_id],
        )
        rows = c.fetchall()
    switches = {
        row[0]: row[1:]
        for row in FlowSwitch.objects.filter(environment_id=environment_id).values_list(
            "identifier", "enabled", "archived", "starts_at", "ends_at"
        )
    }
    off = {f for f, (enabled, archived, _, _) in switches.items() if archived or not enabled}
    windows = {
        f: (starts_at, ends_at)
        for f, (_, _, starts_at, ends_at) in switches.items()
        if f not in off and (starts_at is not None or ends_at is not None)
    }
    starters = tuple(
        (r[0], r[1])
        for r in sorted((r for r in rows if r[2] and r[0] not in off), key=_start_order)
    )
    found = {
        s.identifier: compiled(s) for s in Segment.objects.filter(environment_id=environment_id)
    }
    uses_now = any(("now", None) in c.deps for c in found.values())
    for _, flow_id, *_ in rows:
        compiled_graph = graph(flow_id)
        uses_now = uses_now or ("now", None) in compiled_graph.auto_deps
        start_when = compiled_graph.start_when
        uses_now = uses_now or bool(start_when and ("now", None) in start_when.deps)
    uses_now = uses_now or any(f in windows for f, _ in starters)
    limits = tuple(
        LimitRule(
            lim.identifier,
            None if lim.flows == "*" else frozenset(lim.flows),
            lim.max,
            lim.window_seconds,
        )
        for lim in Limit.objects.filter(environment_id=environment_id).order_by("identifier")
    )
    loaded = EnvRules(version, starters, found, uses_now, windows, limits)
    _cache.put(environment_id, loaded)
    return loaded


def _start_order(row: tuple[Any, ...]) -> tuple[int, str]:
    return (-row[3], row[0])


def affected(
    deps: Iterable[conditions.Dep], dirty: Mapping[str, set[str | None]], rules: EnvRules
) -> bool:
    """Whether a condition reading `deps` may have changed value given `dirty` changes.

    A segment counts as changed when anything its own condition reads did.
    """
    if conditions.reads(deps, dirty) or ("now", None) in deps:
        return True  # time moves on between any two writes
    if not any(r == "segments" for r, _ in deps):
        return False
    changed: set[str | None] = {
        name
        for name, cond in rules.segments.items()
        if conditions.reads(cond.deps, dirty) or ("now", None) in cond.deps
    }
    return bool(changed) and conditions.reads(deps, {"segments": changed})
