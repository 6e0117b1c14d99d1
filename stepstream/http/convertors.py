"""The one mapping between identifiers and URL path segments, both ways.

A person key or flow identifier may hold any character, "/" and "%"
included; in a URL path it is one percent-encoded segment. Servers decode
the path before routing, which would make "a%2Fb" (one segment, the key
"a/b") look like two segments. So the ASGI layer hands Django the path with
every escape decoded except `%2F` and `%25` (`routing_path`), the routes
match a segment with `[^/]+`, and `Segment.to_python` decodes those two
escapes, in one pass. No character stands in for another, so every key,
U+FFFF included, means only itself.
"""

import re
from urllib.parse import quote, unquote_to_bytes

from django.urls import register_converter

_KEPT = re.compile(r"%(?:2[fF]|25)")
_KEPT_DECODED = {"%2F": "/", "%2f": "/", "%25": "%"}


class NotUtf8(ValueError):
    """A percent-decoded path that is not UTF-8: answered 400, never guessed at."""


def routing_path(raw_path: bytes) -> str:
    """The path Django routes on: `raw_path` decoded, except `%2F` and `%25`.

    Raises NotUtf8 when the decoded bytes are not UTF-8 (a guess, U+FFFD,
    would let two different URLs name one person).
    """
    text = raw_path.decode("latin-1")
    pieces = _KEPT.split(text)
    kept = [m.upper() for m in _KEPT.findall(text)]
    out = []
    for i, piece in enumerate(pieces):
        try:
            out.append(unquote_to_bytes(piece).decode("utf-8"))
        except UnicodeDecodeError:
            raise NotUtf8(
                "The URL path is not valid UTF-8 once percent-decoded: encode each "
                "identifier as UTF-8, then percent-encode it."
            ) from None
        if i < len(kept):
            out.append(kept[i])
    return "".join(out)


def segment_to_identifier(segment: str) -> str:
    return _KEPT.sub(lambda m: _KEPT_DECODED[m.group(0)], segment)


def identifier_to_segment(identifier: str) -> str:
    """The routing form of an identifier ("%" first, so "/" stays "%2F")."""
    return identifier.replace("%", "%25").replace("/", "%2F")


# RFC 3986's sub-delimiters, ":" and "@": kept as they are in a link, as Django's reverse does
_LINK_SAFE = "!$&'()*+,;=:@~"
DOT_SEGMENTS = (".", "..")


def link_segment(identifier: str) -> str | None:
    """The identifier as one path segment of a link, or None for "." and "..".

    Every other character is percent-encoded as UTF-8, "/", "%", "?" and "#" included (the
    server keeps %2F and %25 for `Segment.to_python`), so a browser sends the segment as
    written and the route gets the identifier back. "." and ".." cannot be a segment of a
    link: browsers remove them, spelled %2E or %2E%2E too (the URL standard reads those as
    dots), so a link carries them in its query string instead.
    """
    if identifier in DOT_SEGMENTS:
        return None
    return quote(identifier, safe=_LINK_SAFE)


class Segment:
    """A Django path converter: `<seg:key>` is one path segment, any identifier."""

    regex = r"[^/]+"

    def to_python(self, value: str) -> str:
        return segment_to_identifier(value)

    def to_url(self, value: str) -> str:
        return identifier_to_segment(value)


register_converter(Segment, "seg")
