"""Publishing flow versions and the immutable graphs the engine runs on."""

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Max

from stepstream import strictjson
from stepstream.bounded import BoundedMemo
from stepstream.engine import audit, conditions, content, durations, rules
from stepstream.engine.conditions import Condition, Dep
from stepstream.errors import Conflict, Invalid, NotFound
from stepstream.models import Environment, Flow, FlowSwitch, Segment, Step, Transition

TRANSITION_TYPES = ("manual", "automatic")
MAX_PRIORITY = 1_000_000


@dataclass(frozen=True)
class Graph:
    """A published version, compiled once; versions never change after publishing."""

    flow_id: int
    identifier: str
    version: int
    name: str
    steps: tuple[tuple[str, str], ...]  # (identifier, name) in published order
    start: tuple[str, ...]
    final: frozenset[str]  # steps with no outgoing transition
    # final steps that complete as they become active: those without content (which
    # stay active until completed: complete_step, docs/content.md)
    completes_at_once: frozenset[str]
    by_identifier: dict[str, tuple[tuple[str, str], ...]] = field(hash=False)
    automatic: tuple[tuple[str, str], ...]
    # rules (docs/rules.md): compiled once per version, like the graph itself
    start_when: Condition | None = None
    # every automatic transition: (from, to, identifier, condition or None), published order
    auto_rules: tuple[tuple[str, str, str, Condition | None], ...] = ()
    # transitions by identifier, as calls take them: ((from, to, condition or None), ...)
    guarded: dict[str, tuple[tuple[str, str, Condition | None], ...]] = field(
        default_factory=dict, hash=False
    )
    auto_deps: frozenset[Dep] = frozenset()  # variables read by automatic transitions' conditions
    priority: int = 0
    # automatic transitions with `after`: (from, to, identifier) -> seconds
    timed: dict[tuple[str, str, str], int] = field(default_factory=dict, hash=False)
    after: dict[tuple[str, str, str], str] = field(default_factory=dict, hash=False)  # as written


def _condition(text: str, where: str) -> Condition | None:
    return conditions.compile_condition(text, where, saving=False) if text else None


MAX_GRAPHS = 10_000  # compiled flow versions kept per process
# compiled flow versions: versions never change, so a memo for the whole process
_graphs: BoundedMemo[Graph] = BoundedMemo(MAX_GRAPHS)


def _compile(flow: Flow, steps: list[Step], transitions: list[Transition]) -> Graph:
    outgoing = {t.from_step for t in transitions}
    incoming = {t.to_step for t in transitions}
    by_identifier: dict[str, list[tuple[str, str]]] = {}
    guarded: dict[str, list[tuple[str, str, Condition | None]]] = {}
    auto_rules: list[tuple[str, str, str, Condition | None]] = []
    auto_deps: set[tuple[str, str | None]] = set()
    timed: dict[tuple[str, str, str], int] = {}
    after: dict[tuple[str, str, str], str] = {}
    for i, t in enumerate(transitions):
        by_identifier.setdefault(t.identifier, []).append((t.from_step, t.to_step))
        cond = _condition(t.condition, f"transitions[{i}].condition")
        guarded.setdefault(t.identifier, []).append((t.from_step, t.to_step, cond))
        if t.type == "automatic":
            auto_rules.append((t.from_step, t.to_step, t.identifier, cond))
            if t.after:
                timed[(t.from_step, t.to_step, t.identifier)] = durations.parse(t.after, "after")
                after[(t.from_step, t.to_step, t.identifier)] = t.after
            if cond is not None:
                auto_deps |= cond.deps
    return Graph(
        flow_id=flow.pk,
        identifier=flow.identifier,
        version=flow.version,
        name=flow.name,
        steps=tuple((s.identifier, s.name) for s in steps),
        start=tuple(s.identifier for s in steps if s.identifier not in incoming),
        final=frozenset(s.identifier for s in steps if s.identifier not in outgoing),
        completes_at_once=frozenset(
            s.identifier for s in steps if s.identifier not in outgoing and s.content is None
        ),
        by_identifier={k: tuple(v) for k, v in by_identifier.items()},
        automatic=tuple((t.from_step, t.to_step) for t in transitions if t.type == "automatic"),
        start_when=_condition(flow.start_when, "start_when"),
        auto_rules=tuple(auto_rules),
        guarded={k: tuple(v) for k, v in guarded.items()},
        auto_deps=frozenset(auto_deps),
        priority=flow.priority,
        timed=timed,
        after=after,
    )


