"""The WebSocket protocol (docs/protocol.md): endpoint, connection, actions."""

from collections.abc import Awaitable, Callable
from typing import Any

# ASGI as this package reads it: scopes and messages are plain dicts
Scope = dict[str, Any]
AsgiMessage = dict[str, Any]
Receive = Callable[[], Awaitable[AsgiMessage]]
Send = Callable[[AsgiMessage], Awaitable[None]]
