"""Stepstream's Python client: a live copy of one person's flows and steps.

Its own distribution (`pip install ./clients/python`): it needs `websockets`
and nothing of the server. `Client` and `connect` keep the copy live over one
WebSocket (client.py); `PersonState` is the merging of snapshots and events
they use, pure and synchronous (state.py); `stepstream-watch` shows it in a
terminal (watch.py).
"""

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
