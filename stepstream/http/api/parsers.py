"""The REST API's JSON parser: the same strict reader as the WebSocket (stepstream.strictjson).

DRF's own parser lets through what the engine cannot store or answer: JSON
nested hundreds of levels deep (a RecursionError, so a 500), lone surrogates
(stored by SQLite, then every read of the row fails), numbers no database
gives back as sent. This one refuses each with a 400 naming the field.
"""

import codecs

# get_encoding: DRF's own helper, which its stubs leave out
from rest_framework.parsers import JSONParser, get_encoding  # type: ignore[attr-defined]

from stepstream import strictjson
from stepstream.errors import Invalid


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        charset = get_encoding(parser_context or {})  # text encodings only: no bz2_codec bombs
        if codecs.lookup(charset).name != "utf-8":
            try:
                raw = raw.decode(charset)
            except UnicodeDecodeError:
                raise Invalid(f"The request body is not valid {charset[:40]} text.") from None
        return strictjson.loads(raw, "The request body")
