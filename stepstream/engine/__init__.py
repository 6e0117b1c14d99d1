"""The flow engine: the only code that changes a flow or step state.

Each `do_*` action locks the person, computes the new states in memory,
writes the changed rows and their state-change log rows in one transaction,
and hands the log rows to delivery after commit (Zulip's do_* pattern). The
person lock serializes every change of one person, which is what makes `seq`
gap-free and lets concurrent callers of the same transition get one winner
and one 409.

Where each part lives (docs/architecture.md): the actions by family in
`actions/` (a person's flows; the person), one person's transaction and its
rules in `sessions.py`, reads without locks in `reads.py`, the write
transaction and the database helpers in `db.py`, the hot-path SQL in
`store.py`. This package's names are the engine's API.
"""

from stepstream.engine.actions.flows import (
    do_complete_step,
    do_flow_action,
    do_restart,
    do_start_flow,
    do_transition,
)
from stepstream.engine.actions.people import (
    check_event_name,
    do_identify,
    do_page,
    do_put_person,
    do_track,
)
from stepstream.engine.actions.timers import do_fire
from stepstream.engine.reads import instances_of, snapshot
from stepstream.engine.sessions import VIA, describe_instance

__all__ = [
    "VIA",
    "check_event_name",
    "describe_instance",
    "do_complete_step",
    "do_fire",
    "do_flow_action",
    "do_identify",
    "do_page",
    "do_put_person",
    "do_restart",
    "do_start_flow",
    "do_track",
    "do_transition",
    "instances_of",
    "snapshot",
]
