"""Hostile HTTP against a real `stepstream serve`: oversized and endless request heads,
slow bodies, silent connections, identifiers in paths, forged log lines, error bodies.

Each test is one class of hostile input from issue 10 (items 3, 5, 10, 13), and names
what a user would notice: a status, a dropped connection, a health check that still
answers, a server whose resident memory stays bounded. docs/security.md ("Tested
against") sums them up.
"""

import asyncio
import contextlib
import itertools
import resource
import socket
import threading
import time
import uuid
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepstream.testing.flows import LINEAR_FLOW
from stepstream.testing.servers import Server
from tests.waiting import wait_until

MiB = 1024 * 1024

# --- raw sockets ------------------------------------------------------------------------------


def dial(server, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    s.settimeout(timeout)
    return s


def send_until_refused(s: socket.socket, head: bytes, filler: bytes, total: int) -> int:
    """Sends `head`, then `filler` up to `total` bytes or until the server stops reading."""
    sent = 0
    try:
        s.sendall(head)
        while sent < total:
            s.sendall(filler)
            sent += len(filler)
    except OSError:
        pass
    return sent


def read_answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes (b"" when it closes without a word)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def server_queues(server, s: socket.socket) -> tuple[int, int] | None:
    """The server's end of a loopback connection, as the kernel sees it (Linux /proc):
    (bytes it has written that the client has not read, bytes it has not read yet)."""
    local = f"0100007F:{server.port:04X}"
    remote = f"0100007F:{s.getsockname()[1]:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


def json_error(answer: bytes) -> dict:
    import orjson

    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer[:300]
    parsed = orjson.loads(body)
    assert isinstance(parsed["errors"], list) and parsed["errors"] and parsed["code"], parsed
    return parsed


def health_ok(server, timeout: float = 5.0) -> bool:
    try:
        return httpx.get(server.url + "/api/v1/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def rest_thread_ok(server, timeout: float = 5.0) -> bool:
    """A request Django answers on a REST thread (/health is answered on the event loop)."""
    try:
        return httpx.get(server.url + "/api/v1/ready", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def open_fds(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))


# --- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(request, tmp_path_factory):
    """A server with a 2 s request timeout and two REST threads."""
    srv = Server(
        tmp_path_factory.mktemp("strict"),
        STEPSTREAM_HTTP_REQUEST_TIMEOUT=2,
        STEPSTREAM_HTTP_THREADS=2,
    )
    request.addfinalizer(srv.stop)
    srv.start()
    keys = srv.init_project("strict")["environments"][0]
    return srv, keys


# --- item 3: request line and header size -----------------------------------------------------

HEAD = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Filler: "


@pytest.mark.slow
def test_a_huge_header_block_is_answered_431(strict):
    srv, _ = strict
    s = dial(srv)
    send_until_refused(s, HEAD, b"a" * 8192, 4 * MiB)
    answer = read_answer(s)
    assert status_of(answer) == 431, answer[:300]
    assert "65536 bytes" in json_error(answer)["errors"][0]
    assert health_ok(srv)


def test_many_header_lines_are_counted_together(strict):
    srv, _ = strict
    s = dial(srv)
    lines = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(2000))  # ~220 KiB
    send_until_refused(s, b"GET /api/v1/health HTTP/1.1\r\n", lines, len(lines))
    assert status_of(read_answer(s)) == 431


def test_a_huge_request_line_is_answered_414(strict):
    srv, _ = strict
    s = dial(srv)
    send_until_refused(s, b"GET /api/v1/people/", b"a" * 8192, 1 * MiB)
    answer = read_answer(s)
    assert status_of(answer) == 414, answer[:300]
    assert json_error(answer)["code"] == "uri_too_long"


def test_a_huge_websocket_upgrade_is_answered_431(strict):
    srv, keys = strict
    s = dial(srv)
    head = (
        f"GET /ws?key={keys['publishable_key']} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Filler: "
    ).encode()
    send_until_refused(s, head, b"a" * 8192, 4 * MiB)
    assert status_of(read_answer(s)) == 431


def test_headers_just_under_the_limit_are_served(strict):
    srv, _ = strict
    response = httpx.get(srv.url + "/api/v1/health", headers={"X-Filler": "a" * 60_000}, timeout=10)
    assert response.status_code == 200


# Issue 24: a whole request in one read was parsed, and served, before its size was counted;
# a request line of 64-128 KiB then failed httptools' URL parser (400, not 414).

LIMIT = 64 * 1024


def head_of(size: int, start: bytes = HEAD, end: bytes = b"\r\nConnection: close\r\n\r\n") -> bytes:
    """`start`, filler and `end`: a request head of exactly `size` bytes."""
    return start + b"a" * (size - len(start) - len(end)) + end


def sent_at_once(srv, request: bytes) -> bytes:
    """The answer to `request` sent with one sendall (the server may read it whole)."""
    s = dial(srv)
    try:
        with contextlib.suppress(OSError):
            s.sendall(request)
        return read_answer(s)
    finally:
        s.close()


@pytest.mark.parametrize("size", [65 * 1024, 127 * 1024, 250 * 1024])
def test_a_huge_header_sent_at_once_is_answered_431_or_dropped(strict, size):
    srv, _ = strict
    answer = sent_at_once(srv, head_of(size))
    assert answer == b"" or status_of(answer) == 431, answer[:300]
    if answer:
        assert json_error(answer)["code"] == "headers_too_large"
    assert health_ok(srv)


def test_a_head_of_exactly_the_limit_sent_at_once_is_served(strict):
    srv, _ = strict
    assert status_of(sent_at_once(srv, head_of(LIMIT))) == 200
    assert status_of(sent_at_once(srv, head_of(LIMIT + 1))) == 431


@pytest.mark.parametrize("size", [70_000, 100_000, 120_000])
def test_a_huge_request_line_sent_at_once_is_answered_414(strict, size):
    srv, _ = strict
    line = b"GET /api/v1/health?q=" + b"a" * size + b" HTTP/1.1\r\n"
    answer = sent_at_once(srv, line + b"Host: x\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 414, answer[:300]
    assert json_error(answer)["code"] == "uri_too_long"


@pytest.mark.parametrize("size", [65 * 1024, 127 * 1024])
def test_a_huge_websocket_upgrade_sent_at_once_is_answered_431_or_dropped(strict, size):
    srv, keys = strict
    start = (
        f"GET /ws?key={keys['publishable_key']} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Filler: "
    ).encode()
    answer = sent_at_once(srv, head_of(size, start, b"\r\n\r\n"))
    assert answer == b"" or status_of(answer) == 431, answer[:300]


# The same in-process: the protocol fed one read, or any split of it, exactly as uvloop would.


class _Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.written, self.closing = bytearray(), False

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def write(self, data):
        self.written += data

    def close(self):
        self.closing = True

    abort = close

    def is_closing(self):
        return self.closing

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def feed_protocol(reads: list[bytes]) -> tuple[list[str], bytes]:
    """The paths whose heads the protocol let through, and what it wrote, for these reads."""
    import uvicorn
    from uvicorn.server import ServerState

    from stepstream.http import connlimits

    let_through: list[str] = []

    class Recording(connlimits.StepstreamHttpProtocol):
        def on_headers_complete(self):
            super().on_headers_complete()
            let_through.append(self.scope["path"])

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run():
        config = uvicorn.Config(app, http=Recording, lifespan="off", ws="none", log_config=None)
        config.load()
        proto = Recording(config=config, server_state=ServerState(), app_state={})
        transport = _Transport()
        proto.connection_made(transport)
        for data in reads:
            if transport.closing:
                break
            proto.data_received(data)
        proto.connection_lost(None)
        return bytes(transport.written)

    written = asyncio.run(run())
    return let_through, written


def request_of(path: str, head_size: int, body: bytes = b"") -> bytes:
    start = (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nX-F: " % len(body)
    )
    return head_of(head_size, start, b"\r\n\r\n") + body


@pytest.mark.parametrize("size", [LIMIT + 1, 65 * 1024, 127 * 1024, 250 * 1024])
def test_a_head_over_the_limit_in_one_read_is_never_let_through(size):
    let_through, written = feed_protocol([request_of("/a", size)])
    assert let_through == []
    assert status_of(written) == 431, written[:200]


def test_a_head_of_exactly_the_limit_in_one_read_is_let_through():
    assert feed_protocol([request_of("/a", LIMIT)])[0] == ["/a"]


def test_a_request_line_over_what_httptools_parses_is_414_with_a_larger_limit(monkeypatch):
    from stepstream.http import connlimits

    monkeypatch.setattr(connlimits.Limits, "header_bytes", 256 * 1024)
    let_through, written = feed_protocol(
        [b"GET /?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"]
    )
    assert let_through == []
    assert status_of(written) == 414, written[:200]
    assert feed_protocol([b"GET /?" + b"a" * 65_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"])[0] == ["/"]


@settings(max_examples=150, deadline=None)
@given(
    requests=st.lists(
        st.tuples(
            st.one_of(
                st.integers(100, LIMIT - 200),
                st.sampled_from([LIMIT - 100, LIMIT + 1, LIMIT + 100]),
                st.integers(LIMIT + 1, 3 * LIMIT),
            ),
            st.binary(max_size=3 * LIMIT),
        ),
        min_size=1,
        max_size=4,
    ),
    cuts=st.lists(st.floats(0, 1), max_size=6),
)
def test_no_head_over_the_limit_is_let_through_however_the_reads_split(requests, cuts):
    """Requests (each with a body) pipelined in one stream, split into reads anywhere: every
    head up to the first one over the limit is let through, that one and later ones never.
    (A pipelined head is counted at most a few bytes over: 100 is slack enough here.)"""
    stream = b"".join(request_of(f"/{i}", size, body) for i, (size, body) in enumerate(requests))
    points = sorted({0, len(stream), *(int(c * len(stream)) for c in cuts)})
    let_through, written = feed_protocol([stream[a:b] for a, b in itertools.pairwise(points)])
    over = next((i for i, (size, _) in enumerate(requests) if size > LIMIT), len(requests))
    assert let_through == [f"/{i}" for i in range(over)]
    if over < len(requests):
        assert b" 431 " in written, written[-300:]


# --- item 3: time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "what,opening",
    [
        ("silent", b""),
        ("half a request line", b"GET /api/v1/hea"),
        ("headers never ended", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"),
        ("CRLFs between requests", b"\r\n"),
    ],
)
@pytest.mark.slow
def test_an_unfinished_request_head_is_dropped_with_408(strict, what, opening):
    srv, _ = strict
    s = dial(srv)
    started = time.monotonic()
    if opening:
        s.sendall(opening)
    answer = read_answer(s)
    elapsed = time.monotonic() - started
    assert status_of(answer) == 408, (what, answer[:300])
    assert json_error(answer)["code"] == "timeout"
    assert 1.5 < elapsed < 6, elapsed


@pytest.mark.slow
def test_a_trickled_head_is_dropped_however_slowly_it_comes(strict):
    """One byte every 100 ms keeps every read timeout happy; the deadline is for the whole."""
    srv, _ = strict
    s = dial(srv)
    started = time.monotonic()
    request = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200
    try:
        for byte in request:
            s.send(bytes([byte]))
            time.sleep(0.1)  # the behaviour under test: a client trickling its head
    except OSError:
        pass
    answer = read_answer(s)
    assert status_of(answer) == 408, answer[:200]
    assert time.monotonic() - started < 6


@pytest.mark.slow
def test_a_body_never_sent_is_dropped_with_408(strict):
    srv, keys = strict
    s = dial(srv)
    started = time.monotonic()
    s.sendall(
        b"PUT /api/v1/people/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + keys["secret_key"].encode() + b"\r\n"
        b'Content-Length: 100\r\n\r\n{"data": '
    )
    answer = read_answer(s)
    assert status_of(answer) == 408, answer[:200]
    assert time.monotonic() - started < 6
    with srv.rest(keys["secret_key"]) as rest:
        assert rest.get("/people/slow").status_code == 404  # nothing half-written


@pytest.mark.slow
def test_an_idle_keep_alive_connection_is_closed(strict):
    srv, _ = strict
    s = dial(srv)
    s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    first = s.recv(65536)
    assert status_of(first) == 200
    started = time.monotonic()
    read_answer(s)  # uvicorn's keep-alive (5 s) or the request timeout, whichever first
    assert time.monotonic() - started < 7


# --- item 5: slow bodies hold no REST thread --------------------------------------------------


def test_slow_bodies_do_not_hold_rest_threads(server, tenant):
    """Sixteen declared bodies never sent (twice the REST threads) and REST still answers."""
    secret = tenant["dev"]["secret_key"].encode()
    stalled = []
    try:
        for i in range(16):
            s = dial(server)
            s.sendall(
                b"PUT /api/v1/people/stalled-%d HTTP/1.1\r\nHost: x\r\n" % i
                + b"Authorization: Bearer "
                + secret
                + b"\r\nContent-Type: application/json\r\nContent-Length: 50000\r\n\r\n{"
            )
            stalled.append(s)
        # the server has read every head (its end of each connection has nothing unread)
        wait_until(lambda: all(server_queues(server, s) == (0, 0) for s in stalled), timeout=10)
        for _ in range(3):
            started = time.monotonic()
            assert health_ok(server, timeout=5) and rest_thread_ok(server, timeout=5)
            with server.rest(tenant["dev"]["secret_key"]) as rest:
                assert rest.get("/flows").status_code == 200
            assert time.monotonic() - started < 3
    finally:
        for s in stalled:
            s.close()


@pytest.mark.slow
def test_responses_left_unread_do_not_hold_rest_threads(strict):
    """Three clients (the server has two REST threads) pipeline 30 requests for a 540 KB
    file each and never read: each is dropped after the request timeout (2 s here), its
    REST thread freed, and /health answers. (uvicorn told only the newest pipelined
    request that its client had gone; the running one's thread then waited for good.)"""
    srv, _ = strict
    request = b"GET /static/rest_framework/css/bootstrap.min.css.map HTTP/1.1\r\nHost: x\r\n\r\n"
    readers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(request * 30)
            readers.append(s)
        # the server is answering each and its answers wait, unread, on its side
        wait_until(lambda: all((server_queues(srv, s) or (0, 0))[0] > 0 for s in readers), 10)
        started = time.monotonic()
        assert health_ok(srv, timeout=10) and rest_thread_ok(srv, timeout=10)
        assert time.monotonic() - started < 6
    finally:
        for s in readers:
            s.close()
    for _ in range(3):  # every thread is free again once the readers left
        assert rest_thread_ok(srv, timeout=5)


# --- item 3: many silent connections ----------------------------------------------------------


def _hold_silent_and_trickling(server, count: int) -> tuple[list[socket.socket], threading.Event]:
    """Half silent, half trickling a header byte a second, from one thread."""
    sockets = []
    for i in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        except OSError:
            break
        s.setblocking(False)
        if i % 2:
            with contextlib.suppress(OSError):
                s.send(b"GET /api/v1/health HTTP/1.1\r\nX-Slow: ")
        sockets.append(s)
    stop = threading.Event()

    def trickle():
        while not stop.wait(1.0):
            for s in sockets[1::2]:
                with contextlib.suppress(OSError):
                    s.send(b"a")

    threading.Thread(target=trickle, daemon=True).start()
    return sockets, stop


@pytest.mark.slow
def test_silent_connections_do_not_starve_health_under_a_low_fd_limit(tmp_path):
    """The server starts with a soft open-file limit of 400, as a default 1024 would be
    for a few thousand; 500 silent or trickling connections and /health still answers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip(f"needs a hard open-file limit of 2000 (it is {hard})")
    srv = Server(tmp_path / "fds")
    resource.setrlimit(resource.RLIMIT_NOFILE, (400, hard))  # inherited by the server
    try:
        srv.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    sockets, stop = _hold_silent_and_trickling(srv, 500)
    try:
        for _ in range(3):
            assert health_ok(srv, timeout=5)
    finally:
        stop.set()
        for s in sockets:
            s.close()
        srv.stop()


@pytest.mark.slow
def test_waiting_connections_are_capped_oldest_dropped_first(tmp_path):
    """With STEPSTREAM_HTTP_MAX_PENDING=150 and a hard limit of 400 descriptors, 500 silent
    or trickling connections leave the server under 400 descriptors, the oldest are
    dropped, and /health answers throughout."""
    srv = Server(tmp_path / "cap", STEPSTREAM_HTTP_MAX_PENDING=150).start()
    try:
        resource.prlimit(srv.process.pid, resource.RLIMIT_NOFILE, (400, 400))
        sockets, stop = _hold_silent_and_trickling(srv, 500)
        try:
            oldest = sockets[0]
            oldest.setblocking(True)
            oldest.settimeout(5)
            assert read_answer(oldest) == b""  # dropped without a word: the cap was reached
            for _ in range(3):
                assert health_ok(srv, timeout=5)
            assert open_fds(srv.process.pid) < 400
            newest = sockets[-1]
            newest.settimeout(0.2)
            with pytest.raises(TimeoutError):
                newest.recv(1)  # still waited on
        finally:
            stop.set()
            for s in sockets:
                s.close()
    finally:
        srv.stop()


@pytest.mark.slow
def test_unfinished_request_bytes_are_capped_oldest_dropped_first(tmp_path):
    """With STEPSTREAM_HTTP_MAX_PENDING_BYTES=1 MiB, six bodies of 300 KiB each left
    unfinished: the oldest are dropped once the total passes 1 MiB, the newest wait on."""
    srv = Server(tmp_path / "bytes", STEPSTREAM_HTTP_MAX_PENDING_BYTES=MiB).start()
    sockets = []
    try:
        for i in range(6):
            s = dial(srv)
            s.sendall(
                b"PUT /api/v1/people/p%d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: 1000000\r\n\r\n" % i + b" " * 300_000
            )
            sockets.append(s)
            time.sleep(0.2)  # the order under test: each body older than the next
        assert read_answer(sockets[0]) == b""  # dropped
        sockets[-1].settimeout(0.5)
        with pytest.raises(TimeoutError):
            sockets[-1].recv(1)  # still being waited on
        assert health_ok(srv)
    finally:
        for s in sockets:
            s.close()
        srv.stop()


# --- memory -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_header_flood_memory_stays_bounded(tmp_path):
    """64 connections at once, each sending a 4 MiB header block (256 MiB in all): the
    server's peak resident memory grows by less than 64 MiB."""
    srv = Server(tmp_path / "mem").start()
    try:
        pid = srv.process.pid
        for _ in range(5):  # warm up the request path
            assert health_ok(srv)
        before = rss_kib(pid)
        sockets = [dial(srv, timeout=20) for _ in range(64)]
        answers: list[int | None] = [None] * len(sockets)
        peak = [before]

        def flood(i, s):
            send_until_refused(s, HEAD, b"h" * 65536, 4 * MiB)
            peak[0] = max(peak[0], rss_kib(pid))
            answers[i] = status_of(read_answer(s))

        threads = [threading.Thread(target=flood, args=(i, s)) for i, s in enumerate(sockets)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        grown_mib = (max(peak[0], rss_kib(pid, "VmHWM")) - before) / 1024
        for s in sockets:
            s.close()
        assert answers == [431] * len(sockets), answers
        assert grown_mib < 64, f"resident memory grew {grown_mib:.1f} MiB"
        assert health_ok(srv)
    finally:
        srv.stop()


# --- any bytes in a request head ---------------------------------------------------------------

TOKEN = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-!#$%&'*+.^_`|~",
    min_size=1,
    max_size=12,
)
PATHS = st.one_of(
    st.binary(max_size=80).map(
        lambda b: b"/" + b.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"")
    ),
    st.lists(
        st.sampled_from(
            [
                "api",
                "v1",
                "people",
                "flows",
                "static",
                "..",
                "%2e",
                "%2F",
                "%25",
                "%FF",
                "%00",
                "%0A",
                "x",
                "events",
                "admin",
                "demo",
            ]
        ),
        max_size=6,
    ).map(lambda parts: ("/" + "/".join(parts)).encode()),
)
HEADERS = st.lists(
    st.tuples(
        st.one_of(TOKEN.map(str.encode), st.binary(min_size=1, max_size=10)), st.binary(max_size=60)
    ),
    max_size=6,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.one_of(
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]), TOKEN
    ),
    path=PATHS,
    headers=HEADERS,
    body=st.binary(max_size=200),
)
def test_any_request_head_gets_one_well_formed_answer_never_a_500(
    strict, method, path, headers, body
):
    """A request of arbitrary method, path bytes and header bytes: an HTTP answer, never a
    500; an error answer is JSON."""
    srv, keys = strict
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: x", b"Connection: close"]
    lines += [
        name + b": " + value.replace(b"\r", b"").replace(b"\n", b"") for name, value in headers
    ]
    lines.append(b"Content-Length: %d" % len(body))
    s = dial(srv)
    try:
        s.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        answer = read_answer(s)
    finally:
        s.close()
    assert answer, "closed without an answer"
    status = status_of(answer)
    assert status is not None and status != 500, answer[:300]
    assert answer.count(b"HTTP/1.1 ") >= 1
    if status >= 400 and method != "HEAD":
        head, _, rest = answer.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" not in head.lower():
            json_error(answer)


@pytest.mark.parametrize("host", [b"a/b", b"[]", b"\xff"])
def test_a_malformed_second_host_is_a_400_logged_without_a_traceback(strict, host):
    """Django's DisallowedHost (a SuspiciousOperation): one warning line, not a traceback
    (the cause of the byte storm's occasional traceback: a generated second Host)."""
    srv, _ = strict
    request_id = uuid.uuid4().hex
    answer = sent_at_once(
        srv,
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: "
        + host
        + b"\r\nX-Request-ID: "
        + request_id.encode()
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert status_of(answer) == 400, answer[:300]

    def warned() -> list[str]:
        """the request's DisallowedHost line is in the log"""
        lines = [line for line in srv.log().splitlines() if request_id in line]
        return lines if any("django.security.DisallowedHost" in line for line in lines) else []

    lines = wait_until(warned, timeout=5, interval=0.05)
    logged = srv.log()
    assert any(" WARNING django.security.DisallowedHost " in line for line in lines), lines
    assert "Traceback" not in logged, logged[-3000:]


def test_the_server_is_whole_after_the_byte_storm(strict):
    srv, _ = strict
    assert health_ok(srv)
    assert "Traceback" not in srv.log(), srv.log()[-3000:]


# --- item 10: identifiers in URL paths --------------------------------------------------------


def seg(identifier: str) -> str:
    """One path segment; "." and ".." spelled %2E, or clients remove them (RFC 3986)."""
    if identifier in (".", ".."):
        return identifier.replace(".", "%2E")
    return quote(identifier, safe="")


def test_uffff_does_not_alias_slash(rest):
    slash, stand_in = f"a/{uuid.uuid4().hex[:6]}", None
    stand_in = slash.replace("/", "\uffff")
    assert rest.put(f"/people/{seg(slash)}", json={"data": {"k": 1}}).status_code == 201
    # the stand-in character is a key of its own, not the slash
    assert rest.delete(f"/people/{seg(stand_in)}").status_code == 404
    assert rest.get(f"/people/{seg(slash)}").json() == {"person_key": slash, "data": {"k": 1}}
    assert rest.put(f"/people/{seg(stand_in)}", json={"data": {"k": 2}}).status_code == 201
    assert rest.get(f"/people/{seg(stand_in)}").json()["person_key"] == stand_in
    assert rest.get(f"/people/{seg(slash)}").json()["data"] == {"k": 1}


def test_a_flow_identifier_with_a_slash_reads_back(rest):
    identifier = f"team/{uuid.uuid4().hex[:6]}"
    flow = dict(LINEAR_FLOW, identifier=identifier)
    assert rest.post("/flows", json=flow).status_code == 201
    response = rest.get(f"/flows/{seg(identifier)}")
    assert response.status_code == 200, response.text
    assert response.json()["identifier"] == identifier
    person = f"p/{uuid.uuid4().hex[:6]}%2F"
    assert rest.put(f"/people/{seg(person)}", json={"data": {}}).status_code == 201
    assert rest.post(f"/people/{seg(person)}/flows", json={"flow": identifier}).status_code == 201
    response = rest.post(
        f"/people/{seg(person)}/flows/{seg(identifier)}/transitions", json={"transition": "next"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["flow"] == identifier
    response = rest.post(f"/people/{seg(person)}/flows/{seg(identifier)}/pause")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "inactive"


def test_a_path_that_is_not_utf8_is_a_400(rest):
    response = rest.get("/people/a%FFb")
    assert response.status_code == 400
    assert "UTF-8" in response.json()["errors"][0]


KEYS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=KEYS)
def test_any_person_key_round_trips_through_its_url(rest, key):
    """Every key, encoded as one segment, names that key and no other."""
    path = f"/people/{seg(key)}"
    response = rest.put(path, json={"data": {"key": key}})
    assert response.status_code in (200, 201), (key, response.text)
    assert response.json()["person_key"] == key
    assert rest.get(path).json() == {"person_key": key, "data": {"key": key}}
    assert rest.delete(path).status_code == 204


# --- item 13: logs, errors, static files ------------------------------------------------------

FORGED = "2026-01-01 00:00:00,000 INFO stepstream.access [-] forged-by-a-client"


def test_control_characters_never_reach_a_log_line(server):
    for raw in ("%0A", "%0D%0A", "%0D", "%1B[2J%0A", "%C2%85", "%E2%80%A8"):
        path = f"/api/v1/people/x{raw}{quote(FORGED)}"
        response = httpx.get(server.url + path, timeout=5)
        assert response.status_code == 401
    httpx.get(server.url + "/nowhere%0A" + quote(FORGED), timeout=5)

    def last_logged() -> list[str]:
        """the last request's access line is in the log"""
        lines = server.log().splitlines()
        return lines if any("/nowhere" in line for line in lines) else []

    lines = wait_until(last_logged, timeout=5, interval=0.05)
    assert any("forged-by-a-client" in line for line in lines)  # it was logged...
    assert not [line for line in lines if line.startswith("2026-01-01")]  # ...escaped
    assert "\x1b" not in server.log()


def test_both_log_formats_keep_every_record_on_one_line():
    import logging
    import sys

    import orjson

    from stepstream.observability import JsonFormatter, PlainFormatter

    hostile = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029])
    record = logging.LogRecord("t", logging.INFO, "f", 1, "GET %s", (f"/x{hostile}y",), None)
    for formatter in (PlainFormatter("%(levelname)s %(message)s"), JsonFormatter()):
        line = formatter.format(record)
        assert len(line.splitlines()) == 1, line
        assert not [c for c in line if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0], repr(line)
        assert "\u2028" not in line and "\u2029" not in line
    assert orjson.loads(JsonFormatter().format(record))["message"] == f"GET /x{hostile}y"
    try:
        raise ValueError("a\nforged line")
    except ValueError:
        record.exc_info = sys.exc_info()
    lines = PlainFormatter("%(levelname)s %(message)s").format(record).splitlines()
    assert all(line.startswith("  ") for line in lines[1:]), lines  # the traceback, indented


@pytest.mark.parametrize(
    "path",
    [
        "/static/%2e%2e/settings.py",
        "/static/..%2fsettings.py",
        "/static/%2e%2e%2f%2e%2e%2fetc/passwd",
        "/static/%252e%252e/settings.py",
        "/static/nothing.js",
    ],
)
def test_static_paths_outside_the_static_files_are_404_json(server, path):
    response = httpx.get(server.url + path, timeout=5)
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v2/health", "/favicon.ico"])
def test_unknown_routes_answer_json(server, path):
    response = httpx.get(server.url + path, timeout=5, follow_redirects=True)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == "not_found" and body["errors"], body


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("POST", "/api/v1/health", {"GET"}),
        ("DELETE", "/api/v1/flows", {"GET", "POST"}),
        ("POST", "/demo", {"GET", "HEAD"}),
        ("PUT", "/static/stepstream.js", {"GET", "HEAD"}),
    ],
)
def test_a_method_a_route_does_not_serve_is_405_with_allow(server, tenant, method, path, allowed):
    bearer = {"Authorization": f"Bearer {tenant['dev']['secret_key']}"}
    response = httpx.request(method, server.url + path, headers=bearer, timeout=5)
    assert response.status_code == 405, response.text
    assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}
    assert response.json()["errors"]


