"""Hostile input, defect by defect (issue 10: items 1, 7, 11 and 12).

Validation does no I/O (a schema's `$ref` points inside the schema or is a
400 when saved); JSON nested deeper than 64 levels, lone surrogates, NUL and
numbers beyond what is stored are a 400 naming the field, over REST and over
the WebSocket; a request_id comes back character for character; transition
types, token `exp`, Origins and identifiers are read strictly. REST cases run
in process on the configured database (SQLite, or PostgreSQL with
DATABASE_URL); WebSocket cases against a real `stepstream serve`.
"""

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid

import pytest

from stepstream.testing.flows import LINEAR_FLOW

BASE = "/api/v1"


def send(api, method: str, path: str, body: str | bytes):
    """A request whose JSON body is sent as written (escapes, deep nesting, long numbers)."""
    raw = body.encode() if isinstance(body, str) else body
    return api.generic(method, BASE + path, raw, content_type="application/json")


def errors_of(response, status: int = 400) -> str:
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert isinstance(body["errors"], list) and body["errors"], body
    assert body.get("code"), body
    return " ".join(body["errors"])


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of `depth` nested arrays around `leaf` (the outermost array is level 1)."""
    return "[" * depth + leaf + "]" * depth


# -- item 1: a schema's $ref does no I/O ----------------------------------------


class Listener:
    """A TCP port that counts connections and answers each with a JSON Schema over HTTP."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        body = b'{"type": "string"}'
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/schema+json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                    )

    def close(self):
        self.sock.close()


@pytest.fixture
def listener():
    found = Listener()
    yield found
    found.close()


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret.json"
    path.write_text("TOP-SECRET-FILE-CONTENT this is not JSON\n")
    return path


def outside_refs(listener, secret_file) -> list[str]:
    return [
        f"http://127.0.0.1:{listener.port}/schema.json",
        f"http://127.0.0.1:{listener.port}/schema.json#/$defs/a",
        f"file://{secret_file}",
        str(secret_file),
        "other.json",
        "urn:example:thing",
        "//evil.example/x",
    ]


def test_a_schema_ref_outside_the_schema_is_400_naming_where(api, listener, secret_file):
    for ref in outside_refs(listener, secret_file):
        schema = {"type": "object", "properties": {"home": {"$ref": ref}}}
        errors = errors_of(api.put(f"{BASE}/schema/person", schema, format="json"))
        assert "/properties/home/$ref" in errors, errors
        assert "TOP-SECRET" not in errors
    assert api.get(f"{BASE}/schema/person").json() == {}  # nothing was saved
    assert listener.accepted == 0


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/missing"},
        {"properties": {"a": {"$ref": "#nowhere"}}},
        {"$defs": {"a": {"type": "string"}}, "items": {"$dynamicRef": "#/$defs/b"}},
    ],
    ids=["pointer", "anchor", "dynamicRef"],
)
def test_an_internal_ref_to_nothing_is_400_when_saved_never_500_later(api, schema):
    errors = errors_of(api.put(f"{BASE}/schema/person", schema, format="json"))
    assert "points to nothing" in errors, errors
    assert api.put(f"{BASE}/people/p1", {"data": {"a": 1}}, format="json").status_code == 201


def test_a_schema_whose_refs_loop_without_end_is_400(api):
    schema = {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "$ref": "#/$defs/a",
    }
    errors = errors_of(api.put(f"{BASE}/schema/person", schema, format="json"))
    assert "loops" in errors, errors


def test_internal_refs_anchors_and_ref_shaped_data_are_accepted_and_applied(api):
    schema = {
        "$defs": {
            "email": {"type": "string", "pattern": "@"},
            "address": {"$anchor": "addr", "type": "object", "required": ["city"]},
        },
        "type": "object",
        "properties": {
            "email": {"$ref": "#/$defs/email"},
            "home": {"$ref": "#addr"},
            "self": {"$ref": "#"},
            "note": {"const": {"$ref": "http://example.com/not-a-reference"}},
        },
    }
    assert api.put(f"{BASE}/schema/person", schema, format="json").status_code == 200
    errors = errors_of(
        api.put(f"{BASE}/people/p1", {"data": {"email": "x", "home": {}}}, format="json")
    )
    assert "data.email" in errors and "data.home" in errors, errors
    good = {"email": "a@b", "home": {"city": "Oslo"}, "self": {"email": "c@d"}}
    assert api.put(f"{BASE}/people/p1", {"data": good}, format="json").status_code == 201


