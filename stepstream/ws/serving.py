"""Which WebSocket implementation and write path serve this process (for /api/v1/health).

`stepstream serve` records the implementation it checked at startup
(stepstream.ws.sansio.verify); each socket counts the write path it was
given (stepstream.ws.writer.writer_for). A leaf module: http reads it, ws
writes it, and it imports neither.
"""

from collections import Counter
from typing import Any

_started: dict[str, str | None] = {"protocol": None, "writes": None}
_sockets: Counter[str] = Counter()


def record(protocol: str, writes: str) -> None:
    _started["protocol"] = protocol
    _started["writes"] = writes


def chosen(writes: str) -> None:
    _sockets[writes] += 1


def report() -> dict[str, Any]:
    """{"protocol", "writes", "sockets"}: None where this process was not started by `serve`."""
    return {**_started, "sockets": dict(_sockets)}
