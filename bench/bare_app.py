"""The floor under any framework: a bare ASGI app under uvicorn.

HTTP: `{"status": "ok"}` to anything (bench/rest.py compares `GET /api/v1/health`
with it). WebSocket: accepts any socket and answers each request with status
200 and its `request_id`, nothing else (bench/connects.py compares a connect +
subscribe with it). uvicorn with the same loop (uvloop), HTTP parser
(httptools) and WebSocket implementation (websockets-sansio) as
`stepstream serve`: what one Python process can do on this machine.

    python -m uvicorn bench.bare_app:app --port 8766 --no-access-log
    python -m bench.bare_app --port 8766 --stepstream-protocols   # with serve's protocol classes
"""

import argparse
import gc
import os
import tempfile

import orjson

GC_YOUNG_THRESHOLD = 20_000  # as stepstream/cli/server.py sets it for `serve`

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
    if scope["type"] == "websocket":
        await _websocket(receive, send)
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def _websocket(receive, send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        request = orjson.loads(message.get("text") or message.get("bytes") or b"{}")
        answer = {"request_id": request.get("request_id"), "errors": [], "status": 200}
        await send({"type": "websocket.send", "text": orjson.dumps(answer).decode()})


def main() -> None:
    """The app under uvicorn configured as `stepstream serve` configures it: its HTTP and
    WebSocket protocol classes (limits, bounded buffers), at WARNING."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stepstream-protocols", action="store_true")
    args = parser.parse_args()
    import uvicorn

    options = {"ws": "websockets-sansio", "http": "httptools"}
    if args.stepstream_protocols:
        os.environ.setdefault("STEPSTREAM_DATA_DIR", tempfile.mkdtemp(prefix="bare-app-"))
        os.environ.setdefault("STEPSTREAM_LOG_LEVEL", "warning")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
        import django

        django.setup()
        from stepstream.http import connlimits

        options = {
            "ws": "stepstream.ws.sansio:BoundedWebSocketProtocol",
            "http": connlimits.StepstreamHttpProtocol,
            "ws_max_size": 16 * 1024 * 1024,
            "log_config": None,
        }
    gc.set_threshold(GC_YOUNG_THRESHOLD)  # young objects collected as `serve` collects them
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
        lifespan="on",
        **options,
    )


if __name__ == "__main__":
    main()