def test_a_schema_saved_before_the_rule_never_fetches_and_answers_400(
    api, env, listener, secret_file
):
    """Schemas stored by an older version may still hold outside refs: nothing is fetched."""
    from stepstream.models import Environment

    for ref in outside_refs(listener, secret_file):
        schema = {"type": "object", "properties": {"home": {"$ref": ref}}}
        Environment.objects.filter(pk=env.pk).update(person_schema=schema)
        person = f"/people/p-{uuid.uuid4().hex[:6]}"
        errors = errors_of(api.put(BASE + person, {"data": {"home": 1}}, format="json"))
        assert "cannot be resolved" in errors and "TOP-SECRET" not in errors, errors
        assert listener.accepted == 0, ref


# -- item 7: nesting deeper than 64 levels --------------------------------------


def test_person_data_nested_64_levels_is_stored_65_is_400_naming_the_field(api):
    # the body is level 1, "data" level 2, "a" level 3: 62 arrays make 64 levels
    ok = send(api, "PUT", "/people/deep", '{"data": {"a": ' + nested(62) + "}}")
    assert ok.status_code == 201, ok.content
    too_deep = send(api, "PUT", "/people/deep", '{"data": {"a": ' + nested(63) + "}}")
    errors = errors_of(too_deep)
    assert "data.a[0]" in errors and "nested deeper than 64 levels" in errors, errors


@pytest.mark.parametrize("depth", [65, 400, 1200, 50_000])
@pytest.mark.parametrize("where", ["person data", "step properties", "schema"])
def test_deeply_nested_json_is_400_naming_the_field_never_500(api, where, depth):
    if where == "person data":
        response = send(api, "PUT", "/people/deep", '{"data": {"a b": ' + nested(depth) + "}}")
        named = 'data["a b"][0]'
    elif where == "step properties":
        body = json.dumps(LINEAR_FLOW)
        body = body.replace('"name": "Welcome"', '"properties": {"p": ' + nested(depth) + "}")
        response = send(api, "POST", "/flows", body)
        named = "steps[0].properties.p[0]"
    else:
        response = send(api, "PUT", "/schema/person", '{"default": ' + nested(depth) + "}")
        named = "default[0]"
    errors = errors_of(response)
    assert named in errors and "nested deeper than 64 levels" in errors, errors


def test_a_deeply_nested_websocket_message_is_400_with_its_request_id(ws):
    for depth in (65, 500, 5000):
        raw = '{"action": "identify", "request_id": "deep", "data": {"person_key": "deep-ws", '
        raw += '"data": {"x": ' + nested(depth) + "}}}"
        response = ws.send_raw(raw)
        assert response["status"] == 400, response
        # past ~900 levels the message cannot be read at all: its request_id is null
        assert response["request_id"] == ("deep" if depth < 900 else None), response
        assert "data.data.x[0]" in response["errors"][0], response
        assert "nested deeper than 64 levels" in response["errors"][0], response
    assert ws.request("ping")["status"] == 200


# -- item 11: lone surrogates and NUL -------------------------------------------

BAD_STRINGS = [
    ("\\ud800", "lone surrogate"),
    ("a\\udfffb", "lone surrogate"),
    ("\\ude00\\ud83d", "lone surrogate"),  # a pair in the wrong order
    ("nul\\u0000", "NUL"),
]


@pytest.mark.parametrize(("escaped", "named"), BAD_STRINGS)
def test_a_lone_surrogate_or_nul_in_person_data_is_400_and_nothing_is_stored(api, escaped, named):
    for body, field in (
        ('{"data": {"name": "' + escaped + '"}}', "data.name"),
        ('{"data": {"list": [1, {"k": "' + escaped + '"}]}}', "data.list[1].k"),
        ('{"data": {"' + escaped + '": 1}}', "data has a key"),
    ):
        errors = errors_of(send(api, "PUT", "/people/surrogate", body))
        assert field in errors and named in errors, errors
        assert api.get(f"{BASE}/people/surrogate").status_code == 404


def test_a_person_with_a_valid_surrogate_pair_round_trips(api):
    response = send(api, "PUT", "/people/emoji", '{"data": {"face": "\\ud83d\\ude00"}}')
    assert response.status_code == 201, response.content
    assert api.get(f"{BASE}/people/emoji").json()["data"] == {"face": "\U0001f600"}


@pytest.mark.parametrize(("escaped", "named"), BAD_STRINGS)
def test_a_lone_surrogate_or_nul_in_a_flow_is_400_naming_the_field(api, escaped, named):
    body = json.dumps(LINEAR_FLOW).replace('"welcome"', '"wel' + escaped + 'come"', 1)
    errors = errors_of(send(api, "POST", "/flows", body))
    assert "steps[0].identifier" in errors and named in errors, errors
    assert api.get(f"{BASE}/flows").json() == []


