"""The REST reference: a bare ASGI app under uvicorn answering `{"status": "ok"}` to anything.

uvicorn with the same loop (uvloop) and HTTP parser (httptools) as `stepstream serve`,
and nothing else: what one Python process can answer on this machine, the floor
under any framework (bench/rest.py compares `GET /api/v1/health` with it).

    python -m uvicorn bench.bare_app:app --port 8766 --no-access-log
"""

BODY = b'{"status":"ok"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
