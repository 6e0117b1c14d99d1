"""Stepstream's Python client: a live copy of one person's flows and steps.

Its own distribution (`pip install ./clients/python`): it needs `websockets`
and nothing of the server. `Client` and `connect` keep the copy live over one
WebSocket (client.py); `PersonState` is the merging of snapshots and events
they use, pure and synchronous (state.py); `stepstream-watch` shows it in a
terminal (watch.py).
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import Client, Status, StepstreamError, backoff_delay, connect, websocket_url
    from .state import Applied, FlowState, PersonState, StateChange, StepState

__version__ = "0.1.0"

__all__ = [
    "Applied",
    "Client",
    "FlowState",
    "PersonState",
    "StateChange",
    "Status",
    "StepState",
    "StepstreamError",
    "backoff_delay",
    "connect",
    "websocket_url",
]

_STATE = ("Applied", "FlowState", "PersonState", "StateChange", "StepState")


def __getattr__(name: str):
    """Names are imported on first use, so that `stepstream_client.watch` (which
    the server's command line registers) does not load the client and
    `websockets` into every `stepstream` command."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = importlib.import_module(".state" if name in _STATE else ".client", __name__)
    value = getattr(home, name)
    globals()[name] = value
    return value
