"""Property-based attacks on a real `stepstream serve`: arbitrary JSON, frames and bytes.

Hypothesis writes hostile JSON text itself (lone surrogate and NUL escapes,
numbers of any length, nesting thousands of levels deep) and throws it at
the REST API, at the WebSocket as messages, as raw WebSocket frames (valid,
fragmented, malformed) and as raw bytes at the HTTP port. Every case must get
exactly one well-formed answer (never a 500) or, for a frame the WebSocket
protocol forbids, the documented close code; the socket stays served, a
second socket keeps getting its events, and the server's resident memory
stays bounded. docs/security.md ("Tested against") lists the counts.
"""

import contextlib
import json
import os
import socket
import string
import struct
import time
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stepstream.testing.flows import LINEAR_FLOW, LOOP_FLOW
from stepstream.testing.servers import Server
from tests.wsclient import WsClient

REST_STATUSES = {200, 201, 204, 400, 404, 409, 413, 415}
WS_STATUSES = {200, 400, 404, 409, 413, 429}
MEMORY_BOUND_MIB = 64  # growth of the server's resident memory over one fuzz test
FUZZ = settings(
    max_examples=int(os.environ.get("STEPSTREAM_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


SEEN: Counter = Counter()  # (input class, answer) -> cases tried, printed by each test (-s)


def report(kind: str, grown: float) -> None:
    answers = {a: n for (k, a), n in sorted(SEEN.items()) if k == kind}
    total = sum(answers.values())
    print(f"\n{kind}: {total} cases, answers {answers}, resident memory grew {grown:.1f} MiB")
    assert total >= FUZZ.max_examples // 2, f"only {total} {kind} cases ran"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """A server of its own (so its memory is this module's), a project, flows and a watcher."""
    srv = Server(
        tmp_path_factory.mktemp("fuzz"),
        STEPSTREAM_WS_RATE_PER_SECOND=1_000_000,
        STEPSTREAM_WS_RATE_BURST=1_000_000,
    ).start()
    try:
        keys = srv.init_project("fuzz")["environments"][0]
        with srv.rest(keys["secret_key"]) as rest:
            for flow in (LINEAR_FLOW, LOOP_FLOW):
                assert rest.post("/flows", json=flow).status_code == 201
            assert rest.put("/people/watched", json={"data": {}}).status_code == 201
            assert rest.post("/people/watched/flows", json={"flow": "loop"}).status_code == 201
            assert rest.post("/people/watched/flows/loop/transitions", json={"transition": "go"})
        yield srv, keys
    finally:
        srv.stop()


@pytest.fixture
def watcher(target):
    """A second socket subscribed to a person: it must keep getting events whatever happens."""
    srv, keys = target
    with WsClient(srv.ws_url, keys["publishable_key"]) as client:
        assert client.subscribe("watched", "step")["status"] == 200
        yield client


def assert_watcher_still_served(target, watcher) -> None:
    srv, keys = target
    before = len(watcher.events)
    with srv.rest(keys["secret_key"]) as rest:
        flipped = rest.post("/people/watched/flows/loop/transitions", json={"transition": "flip"})
        assert flipped.status_code == 200, flipped.text
    # one flip completes one step and activates the other: two step events
    assert len(watcher.wait_events(before + 2)) >= before + 2, "the other socket missed events"
    assert watcher.request("ping")["status"] == 200


# -- hostile JSON text -------------------------------------------------------------


def _string_token(text: str) -> str:
    return json.dumps(text)


surrogate_escapes = st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}")
hostile_strings = st.one_of(
    st.text(max_size=20).map(_string_token),
    st.tuples(st.text(max_size=5), surrogate_escapes, st.text(max_size=5)).map(
        lambda t: _string_token(t[0])[:-1] + t[1] + _string_token(t[2])[1:]
    ),
    st.sampled_from(['"\\u0000"', '"a\\u0000b"', '"\\ud83d\\ude00"', '"\\/"', '"\\ud83d"']),
)
number_tokens = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.integers(-(10**40), 10**40).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e999", "-1e999", "1E400", "1e-400", "1e16", "-0.0", "-0", "1.10", "0e9"]),
)
scalars = st.one_of(
    st.sampled_from(["null", "true", "false"]), number_tokens, hostile_strings, hostile_strings
)


def _container(children):
    arrays = st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
    objects = st.lists(st.tuples(hostile_strings, children), max_size=4).map(
        lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    )
    return arrays | objects


shallow_values = st.recursive(scalars, _container, max_leaves=16)
deep_values = st.tuples(
    st.integers(1, 3000), st.sampled_from("[{"), shallow_values, hostile_strings
).map(
    lambda t: (
        "[" * t[0] + t[2] + "]" * t[0]
        if t[1] == "["
        else "".join(f"{{{t[3]}:" for _ in range(t[0])) + t[2] + "}" * t[0]
    )
)
benign_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(-1e15, 1e15, allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children)
    ),
    max_leaves=12,
).map(json.dumps)
hostile_values = st.one_of(shallow_values, shallow_values, deep_values, benign_values)


