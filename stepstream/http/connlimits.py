"""uvicorn's httptools protocol with the limits it lacks: header size, request time, pending count.

uvicorn (0.54, with httptools) buffers a request line and headers of any
size (a 200 MiB header block was held whole), waits forever for a new
connection's first byte or a half-sent request, and accepts connections
until the process runs out of file descriptors. This subclass adds, per
server process:

- **Header bytes** (`STEPSTREAM_HTTP_MAX_HEADER_BYTES`, 64 KiB): a request
  whose request line and headers are not complete within that many bytes is
  answered 414 (the request line alone is that long) or 431 and closed,
  however the bytes are split into reads. The parser is fed at most what the
  head still has room for at a time (a read of 256 KiB holding a whole
  request with a 127 KiB header was once parsed whole, and served, before
  its size was looked at), so no head over the limit reaches the
  application, the WebSocket upgrade request included. A head that begins
  in the same feed as the end of the request before it (pipelining) is
  counted from a lower bound of the bytes before it: never under, at worst
  over by a byte and the optional whitespace of each earlier request in that
  feed (so a pipelined head a few bytes under the limit may be refused).
  httptools cannot parse a URL over 65,535 bytes; with a larger limit, such
  a request is answered 414 too (it was a 400).
- **Request time** (`STEPSTREAM_HTTP_REQUEST_TIMEOUT`, 30 s): from the moment
  the server waits for a request (the connection opened, or the previous
  response was sent) until the request, headers and body, is fully read. A
  request not done by then is dropped, however slowly it trickles: 408 when
  its headers were not complete, else the connection is closed and the
  application sees a disconnect (stepstream.http.bodylimit reads the body on the
  event loop, so no REST thread ever waits for it). Time spent serving a
  request does not count; a client that stops reading a response for that
  long is dropped too.
- **Pending connections** (`STEPSTREAM_HTTP_MAX_PENDING`, 10,000, and at most
  half the process's open-file limit) and **pending bytes**
  (`STEPSTREAM_HTTP_MAX_PENDING_BYTES`, 64 MiB): connections the server is
  waiting on (idle before a request, or with a request partly read), and the
  bytes read of their unfinished requests. Beyond either, the connection
  that has been waiting longest is dropped. Silent or trickling connections
  thus cannot use up file descriptors or memory, and a new client (a health
  check) always gets in, at the cost of the oldest waiter. The count is well
  above the listen backlog (2048): after a restart the loop accepts a whole
  backlog of reconnecting browsers before it reads their requests, and at
  1,000 it dropped most of them unread (each then backed off for seconds).
  A waiting connection costs about 4 KiB, so 10,000 cost about 40 MiB.

The subclass hooks the protocol's documented callbacks; uvicorn is pinned
(pyproject.toml) because they are not a public API.
"""

import asyncio
import logging
import resource
import time

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from stepstream.http.error_bodies import error_body

logger = logging.getLogger("stepstream.http")

# descriptors kept back for the database, log files, Redis and the listener
_RESERVED_FDS = 64

# the longest URL httptools.parse_url takes (its offsets are 16-bit)
_MAX_URL_BYTES = 65535


class _UrlTooLong(Exception):
    """Raised from a parser callback to stop the parser: answered 414."""


class Limits:
    header_bytes = 64 * 1024
    request_timeout = 30.0
    max_pending = 10000
    max_pending_bytes = 64 * 1024 * 1024


class _Pending:
    """The connections this process is waiting on, oldest first, and their unread bytes."""

    def __init__(self):
        self.connections: dict[StepstreamHttpProtocol, None] = {}
        self.bytes = 0
        self.evicted, self.logged_at = 0, float("-inf")

    def add(self, protocol) -> None:
        self.connections[protocol] = None
        while len(self.connections) > Limits.max_pending:
            self.evict("too many connections waiting")

    def remove(self, protocol) -> None:
        self.connections.pop(protocol, None)
        self.bytes -= protocol._pending_bytes
        protocol._pending_bytes = 0

    def count(self, protocol, size: int) -> None:
        protocol._pending_bytes += size
        self.bytes += size
        while self.bytes > Limits.max_pending_bytes and self.connections:
            self.evict("too many bytes of unfinished requests")

    def evict(self, why: str) -> None:
        next(iter(self.connections))._drop()
        self.evicted += 1
        now = time.monotonic()
        if now - self.logged_at >= 10:  # one line per 10 s, however hard the flood
            logger.warning("dropped %d waiting HTTP connections: %s", self.evicted, why)
            self.evicted, self.logged_at = 0, now


pending = _Pending()


