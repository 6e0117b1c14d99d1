"""One person's flows and steps, merged from snapshots and ``state_change`` events.

Pure and synchronous: no socket, no asyncio. :class:`~stepstream_client.Client`
keeps one and feeds it what the server sends; a test can feed it the same
messages and compare the result with a fresh ``get_state`` (Zulip's
``verify_action``: the test checks the code clients run).

The rules (docs/protocol.md, "Resuming without loss"):

- Each subscription (``flow``, ``step``) has a resume point (``seq``): an event
  at or below it was seen already and is dropped.
- Every flow and step instance remembers the ``seq`` of the last change applied
  to it, so a late or repeated event, or an older snapshot, never moves its
  state backwards.
- An event of a flow instance not held (one started after the snapshot, or the
  new instance a ``restart`` made) cannot be applied: its steps are unknown. It
  waits, and the state asks for a fresh snapshot; the snapshot replaces the
  instance (a new ``id`` for a flow replaces the old one), then the waiting
  events newer than it are applied on top.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, TypedDict

__all__ = ["Applied", "FlowState", "PersonState", "StateChange", "StepState"]

Entity = Literal["flow", "step"]
ENTITIES: tuple[Entity, Entity] = ("flow", "step")


class StateChange(TypedDict):
    """One ``state_change`` event's ``data``, as the server sends it."""

    entity: Entity
    id: str
    identifier: str
    state: str
    previous_state: str
    seq: int
    person_key: str
    flow: str
    flow_id: str
    occurred_at: str
    epoch: str
    #: why it happened: {"kind": "call" | "automatic" | "start_when", ...} (docs/rules.md)
    cause: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StepState:
    """A step instance of a flow instance."""

    id: str
    identifier: str
    name: str
    state: str  # "inactive" | "active" | "completed"


@dataclasses.dataclass(frozen=True)
class FlowState:
    """A flow instance of the person; replaced (never mutated) when it changes."""

    id: str
    flow: str
    version: int
    state: str  # "active" | "inactive" | "completed" | "exited"
    steps: tuple[StepState, ...]
    seq: int  # the latest change this copy reflects

    def step(self, identifier: str) -> StepState | None:
        return next((s for s in self.steps if s.identifier == identifier), None)

    @property
    def active_steps(self) -> list[StepState]:
        return [s for s in self.steps if s.state == "active"]

    @classmethod
    def from_instance(cls, instance: dict[str, Any], seq: int) -> FlowState:
        return cls(
            id=instance["id"],
            flow=instance["flow"],
            version=instance["version"],
            state=instance["state"],
            steps=tuple(
                StepState(s["id"], s["identifier"], s.get("name", ""), s["state"])
                for s in instance["steps"]
            ),
            seq=seq,
        )


@dataclasses.dataclass(frozen=True)
class Applied:
    """What one ``apply_*`` call did, for the caller to act on."""

    #: False: an event at or below its subscription's resume point, dropped as seen.
    new: bool = True
    #: The flows (identifiers) whose instance changed or went, in order; one may repeat.
    changed: tuple[str, ...] = ()
    #: This call left events waiting for an instance not held: take a fresh snapshot.
    needs_snapshot: bool = False


