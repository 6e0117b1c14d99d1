"""One state change as the log stores it, and the event `data` it becomes.

A typed record rather than a tuple: the engine makes one per change
(`log.Recorder`), the store writes it (`store.append_log`), and the log and
the change feed build one from each row they read, so every reader gives an
event the one shape.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    entity: str  # "flow" or "step"
    object_id: UUID | str
    identifier: str
    state: str
    previous_state: str
    flow: str  # the flow's identifier
    flow_id: UUID | str  # the flow instance's id
    occurred_at: datetime | str  # text when the database formatted it (engine/feed.py)
    cause: dict[str, Any] | None

    def event_data(self, person_key: str, epoch: str = "") -> dict[str, Any]:
        """An event's `data`: the one shape for live events, backlogs and the REST log."""
        return {
            "entity": self.entity,
            "id": str(self.object_id),
            "identifier": self.identifier,
            "state": self.state,
            "previous_state": self.previous_state,
            "seq": self.seq,
            "person_key": person_key,
            "flow": self.flow,
            "flow_id": str(self.flow_id),
            "occurred_at": timestamp(self.occurred_at),
            "epoch": epoch,
            "cause": self.cause or {},  # why it happened (docs/rules.md)
        }


def timestamp(dt: datetime | str) -> str:
    if isinstance(dt, str):  # already formatted by the database (stepstream/engine/feed.py)
        return dt
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
