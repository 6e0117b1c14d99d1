"""The differences between two versions of a flow, for the flow's page."""

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str  # "step", "transition", "start_when", "name"
    change: str  # "added", "removed", "changed"
    what: str  # the step's identifier, "next: a → b", ...
    detail: str  # what changed, in words


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _fields(old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...]) -> str:
    names = sorted((set(old) | set(new)) - set(skip))
    changed = [n for n in names if old.get(n) != new.get(n)]
    return "; ".join(
        f"{n}: {_text(old.get(n, '')) or '—'} → {_text(new.get(n, '')) or '—'}" for n in changed
    )


def _values(item: dict[str, Any], skip: tuple[str, ...]) -> str:
    """An added or removed item's own fields, in words."""
    return "; ".join(f"{n}: {_text(item[n])}" for n in sorted(set(item) - set(skip)) if item[n])


def _transition_key(t: dict[str, Any]) -> str:
    return f"{t['identifier']}: {t['from']} → {t['to']}"


def between(old: dict[str, Any], new: dict[str, Any]) -> list[Difference]:
    """What `new` (a described version) adds, removes and changes relative to `old`:
    steps (their names, properties and content), transitions (type, condition),
    start_when and the flow's name."""
    found: list[Difference] = []
    if old.get("name", "") != new.get("name", ""):
        words = f"{old.get('name') or '—'} → {new.get('name') or '—'}"
        found.append(Difference("name", "changed", "name", words))
    if old.get("start_when", "") != new.get("start_when", ""):
        change = "added" if not old.get("start_when") else "changed"
        if not new.get("start_when"):
            change = "removed"
        found.append(
            Difference(
                "start_when",
                change,
                "start_when",
                f"{old.get('start_when') or '—'} → {new.get('start_when') or '—'}",
            )
        )
    old_steps = {s["identifier"]: s for s in old.get("steps", [])}
    new_steps = {s["identifier"]: s for s in new.get("steps", [])}
    for sid, step in new_steps.items():
        if sid not in old_steps:
            found.append(Difference("step", "added", sid, step.get("name", "")))
        elif old_steps[sid] != step:
            found.append(
                Difference("step", "changed", sid, _fields(old_steps[sid], step, ("identifier",)))
            )
    for sid, step in old_steps.items():
        if sid not in new_steps:
            found.append(Difference("step", "removed", sid, step.get("name", "")))
    old_t = {_transition_key(t): t for t in old.get("transitions", [])}
    new_t = {_transition_key(t): t for t in new.get("transitions", [])}
    skip = ("identifier", "from", "to")
    for key, t in new_t.items():
        if key not in old_t:
            found.append(Difference("transition", "added", key, _values(t, skip)))
        elif old_t[key] != t:
            found.append(Difference("transition", "changed", key, _fields(old_t[key], t, skip)))
    for key, t in old_t.items():
        if key not in new_t:
            found.append(Difference("transition", "removed", key, _values(t, skip)))
    return found