# -- REST ------------------------------------------------------------------------------


def rest_cases():
    """(method, path, body bytes) with hostile parts where the API reads JSON."""
    person = st.sampled_from(["fuzz-a", "fuzz-b", "watched-not"])
    return st.one_of(
        st.tuples(st.just("PUT"), person.map(lambda p: f"/people/{p}"), hostile_values).map(
            lambda t: (t[0], t[1], '{"data": ' + t[2] + "}")
        ),
        st.tuples(st.just("PUT"), person.map(lambda p: f"/people/{p}"), hostile_values).map(
            lambda t: (t[0], t[1], t[2])
        ),
        st.tuples(hostile_strings, hostile_values, st.sampled_from(["manual", "automatic"])).map(
            lambda t: (
                "POST",
                "/flows",
                '{"identifier": '
                + t[0]
                + ', "steps": [{"identifier": "a", "properties": {"p": '
                + t[1]
                + '}}, {"identifier": '
                + t[0]
                + '}], "transitions": [{"identifier": "t", "from": "a", "to": '
                + t[0]
                + ', "type": "'
                + t[2]
                + '"}]}',
            )
        ),
        hostile_values.map(
            lambda v: ("PUT", "/schema/person", '{"type": "object", "x": ' + v + "}")
        ),
        st.tuples(person, hostile_values).map(
            lambda t: ("POST", f"/people/{t[0]}/flows", '{"flow": ' + t[1] + "}")
        ),
        st.tuples(person, hostile_values).map(
            lambda t: (
                "POST",
                f"/people/{t[0]}/flows/loop/transitions",
                '{"transition": ' + t[1] + "}",
            )
        ),
        hostile_values.map(lambda v: ("PUT", "/identity-verification", '{"mode": ' + v + "}")),
        st.tuples(person, st.binary(max_size=300)).map(lambda t: ("PUT", f"/people/{t[0]}", t[1])),
    )


@FUZZ
@given(case=rest_cases())
def rest_answers_any_json_with_one_well_formed_answer_never_500(target, rest_client, case):
    method, path, body = case
    raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    response = rest_client.request(
        method, path, content=raw, headers={"Content-Type": "application/json"}
    )
    event(f"{method} {path.split('/')[1]} -> {response.status_code}")
    SEEN["REST JSON bodies", response.status_code] += 1
    assert response.status_code in REST_STATUSES, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        answer = response.json()
        assert isinstance(answer["errors"], list) and answer["errors"], answer
        assert all(isinstance(e, str) and e for e in answer["errors"]), answer
        assert isinstance(answer.get("code"), str), answer


@pytest.fixture(scope="module")
def rest_client(target):
    srv, keys = target
    with srv.rest(keys["secret_key"]) as client:
        yield client


@pytest.mark.slow
def test_rest_fuzz_leaves_the_server_serving_within_its_memory_bound(target, rest_client, watcher):
    srv, _ = target
    before = rss_mib(srv.process.pid)
    rest_answers_any_json_with_one_well_formed_answer_never_500(target, rest_client)
    grown = rss_mib(srv.process.pid) - before
    report("REST JSON bodies", grown)
    assert grown < MEMORY_BOUND_MIB, f"resident memory grew {grown:.1f} MiB"
    assert rest_client.get("/people/watched").status_code == 200
    assert_watcher_still_served(target, watcher)