def test_a_csrf_failure_answers_json(server):
    response = httpx.post(
        server.url + "/admin/login/", data={"username": "a", "password": "b"}, timeout=5
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"


def test_the_500_handler_answers_json():
    from django.urls import get_resolver

    handler = get_resolver().resolve_error_handler(500)
    response = handler(None)
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.content.startswith(b'{"errors": [')


def test_the_sdk_is_importable_from_any_origin(server):
    response = httpx.get(
        server.url + "/static/stepstream.js", headers={"Origin": "https://x.example"}, timeout=5
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "javascript" in response.headers["content-type"]


@pytest.mark.parametrize(
    "name,value",
    [
        ("STEPSTREAM_HTTP_MAX_HEADER_BYTES", "0"),
        ("STEPSTREAM_HTTP_REQUEST_TIMEOUT", "-1"),
        ("STEPSTREAM_HTTP_MAX_PENDING", "lots"),
        ("STEPSTREAM_HTTP_MAX_PENDING_BYTES", "1.5"),
    ],
)
@pytest.mark.slow
def test_a_bad_http_setting_is_named_in_one_line(tmp_path, name, value):
    from stepstream.testing.servers import run_command

    done = run_command(tmp_path, "serve", "--port", "1", timeout=30, **{name: value})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert name in done.stderr and value in done.stderr