class PersonState:
    """One person's flows (``flows``, by flow identifier) and resume points (``seq``)."""

    def __init__(self) -> None:
        self.flows: dict[str, FlowState] = {}
        #: Resume points: the last ``seq`` received on each subscription.
        self.seq: dict[str, int] = {"flow": 0, "step": 0}
        self._item_seq: dict[str, int] = {}
        self._unplaced: list[StateChange] = []

    @property
    def unplaced(self) -> tuple[StateChange, ...]:
        """Events of flow instances not held, waiting for a snapshot that has them."""
        return tuple(self._unplaced)

    @property
    def needs_snapshot(self) -> bool:
        return bool(self._unplaced)

    def resume_from(self, seq: int) -> None:
        """Both subscriptions start after ``seq`` (a snapshot's, or a replay's start)."""
        self.seq = {"flow": seq, "step": seq}

    def apply_event(self, change: StateChange) -> Applied:
        """Applies one ``state_change`` event's ``data``."""
        entity = change.get("entity")
        if entity not in self.seq or change["seq"] <= self.seq[entity]:
            return Applied(new=False)  # seen already
        self.seq[entity] = change["seq"]
        changed: list[str] = []
        if self._place(change, changed):
            return Applied(changed=tuple(changed))
        # a flow instance started after our snapshot: its steps come with a fresh one
        self._unplaced.append(change)
        return Applied(needs_snapshot=True)

    def apply_instance(self, instance: dict[str, Any], seq: int) -> Applied:
        """Merges one flow instance read at ``seq`` (an action's answer, or a snapshot's)."""
        changed: list[str] = []
        self._apply_instance(instance, seq, changed)
        return Applied(changed=tuple(changed))

    def apply_snapshot(self, state: dict[str, Any], *, replace: bool) -> Applied:
        """Merges ``get_state``'s (or ``identify``'s) ``data``.

        With ``replace``, what was held is forgotten first (a new session's first
        snapshot); without, items changed after the snapshot keep their state.
        Flows it lacks are removed unless changed after it. Resume points do not move.
        """
        if replace:
            self.flows.clear()
            self._item_seq.clear()
            self._unplaced = []
        changed: list[str] = []
        present = {f["flow"] for f in state["flows"]}
        for instance in state["flows"]:
            self._apply_instance(instance, state["seq"], changed)
        for identifier, flow in list(self.flows.items()):
            if identifier not in present and flow.seq <= state["seq"]:
                del self.flows[identifier]
                changed.append(identifier)
        waiting, self._unplaced = self._unplaced, []
        for change in waiting:
            if not self._place(change, changed) and change["seq"] > state["seq"]:
                self._unplaced.append(change)
        return Applied(changed=tuple(changed), needs_snapshot=bool(self._unplaced))

    def _place(self, change: StateChange, changed: list[str]) -> bool:
        """Applies one change to ``flows``; False if its flow instance is unknown."""
        flow = self.flows.get(change["flow"])
        if flow is None or flow.id != change["flow_id"]:
            return False
        item = flow.id if change["entity"] == "flow" else change["id"]
        if change["seq"] <= self._item_seq.get(item, -1):
            return True  # older than what we hold
        if change["entity"] == "flow":
            updated = dataclasses.replace(flow, state=change["state"])
        elif any(s.id == item for s in flow.steps):
            steps = tuple(
                dataclasses.replace(s, state=change["state"]) if s.id == item else s
                for s in flow.steps
            )
            updated = dataclasses.replace(flow, steps=steps)
        else:
            return False
        self._item_seq[item] = change["seq"]
        self.flows[change["flow"]] = dataclasses.replace(updated, seq=max(flow.seq, change["seq"]))
        changed.append(change["flow"])
        return True

    def _apply_instance(self, instance: dict[str, Any], seq: int, changed: list[str]) -> None:
        """Merges one flow instance read at ``seq``; items changed later keep their state."""
        known = self.flows.get(instance["flow"])
        if known is not None and known.id != instance["id"]:
            known = None  # another instance of the flow: nothing of it is kept
        same = known is not None

        def fresh(item: str) -> bool:
            return not same or seq > self._item_seq.get(item, -1)

        theirs = FlowState.from_instance(instance, seq)
        mine = {s.id: s for s in known.steps} if known is not None else {}
        steps = []
        for step in theirs.steps:
            if step.id in mine and not fresh(step.id):
                steps.append(mine[step.id])
            else:
                self._item_seq[step.id] = seq
                steps.append(step)
        state = theirs.state
        if fresh(theirs.id):
            self._item_seq[theirs.id] = seq
        else:
            assert known is not None  # every item of another instance is fresh
            state = known.state
        updated = dataclasses.replace(
            theirs,
            state=state,
            steps=tuple(steps),
            seq=max(known.seq if known is not None else 0, seq),
        )
        if known is not None and updated.state == known.state and updated.steps == known.steps:
            return
        self.flows[theirs.flow] = updated
        changed.append(theirs.flow)
