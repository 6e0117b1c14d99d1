"""Why a person has or has not a flow, and where it stands (GET /people/{key}/explain).

Read without the person's lock: a view of now, as the dashboard shows it.
Each condition is given with its value and the values of the operands of its
top-level `||` (or, when it has none, `&&`), so a false condition names the
clause that makes it so; an operand whose evaluation fails is "error: ...".
"""

from datetime import timedelta
from typing import Any

from stepstream.engine import conditions, flows, people, timers
from stepstream.engine.changes import timestamp
from stepstream.engine.reads import instances_of
from stepstream.engine.sessions import Session
from stepstream.engine.store import PersonRow
from stepstream.errors import Invalid
from stepstream.models import Environment, Transition

_OPEN = {"(": ")", "[": "]", "{": "}"}


def clauses(text: str) -> list[str]:
    """The operands of the top-level `||`, else of the top-level `&&`, else [text]."""
    for operator in ("||", "&&"):
        parts, depth, quote, start, i = [], 0, "", 0, 0
        while i < len(text):
            ch = text[i]
            if quote:
                if ch == "\\":
                    i += 1
                elif text.startswith(quote, i):
                    i += len(quote) - 1
                    quote = ""
            elif ch in "\"'":
                quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else ch
                i += len(quote) - 1
            elif ch in _OPEN:
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif depth == 0 and text.startswith(operator, i):
                parts.append(text[start:i].strip())
                start = i + 2
                i += 1
            i += 1
        if parts:
            parts.append(text[start:].strip())
            return parts
    return [text.strip()]


def _error(message: object) -> str:
    return "error: " + str(message).split("\n")[0].strip()


def value(cond: conditions.Condition, session: Session) -> bool | str:
    """The condition's value for the person: a bool, or "error: ..." when it fails."""
    variables = session.variables(cond)
    if not cond.inline:
        return cond.evaluate(variables)
    try:
        found = cond.program.execute(variables.context)
    except Exception as e:
        return _error(e)
    return found if isinstance(found, bool) else _error(f"the value is not a bool: {found!r}")


def _condition(text: str, session: Session) -> dict[str, Any]:
    whole = conditions.compile_condition(text, "condition", saving=False)
    parts = clauses(text)
    found: list[dict[str, Any]] = []
    for part in parts if len(parts) > 1 else [text]:
        try:
            compiled = (
                whole
                if part == text
                else conditions.compile_condition(part, "clause", saving=False)
            )
            found.append({"text": part, "value": value(compiled, session)})
        except Invalid as e:
            found.append({"text": part, "value": _error(e.messages[0])})
    return {"condition": text, "value": value(whole, session), "clauses": found}


def explain(environment: Environment, person_key: str, flow: str) -> dict[str, Any]:
    person = people.get(environment, person_key)
    latest = flows.latest(environment, flow)  # 404 for an unknown flow
    environment.refresh_from_db(fields=["rules_version"])
    row = PersonRow(
        person.pk, person_key, person.last_seq, person.rules_version, environment.rules_version
    )
    session = Session(environment, row)
    now = session.recorder.now
    instance = next((i for i in instances_of(person) if i["flow"] == flow), None)
    graph = flows.graph(latest.pk)
    start_when = _condition(latest.start_when, session) if latest.start_when else None
    found_limits = []
    for limit in session.rules.limits_of(flow):
        window = timedelta(seconds=limit.window_seconds)
        times = timers.start_times(person.pk, limit.flows, now - window)
        free = now if len(times) < limit.max else times[len(times) - limit.max] + window
        found_limits.append(
            {
                "identifier": limit.identifier,
                "used": len(times),
                "max": limit.max,
                "next_free_at": timestamp(free) if len(times) >= limit.max else None,
            }
        )
    transitions: list[dict[str, Any]] = []
    if instance is not None:
        run = session.run(flow)
        assert run is not None  # the instance was read above
        active = {s.identifier for s in run.steps if s.state == "active"}
        pending = run.timers() if run.graph.timed else {}
        for t in _transitions(run.graph.flow_id):
            if t.from_step not in active:
                continue
            timer = pending.get((t.from_step, t.identifier))
            described: dict[str, Any] = {
                "identifier": t.identifier,
                "from": t.from_step,
                "to": t.to_step,
                "type": t.type,
                "condition": t.condition or None,
                "value": True,
                "clauses": [],
                "due_at": timestamp(timer.due_at) if timer is not None else None,
            }
            if t.after:
                described["after"] = t.after
            if t.condition:
                explained = _condition(t.condition, session)
                described["value"], described["clauses"] = explained["value"], explained["clauses"]
            transitions.append(described)
    return {
        "flow": flow,
        "version": graph.version,
        "priority": graph.priority,
        "instance": instance,
        "enabled": True,
        "window": {"starts_at": None, "ends_at": None},
        "start_when": start_when,
        "limits": found_limits,
        "deferred": flow in timers.deferred(person.pk),
        "transitions": transitions,
    }


def _transitions(flow_id: int) -> list[Transition]:
    return list(Transition.objects.filter(flow_id=flow_id).order_by("position"))
