"""Input text rules shared by REST and WebSocket: the one strict JSON reader and its walk.

Every JSON body (the DRF parser, stepstream.http.api.parsers) is read by `loads`
here and every WebSocket message (stepstream.ws.dispatch) by `read_message`;
a value a caller hands the engine from elsewhere (admin, demo, command line)
is checked by `check`. One walk refuses, with a 400 naming the field:

* nesting deeper than MAX_DEPTH (64) levels, counted from the top of the body
  or message (its top-level object is level 1);
* NUL (PostgreSQL cannot store it in text or JSON) and lone surrogates (not
  Unicode: SQLite stores them, then nothing can read the row back), in
  strings and in object keys alike;
* numbers beyond what both databases store and give back identically:
  integers from -2**63 to 2**63 - 1 (SQLite's JSON functions, CEL and
  JavaScript's BigInt64 are 64-bit), and other numbers (with a fraction or an
  exponent) finite and of magnitude below 10**16 (PostgreSQL gives 1e16 back
  as the integer 10000000000000000, 1e300 as a 301-digit one), not so small
  that they round to zero. -0.0 is read as 0.0 (PostgreSQL has no -0).

Numbers are read from their JSON text, not through a float, so
`123456789012345678901` is refused rather than rounded, and `verbatim` can
give a request_id back exactly as it was written. Most texts take a fast path
(orjson, then a walk over numbers and containers only); whatever it is not
sure of goes to the strict slow path, which decides the same way
(tests/test_fuzz.py proves it) and names the field.
"""

import json
import math
import re

import orjson

from stepstream.errors import Invalid

MAX_DEPTH = 64
MAX_IDENTIFIER_LENGTH = 255
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
FLOAT_LIMIT = 1e16  # exclusive
NUMBER_RULE = (
    "numbers must be integers from -2^63 to 2^63-1, or finite with a magnitude below 10^16"
)

_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]{0,39}\Z")
_NONZERO_MANTISSA = re.compile(r"^-?[0-9.]*[1-9]")
_MAX_PATH = 200


class _Number(str):
    """A JSON number's text, as `parse` leaves it until `check` reads it."""

    __slots__ = ()


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_int=_Number, parse_float=_Number, parse_constant=_refuse_constant)


# -- field names ----------------------------------------------------------------


def _key_part(key: str) -> str:
    if _PLAIN_KEY.match(key):
        return "." + key
    shown = key if len(key) <= 40 else key[:40] + "…"
    return "[" + json.dumps(shown) + "]"  # escaped: no control character is echoed


def _path(parts, prefix: str = "") -> str:
    """`data.a[0]["odd key"]` from keys and indexes, outermost first."""
    path = prefix
    for part in parts:
        if len(path) > _MAX_PATH:
            return path + "…"
        piece = f"[{part}]" if isinstance(part, int) else _key_part(part)
        path = piece[1:] if not path and piece[0] == "." else path + piece
    return path


def field_path(prefix: str, parts) -> str:
    """A field's name for a sentence: `data.a[0]["odd key"]`."""
    return _path(parts, prefix)


# -- the walk -------------------------------------------------------------------


class _Problem(Exception):
    """Raised inside the walk; gathers the field's path on its way out, so a clean walk
    builds no path at all."""

    def __init__(self, sentence: str):
        self.sentence = sentence
        self.parts: list = []  # innermost first


_BEYOND = f"is a number beyond what is stored: {NUMBER_RULE}."
_TOO_DEEP = f"is nested deeper than {MAX_DEPTH} levels."


def _number(token: _Number):
    if "." in token or "e" in token or "E" in token:
        value = float(token)
        if not math.isfinite(value) or abs(value) >= FLOAT_LIMIT:
            raise _Problem(_BEYOND)
        if value == 0.0:
            if _NONZERO_MANTISSA.match(token):
                raise _Problem("is a number too small to store (it rounds to 0).")
            return 0.0
        return value
    digits = len(token) - (token[0] == "-")
    if digits > 19 or not INT_MIN <= (value := int(token)) <= INT_MAX:
        raise _Problem(_BEYOND)
    return value


def _bad_string(value: str, what: str = "") -> _Problem:
    bad = _BAD_CHARACTER.search(value)
    assert bad is not None  # asked only about a string that has one
    found = bad.group()
    if found == "\x00":
        return _Problem(f"{what}must not contain NUL (\\u0000) characters.")
    return _Problem(
        f"{what}contains a lone surrogate (\\u{ord(found):04x}): it is not Unicode text."
    )


