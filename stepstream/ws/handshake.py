"""What a socket's opening handshake leaves behind, dropped once it is accepted."""

from stepstream.ws import Scope, Send
from stepstream.ws.writer import sansio_protocol


def forget_handshake(scope: Scope, send: Send) -> None:
    """Drops the opening handshake's headers once the socket is accepted.

    Nothing reads them later, yet uvicorn keeps the request and response (with
    their header objects) and the scope keeps its header list for the
    socket's lifetime: about 4 KiB of a socket's 25 (docs/performance-history.md).
    """
    scope["headers"] = []
    protocol = sansio_protocol(send)
    if protocol is not None:
        for handshake in (getattr(protocol, "request", None), getattr(protocol, "response", None)):
            if handshake is not None:
                handshake.headers.clear()  # websockets' parser still holds the request
        # dropped on purpose, though uvicorn types them as always set: nothing reads them now
        protocol.request = None  # type: ignore[assignment]
        protocol.response = None  # type: ignore[assignment]