def graph(flow_id: int) -> Graph:
    cached = _graphs.get(flow_id)
    if cached is not None:
        return cached
    flow = Flow.objects.get(pk=flow_id)
    compiled = _compile(flow, list(flow.steps.all()), list(flow.transitions.all()))
    _graphs.put(flow_id, compiled)
    return compiled


def _text(value: object, where: str, problems: list[str], required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        problems.append(f"{where} must be a non-empty string of at most 255 characters.")
        return ""
    return value


def _identifier(value: object, where: str, problems: list[str]) -> str:
    """A flow, step or transition identifier: stepstream.strictjson's one rule, and not blank."""
    try:
        strictjson.validate_identifier(value, where)
    except Invalid as e:
        problems.extend(e.messages)
        return ""
    return _text(value, where, problems)


def _transition_type(raw: dict[str, Any], where: str, problems: list[str]) -> str:
    """'manual' (also when absent or null) or 'automatic'; nothing else is read as either."""
    ttype = raw.get("type")
    if ttype is None:
        return "manual"
    if not isinstance(ttype, str) or ttype not in TRANSITION_TYPES:
        problems.append(f"{where} must be 'manual' or 'automatic' (or left out: manual).")
        return "manual"
    return ttype


def _automatic_cycle(steps: list[str], edges: list[tuple[str, str]]) -> list[str] | None:
    succ: dict[str, list[str]] = {s: [] for s in steps}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    color: dict[str, int] = {}
    stack_path: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        stack_path.append(node)
        for nxt in succ.get(node, []):
            if color.get(nxt) == 1:
                return stack_path[stack_path.index(nxt) :] + [nxt]
            if color.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack_path.pop()
        color[node] = 2
        return None

    for s in steps:
        if color.get(s) is None:
            found = visit(s)
            if found:
                return found
    return None


def validate_definition(body: object) -> dict[str, Any]:
    """Checks a flow definition, naming every problem at once."""
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object describing the flow.")
    strictjson.check(body, "The flow definition")
    problems: list[str] = []
    identifier = _identifier(body.get("identifier"), "identifier", problems)
    name = _text(body.get("name"), "name", problems, required=False)
    raw_steps, raw_transitions = body.get("steps"), body.get("transitions", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        problems.append("steps must be a non-empty list of steps.")
        raw_steps = []
    if not isinstance(raw_transitions, list):
        problems.append("transitions must be a list.")
        raw_transitions = []
    limits = settings.STEPSTREAM
    if len(raw_steps) > limits["MAX_FLOW_STEPS"]:
        problems.append(f"A flow may have at most {limits['MAX_FLOW_STEPS']} steps.")
        raw_steps = []
    if len(raw_transitions) > limits["MAX_FLOW_TRANSITIONS"]:
        problems.append(f"A flow may have at most {limits['MAX_FLOW_TRANSITIONS']} transitions.")
        raw_transitions = []
    steps, seen = [], set()
    raw_content: dict[int, tuple[int, object]] = {}  # step's index: (its place in steps, content)
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, dict):
            problems.append(f"steps[{i}] must be an object.")
            continue
        sid = _identifier(raw.get("identifier"), f"steps[{i}].identifier", problems)
        sname = _text(raw.get("name"), f"steps[{i}].name", problems, required=False)
        props = raw.get("properties", {})
        if props is None:
            props = {}
        if not isinstance(props, dict):
            problems.append(f"steps[{i}].properties must be an object.")
        if sid and sid in seen:
            problems.append(f"Duplicate step identifier '{sid}'.")
        seen.add(sid)
        steps.append({"identifier": sid, "name": sname, "properties": props})
        raw_content[len(steps) - 1] = (i, raw.get("content"))
    transitions, used_segments = [], set()
    start_when = body.get("start_when")
    if start_when is not None:
        try:
            used_segments |= conditions.compile_condition(start_when, "start_when").segments
        except Invalid as e:
            problems.extend(e.messages)
    for i, raw in enumerate(raw_transitions):
        if not isinstance(raw, dict):
            problems.append(f"transitions[{i}] must be an object.")
            continue
        tid = _identifier(raw.get("identifier"), f"transitions[{i}].identifier", problems)
        ends = {}
        for end in ("from", "to"):
            ends[end] = _identifier(raw.get(end), f"transitions[{i}].{end}", problems)
            if ends[end] and ends[end] not in seen:
                problems.append(f"transitions[{i}] ('{tid}') names unknown step '{ends[end]}'.")
        ttype = _transition_type(raw, f"transitions[{i}].type", problems)
        transition = {"identifier": tid, "from": ends["from"], "to": ends["to"], "type": ttype}
        condition = raw.get("condition")
        if condition is not None:
            try:
                compiled = conditions.compile_condition(condition, f"transitions[{i}].condition")
                transition["condition"] = condition
                used_segments |= compiled.segments
            except Invalid as e:
                problems.extend(e.messages)
        after = raw.get("after")
        if after is not None:
            try:
                durations.parse(after, f"transitions[{i}].after")
                if ttype != "automatic":
                    problems.append(
                        f"transitions[{i}].after is only for automatic transitions: "
                        'add "type": "automatic" or remove after.'
                    )
                transition["after"] = after
            except Invalid as e:
                problems.extend(e.messages)
        transitions.append(transition)
    # Graph checks use the parts that are well formed, so they are named beside
    # any problem found above rather than hidden by it.
    step_ids = [sid for sid in dict.fromkeys(s["identifier"] for s in steps) if sid]
    known = [t for t in transitions if t["from"] in seen and t["to"] in seen]
    if step_ids:
        targets = {t["to"] for t in known}
        if all(s in targets for s in step_ids):
            problems.append("The flow has no start step: every step has an incoming transition.")
        auto = [(t["from"], t["to"]) for t in known if t["type"] == "automatic"]
        cycle = _automatic_cycle(step_ids, auto)
        if cycle:
            problems.append("Automatic transitions form a cycle: " + " -> ".join(cycle) + ".")
    _contents(steps, raw_content, known, problems)
    priority = body.get("priority", 0)
    if priority is None:
        priority = 0
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not -MAX_PRIORITY <= priority <= MAX_PRIORITY
    ):
        problems.append(
            f"priority must be a whole number from {-MAX_PRIORITY:,} to {MAX_PRIORITY:,} "
            "(higher starts first; default 0)."
        )
        priority = 0
    if problems:
        raise Invalid(*problems)
    return {
        "priority": priority,
        "identifier": identifier,
        "name": name,
        "steps": steps,
        "transitions": transitions,
        "start_when": start_when or "",
        "uses_segments": sorted(used_segments),
    }


