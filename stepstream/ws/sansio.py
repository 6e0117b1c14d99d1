"""uvicorn's sans-I/O WebSocket protocol, with each socket's memory bounded in bytes.

`stepstream serve` runs uvicorn with this protocol class. Three things a
client controls would otherwise make the server hold memory without bound:

* **Answers it does not read.** uvicorn answers every ping with a pong written
  straight to the transport, whatever is already buffered there, and our own
  answers and events go to the transport while it accepts writes. So while
  the transport's buffer is over its high-water mark (the client is not
  reading), this protocol stops reading from the client: no request is
  parsed and no ping answered until the client reads what it was sent. What
  the server then holds is the transport's buffer (its high-water mark plus
  the answers to one read) and the connection's outbox, itself bounded in
  bytes (`stepstream.ws.connection`).
* **A client that never reads again.** If the buffer stays full for
  `STEPSTREAM_WS_STALL_TIMEOUT` seconds, the socket is closed with 4408; a
  socket whose closing handshake does not complete is dropped (aborted) soon
  after, so not even its file descriptor is held.
* **One huge message.** Incoming messages are limited to a quarter of
  `STEPSTREAM_WS_MAX_BUFFER_BYTES` (4 MiB by default); a larger one closes
  the socket with 1009. Smaller ones over `STEPSTREAM_WS_MAX_MESSAGE_BYTES`
  are answered 413 as before. uvicorn itself reads no further message until
  the application has taken the last one.
"""

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

if TYPE_CHECKING:
    from uvicorn import Config
    from uvicorn._types import ASGIReceiveEvent

CLOSE_TOO_SLOW = 4408
SLOW_REASON = "Too slow: the client did not read what it was sent; resume with since_seq."

# The websockets library's own lines ("connection open", "connection closed": two per
# socket at INFO, with nothing to tell one socket from another) go here, at WARNING
# unless the server logs at DEBUG (stepstream/settings.py). uvicorn's access line per
# socket ('"WebSocket /ws?key=..." [accepted]', the key redacted) stays as it was.
# In a reconnect storm each line cost about 50 µs of the event loop's time.
PROTOCOL_LOGGER = logging.getLogger("stepstream.ws.websockets")


def max_incoming_bytes() -> int:
    limits = settings.STEPSTREAM
    return max(limits["WS_MAX_MESSAGE_BYTES"] + 1, limits["WS_MAX_BUFFER_BYTES"] // 4)


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """Stops reading from a client whose answers cannot be sent; closes one that never reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.logger = PROTOCOL_LOGGER
        self.conn.max_message_size = max_incoming_bytes()
        self.stall_timeout = settings.STEPSTREAM["WS_STALL_TIMEOUT"]
        self.held = False  # reading paused because writing is
        self._stall: asyncio.TimerHandle | None = None

    # -- back-pressure from writes to reads ---------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if not self.held:
            self.held = True
            self.transport.pause_reading()
        if self._stall is None and self.stall_timeout > 0:
            self._stall = self.loop.call_later(self.stall_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self.held:
            self.held = False
            if not self.read_paused and not self.transport.is_closing():
                self.transport.resume_reading()

    async def receive(self) -> "ASGIReceiveEvent":
        """As uvicorn's, but reading stays paused while writing is."""
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not self.held:
                self.transport.resume_reading()
        return message

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        super().connection_lost(exc)

    def _stalled(self) -> None:
        self._stall = None
        if self.close_sent or self.transport.is_closing():
            # closing already (uvicorn's keepalive timeout, say), but a transport
            # closes only once its buffer is sent, which this client never allows
            self.transport.abort()
            return
        self.close_now(CLOSE_TOO_SLOW, SLOW_REASON, grace=2.0)

    # -- closing without waiting for the client ----------------------------

    def close_now(self, code: int, reason: str = "", grace: float | None = None) -> None:
        """Sends a close frame now, even into a full buffer; aborts if the handshake stalls.

        uvicorn's own close (ASGI `send`) first waits until the transport
        accepts writes, which a client that does not read never allows.
        """
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        with contextlib.suppress(InvalidState):
            self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:  # read the client's close reply (messages are discarded now)
            self.read_paused = False
            if not self.held:
                self.transport.resume_reading()
        grace = max(1.0, self.stall_timeout if grace is None else grace)
        self.close_timer = self.loop.call_later(grace, self.transport.abort)


# -- chosen explicitly at startup ------------------------------------------

PROTOCOL_NAME = "websockets-sansio"
# what this module and stepstream/ws/writer.py read or call on uvicorn's protocol
_ATTRIBUTES = (
    "conn",
    "loop",
    "queue",
    "writable",
    "close_sent",
    "disconnected",
    "read_paused",
    "close_timer",
)  # and `request` / `response`, set at the handshake: stepstream/ws/handshake.py tolerates neither
_METHODS = ("pause_writing", "resume_writing", "receive", "connection_lost", "send")


def verify(config: "Config") -> None:
    """Checks that uvicorn serves WebSockets with this class, and has what it relies on.

    Loads `config` (a uvicorn.Config naming this class as `ws`) and builds one
    protocol object. Raises RuntimeError with one sentence otherwise, so an
    uvicorn upgrade that renamed its internals fails at startup instead of
    silently losing the direct write path. Records the result for /health.
    """
    import asyncio

    from uvicorn.server import ServerState

    from stepstream.ws import serving

    if not config.loaded:
        config.load()
    chosen = config.ws_protocol_class
    if chosen is not BoundedWebSocketProtocol or not issubclass(chosen, WebSocketsSansIOProtocol):
        raise RuntimeError(
            f"uvicorn chose {chosen!r} for WebSockets, not stepstream's {PROTOCOL_NAME} protocol."
        )
    loop = asyncio.new_event_loop()
    try:
        probe = chosen(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    except Exception as exc:
        raise RuntimeError(
            f"uvicorn's {PROTOCOL_NAME} WebSocket protocol cannot be built ({exc!r})."
        ) from exc
    finally:
        loop.close()
    missing = [name for name in _ATTRIBUTES if not hasattr(probe, name)]
    missing += [name for name in _METHODS if not callable(getattr(chosen, name, None))]
    if missing:
        raise RuntimeError(
            f"uvicorn's {PROTOCOL_NAME} WebSocket protocol lacks {', '.join(missing)}: "
            "this uvicorn version is not one stepstream supports (see pyproject.toml)."
        )
    serving.record(PROTOCOL_NAME, "direct")
