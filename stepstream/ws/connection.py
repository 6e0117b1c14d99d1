"""One client socket: a bounded outbox, drained by a writer task only when needed.

Nothing waits on a slow client: `push` never blocks. A client whose outbox
overflows (`STEPSTREAM_WS_OUTBOX_LIMIT` messages, or, with what its
transport still buffers, `STEPSTREAM_WS_MAX_BUFFER_BYTES` bytes) is closed
with 4408 and resumes from the log with `since_seq`, so a slow reader loses
nothing, slows no one else, and costs a bounded number of bytes whatever it
asks for (stepstream/ws/sansio.py bounds the rest: pongs, stalled reads).

Under uvicorn's sans-I/O WebSocket protocol a message goes straight to the
socket's transport while the transport accepts writes and nothing is queued:
no task wake-up and no ASGI message per event, which is most of the cost of
fan-out (docs/performance-history.md). Otherwise (back-pressure, another server) it
is queued and a writer task, started on demand, sends it through ASGI `send`.
Which of the two write paths a socket has is chosen once, in
stepstream/ws/writer.py.
An idle socket therefore has no writer task at all.
"""

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.conf import settings

from stepstream.delivery.hub import Hub, Subscription
from stepstream.delivery.message import Message
from stepstream.ws import Send
from stepstream.ws.writer import Transport, writer_for

if TYPE_CHECKING:
    from stepstream.models import Environment
    from stepstream.ws.endpoint import Gateway

logger = logging.getLogger("stepstream.ws")

CLOSE_TOO_SLOW = 4408
SLOW_REASON = "Too slow: the client fell too far behind; resume with since_seq."
_EMPTY = ()  # the outbox of every socket with nothing queued: no deque per idle socket


class Connection:
    __slots__ = (
        "_send",
        "_transport",
        "environment",
        "key_id",
        "hub",
        "gateway",
        "subscriptions",
        "closed",
        "close_code",
        "_outbox",
        "_bytes",
        "_max_bytes",
        "_writer",
        "_room",
        "_limit",
        "_rate",
        "_burst",
        "_tokens",
        "_stamp",
        "__weakref__",
    )

    def __init__(
        self,
        send: Send,
        environment: "Environment | None",  # None: a dashboard socket (http/dashboard/live.py)
        hub: Hub,
        key_id: int | None = None,
        gateway: "Gateway | None" = None,  # the /ws endpoint's (None: dashboard, tests)
    ) -> None:
        self._send = send
        self.gateway = gateway  # stepstream.ws.endpoint.Gateway: database threads, policies
        self._transport: Transport = writer_for(send)
        self.environment = environment
        self.key_id = key_id  # the ApiKey row it opened with: revoking it closes this (4403)
        self.hub = hub
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.closed = False
        self.close_code: int | None = None
        self._outbox: deque[Message] | tuple[()] = _EMPTY
        self._bytes = 0  # what the outbox holds (its strings' memory)
        self._max_bytes = settings.STEPSTREAM["WS_MAX_BUFFER_BYTES"]
        self._writer: asyncio.Task[None] | None = None
        self._room: asyncio.Event | None = None
        self._limit = settings.STEPSTREAM["WS_OUTBOX_LIMIT"]
        rate = settings.STEPSTREAM["WS_RATE_PER_SECOND"]
        self._rate = float(rate)
        self._burst = float(max(settings.STEPSTREAM["WS_RATE_BURST"], rate))
        self._tokens = self._burst
        self._stamp = time.monotonic()

    def allow_request(self) -> bool:
        """A token bucket: the sustained rate with a burst allowance."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def push(self, message: Message | str) -> None:
        if self.closed:
            return
        if not isinstance(message, Message):
            message = Message(message)
        if not self._outbox and self._transport.write(message):
            return
        size = sys.getsizeof(message.text)
        if not isinstance(self._outbox, deque):  # _EMPTY
            self._outbox = deque()
        if len(self._outbox) >= self._limit or self._held() + size > self._max_bytes:
            logger.info(
                "closing a connection that fell behind: %d messages, %d bytes queued",
                len(self._outbox),
                self._held(),
            )
            self.close(CLOSE_TOO_SLOW, SLOW_REASON)
            return
        self._bytes += size
        self._outbox.append(message)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    def _held(self) -> int:
        """Bytes held for this client: its outbox and what its transport still buffers."""
        return self._bytes + self._transport.buffered()

    async def room(self) -> None:
        """Waits until the outbox is at most half full: backlogs are sent at the client's pace."""
        # the outbox only: its writer wakes this as it drains (the transport has no such signal)
        while (
            len(self._outbox) > self._limit // 2 or self._bytes > self._max_bytes // 2
        ) and not self.closed:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()

    async def _write(self) -> None:
        """Sends the outbox through ASGI, then ends: the next push may go direct again."""
        send, outbox, half = self._send, self._outbox, self._limit // 2
        assert isinstance(outbox, deque)  # push made it before starting this writer
        try:
            while outbox and not self.closed:
                await send({"type": "websocket.send", "text": outbox[0].text})
                self._bytes -= sys.getsizeof(outbox.popleft().text)
                if self._room is not None and len(outbox) <= half:
                    self._room.set()
        except asyncio.CancelledError:
            pass
        except Exception:  # the client went away mid-send
            self.closed = True
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None
                if not outbox and self._outbox is outbox:
                    self._outbox = _EMPTY
                    self._bytes = 0
            if self._room is not None:
                self._room.set()

    def close(self, code: int, reason: str = "") -> None:
        """Closes with `code` after nothing more (the outbox is dropped).

        Under uvicorn with our protocol the close frame is written at once, even
        to a client that does not read (ASGI `send` would wait for it forever).
        """
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self._outbox = _EMPTY
        self._bytes = 0
        self.detach()
        if self._room is not None:
            self._room.set()
        writer = self._writer
        if writer is not None:
            writer.cancel()
        if self._transport.close_now(code, reason):
            self._writer = writer
            return
        self._writer = asyncio.get_running_loop().create_task(
            self._send_close(writer, code, reason)
        )

    async def _send_close(self, writer: asyncio.Task[None] | None, code: int, reason: str) -> None:
        if writer is not None:
            await asyncio.gather(writer, return_exceptions=True)
        with contextlib.suppress(Exception):  # the client may be gone already
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def end_subscription(
        self, person_key: str, entity: str, status: int, errors: Iterable[str]
    ) -> None:
        """Ends one subscription and tells the client why (`subscription_ended`)."""
        sub = self.subscriptions.pop((person_key, entity), None)
        if sub is None:
            return
        self.hub.unsubscribe(sub)
        self.push(sub.end_message(person_key, status, list(errors)))

    def end(self, sub: Subscription, status: int, errors: Iterable[str]) -> None:
        """Ends `sub` (one of this connection's subscriptions), whatever its key."""
        for (person_key, entity), found in list(self.subscriptions.items()):
            if found is sub:
                self.end_subscription(person_key, entity, status, errors)
                return
        self.hub.unsubscribe(sub)

    def detach(self) -> None:
        for sub in self.subscriptions.values():
            self.hub.unsubscribe(sub)
        self.subscriptions.clear()

    async def finish(self) -> None:
        """The socket is gone: stop writing and leave every channel."""
        self.closed = True
        self.detach()
        writer = self._writer
        if writer is not None:
            if self.close_code is None:
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