def _walk(value, depth: int):
    """Checks `value` (at nesting level `depth`); gives it back with its numbers read."""
    kind = type(value)
    if kind is str:
        if _BAD_CHARACTER.search(value) is not None:
            raise _bad_string(value)
        return value
    if kind is _Number:
        return _number(value)
    if kind is dict:
        if depth > MAX_DEPTH:
            raise _Problem(_TOO_DEEP)
        for key, item in value.items():
            if type(key) is str and _BAD_CHARACTER.search(key) is not None:
                raise _bad_string(key, "has a key that ")
            if type(item) is str and _BAD_CHARACTER.search(item) is None:
                continue  # the common case, without a call
            try:
                checked = _walk(item, depth + 1)
            except _Problem as problem:
                problem.parts.append(key)
                raise
            if checked is not item:
                value[key] = checked
        return value
    if kind is list:
        if depth > MAX_DEPTH:
            raise _Problem(_TOO_DEEP)
        for i, item in enumerate(value):
            if type(item) is str and _BAD_CHARACTER.search(item) is None:
                continue
            try:
                checked = _walk(item, depth + 1)
            except _Problem as problem:
                problem.parts.append(i)
                raise
            if checked is not item:
                value[i] = checked
        return value
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise _Problem(_BEYOND)
    elif kind is float and (not math.isfinite(value) or abs(value) >= FLOAT_LIMIT):
        raise _Problem(_BEYOND)
    return value


def _invalid(problem: _Problem, where: str, path: str = "") -> Invalid:
    name = _path(reversed(problem.parts), path) or where
    return Invalid(f"{name} {problem.sentence}")


def check(value, where: str = "The request body", path: str = ""):
    """Walks a decoded value once: depth, NUL, lone surrogates and numbers; Invalid names the field.

    `path` names `value` itself within its message ("data"); `where` names
    the top when a problem is there ("The request body").
    """
    try:
        return _walk(value, 1)
    except _Problem as problem:
        raise _invalid(problem, where, path) from None


def parse(raw: bytes | str, where: str = "The request body"):
    """Strict JSON syntax only: numbers stay as their text until `check` (or `verbatim`) reads them.

    Always follow it with `check`; `loads` does both.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(f"{where} is not valid UTF-8, so not JSON.") from None
    try:
        return _decoder.decode(raw)
    except RecursionError:
        field = deep_field(raw)
        raise Invalid(f"{field or where} is nested deeper than {MAX_DEPTH} levels.") from None
    except ValueError as e:
        raise Invalid(f"{where} is not valid JSON: {_json_problem(e)}") from None


def loads(raw: bytes | str, where: str = "The request body"):
    """Strict JSON, checked: the value, or Invalid naming the field."""
    fast = _fast(raw)
    if fast is not None:
        return fast
    return check(parse(raw, where), where)


def read_message(raw: str, where: str = "The message") -> tuple:
    """A WebSocket message and its request_id, ready to be written back (see `verbatim`).

    Raises Invalid; when the request_id could be read, the Invalid carries it
    as `.request_id` so that the 400 names its request.
    """
    fast = _fast(raw)
    if fast is not None:
        if type(fast) is not dict:
            return fast, None
        request_id = fast.get("request_id")
        if type(request_id) in _EXACT_IDS and (request_id != 0 or "-0" not in raw):
            return fast, fast.pop("request_id", None)
    message = parse(raw, where)
    if type(message) is not dict:
        return check(message, where), None
    request_id = verbatim(message.pop("request_id", None), "request_id")
    try:
        return check(message, where), request_id
    except Invalid as error:
        error.request_id = request_id
        raise


# The fast path: orjson reads the text, then one walk over its numbers and
# containers (strings need no look when the text has no escape that could hide
# NUL or a surrogate: neither can appear unescaped in JSON text). Anything it
# is not sure of (a number near a bound, -0.0, a request_id that is not an
# integer or a string) goes to the slow path, which decides and names the field.
_ESCAPE_OF_NUL_OR_SURROGATE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_EXPONENT = re.compile(r"[0-9][eE]")
_EXACT_IDS = (int, str, bool, type(None))  # orjson reads these exactly as sent


def _fast(raw: bytes | str):
    """The checked value by orjson, or None to take the slow path (which names problems)."""
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if "\\u" in raw and _ESCAPE_OF_NUL_OR_SURROGATE.search(raw) is not None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(value) is dict or type(value) is list:
        return value if _plain(value, raw) else None
    return value if _plain([value], raw) else None


def _plain(value, raw: str) -> bool:
    """Whether every number in orjson's value is surely within bounds and nesting ≤ MAX_DEPTH."""
    stack = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is int:
                if INT_MIN <= item <= INT_MAX:
                    continue
                return False
            if kind is float:
                if item != 0.0:
                    if -FLOAT_LIMIT < item < FLOAT_LIMIT:
                        continue
                    return False
                # -0.0 is read as 0.0; a zero written with an exponent may have underflowed
                if math.copysign(1.0, item) < 0 or _EXPONENT.search(raw) is not None:
                    return False
                continue
            stack.append((item, depth + 1))
    return True


def verbatim(value, where: str, depth: int = 2):
    """`value` as it will be written back: numbers as the very text that was sent.

    For a request_id: `123456789012345678901234567890` or `1.10` come back
    character for character (as orjson.Fragment), strings and containers as
    the same JSON values. Only what cannot be written back is refused: lone
    surrogates, nesting deeper than MAX_DEPTH.
    """
    kind = type(value)
    if kind is _Number:
        return orjson.Fragment(str(value).encode())
    if kind is str:
        if _SURROGATE.search(value) is not None:  # NUL is fine here: orjson writes \u0000
            raise _invalid(_bad_string(value.replace("\x00", "")), where)
    elif kind is dict or kind is list:
        if depth > MAX_DEPTH:
            raise _invalid(_Problem(_TOO_DEEP), where)
        if kind is list:
            return [verbatim(item, where, depth + 1) for item in value]
        return {
            verbatim(key, where, depth): verbatim(item, where, depth + 1)
            for key, item in value.items()
        }
    return value


def _json_problem(error: ValueError) -> str:
    message = getattr(error, "msg", None) or str(error)
    position = getattr(error, "pos", None)
    return f"{message} at character {position}." if position is not None else f"{message}."


_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]')


def deep_field(raw: str) -> str | None:
    """The name of the first value nested deeper than MAX_DEPTH in JSON text too deep to decode.

    Only read when the decoder has run out of stack; stops at that value.
    """
    stack: list[list] = []  # per open container: [is an object, its current key or index]
    parts: list = []  # where each open container (but the outermost) sits in its parent
    last_string: str | None = None
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in "[{":
            if stack:
                parts.append(stack[-1][1])
            if len(stack) >= MAX_DEPTH:
                return _path(parts) or None
            stack.append([token == "{", "" if token == "{" else 0])
        elif token in "]}":
            if not stack:
                return None
            stack.pop()
            if parts:
                parts.pop()
        elif token == ":":
            if stack and stack[-1][0]:
                try:
                    stack[-1][1] = "" if last_string is None else json.loads(last_string)
                except (TypeError, ValueError):
                    stack[-1][1] = ""
        elif token == ",":
            if stack and not stack[-1][0]:
                stack[-1][1] += 1
        else:
            last_string = token
    return None


# -- identifiers --------------------------------------------------------------


def validate_identifier(value, where: str, controls: bool = False) -> str:
    """Flow, step and transition identifiers, person keys, event names: one rule.

    A non-empty string of at most 255 characters with no NUL or lone surrogate
    (neither can be stored), and no control characters (C0, DEL, C1) unless
    `controls`: person keys are the customer's own ids, "any non-empty string"
    in the contract. `/` is allowed: REST paths carry it percent-encoded (%2F)
    and give it back.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_IDENTIFIER_LENGTH:
        raise Invalid(
            f"{where} must be a non-empty string of at most {MAX_IDENTIFIER_LENGTH} characters."
        )
    found = (_BAD_CHARACTER if controls else _CONTROL_OR_SURROGATE).search(value)
    if found is not None:
        what = (
            "NUL or lone surrogates" if controls else "control characters, NUL or lone surrogates"
        )
        raise Invalid(f"{where} must not contain {what} (found \\u{ord(found.group()):04x}).")
    return value


def validate_person_key(value, where: str = "person_key") -> str:
    return validate_identifier(value, where, controls=True)
