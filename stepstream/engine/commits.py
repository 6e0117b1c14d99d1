"""What a commit sets off: the engine announces records, delivery listens.

As Zulip's `do_*` actions call `send_event_on_commit`, the engine hands the
records of a transaction to `send_on_commit`; whoever delivers them (the
hub of this process, the broker to the others) registers with `listen` when
a server's runtime starts, and leaves with `unlisten` when it stops
(`stepstream.http.runtime`). The engine so imports nothing of
delivery, and a rolled-back transaction announces nothing.
"""

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import transaction

_listeners: list[Callable[[list[Any]], None]] = []
# the firing loops of this process (stepstream.engine.firing): told, after a commit, the
# earliest due time of timers and deferred starts it wrote, so one due sooner than the
# loop's next look wakes it (other processes hear of it at their next poll)
_due_listeners: list[Callable[[datetime], None]] = []


def listen(callback: Callable[[list[Any]], None]) -> None:
    if callback not in _listeners:
        _listeners.append(callback)


def unlisten(callback: Callable[[list[Any]], None]) -> None:
    if callback in _listeners:
        _listeners.remove(callback)


def send_on_commit(records: list[Any]) -> None:
    transaction.on_commit(lambda: _announce(records))


def _announce(records: list[Any]) -> None:
    for callback in _listeners:
        callback(records)


def listen_due(callback: Callable[[datetime], None]) -> None:
    if callback not in _due_listeners:
        _due_listeners.append(callback)


def unlisten_due(callback: Callable[[datetime], None]) -> None:
    if callback in _due_listeners:
        _due_listeners.remove(callback)


def due_on_commit(due_at: datetime) -> None:
    """A timer or deferred start due at `due_at` was written in this transaction."""
    if _due_listeners:
        transaction.on_commit(lambda: _announce_due(due_at))


def _announce_due(due_at: datetime) -> None:
    """Runs after the commit: a listener that fails must not turn a committed write into
    an error for its caller (the timer is in the database; a loop finds it by itself)."""
    for callback in list(_due_listeners):
        try:
            callback(due_at)
        except Exception:
            logging.getLogger(__name__).warning("a due-time listener failed", exc_info=True)
