"""One client socket: a bounded outbox drained by a writer task.

Nothing waits on a slow client: `push` never blocks. A client whose outbox
overflows is closed with 4408 and resumes from the log with `since_seq`, so a
slow reader loses nothing and slows no one else.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque

from django.conf import settings

logger = logging.getLogger("stepstream.ws")

CLOSE_TOO_SLOW = 4408


class Connection:
    def __init__(self, send, environment, hub, key_id: int | None = None):
        self._send = send
        self.environment = environment
        self.key_id = key_id  # the ApiKey row it opened with: revoking it closes this (4403)
        self.hub = hub
        self.subscriptions: dict[tuple[str, str], object] = {}
        self.closed = False
        self.close_code: int | None = None
        self._outbox: deque[str] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._limit = settings.STEPSTREAM["WS_OUTBOX_LIMIT"]
        self._writer = asyncio.get_running_loop().create_task(self._write())
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

    def push(self, text: str) -> None:
        if self.closed:
            return
        if len(self._outbox) >= self._limit:
            logger.info("closing a connection that fell %d messages behind", self._limit)
            self.close(CLOSE_TOO_SLOW)
            return
        self._outbox.append(text)
        self._wake.set()

    async def room(self) -> None:
        """Waits until the outbox is at most half full: backlogs are sent at the client's pace."""
        while len(self._outbox) > self._limit // 2 and not self.closed:
            self._room.clear()
            await self._room.wait()

    async def _write(self) -> None:
        send, outbox = self._send, self._outbox
        try:
            while not self.closed:
                await self._wake.wait()
                self._wake.clear()
                while outbox and not self.closed:
                    await send({"type": "websocket.send", "text": outbox.popleft()})
                    if len(outbox) <= self._limit // 2:
                        self._room.set()
        except asyncio.CancelledError:
            pass
        except Exception:  # the client went away mid-send
            self.closed = True
        finally:
            if self.close_code is not None:
                with contextlib.suppress(Exception):  # the client may be gone already
                    await send({"type": "websocket.close", "code": self.close_code})

    def close(self, code: int) -> None:
        """Closes with `code` after nothing more (the outbox is dropped)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self._outbox.clear()
        self.detach()
        self._wake.set()
        self._room.set()
        self._writer.cancel()

    def detach(self) -> None:
        for sub in self.subscriptions.values():
            self.hub.unsubscribe(sub)
        self.subscriptions.clear()

    async def finish(self) -> None:
        """The socket is gone: stop writing and leave every channel."""
        self.closed = True
        self.detach()
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
