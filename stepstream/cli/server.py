"""The uvicorn server of one `serve` process, with its limits and protocol classes."""

import gc

# Young objects the collector lets pile up before it looks (CPython's default: 700).
# Each connect allocates hundreds of container objects (protocol, parser, futures,
# frames), so at 700 the collector ran every few connects and, with 10,000 sockets
# open, each of its older passes walked every socket's objects: half the server's CPU
# per connect in a reconnect storm (docs/performance-history.md, "Reconnect storm").
GC_YOUNG_THRESHOLD = 20_000


def build_server(host: str, port: int):
    """The uvicorn server of one process (`serve`, or one of `serve --workers N`).

    Raises RuntimeError with one sentence when uvicorn lacks what this server relies on.
    """
    import uvicorn
    from django.conf import settings

    from stepstream.http import connlimits
    from stepstream.http.asgi import application

    limits = settings.STEPSTREAM
    # header size, request time and pending-connection limits (docs/security.md)
    connlimits.configure(
        header_bytes=limits["HTTP_MAX_HEADER_BYTES"],
        request_timeout=limits["HTTP_REQUEST_TIMEOUT"],
        max_pending=limits["HTTP_MAX_PENDING"],
        max_pending_bytes=limits["HTTP_MAX_PENDING_BYTES"],
    )
    server = uvicorn.Server(
        uvicorn.Config(
            application,
            host=host,
            port=port,
            lifespan="on",
            interface="asgi3",
            http=connlimits.StepstreamHttpProtocol,
            log_config=None,
            access_log=False,
            ws="stepstream.ws.sansio:BoundedWebSocketProtocol",  # memory bounded per socket
            ws_max_size=16 * 1024 * 1024,
            ws_per_message_deflate=limits["WS_COMPRESSION"],
            ws_ping_interval=limits["WS_PING_INTERVAL"],
            ws_ping_timeout=limits["WS_PING_TIMEOUT"],
            timeout_graceful_shutdown=5,
        )
    )
    from stepstream.ws import sansio

    # uvicorn's WebSocket internals this server relies on, checked before it listens
    sansio.verify(server.config)
    _tune_collector()
    return server


def _tune_collector() -> None:
    """What start-up loaded (Django, the app, its modules) lives as long as the process:
    frozen out of every collection. Young garbage is collected less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