# -- WebSocket messages ----------------------------------------------------------------

request_id_tokens = st.one_of(
    number_tokens,
    st.text(alphabet=string.ascii_letters + string.digits + " -_", max_size=10).map(_string_token),
    st.just("null"),
)
ACTIONS = ["identify", "get_state", "subscribe_state_change", "transition", "ping", "nope"]


@st.composite
def ws_messages(draw):
    """(message text, request_id text expected back or None)."""
    rid = draw(request_id_tokens)
    value = draw(hostile_values)
    action = draw(st.sampled_from(ACTIONS))
    key = draw(st.sampled_from(['"fuzz-ws"', '"watched"']) | hostile_strings)
    shape = draw(st.integers(0, 3))
    if shape == 0:
        data = '{"person_key": ' + key + ', "data": {"v": ' + value + "}}"
    elif shape == 1:
        data = '{"person_key": ' + value + ', "entity": "flow"}'
    elif shape == 2:
        data = '{"person_key": ' + key + ', "flow": "loop", "transition": ' + value + "}"
    else:
        data = value
    text = '{"action": "' + action + '", "request_id": ' + rid + ', "data": ' + data + "}"
    depth = text.count("[") + text.count("{")  # an upper bound of the nesting
    return text, (rid if depth < 800 else None)


@FUZZ
@given(case=ws_messages())
def websocket_answers_any_message_once_well_formed_and_keeps_the_socket(fuzz_socket, case):
    text, rid = case
    raw = text.encode("utf-8", "surrogatepass")
    fuzz_socket.ws.send(raw)  # bytes: a binary frame, read as UTF-8 like a text frame
    answer = fuzz_socket.ws.recv(timeout=10)
    response = json.loads(answer)
    assert response.keys() >= {"request_id", "errors", "status"}, response
    event(f"status {response['status']}")
    SEEN["WebSocket messages", response["status"]] += 1
    assert response["status"] in WS_STATUSES, response
    assert (response["errors"] == []) == (response["status"] == 200), response
    if rid is not None and response["status"] != 413 and b"\xed" not in raw:
        assert answer.startswith('{"request_id":' + rid + ","), (rid, answer[:200])


@pytest.fixture(scope="module")
def fuzz_socket(target):
    srv, keys = target
    with WsClient(srv.ws_url, keys["publishable_key"]) as client:
        yield client


def test_websocket_fuzz_leaves_both_sockets_served_within_the_memory_bound(
    target, fuzz_socket, watcher
):
    srv, _ = target
    before = rss_mib(srv.process.pid)
    websocket_answers_any_message_once_well_formed_and_keeps_the_socket(fuzz_socket)
    grown = rss_mib(srv.process.pid) - before
    report("WebSocket messages", grown)
    assert grown < MEMORY_BOUND_MIB, f"resident memory grew {grown:.1f} MiB"
    assert fuzz_socket.request("ping")["status"] == 200
    assert_watcher_still_served(target, watcher)


# -- raw WebSocket frames ------------------------------------------------------------

PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1002, 1007, 1009


def frame(opcode: int, payload: bytes, fin=True, masked=True, rsv=0, length=None) -> bytes:
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


json_messages = ws_messages().map(lambda case: case[0].encode("utf-8", "surrogatepass"))
valid_text = st.text(max_size=60).map(str.encode) | json_messages.filter(lambda b: len(b) < 4000)

