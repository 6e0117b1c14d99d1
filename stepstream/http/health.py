"""What `GET /api/v1/health` says, for the fast path and the DRF view alike.

Everything in it lives on the event loop already (the runtime's hub and
broker, the socket layer, the condition evaluator's counters); the database
is not touched (that is `/api/v1/ready`).
"""

from django.db import connections

from stepstream.engine import sandbox
from stepstream.ws import serving

RUNTIME_KEY = "stepstream.runtime"  # the WSGI environ's key for the runtime serving it


def health_report(runtime) -> dict:
    """The health answer of `runtime` (stepstream.http.runtime), or of a process without
    one (Django's test client): no broker, no hub."""
    node = runtime.node if runtime is not None else None
    hub = node.hub if node is not None else None
    return {
        "status": "ok",
        "database": connections["default"].vendor,
        "broker": type(node.broker).__name__ if node is not None else "none",
        "delivered": dict(hub.stats) if hub else {},
        "hub": {"healthy": hub.healthy, "errors": dict(hub.errors)} if hub else None,
        "websocket": serving.report(),
        "conditions": sandbox.report(),
    }
