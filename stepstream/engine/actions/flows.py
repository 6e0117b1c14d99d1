"""Engine actions on a person's flows: start, transition, pause, resume, exit, restart.

Each `do_*` locks the person, computes the new states in memory, writes the
changed rows and their state-change log rows in one transaction, and hands
the log rows to delivery after commit (Zulip's do_* pattern), through a
`Session` (stepstream.engine.sessions) that settles the rules in the same
transaction. Each is run by group commit (stepstream/engine/groupcommit.py).
"""

from typing import Any

from django.db import IntegrityError, transaction

from stepstream.engine import db, flows, groupcommit, store, timers
from stepstream.engine.changes import timestamp
from stepstream.engine.sessions import Session, describe, load
from stepstream.engine.sessions import session as session_for
from stepstream.errors import Conflict
from stepstream.models import Environment


@groupcommit.grouped
@db.retried
def do_start_flow(
    environment: Environment, person_key: str, flow_identifier: str, via: str = "admin"
) -> dict[str, Any]:
    with db.writing():
        session = session_for(environment, person_key, via)
        flow_id = flows.latest_id(environment, flow_identifier)
        flows.check_startable(environment, flow_identifier)
        if store.has_instance(session.person.pk, flow_identifier):
            raise Conflict(f"Person '{person_key}' already has flow '{flow_identifier}'.")
        held = session.held_back(flow_identifier) if session.rules.limits else None
        if held is not None:
            limit, free_at = held
            raise Conflict(
                f"Limit '{limit.identifier}' allows {limit.max} start(s) of its flows per person "
                f"in any {limit.window_seconds} s; person '{person_key}' may start "
                f"'{flow_identifier}' again at {timestamp(free_at)}."
            )
        run = session.start(flow_identifier, flow_id, session.call("start"))
        session.settle()
        try:
            with transaction.atomic():
                seq = session.save()
        except IntegrityError:
            raise Conflict(f"Person '{person_key}' already has flow '{flow_identifier}'.") from None
        return describe(run, seq)


@groupcommit.grouped
@db.retried
def do_transition(
    environment: Environment,
    person_key: str,
    flow_identifier: str,
    transition: str,
    via: str = "admin",
) -> dict[str, Any]:
    with db.writing():
        person, found = store.lock_person_reading(environment.pk, person_key, flow_identifier)
        session = Session(environment, person, via)
        run = load(session, person_key, flow_identifier, found)
        if run.instance.state != "active":
            raise Conflict(
                f"Flow '{flow_identifier}' is {run.instance.state}; "
                "only an active flow takes transitions."
            )
        eligible = [t for t in run.graph.guarded.get(transition, ()) if run.active(t[0])]
        edges = [(a, b) for a, b, cond in eligible if cond is None or session.holds(cond)]
        if not edges:
            if eligible:
                # every one has a condition (one without would have given an edge)
                texts = list(
                    dict.fromkeys(cond.text for _, _, cond in eligible if cond is not None)
                )
                raise Conflict(
                    f"Transition '{transition}' of flow '{flow_identifier}' is not allowed now: "
                    + "; ".join(f"its condition `{t}` is false" for t in texts)
                    + "."
                )
            raise Conflict(
                f"No active step of flow '{flow_identifier}' has transition '{transition}'."
            )
        session.recorder.cause = session.call("transition", transition=transition)
        run.take(edges)
        run.settle()
        session.settle()
        return describe(run, session.save())


_FLOW_MOVES = {
    "pause": ({"active"}, "inactive"),
    "resume": ({"inactive"}, "active"),
    "exit": ({"active", "inactive"}, "exited"),
}


@groupcommit.grouped
@db.retried
def do_flow_action(
    environment: Environment,
    person_key: str,
    flow_identifier: str,
    action: str,
    via: str = "admin",
) -> dict[str, Any]:
    """Pause, resume or exit: the flow's state changes, its steps keep theirs."""
    allowed, target = _FLOW_MOVES[action]
    with db.writing():
        session = session_for(environment, person_key, via)
        run = load(session, person_key, flow_identifier)
        if run.instance.state not in allowed:
            raise Conflict(f"Cannot {action} flow '{flow_identifier}': it is {run.instance.state}.")
        session.recorder.cause = session.call(action)
        run.set_flow(target)
        session.settle()
        return describe(run, session.save())


@groupcommit.grouped
@db.retried
def do_restart(
    environment: Environment, person_key: str, flow_identifier: str, via: str = "admin"
) -> dict[str, Any]:
    """Replaces the person's instance with a new one of the latest version.

    The old instance becomes `exited` first (unless completed or exited);
    its rows are then removed (a person has one current instance per flow),
    its log rows stay.
    """
    with db.writing():
        session = session_for(environment, person_key, via)
        old = load(session, person_key, flow_identifier)
        flows.check_startable(environment, flow_identifier)
        cause = session.call("restart")
        if old.instance.state not in ("completed", "exited"):
            session.recorder.cause = cause
            old.set_flow("exited")
        timers.delete_instance_timers(old.instance.id)
        store.delete_instance(old.instance.id)
        del session.runs[flow_identifier]
        flow_id = flows.latest_id(environment, flow_identifier)
        run = session.start(flow_identifier, flow_id, cause)
        session.settle()
        return describe(run, session.save())


@groupcommit.grouped
@db.retried
def do_complete_step(
    environment: Environment,
    person_key: str,
    flow_identifier: str,
    step: str,
    via: str = "admin",
) -> dict[str, Any]:
    """Completes an active final step, one that stayed active for its content (docs/content.md).

    Only such a step: any other step moves by its transitions. The flow
    completes when no step is left active, as after a transition.
    """
    with db.writing():
        session = session_for(environment, person_key, via)
        run = load(session, person_key, flow_identifier)
        if run.instance.state != "active":
            raise Conflict(
                f"Flow '{flow_identifier}' is {run.instance.state}; "
                "only an active flow's steps can be completed."
            )
        if step not in run.graph.final or step not in run.by_identifier or not run.active(step):
            what = "a final step" if step in run.graph.final else "not a final step of the flow"
            state = run.by_identifier[step].state if step in run.by_identifier else "unknown"
            raise Conflict(
                f"Step '{step[:100]}' of flow '{flow_identifier}' cannot be completed: only an "
                f"active final step can (it is {what}, {state}); other steps move by transitions."
            )
        session.recorder.cause = session.call("complete_step", step=step)
        run.set_step(step, "completed")
        run.settle()
        session.settle()
        return describe(run, session.save())