# (frames, responses it earns, close code it earns or None)
good_pieces = st.one_of(
    valid_text.map(lambda p: ([frame(0x1, p)], 1, None) if _utf8(p) else ([], 0, None)),
    st.binary(max_size=200).map(lambda p: ([frame(0x2, p)], 1, None)),
    st.tuples(valid_text, st.integers(1, 3)).map(lambda t: (_fragments(*t), 1, None)),
    st.binary(max_size=125).map(lambda p: ([frame(0x9, p)], 0, None)),  # ping: a pong
    st.binary(max_size=125).map(lambda p: ([frame(0xA, p)], 0, None)),  # unsolicited pong
)
bad_pieces = st.one_of(
    st.binary(max_size=50).map(lambda p: ([frame(0x1, p, masked=False)], 0, PROTOCOL_ERROR)),
    st.tuples(
        st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]), st.binary(max_size=50)
    ).map(lambda t: ([frame(t[0], t[1])], 0, PROTOCOL_ERROR)),
    st.tuples(st.integers(1, 7), st.binary(max_size=50)).map(
        lambda t: ([frame(0x2, t[1], rsv=t[0])], 0, PROTOCOL_ERROR)
    ),
    st.binary(min_size=126, max_size=300).map(lambda p: ([frame(0x9, p)], 0, PROTOCOL_ERROR)),
    st.binary(max_size=50).map(lambda p: ([frame(0x9, p, fin=False)], 0, PROTOCOL_ERROR)),
    st.binary(max_size=50).map(lambda p: ([frame(0x0, p)], 0, PROTOCOL_ERROR)),  # no start
    st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"ok \xe2\x82"]).map(
        lambda p: ([frame(0x1, p)], 0, INVALID_DATA)
    ),
    st.just(([frame(0x2, b"", length=64 * 1024 * 1024)], 0, TOO_BIG)),
)