def configure(header_bytes: int, request_timeout: float, max_pending: int, max_pending_bytes: int):
    """Sets the limits; returns the pending-connection cap after the open-file limit.

    Also raises the process's soft open-file limit to its hard limit, as most
    servers do, so sockets are not refused at the default 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    Limits.header_bytes = header_bytes
    Limits.request_timeout = request_timeout
    Limits.max_pending = max(8, min(max_pending, (soft - _RESERVED_FDS) // 2))
    Limits.max_pending_bytes = max_pending_bytes
    return Limits.max_pending


def _response(status: int, code: str, sentence: str) -> bytes:
    body = error_body(sentence, code)
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class StepstreamHttpProtocol(HttpToolsProtocol):
    """The limits above on uvicorn's HTTP/1.1 protocol (passed as `http=` to uvicorn)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._pending_bytes = 0
        self._phase = "waiting"  # the parser's: waiting, head (line and headers), body
        self._head_bytes = 0  # bytes of the unfinished head, counted before they are parsed
        # within one feed of the parser (see _feed): a lower bound of the bytes parsed,
        # whether a request completed, where the next one began, and what was counted
        # of the current head before the feed (None: the head was complete)
        self._parsed, self._completed_here, self._begun_at = 0, False, 0
        self._counted_before: int | None = 0
        self._running = None  # the cycle whose application runs; self.cycle is the newest

    # -- waiting: a deadline and a place among the pending connections

    def _wait(self) -> None:
        if self._deadline is None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(Limits.request_timeout, self._timed_out)
            pending.add(self)

    def _settle(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        pending.remove(self)

    def _answer_and_close(self, status: int, code: str, sentence: str) -> None:
        """Answers, unless a response is under way (then only closes)."""
        self._settle()
        for cycle in (self._running, self.cycle):
            if cycle is not None and cycle.response_started and not cycle.response_complete:
                self._drop()
                return
        self._disconnect_cycles()  # the application sees http.disconnect, sends nothing
        self.transport.write(_response(status, code, sentence))
        self.transport.close()

    def _drop(self) -> None:
        self._settle()
        self._disconnect_cycles()
        self.transport.abort()

    def _disconnect_cycles(self) -> None:
        """Tells every unfinished cycle the client is gone, the running one included.

        uvicorn tells only the newest (`self.cycle`); with pipelined requests the
        running one kept writing to the closed transport, uvloop raised, a2wsgi's
        sender task died with it, and the REST thread feeding that sender waited
        forever: a client that pipelined requests and left held a thread for good.
        """
        for cycle in (self._running, self.cycle):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # its sends return at once; receive: http.disconnect
                cycle.message_event.set()

    def _timed_out(self) -> None:
        self._deadline = None
        limit = Limits.request_timeout
        self._answer_and_close(
            408, "timeout", f"The request was not complete within {limit:g} seconds."
        )

    # -- uvicorn's protocol callbacks

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._wait()

    def connection_lost(self, exc) -> None:
        self._settle()
        self._disconnect_cycles()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            pending.count(self, len(data))
            if self.transport.is_closing():
                return
        self._unset_keepalive_if_required()
        view, start, limit = memoryview(data), 0, Limits.header_bytes
        while start < len(view):
            # A body's feed is capped too: a request that begins and ends inside one
            # feed is then within the limit, whatever follows it.
            room = limit if self._phase == "body" else limit - self._head_bytes
            if room <= 0:
                self._too_large()
                return
            piece = view[start : start + room]
            start += len(piece)
            if not self._feed(piece):
                return

    def _feed(self, piece: memoryview) -> bool:
        """Parses `piece` (uvicorn's data_received, one feed); False when parsing stops."""
        self._parsed, self._completed_here, self._begun_at = 0, False, 0
        self._counted_before = None if self._phase == "body" else self._head_bytes
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _UrlTooLong):
                self._answer_and_close(
                    414,
                    "uri_too_long",
                    f"The request line is longer than the limit of {_MAX_URL_BYTES} bytes.",
                )
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return False
        except httptools.HttpParserUpgrade:
            # what follows the upgrade request in this read is dropped, as uvicorn does
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        if self.transport.is_closing():
            return False
        if self._phase != "body":
            if not self._completed_here:
                self._head_bytes += len(piece)  # this head's, or CRLFs before it
            elif self._phase == "head":  # a pipelined request began after one ended here
                self._head_bytes = len(piece) - self._begun_at
            else:
                self._head_bytes = 0  # one ended here; at most CRLFs since
        return True

    def _head_floor(self) -> int:
        """Bytes the current request's head surely took in this feed (once complete).

        The head took at least its URL and header bytes as the parser passed them on,
        ":" and CRLF per header, the request line's frame (method, space, CRLF, and
        " ICE/1.0", the shortest version, unless it had none) and the final CRLF (not
        the optional whitespace before a header value); of those, at most what was
        counted before this feed was in an earlier one.
        """
        if self._counted_before is None:  # the head was complete before this feed
            return 0
        floor = len(self.url) + len(self.scope["method"]) + 5
        if self.scope["http_version"] != "0.9":
            floor += 8
        for name, value in self.headers:
            floor += len(name) + len(value) + 3
        return max(0, floor - self._counted_before)

    def _too_large(self) -> None:
        limit = Limits.header_bytes
        if self._phase == "head" and not self.headers and len(self.url) + 16 >= self._head_bytes:
            self._answer_and_close(
                414, "uri_too_long", f"The request line is longer than the limit of {limit} bytes."
            )
        else:
            self._answer_and_close(
                431,
                "headers_too_large",
                f"The request line and headers are larger than the limit of {limit} bytes.",
            )

    def _start_asgi_task(self, cycle, app) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def on_message_begin(self) -> None:
        if self._completed_here:  # pipelined: the previous request ended in this feed
            self._parsed += self._head_floor()
            self._begun_at = self._parsed
        super().on_message_begin()
        self._phase = "head"
        if self._completed_here:
            self._counted_before = 0  # this head began in this feed

    def on_headers_complete(self) -> None:
        self._phase = "body"
        if len(self.url) > _MAX_URL_BYTES:  # stops the parser; _feed answers 414
            raise _UrlTooLong()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._parsed += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._completed_here = True
        self._phase, self._head_bytes = "waiting", 0
        self._settle()  # the request is whole: the application's turn, not the client's
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._wait()  # for the next request (uvicorn's keep-alive timeout is shorter)

    def handle_websocket_upgrade(self) -> None:
        self._settle()  # a WebSocket now; its own limits apply (stepstream.ws)
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        self._settle()
        self.transport.write(_response(400, "invalid", f"{msg.rstrip('.')}: malformed HTTP."))
        self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._stall = self.loop.call_later(Limits.request_timeout, self._drop)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