def _contents(
    steps: list[dict[str, Any]],
    raw_content: dict[int, tuple[int, object]],
    transitions: list[dict[str, Any]],
    problems: list[str],
) -> None:
    """Each step's `content` checked against the graph (stepstream.engine.content)."""
    found = content.Problems()
    known = {s["identifier"] for s in steps if s["identifier"]}
    leaving: dict[str, set[str]] = {}
    for t in transitions:
        leaving.setdefault(t["from"], set()).add(t["identifier"])
    for n, step in enumerate(steps):
        i, raw = raw_content[n]
        sid = step["identifier"]
        step["content"] = content.validate(
            raw, f"steps[{i}].content", sid, known, leaving.get(sid, set()), found
        )
    content.check_total([s["content"] for s in steps], found)
    problems.extend(found)


def missing_segments(environment: Environment, names: list[str]) -> list[str]:
    """The segments of `names` that the environment lacks, each as a sentence."""
    if not names:
        return []
    known = set(
        Segment.objects.filter(environment=environment, identifier__in=names).values_list(
            "identifier", flat=True
        )
    )
    return [
        f"Unknown segment '{s}': create it with PUT /segments." for s in names if s not in known
    ]


def checked(environment: Environment, body: object) -> dict[str, Any]:
    """The definition if it would publish in this environment, else a 400 naming every problem.

    The one validator: publishing and drafts (engine.authoring.problems) both use it."""
    definition = validate_definition(body)
    missing = missing_segments(environment, definition["uses_segments"])
    if missing:
        raise Invalid(*missing)
    return definition


