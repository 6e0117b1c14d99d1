"""Input text rules shared by REST and WebSocket: the one strict JSON reader and its walk.

Every JSON body (the DRF parser, stepstream.api.parsers) and every WebSocket
message (stepstream.ws.protocol) is read by `loads` here, and every value a
caller hands the engine from elsewhere (admin, command line) can be checked by
`check`. One walk refuses, with a 400 naming the field:

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
give a request_id back exactly as it was written.
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


# -- field names --------------------------------------------------------------


def _key_part(key: str) -> str:
    if _PLAIN_KEY.match(key):
        return "." + key
    shown = key if len(key) <= 40 else key[:40] + "…"
    return "[" + json.dumps(shown) + "]"  # escaped: no control character is echoed


def _join(path: str, key) -> str:
    if len(path) > _MAX_PATH:
        return path if path.endswith("…") else path + "…"
    part = f"[{key}]" if isinstance(key, int) else _key_part(key)
    return part[1:] if not path and part.startswith(".") else path + part


def _name(path: str, where: str) -> str:
    return path or where


# -- the walk -----------------------------------------------------------------


def _number(token: _Number, path: str, where: str):
    if "." in token or "e" in token or "E" in token:
        value = float(token)
        if not math.isfinite(value) or abs(value) >= FLOAT_LIMIT:
            raise Invalid(f"{_name(path, where)} is a number beyond what is stored: {NUMBER_RULE}.")
        if value == 0.0:
            if _NONZERO_MANTISSA.match(token):
                raise Invalid(
                    f"{_name(path, where)} is a number too small to store (it rounds to 0)."
                )
            return 0.0
        return value
    digits = len(token) - (token[0] == "-")
    if digits > 19 or not INT_MIN <= (value := int(token)) <= INT_MAX:
        raise Invalid(f"{_name(path, where)} is a number beyond what is stored: {NUMBER_RULE}.")
    return value


def _string(value: str, path: str, where: str, what: str = "") -> None:
    found = _BAD_CHARACTER.search(value)
    if found is None:
        return
    name = _name(path, where)
    if found.group() == "\x00":
        raise Invalid(f"{name}{what} must not contain NUL (\\u0000) characters.")
    raise Invalid(
        f"{name}{what} contains a lone surrogate (\\u{ord(found.group()):04x}): "
        "it is not Unicode text."
    )


def _walk(value, path: str, depth: int, where: str):
    """Checks `value` (at nesting level `depth`); gives it back with numbers read."""
    kind = type(value)
    if kind is _Number:
        return _number(value, path, where)
    if kind is str:
        _string(value, path, where)
        return value
    if kind is dict or kind is list:
        if depth > MAX_DEPTH:
            raise Invalid(f"{_name(path, where)} is nested deeper than {MAX_DEPTH} levels.")
        if kind is dict:
            for key, item in value.items():
                if not isinstance(key, str):
                    continue  # only Python callers: json.dumps writes such keys as strings
                _string(key, path, where, what=" has a key that")
                checked = _walk(item, _join(path, key), depth + 1, where)
                if checked is not item:
                    value[key] = checked
        else:
            for i, item in enumerate(value):
                checked = _walk(item, _join(path, i), depth + 1, where)
                if checked is not item:
                    value[i] = checked
        return value
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise Invalid(f"{_name(path, where)} is a number beyond what is stored: {NUMBER_RULE}.")
    elif kind is float and (not math.isfinite(value) or abs(value) >= FLOAT_LIMIT):
        raise Invalid(f"{_name(path, where)} is a number beyond what is stored: {NUMBER_RULE}.")
    return value


def check(value, where: str = "The request body", path: str = ""):
    """Walks a decoded value once: depth, NUL, lone surrogates and numbers; Invalid names the field.

    `path` names `value` itself within its message ("data"); `where` names
    the top when a problem is there ("The request body").
    """
    return _walk(value, path, 1, where)


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
    return check(parse(raw, where), where)


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
        _string(value, "", where)
    elif kind is dict or kind is list:
        if depth > MAX_DEPTH:
            raise Invalid(f"{where} is nested deeper than {MAX_DEPTH} levels.")
        if kind is list:
            return [verbatim(item, where, depth + 1) for item in value]
        for key in value:
            _string(key, "", where, what=" has a key that")
        return {key: verbatim(item, where, depth + 1) for key, item in value.items()}
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
    stack: list[list] = []  # [is_object, key or index, expecting a key]
    path_parts: list[str] = []
    last_string = None
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in "[{":
            if stack:
                path_parts.append(_part(stack[-1]))
            if len(stack) + 1 > MAX_DEPTH:
                path = ""
                for part in path_parts:
                    path = part[1:] if not path and part.startswith(".") else path + part
                    if len(path) > _MAX_PATH:
                        return path + "…"
                return path or None
            stack.append([token == "{", 0, token == "{"])
        elif token in "]}":
            if not stack:
                return None
            stack.pop()
            if path_parts:
                path_parts.pop()
        elif token == ":":
            if stack and stack[-1][0]:
                stack[-1][1] = last_string
                stack[-1][2] = False
        elif token == ",":
            if stack:
                if stack[-1][0]:
                    stack[-1][2] = True
                else:
                    stack[-1][1] += 1
        else:
            last_string = token
    return None


def _part(frame: list) -> str:
    is_object, key, _ = frame
    if not is_object:
        return f"[{key}]"
    try:
        name = json.loads(key) if isinstance(key, str) else ""
    except ValueError:
        name = ""
    return _key_part(name)


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


# -- older names ----------------------------------------------------------------


def reject_nul(value, where: str) -> None:
    """Older name of `check` (kept for callers): refuses NUL, surrogates, depth, numbers."""
    check(value, where)
