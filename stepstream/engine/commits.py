"""What a commit sets off: the engine announces records, delivery listens.

As Zulip's `do_*` actions call `send_event_on_commit`, the engine hands the
records of a transaction to `send_on_commit`; whoever delivers them (the
hub of this process, the broker to the others) registers with `listen` when
a server's runtime starts, and leaves with `unlisten` when it stops
(`stepstream.http.runtime`). The engine so imports nothing of
delivery, and a rolled-back transaction announces nothing.
"""

from collections.abc import Callable
from typing import Any

from django.db import transaction

_listeners: list[Callable[[list[Any]], None]] = []


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