def test_a_lone_surrogate_over_the_websocket_is_400_and_the_socket_stays(ws):
    raw = (
        '{"action": "identify", "request_id": 7, '
        '"data": {"person_key": "sur-ws", "data": {"n": "\\udc00"}}}'
    )
    response = ws.send_raw(raw)
    assert response["status"] == 400 and response["request_id"] == 7, response
    assert "data.data.n" in response["errors"][0], response
    key_raw = '{"action": "get_state", "request_id": 8, "data": {"person_key": "k\\ud800"}}'
    response = ws.send_raw(key_raw)
    assert response["status"] == 400 and "data.person_key" in response["errors"][0], response
    assert ws.request("identify", {"person_key": "sur-ws"})["status"] == 200


# -- item 12: numbers -------------------------------------------------------------

BEYOND = [
    "1e999",
    "-1e999",
    "1E400",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1e16",
    "-2.5e20",
    "1e-400",
    "9" * 5000,
]


@pytest.mark.parametrize("number", BEYOND, ids=[n[:24] for n in BEYOND])
def test_a_number_beyond_what_is_stored_is_400_naming_the_field(api, number):
    errors = errors_of(send(api, "PUT", "/people/numbers", '{"data": {"n": [' + number + "]}}"))
    assert "data.n[0]" in errors and "number" in errors, errors
    assert "concurrently" not in errors
    assert api.get(f"{BASE}/people/numbers").status_code == 404


def test_numbers_within_the_bounds_come_back_identical_on_this_database(api):
    text = (
        '{"data": {"max": 9223372036854775807, "min": -9223372036854775808, '
        '"float": 9999999999999998.0, "small": 1e-05, "tiny": 5e-324, "pi": 3.141592653589793, '
        '"whole": 1.0, "negzero": -0.0, "exp": 1.5e15}}'
    )
    assert send(api, "PUT", "/people/bounds", text).status_code == 201
    got = json.loads(api.get(f"{BASE}/people/bounds").content)["data"]
    expected = json.loads(text)["data"]
    expected["negzero"] = 0.0  # read as 0.0: PostgreSQL has no negative zero
    assert got == expected
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}
    assert repr(got["negzero"]) == "0.0"


RAW_REQUEST_IDS = [
    "123456789012345678901234567890",
    "-98765432109876543210987654321",
    "1.10",
    "1E+2",
    "-0",
    "1e400",
    "0.1000000000000000000000000001",
    '[1.50,{"a":18446744073709551616,"b":"\\u00e9"}]',  # strings: the same value (é)
]


def test_request_id_comes_back_exactly_as_sent(ws):
    for raw_id in RAW_REQUEST_IDS:
        for message in (
            '{"action": "ping", "request_id": ' + raw_id + "}",
            '{"action": "nope", "request_id": ' + raw_id + "}",
            '{"action": "ping", "request_id": ' + raw_id + ', "data": {"n": 1e999}}',
        ):
            ws.ws.send(message)
            answer = ws.ws.recv(timeout=10)
            expected = raw_id.replace("\\u00e9", "é")
            assert answer.startswith('{"request_id":' + expected + ","), (raw_id, answer)


def test_an_event_carries_its_subscription_request_id_exactly_as_sent(ws, rest, person_key):
    raw_id = "123456789012345678901234567890.50"
    ws.ws.send(
        '{"action": "subscribe_state_change", "request_id": ' + raw_id + ", "
        '"data": {"person_key": "' + person_key + '", "entity": "flow"}}'
    )
    assert ws.ws.recv(timeout=10).startswith('{"request_id":' + raw_id + ",")
    assert rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"}).status_code == 201
    event = ws.ws.recv(timeout=10)
    assert event.startswith('{"event":"state_change","request_id":' + raw_id + ","), event


@pytest.mark.parametrize("bad_type", [[], {}, 0, False, "", "Manual", "auto", 1, True])
def test_a_transition_type_other_than_manual_or_automatic_is_400(api, bad_type):
    flow = json.loads(json.dumps(LINEAR_FLOW))
    flow["transitions"][1]["type"] = bad_type
    errors = errors_of(api.post(f"{BASE}/flows", flow, format="json"))
    assert "transitions[1].type" in errors, errors


def test_a_transition_type_absent_or_null_is_manual(api):
    flow = json.loads(json.dumps(LINEAR_FLOW))
    flow["transitions"][0]["type"] = None
    flow["transitions"][1]["type"] = "automatic"
    published = api.post(f"{BASE}/flows", flow, format="json")
    assert published.status_code == 201, published.content
    assert [t["type"] for t in published.json()["transitions"]] == ["manual", "automatic"]


