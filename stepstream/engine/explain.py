"""Why a person has or has not a flow, and where it stands (GET /people/{key}/explain).

Read without the person's lock: a view of now, as the dashboard shows it.
Each condition is given with its value and the values of the operands of its
top-level `||` (or, when it has none, `&&`), so a false condition names the
clause that makes it so; an operand whose evaluation fails is "error: ...".
"""

from datetime import timedelta
from typing import Any

from stepstream.engine import conditions, flows, pages, people, timers
from stepstream.engine.changes import timestamp
from stepstream.engine.reads import instances_of
from stepstream.engine.sessions import Session
from stepstream.engine.store import PersonRow
from stepstream.errors import Invalid
from stepstream.models import Environment, FlowSwitch, Person

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


NO_PAGE = (
    "no page yet: `page` is absent until the SDK reports the person's page "
    "(the WebSocket action `page`, sent on connect and on every navigation)"
)


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
        if "'page'" in str(e) and pages.read(session.person.pk) is None:
            return _error(NO_PAGE)  # what "Undefined variable 'page'" means to its reader
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


class Explainer:
    """Explains a person's flows, reading what they share once (the dashboard's person page
    explains every flow with a fixed number of queries, plus one per flow the person has
    that cannot start by itself)."""

    def __init__(
        self,
        environment: Environment,
        person_key: str,
        person: Person | None = None,
        only: str | None = None,
    ) -> None:
        """`person`: already read (with `environment`) by the caller; `only`: the one flow
        that will be explained (its instance alone is read: 50 flows' were most of the cost)."""
        if person is None:
            person = people.get(environment, person_key)
            environment.refresh_from_db(fields=["rules_version"])
        row = PersonRow(
            person.pk, person_key, person.last_seq, person.rules_version, environment.rules_version
        )
        self.environment = environment
        self.person = person
        self.session = Session(environment, row)
        self.now = self.session.recorder.now
        self.instances = {i["flow"]: i for i in instances_of(person, only)}
        self.pending = timers.of_person(person.pk)
        self._times: dict[str, list[Any]] = {}
        self._flow_ids: dict[str, int] | None = None

    def _limits(self, flow: str) -> list[dict[str, Any]]:
        found = []
        for limit in self.session.rules.limits_of(flow):
            window = timedelta(seconds=limit.window_seconds)
            times = self._times.get(limit.identifier)
            if times is None:
                since = self.now - window
                times = self._times[limit.identifier] = timers.start_times(
                    self.person.pk, limit.flows, since
                )
            full = len(times) >= limit.max
            found.append(
                {
                    "identifier": limit.identifier,
                    "used": len(times),
                    "max": limit.max,
                    "next_free_at": timestamp(times[len(times) - limit.max] + window)
                    if full
                    else None,
                }
            )
        return found

    def _transitions(self, flow: str, instance: dict[str, Any]) -> list[dict[str, Any]]:
        if instance["state"] != "active":
            return []
        run_graph = flows.graph(self._instance_flow_id(flow))
        active = {s["identifier"] for s in instance["steps"] if s["state"] == "active"}
        due = {
            (t.from_step, t.transition): t.due_at
            for t in self.pending
            if t.kind == timers.TIMER and t.flow == flow
        }
        automatic = {(a, b, tid) for a, b, tid, _ in run_graph.auto_rules}
        found = []
        for tid, edges in run_graph.guarded.items():
            for a, b, cond in edges:
                if a not in active:
                    continue
                described: dict[str, Any] = {
                    "identifier": tid,
                    "from": a,
                    "to": b,
                    "type": "automatic" if (a, b, tid) in automatic else "manual",
                    "condition": cond.text if cond is not None else None,
                    "value": True,
                    "clauses": [],
                    "due_at": timestamp(due[(a, tid)]) if (a, tid) in due else None,
                }
                if (a, b, tid) in run_graph.after:
                    described["after"] = run_graph.after[(a, b, tid)]
                if cond is not None:
                    explained = _condition(cond.text, self.session)
                    described["value"] = explained["value"]
                    described["clauses"] = explained["clauses"]
                found.append(described)
        return found

    def _instance_flow_id(self, flow: str) -> int:
        if self._flow_ids is None:
            from stepstream.models import FlowInstance

            self._flow_ids = dict(
                FlowInstance.objects.filter(person_id=self.person.pk).values_list(
                    "flow_identifier", "flow_id"
                )
            )
        return self._flow_ids[flow]

    def explain(self, flow: str) -> dict[str, Any]:
        starters = dict(self.session.rules.starters)
        flow_id = starters.get(flow)
        if flow_id is None and flow in self.instances:  # cannot start by itself: its version's
            flow_id = self._instance_flow_id(flow)
        if flow_id is None:
            flow_id = flows.latest_id(self.environment, flow)  # 404 for an unknown flow
        graph = flows.graph(flow_id)
        start_when = graph.start_when
        instance = self.instances.get(flow)
        switch = FlowSwitch.objects.filter(environment=self.environment, identifier=flow).first()
        return {
            "flow": flow,
            "version": graph.version,
            "priority": graph.priority,
            "instance": instance,
            # archived counts as switched off: neither starts (engine.flows.check_startable)
            "enabled": switch is None or (switch.enabled and not switch.archived),
            "archived": switch is not None and switch.archived,
            "window": {
                "starts_at": flows.iso(switch.starts_at) if switch else None,
                "ends_at": flows.iso(switch.ends_at) if switch else None,
            },
            "start_when": _condition(start_when.text, self.session) if start_when else None,
            "limits": self._limits(flow),
            "deferred": any(t.kind == timers.DEFERRED and t.flow == flow for t in self.pending),
            "transitions": self._transitions(flow, instance) if instance is not None else [],
        }


def explain(environment: Environment, person_key: str, flow: str) -> dict[str, Any]:
    return Explainer(environment, person_key, only=flow).explain(flow)
