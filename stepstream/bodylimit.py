"""The REST request body limit, applied before Django reads a byte of the body.

A body over `STEPSTREAM_MAX_BODY_BYTES` (Django's DATA_UPLOAD_MAX_MEMORY_SIZE)
gets 413 with the API's JSON error body. A declared Content-Length over the
limit is refused without reading the body; a body without one (chunked) is
read only up to the limit.
"""

import orjson
from django.conf import settings


def _too_large_body(limit: int) -> bytes:
    return orjson.dumps(
        {
            "errors": [f"The request body is larger than the limit of {limit} bytes."],
            "code": "too_large",
        }
    )


async def _refuse(send, limit: int) -> None:
    body = _too_large_body(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def limit_body(app):
    async def limited(scope, receive, send):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if scope["type"] != "http" or limit is None:
            return await app(scope, receive, send)
        declared = None
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            if declared.isdigit() and int(declared) > limit:
                return await _refuse(send, limit)
            return await app(scope, receive, send)
        # no declared length (chunked): read up to the limit, then hand the body on
        buffered, size = [], 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                return await _refuse(send, limit)
            if not message.get("more_body"):
                break

        async def replay():
            return buffered.pop(0) if buffered else await receive()

        return await app(scope, replay, send)

    return limited