def _jwt(payload: str, secret: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(payload.encode())
    signature = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(signature)


def test_a_person_token_whose_exp_is_a_string_is_refused():
    from stepstream.errors import Unauthenticated
    from stepstream.trust import identity

    secret = "ids_" + "s" * 40
    later = int(time.time()) + 600
    good = _jwt(json.dumps({"sub": "ann", "exp": later}), secret)
    identity.verify_token(good, secret, "ann")
    for exp in (f'"{later}"', f'"{later}.0"', "[1]", "true"):
        token = _jwt('{"sub": "ann", "exp": ' + exp + "}", secret)
        with pytest.raises(Unauthenticated, match="exp"):
            identity.verify_token(token, secret, "ann")


def _handshake(port: int, key: str, origin: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        nonce = base64.b64encode(uuid.uuid4().bytes).decode()
        sock.sendall(
            (
                f"GET /ws?key={key} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        head, _, rest = answer.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 101"):
            sock.settimeout(2)
            with contextlib.suppress(TimeoutError):
                rest += sock.recv(4096)
            # opened: a close frame with 4403 right away is a refusal too
            if len(rest) >= 4 and rest[0] & 0x0F == 0x8:
                return b"closed %d" % int.from_bytes(rest[2:4], "big")
            return b"open"
        return head.split(b"\r\n", 1)[0]


@pytest.mark.slow
def test_an_origin_with_a_tab_or_newline_inside_does_not_match_the_allow_list(server):
    keys = server.init_project("origin-tabs")["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        listed = rest.put("/allowed-origins", json={"origins": ["https://app.example.com"]})
        assert listed.status_code == 200, listed.text
        for bad in ("https://app.exa\tmple.com", "https://app.example.com\n"):
            refused = rest.put("/allowed-origins", json={"origins": [bad]})
            assert refused.status_code == 400 and "\t" not in refused.text, refused.text
    pk = keys["publishable_key"]
    assert _handshake(server.port, pk, "https://app.example.com") == b"open"
    for origin in (
        "https://app.exa\tmple.com",
        "https://\tapp.example.com",
        "https\t://app.example.com",
    ):
        answer = _handshake(server.port, pk, origin)
        assert answer in (b"HTTP/1.1 403 Forbidden", b"closed 4403"), (origin, answer)


# -- one validator for identifiers ------------------------------------------------

BAD_IDENTIFIERS = ["", "tab\there", "new\nline", "del\x7f", "c1\x85", "x" * 256]


@pytest.mark.parametrize("bad", BAD_IDENTIFIERS, ids=repr)
def test_identifiers_with_control_characters_or_too_long_are_400_naming_them(api, bad):
    flow = json.loads(json.dumps(LINEAR_FLOW))
    flow["steps"][2]["identifier"] = bad
    flow["transitions"][1]["to"] = bad
    flow["transitions"][0]["identifier"] = bad
    errors = errors_of(api.post(f"{BASE}/flows", flow, format="json"))
    for field in ("steps[2].identifier", "transitions[1].to", "transitions[0].identifier"):
        assert field in errors, errors
    flow = dict(LINEAR_FLOW, identifier=bad)
    assert "identifier" in errors_of(api.post(f"{BASE}/flows", flow, format="json"))


BAD_PERSON_KEYS = ["nul\x00", "x" * 256]


@pytest.mark.parametrize("bad", BAD_PERSON_KEYS, ids=repr)
def test_a_person_key_with_nul_a_lone_surrogate_or_too_long_is_400(api, bad):
    from urllib.parse import quote

    errors = errors_of(api.put(f"{BASE}/people/{quote(bad)}", {"data": {}}, format="json"))
    assert "person_key" in errors, errors


def test_a_bad_person_key_is_400_over_the_websocket(ws):
    for bad in ("a\x00b", "x" * 256, ""):
        response = ws.request("identify", {"person_key": bad})
        assert response["status"] == 400 and "data.person_key" in response["errors"][0], response


def test_a_person_key_may_hold_control_characters(ws):
    """The contract: any non-empty string (a customer's own ids); logs escape them."""
    response = ws.request("identify", {"person_key": "tab\there\x01"})
    assert response["status"] == 200, response


def test_identifiers_may_hold_slashes_unicode_and_spaces(api):
    flow = json.loads(json.dumps(LINEAR_FLOW))
    flow["identifier"] = "team/onboarding ✓"
    flow["steps"][0]["identifier"] = flow["transitions"][0]["from"] = "welcome/intro"
    published = api.post(f"{BASE}/flows", flow, format="json")
    assert published.status_code == 201, published.content
    assert published.json()["identifier"] == "team/onboarding ✓"