def _utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _fragments(payload: bytes, parts: int) -> list[bytes]:
    if not _utf8(payload):
        return []
    size = max(1, len(payload) // parts + 1)
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    frames = []
    for i, chunk in enumerate(chunks):
        opcode = 0x1 if i == 0 else 0x0
        frames.append(frame(opcode, chunk, fin=i == len(chunks) - 1))
    return frames


def _read_frames(sock: socket.socket, until_id: str, timeout: float = 10.0):
    """(text messages, close code or None) once `until_id` is answered or the socket closes."""
    buffer, texts, deadline = b"", [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        while len(buffer) >= 2:
            length, offset = buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, offset = struct.unpack("!H", buffer[2:4])[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length, offset = struct.unpack("!Q", buffer[2:10])[0], 10
            if len(buffer) < offset + length:
                break
            opcode, payload = buffer[0] & 0x0F, buffer[offset : offset + length]
            buffer = buffer[offset + length :]
            if opcode == 0x8:
                return texts, struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if opcode == 0x1:
                texts.append(payload.decode())
                if json.loads(payload).get("request_id") == until_id:
                    return texts, None
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 16)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            return texts, 1006
        buffer += chunk
    raise AssertionError(f"neither answered nor closed in {timeout} s: {texts[-3:]}")


def open_raw(port: int, key: str) -> socket.socket:
    from tests.rawws import RawWs

    raw = RawWs(port, key, rcvbuf=1 << 16)
    assert raw.buffer == b"", raw.buffer
    return raw.sock


@FUZZ
@given(pieces=st.lists(good_pieces | good_pieces | bad_pieces, min_size=1, max_size=6))
def any_frame_sequence_gets_its_answers_or_the_documented_close_code(target, pieces):
    srv, keys = target
    end = f"end-{uuid.uuid4().hex[:8]}"
    expected_answers, expected_close, sent = 0, None, []
    for piece in pieces:  # nothing is sent after a frame that fails the connection
        sent.append(piece)
        expected_answers += piece[1]
        expected_close = piece[2]
        if expected_close is not None:
            break
    sock = open_raw(srv.port, keys["publishable_key"])
    try:
        with contextlib.suppress(OSError):  # the server may have closed already
            for frames, _, _ in sent:
                for data in frames:
                    sock.sendall(data)
            ping = json.dumps({"action": "ping", "request_id": end}).encode()
            if expected_close is None:
                sock.sendall(frame(0x1, ping))
        texts, close = _read_frames(sock, end)
    finally:
        sock.close()
    event(f"close {close}")
    SEEN["WebSocket frames", f"close {close}" if close else "answered"] += 1
    for text in texts:
        response = json.loads(text)
        assert response.keys() >= {"request_id", "errors", "status"}, response
        assert response["status"] in WS_STATUSES, response
    if expected_close is None:
        assert close is None, (close, texts[-3:])
        assert len(texts) == expected_answers + 1, (len(texts), expected_answers, texts[-3:])
    else:
        assert close == expected_close, (close, expected_close)
        # the connection fails at the bad frame: answers still on their way may be dropped
        assert len(texts) <= expected_answers, (len(texts), expected_answers)


@pytest.mark.slow
def test_frame_fuzz_leaves_the_server_serving_within_its_memory_bound(target, watcher):
    srv, _ = target
    before = rss_mib(srv.process.pid)
    any_frame_sequence_gets_its_answers_or_the_documented_close_code(target)
    grown = rss_mib(srv.process.pid) - before
    report("WebSocket frames", grown)
    assert grown < MEMORY_BOUND_MIB, f"resident memory grew {grown:.1f} MiB"
    assert_watcher_still_served(target, watcher)


# -- raw bytes at the HTTP port -----------------------------------------------------------

http_requests = st.one_of(
    st.binary(min_size=1, max_size=400),
    st.tuples(
        st.sampled_from(["GET", "PUT", "POST", "DELETE", "BREW", "G\x00ET"]),
        st.sampled_from(["/api/v1/people/x", "/api/v1/flows", "/ws", "/%", "/api/v1/../..", "*"]),
        st.binary(max_size=200),
        st.integers(0, 400),
    ).map(
        lambda t: (
            (
                f"{t[0]} {t[1]} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {min(t[3], len(t[2]))}\r\n\r\n"
            ).encode("latin-1")
            + t[2]
        )
    ),
)


@FUZZ
@given(data=http_requests)
def any_bytes_at_the_http_port_get_no_5xx(target, data):
    srv, _ = target
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(1 << 16):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    status_line = answer.split(b"\r\n", 1)[0]
    event(status_line[:12].decode("latin-1") or "closed")
    SEEN["HTTP bytes", status_line[9:12].decode("latin-1") or "closed"] += 1
    if answer:
        assert status_line.startswith(b"HTTP/1.1 "), answer[:200]
        assert status_line[9:10] != b"5", answer[:300]


def test_byte_fuzz_leaves_the_server_serving_within_its_memory_bound(target, rest_client, watcher):
    srv, _ = target
    before = rss_mib(srv.process.pid)
    any_bytes_at_the_http_port_get_no_5xx(target)
    grown = rss_mib(srv.process.pid) - before
    report("HTTP bytes", grown)
    assert grown < MEMORY_BOUND_MIB, f"resident memory grew {grown:.1f} MiB"
    assert rest_client.get("/health").status_code == 200
    assert_watcher_still_served(target, watcher)


# -- the reader's two paths agree ------------------------------------------------------


def _outcome(read, raw):
    from stepstream.errors import Invalid

    try:
        value = read(raw)
    except Invalid as e:
        return "invalid", e.messages
    return "value", json.dumps(value, sort_keys=True, allow_nan=True)  # 1 and 1.0 differ here


@pytest.mark.backend_agnostic
@settings(max_examples=400, deadline=None)
@given(
    raw=st.one_of(
        hostile_values,
        benign_values,
        ws_messages().map(lambda case: case[0]),
        st.text(max_size=60),
    )
)
@pytest.mark.slow
def test_the_fast_path_reads_every_text_as_the_strict_slow_path_does(raw):
    """orjson plus a walk over numbers (the fast path) never decides otherwise than the
    strict reader that names every problem; only its speed differs."""
    from stepstream import strictjson

    slow = _outcome(lambda r: strictjson.check(strictjson.parse(r)), raw)
    assert _outcome(strictjson.loads, raw) == slow
    if slow[0] == "value" and raw.lstrip().startswith("{"):
        fast_message = _outcome(lambda r: strictjson.read_message(r)[0], raw)
        slow_message = _outcome(
            lambda r: strictjson.check(
                {k: v for k, v in strictjson.parse(r).items() if k != "request_id"}
            ),
            raw,
        )
        assert fast_message == slow_message
