"""How a `Message` reaches a socket: one small interface, two implementations.

* `DirectWriter` writes to uvicorn's sans-I/O protocol's transport as that
  protocol's own `send` would, with no task wake-up per event: most of the
  cost of fan-out (docs/performance-history.md).
* `AsgiWriter` is plain ASGI `send` (any other ASGI server): it writes
  nothing itself, so every message is queued and sent by the connection's
  writer task.

`writer_for` is the one place a connection's writer is chosen; what it
chose is counted in `stepstream.ws.serving`, which `/api/v1/health` reports.
"""

from typing import Protocol

from websockets.protocol import State

from stepstream.delivery.message import Message
from stepstream.ws import Send, serving

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - another ASGI server: everything goes through `send`
    WebSocketsSansIOProtocol = None  # type: ignore[misc,assignment]  # the class, or None


class Transport(Protocol):
    """A socket's write path. `write` returns False when the caller must queue for ASGI `send`."""

    name: str

    def write(self, message: Message) -> bool: ...

    def buffered(self) -> int: ...

    def close_now(self, code: int, reason: str) -> bool: ...


class DirectWriter:
    """Writes to uvicorn's sans-I/O protocol's transport, as its own `send` would.

    `write` refuses (returns False) whenever that `send` would have to wait or
    fail: the transport is paused (its buffer is full), closing, or the
    WebSocket is not open. The caller then queues the message for ASGI `send`.
    """

    __slots__ = ("_protocol",)
    name = "direct"

    def __init__(self, protocol: "WebSocketsSansIOProtocol") -> None:
        self._protocol = protocol

    def write(self, message: Message) -> bool:
        p = self._protocol
        if (
            not p.writable.is_set()
            or p.close_sent
            or p.disconnected
            or p.transport.is_closing()
            or p.conn.state is not State.OPEN
        ):
            return False
        if p.conn.extensions:  # compressed: the protocol frames it with its own context
            p.conn.send_text(message.payload)
            p.transport.write(b"".join(p.conn.data_to_send()))
        else:
            p.transport.write(message.frame)
        return True

    def buffered(self) -> int:
        """Bytes the transport holds, written but not yet taken by the client."""
        return self._protocol.transport.get_write_buffer_size()

    def close_now(self, code: int, reason: str) -> bool:
        """Closes without waiting for the client to read, where the protocol can; else False."""
        close_now = getattr(self._protocol, "close_now", None)
        if close_now is None:
            return False
        close_now(code, reason)
        return True


class AsgiWriter:
    """Plain ASGI `send`: nothing is written directly; the connection's writer task sends."""

    __slots__ = ()
    name = "asgi"

    def write(self, message: Message) -> bool:
        return False

    def buffered(self) -> int:
        return 0  # the server's own buffer is out of sight behind `send`

    def close_now(self, code: int, reason: str) -> bool:
        return False


_ASGI = AsgiWriter()  # stateless: one for every socket


def sansio_protocol(send: Send) -> "WebSocketsSansIOProtocol | None":
    """uvicorn's sans-I/O protocol object behind an ASGI `send`, or None under anything else."""
    protocol = getattr(send, "__self__", None)
    if WebSocketsSansIOProtocol is None or not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    return protocol


def writer_for(send: Send) -> Transport:
    """The write path for one socket: direct under uvicorn's sans-I/O protocol, else ASGI."""
    protocol = sansio_protocol(send)
    writer: Transport = DirectWriter(protocol) if protocol is not None else _ASGI
    serving.chosen(writer.name)
    return writer
