"""The direct path to a socket: a `Message` (delivery/message.py) written to uvicorn's
transport as its own `send` would, without a task wake-up per event."""

from websockets.protocol import State

from stepstream.delivery.message import Message

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - another ASGI server: everything goes through `send`
    WebSocketsSansIOProtocol = None


class DirectWriter:
    """Writes to uvicorn's sans-I/O protocol's transport, as its own `send` would.

    `write` refuses (returns False) whenever that `send` would have to wait or
    fail: the transport is paused (its buffer is full), closing, or the
    WebSocket is not open. The caller then queues the message for ASGI `send`.
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol):
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


def _sansio_protocol(send):
    """uvicorn's sans-I/O protocol object behind an ASGI `send`, or None under anything else."""
    protocol = getattr(send, "__self__", None)
    if WebSocketsSansIOProtocol is None or not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    return protocol


def direct_writer(send) -> DirectWriter | None:
    protocol = _sansio_protocol(send)
    return DirectWriter(protocol) if protocol is not None else None


def forget_handshake(scope, send) -> None:
    """Drops the opening handshake's headers once the socket is accepted.

    Nothing reads them later, yet uvicorn keeps the request and response (with
    their header objects) and the scope keeps its header list for the
    socket's lifetime: about 4 KiB of a socket's 25 (docs/performance.md).
    """
    scope["headers"] = []
    protocol = _sansio_protocol(send)
    if protocol is not None:
        for handshake in (protocol.request, protocol.response):
            if handshake is not None:
                handshake.headers.clear()  # websockets' parser still holds the request
        protocol.request = None
        protocol.response = None