def content_hash(described: dict[str, Any]) -> str:
    """A digest of a version's content (steps with their content, transitions, conditions):
    canonical JSON of `describe` without the version number, so a copy of it published
    elsewhere (a promotion) has the same hash."""
    hashed = {k: v for k, v in described.items() if k != "version"}
    return hashlib.sha256(orjson.dumps(hashed, option=orjson.OPT_SORT_KEYS)).hexdigest()


def publish(environment: Environment, body: object, actor: str = "cli") -> dict[str, Any]:
    """Publishes the next version; `actor` is recorded as `published_by` and in the audit."""
    return publish_definition(environment, checked(environment, body), actor)


def publish_definition(
    environment: Environment,
    definition: dict[str, Any],
    actor: str,
    action: str = "publish",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes a checked definition as the next version, with its audit entry, in one
    transaction (a promotion passes its own action and details).

    The environment's row is locked first (as the audit entry would lock it later): two
    publishes of one flow take their versions one after the other, and a promotion, which
    locks both its environments first, never waits in a circle with a publish."""
    with transaction.atomic():
        audit.lock_environments(environment.pk)
        latest = (
            Flow.objects.select_for_update()
            .filter(environment=environment, identifier=definition["identifier"])
            .aggregate(v=Max("version"))["v"]
        )
        most = settings.STEPSTREAM["MAX_FLOWS"]
        if latest is None and (
            Flow.objects.filter(environment=environment).values("identifier").distinct().count()
            >= most
        ):
            raise Invalid(
                f"An environment may have at most {most:,} flows (STEPSTREAM_MAX_FLOWS; "
                "conditions are costed for that many): publish a new version of one instead."
            )
        flow = Flow.objects.create(
            environment=environment,
            identifier=definition["identifier"],
            version=(latest or 0) + 1,
            name=definition["name"],
            start_when=definition["start_when"],
            uses_segments=definition["uses_segments"],
            published_by=actor,
            priority=definition["priority"],
        )
        steps = Step.objects.bulk_create(
            Step(
                flow=flow,
                position=i,
                identifier=s["identifier"],
                name=s["name"],
                properties=s["properties"],
                content=s["content"],
            )
            for i, s in enumerate(definition["steps"])
        )
        transitions = Transition.objects.bulk_create(
            Transition(
                flow=flow,
                position=i,
                identifier=t["identifier"],
                from_step=t["from"],
                to_step=t["to"],
                type=t["type"],
                condition=t.get("condition", ""),
                after=t.get("after", ""),
            )
            for i, t in enumerate(definition["transitions"])
        )
        described = describe(flow)
        flow.hash = content_hash(described)
        flow.save(update_fields=["hash"])
        audit.record(
            environment.pk,
            actor,
            action,
            f"flow:{flow.identifier}",
            {"version": flow.version, "hash": flow.hash, **(details or {})},
        )
        rules.bump(environment.pk)
    _graphs.put(flow.pk, _compile(flow, steps, transitions))
    content.forget(flow.pk)
    return described


def check_startable(environment: Environment, identifier: str) -> None:
    """409 saying why when the flow's switches forbid a start now (read in the write's
    own transaction, so a switch changed by any process applies to the next start)."""
    from stepstream.engine import clock

    switch = FlowSwitch.objects.filter(environment=environment, identifier=identifier).first()
    if switch is None:
        return
    if switch.archived:
        raise Conflict(
            f"Flow '{identifier}' is archived: it does not start "
            f"(POST /flows/{identifier}/unarchive brings it back)."
        )
    if not switch.enabled:
        raise Conflict(
            f"Flow '{identifier}' is disabled: it does not start until it is enabled "
            f'(PATCH /flows/{identifier} {{"enabled": true}}).'
        )
    now = clock.now()
    if switch.starts_at is not None and now < switch.starts_at:
        raise Conflict(
            f"Flow '{identifier}' starts only from {iso(switch.starts_at)} (its starts_at)."
        )
    if switch.ends_at is not None and now >= switch.ends_at:
        raise Conflict(f"Flow '{identifier}' ended at {iso(switch.ends_at)} (its ends_at).")


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as every timestamp of the API."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def latest_id(environment: Environment, identifier: str) -> int:
    """The id of the flow's latest version (one indexed lookup)."""
    from django.db import connection

    with connection.cursor() as c:
        c.execute(
            f"SELECT id FROM {Flow._meta.db_table} WHERE environment_id = %s AND identifier = %s "
            "ORDER BY version DESC LIMIT 1",
            [environment.pk, identifier],
        )
        row = c.fetchone()
    if row is None:
        raise NotFound(f"No flow '{identifier}' in this environment.")
    flow_id: int = row[0]
    return flow_id


