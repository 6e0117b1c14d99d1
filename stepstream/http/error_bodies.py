"""The one JSON error body of the HTTP layer, `{"errors": [sentence], "code": ...}`.

Used where Django cannot answer: the connection protocol (431, 414, 408,
400 before a request exists), the body reader (413) and the path mapping
(400); Django's own handlers (stepstream.http.views) build the same body.
"""

import orjson


def error_body(sentence: str, code: str) -> bytes:
    return orjson.dumps({"errors": [sentence], "code": code})


async def send_error(send, status: int, code: str, sentence: str, headers=()) -> None:
    """Answers an ASGI HTTP request with the error and asks to close the connection."""
    body = error_body(sentence, code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
