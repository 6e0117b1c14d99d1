"""Engine actions of the firing loop: a person's due timers and deferred starts, run once.

`do_fire` locks the person, so a timer that two server processes pick up
together fires once: the second finds its step no longer active (or its row
gone) and changes nothing. It runs in the person's transaction, like every
other change, with the causes docs/rules.md names.
"""

from typing import Any

from stepstream.engine import db, flows, groupcommit, rules, timers
from stepstream.engine.sessions import session as session_for
from stepstream.errors import NotFound
from stepstream.models import Environment


@groupcommit.grouped
@db.retried
def do_fire(
    environment: Environment, person_key: str, read: list[timers.TimerRow] | None = None
) -> dict[str, Any]:
    """Runs what is due for the person; {"person_key", "seq", "fired"}.

    `read`: the person's timer rows, when the caller (the firing pass) read them in
    this transaction under the person's lock already."""
    with db.writing():
        try:
            session = session_for(environment, person_key, "admin")
        except NotFound:
            return {"person_key": person_key, "seq": 0, "fired": 0}
        now = session.recorder.now
        if read is None:
            read = timers.of_person(session.person.pk)
        session.timer_rows = read
        due = [t for t in read if not t.waiting and t.due_at <= now]
        order = {flow: i for i, (flow, _) in enumerate(session.rules.starters)}
        starters = dict(session.rules.starters)
        fired: list[int] = []
        for row in sorted(
            (t for t in due if t.kind == timers.DEFERRED), key=lambda t: order.get(t.flow, -1)
        ):
            # a flow switched off or archived since is not among the starters, and one
            # outside its window does not start: either way the deferred start is dropped,
            # and start_when starts it at a write once it may start again (docs/rules.md)
            flow_id = starters.get(row.flow)
            graph = flows.graph(flow_id) if flow_id is not None else None
            window = session.rules.windows.get(row.flow)
            if (
                graph is None
                or (window is not None and not rules.inside(window, now))
                or graph.start_when is None
                or row.flow in session.instances()
                or not session.holds(graph.start_when)
            ):
                timers.delete([row.id])  # no longer deferred: it starts when next true
                continue
            held = session.held_back(row.flow)
            if held is not None:
                timers.move(row.id, held[1], held[0].identifier)
                continue
            timers.delete([row.id])
            cause = {"kind": "start_when", "deferred_by": row.transition}
            session.start(row.flow, flow_id, cause)  # type: ignore[arg-type]  # found above
        for row in (t for t in due if t.kind == timers.TIMER):
            run = session.run(row.flow)
            if run is not None and run.instance.state == "active":
                run.settle()
            fired.append(row.id)
        session.settle()
        seq = session.save()
        # those whose step is still active (not deleted): their condition is false
        timers.set_waiting([i for i in fired if i not in session.deleted_timers])
        return {"person_key": person_key, "seq": seq, "fired": len(due)}