def latest(environment: Environment, identifier: str) -> Flow:
    flow = (
        Flow.objects.filter(environment=environment, identifier=identifier)
        .order_by("-version")
        .first()
    )
    if flow is None:
        raise NotFound(f"No flow '{identifier}' in this environment.")
    return flow


def version(environment: Environment, identifier: str, number: int | None) -> Flow:
    """One version of the flow (`None`: the latest); versions never change once published.

    An unknown flow is named as such before a version it lacks."""
    if number is None:
        return latest(environment, identifier)
    flow = None
    if 1 <= number < 2**31:
        flow = Flow.objects.filter(
            environment=environment, identifier=identifier, version=number
        ).first()
    if flow is None:
        latest(environment, identifier)  # 404 for the flow itself first
        raise NotFound(f"Flow '{identifier}' has no version {number}.")
    return flow


def _describe_step(s: Step, with_content: bool = True) -> dict[str, Any]:
    out = {"identifier": s.identifier, "name": s.name, "properties": s.properties}
    if s.content is not None and with_content:
        out["content"] = s.content
    return out


def get_content(
    environment: Environment, identifier: str, number: int | None, locale: str | None
) -> dict[str, Any]:
    """`get_content`'s answer: the version's step content in one locale (memoized)."""
    flow = version(environment, identifier, number)
    return content.for_locale(
        flow.pk,
        flow.identifier,
        flow.version,
        lambda: list(flow.steps.values_list("identifier", "content")),
        locale,
    )


def _describe_transition(t: Transition) -> dict[str, Any]:
    out = {"identifier": t.identifier, "from": t.from_step, "to": t.to_step, "type": t.type}
    if t.condition:
        out["condition"] = t.condition
    if t.after:
        out["after"] = t.after
    return out


def describe(flow: Flow, with_content: bool = True) -> dict[str, Any]:
    """The version as published; `condition`, `after`, `start_when`, `content` and `priority`
    (when not 0) appear only where set.

    The list of flows leaves `content` out (`with_content`): up to
    STEPSTREAM_MAX_CONTENT_BYTES per flow would make it unbounded in practice.
    """
    out = {
        "identifier": flow.identifier,
        "version": flow.version,
        "name": flow.name,
        "steps": [_describe_step(s, with_content) for s in flow.steps.all()],
        "transitions": [_describe_transition(t) for t in flow.transitions.all()],
    }
    if flow.start_when:
        out["start_when"] = flow.start_when
    if flow.priority:
        out["priority"] = flow.priority
    return out


def list_latest(environment: Environment) -> list[dict[str, Any]]:
    latest_versions = {}
    for flow in Flow.objects.filter(environment=environment).order_by("identifier", "version"):
        latest_versions[flow.identifier] = flow
    return [describe(f, with_content=False) for f in latest_versions.values()]
