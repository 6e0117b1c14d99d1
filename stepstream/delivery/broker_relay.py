"""`serve --workers N` without Redis: the parent process relays records between its workers.

The parent listens on a Unix socket in a private directory (0700) and passes
its path to each worker in STEPSTREAM_RELAY_SOCKET. Each worker's
`RelayBroker` keeps one connection to it, writes a frame per committed
transaction, and the parent's `Relay` copies the frame to every other worker.
The parent never decodes a frame: it is a byte pump, one per machine.

Like Redis pub/sub it is only the fast path (stepstream/delivery/broker.py):
a frame may be dropped (a worker not reading, a restart), and then the hub's
log reconciliation delivers what it carried. Everything held is bounded: a
frame is at most MAX_FRAME bytes, and the parent buffers at most
BUFFER_LIMIT bytes for a worker; beyond that it drops frames for it and
tells it so with a GAP frame once it reads again (its hub then reads the log).

A frame: 4-byte big-endian payload length, one kind byte, the payload.
"""

import asyncio
import logging
import time
from collections.abc import Sequence

from stepstream.delivery.broker import Broker, OnGap, OnRecords, decode, encode
from stepstream.engine.log import Record

log = logging.getLogger("stepstream.delivery")

RECORDS = b"R"  # payload: broker.encode(records)
GAP = b"G"  # no payload: frames for this worker were dropped, read the log
MAX_FRAME = 32 * 1024 * 1024
BUFFER_LIMIT = 8 * 1024 * 1024
ENV = "STEPSTREAM_RELAY_SOCKET"


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(4, "big") + kind + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    length = int.from_bytes(header[:4], "big")
    if length > MAX_FRAME:
        raise ConnectionError(f"relay frame of {length} bytes, more than {MAX_FRAME}")
    return header[4:5], await reader.readexactly(length)


# -- in each worker -----------------------------------------------------------


class RelayBroker(Broker):
    """Between `serve --workers` processes without Redis, through the parent.

    It carries no key changes: the command line and other servers are not on
    the relay, so remembered keys keep their per-request re-check.
    """

    cross_process = True

    def __init__(self, path: str):
        self.path = path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.published = 0
        self.skipped = 0

    @property
    def healthy(self) -> bool:
        writer = self._writer
        return writer is not None and not writer.is_closing()

    def publish(self, records: Sequence[Record]) -> None:
        """From any thread: the frame is written by the event loop, never waiting here."""
        loop = self._loop
        if self._writer is None or loop is None:
            self.skipped += len(records)
            return
        payload = encode(records)
        if len(payload) > MAX_FRAME:
            self.skipped += len(records)  # the log delivers it
            return
        try:
            loop.call_soon_threadsafe(self._write, frame(RECORDS, payload), len(records))
        except RuntimeError:  # the loop closed: the server is stopping
            self.skipped += len(records)

    def _write(self, data: bytes, count: int) -> None:
        writer = self._writer
        if (
            writer is None
            or writer.is_closing()
            or writer.transport.get_write_buffer_size() > BUFFER_LIMIT
        ):
            self.skipped += count
            return
        writer.write(data)
        self.published += count

    async def listen(self, on_records: OnRecords, on_gap: OnGap) -> None:
        backoff = 0.05
        while True:
            writer = None
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
                self._loop = asyncio.get_running_loop()
                self._writer = writer
                on_gap()  # anything committed while not connected is read from the log
                backoff = 0.05
                while True:
                    kind, payload = await read_frame(reader)
                    if kind == RECORDS:
                        on_records(decode(payload))
                    elif kind == GAP:
                        on_gap()
            except (OSError, asyncio.IncompleteReadError) as e:
                if writer is not None:
                    log.warning("relay connection lost, following the log meanwhile: %s", e)
            finally:
                self._writer = None
                if writer is not None:
                    writer.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


# -- in the parent ------------------------------------------------------------


class _Peer:
    __slots__ = ("writer", "dropped")

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.dropped = False

    def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > BUFFER_LIMIT:
            self.dropped = True
            return
        if self.dropped:
            self.dropped = False
            self.writer.write(frame(GAP))
        self.writer.write(data)


class Relay:
    """Copies each frame a worker sends to every other worker (one loop, no decoding)."""

    def __init__(self) -> None:
        self.peers: set[_Peer] = set()
        self.frames = 0
        self.started = time.monotonic()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _Peer(writer)
        self.peers.add(peer)
        try:
            while True:
                kind, payload = await read_frame(reader)
                data = frame(kind, payload)
                self.frames += 1
                for other in self.peers:
                    if other is not peer:
                        other.send(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.peers.discard(peer)
            writer.close()
