"""The client side of the harness: lean WebSocket and HTTP/1.1 clients on asyncio.

The same code drives Stepstream and the reference server, so whatever the
client costs, it costs both the same. It is deliberately thin (a few
microseconds per received frame): on a 2-core machine the clients share the
CPU with the server, and a heavyweight client would measure itself.

* `WsClient`: handshake by hand, frames parsed straight from the bytes
  each read returns, client frames masked with an all-zero key (valid per RFC 6455 and
  free to apply). Events (`{"event": ...`) go to `sink(client, seq, data, start, end,
  now)` with the receipt time (`time.perf_counter()` at the read that delivered them); responses
  resolve the future of their `request_id`.
* `HttpClient`: one keep-alive connection, one request at a time.

Only 127.0.0.1 is ever dialled by the harness.
"""

import asyncio
import base64
import os
import resource
import struct
import time

import orjson

HOST = "127.0.0.1"
ZERO_MASK = b"\x00\x00\x00\x00"


def raise_open_file_limit() -> int:
    """Raises this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.

    Servers started afterwards inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + ZERO_MASK + payload  # a zero key leaves the payload as it is


class WsClient(asyncio.Protocol):
    """One WebSocket connection. `tag` is free for the scenario (e.g. the person it follows)."""

    def __init__(self, path: str, port: int, sink=None, tag=None):
        self.path = path
        self.port = port
        self.sink = sink
        self.tag = tag
        self.transport = None
        self.buffer = bytearray()
        self.upgraded = False
        self.pending: dict = {}
        self.rid = 0
        self.received = 0  # events
        self.last_seq = None
        self.gaps = 0
        self.duplicates = 0
        self.close_code = None
        self.closed = False
        loop = asyncio.get_running_loop()
        self.handshake = loop.create_future()

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        nonce = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc):
        self.closed = True
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("closed during the handshake"))
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"closed ({self.close_code})"))
        self.pending.clear()

    def data_received(self, data):
        now = time.perf_counter()
        if self.buffer:  # rare: the start of a frame was left over from the last read
            self.buffer += data
            data = bytes(self.buffer)
            self.buffer.clear()
        if not self.upgraded:
            data = self._upgrade(data)
            if data is None:
                return
        pos, size = 0, len(data)
        while size - pos >= 2:
            length = data[pos + 1] & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if size - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            else:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            opcode = data[pos] & 0x0F
            pos = end
            if opcode == 1 or opcode == 2:
                if data.startswith(b'{"event"', start):
                    # an event: only its seq is read here (a plain integer field)
                    i = data.find(b'"seq":', start, end) + 6
                    seq = int(data[i : data.find(b",", i, end)])
                    self.received += 1
                    last = self.last_seq
                    if last is not None and seq != last + 1:
                        if seq <= last:
                            self.duplicates += 1
                        else:
                            self.gaps += 1
                    self.last_seq = seq
                    if self.sink is not None:
                        self.sink(self, seq, data, start, end, now)
                else:
                    self._response(data[start:end], now)
            elif opcode == 9:  # ping: answer at once
                self.transport.write(_frame(0xA, data[start:end]))
            elif opcode == 8:
                payload = data[start:end]
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.transport.close()
                return
        if pos < size:
            self.buffer += data[pos:]

    def _upgrade(self, data: bytes) -> bytes | None:
        """Reads the handshake's answer; returns what follows it, or None."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self.buffer += data
            return None
        head = data[:end]
        if self.handshake.done():  # the caller gave up waiting (timed out)
            self.transport.close()
            return None
        if not head.startswith(b"HTTP/1.1 101"):
            self.handshake.set_exception(
                ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1"))
            )
            self.transport.close()
            return None
        self.upgraded = True
        self.handshake.set_result(True)
        return data[end + 4 :]

    # -- messages ----------------------------------------------------------

    def _response(self, payload: bytes, now: float) -> None:
        message = orjson.loads(payload)
        future = self.pending.pop(message.get("request_id"), None)
        if future is not None and not future.done():
            future.set_result((message, now))

    def send(self, action: str, data: dict | None = None):
        """Sends a request; returns (request_id, future of (response, receipt time))."""
        self.rid += 1
        rid = self.rid
        future = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        message = {"action": action, "request_id": rid, "data": data or {}}
        self.transport.write(_frame(1, orjson.dumps(message)))
        return rid, future

    async def request(self, action: str, data: dict | None = None, timeout: float = 30.0):
        _, future = self.send(action, data)
        message, _ = await asyncio.wait_for(future, timeout)
        return message

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(_frame(8, struct.pack("!H", 1000)))
            finally:
                self.transport.close()


async def connect(port: int, key: str, sink=None, tag=None, timeout: float = 30.0) -> WsClient:
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: WsClient(f"/ws?key={key}", port, sink, tag), HOST, port),
        timeout,
    )
    await asyncio.wait_for(client.handshake, timeout)
    return client


async def connect_many(
    count: int, port: int, key: str, setup=None, sink=None, tag_of=None, concurrency: int = 64
) -> list[WsClient]:
    """Opens `count` connections, `concurrency` at a time; `setup(client)` runs on each."""
    clients: list[WsClient | None] = [None] * count
    next_index = iter(range(count))

    async def worker():
        for i in next_index:
            client = await connect(port, key, sink, tag_of(i) if tag_of else None)
            clients[i] = client
            if setup is not None:
                await setup(client)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, count))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for w in workers:
            w.cancel()
        for c in clients:
            if c is not None:
                c.close()
        raise
    return clients  # type: ignore[return-value]


class HttpClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self, port: int, headers: dict[str, str]):
        self.port = port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.transport = None
        self.buffer = bytearray()
        self.future = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.future is not None and not self.future.done():
            self.future.set_exception(ConnectionError("HTTP connection closed"))

    def data_received(self, data):
        self.buffer += data
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        start = end + 4
        if "content-length" in fields:
            stop = start + int(fields["content-length"])
            if len(buf) < stop:
                return
            body = bytes(buf[start:stop])
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            body, stop = self._chunked(buf, start)
            if body is None:
                return
        else:
            raise ValueError("an HTTP response with neither length nor chunks")
        del buf[:stop]
        if self.future is not None and not self.future.done():
            self.future.set_result((status, body))

    @staticmethod
    def _chunked(buf, pos):
        parts = []
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None, 0
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            data_start = line_end + 2
            if len(buf) < data_start + size + 2:
                return None, 0
            if size == 0:
                return b"".join(parts), data_start + 2
            parts.append(bytes(buf[data_start : data_start + size]))
            pos = data_start + size + 2

    async def request(self, method: str, path: str, body=None, timeout: float = 30.0):
        payload = orjson.dumps(body) if body is not None else b""
        self.future = asyncio.get_running_loop().create_future()
        self.transport.write(
            (
                f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n{self.extra}"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            ).encode()
            + payload
        )
        return await asyncio.wait_for(self.future, timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def http_connect(port: int, headers: dict[str, str]) -> HttpClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: HttpClient(port, headers), HOST, port)
    return client
