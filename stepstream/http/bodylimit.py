"""Reads each REST request body whole on the event loop, bounded, before Django sees it.

Django runs on a pool of threads (stepstream.http.asgi). Had a thread read the
body, a client that declares a Content-Length and never sends the body would
hold that thread (and its database connection) for as long as it liked;
enough of them stalled all REST, /health included. So the body is read here,
on the event loop, where a waiting client costs a few hundred bytes, and the
request reaches the thread pool only once the body is complete. The time a
body may take is bounded by the connection protocol (stepstream.http.connlimits,
`STEPSTREAM_HTTP_REQUEST_TIMEOUT`), which drops the connection; this reader
then sees the disconnect and never calls Django.

A body over `STEPSTREAM_MAX_BODY_BYTES` (Django's DATA_UPLOAD_MAX_MEMORY_SIZE)
gets 413 with the API's JSON error body: a declared Content-Length over the
limit is refused without reading the body; a body without one (chunked) is
read only up to the limit.
"""

from django.conf import settings

from stepstream.http.error_bodies import send_error


async def _refuse(send, limit: int) -> None:
    await send_error(
        send, 413, "too_large", f"The request body is larger than the limit of {limit} bytes."
    )


def limit_body(app):
    async def limited(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                if limit is not None and value.isdigit() and int(value) > limit:
                    return await _refuse(send, limit)
                break
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away (or was dropped for being too slow)
            body = message.get("body", b"")
            size += len(body)
            if limit is not None and size > limit:
                return await _refuse(send, limit)
            if body:
                chunks.append(body)
            if not message.get("more_body"):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        del chunks
        return await app(scope, replaying(whole, receive), send)

    return limited


def replaying(message: dict, receive):
    """`receive` that gives `message` once (a body already read), then the client's own;
    the message is let go once given."""
    pending = [message]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay
