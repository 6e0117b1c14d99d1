"""GET /metrics (prometheus-client): the counters of `stepstream.metrics`, plus gauges.

The two gauges are read from the live hub and connection set at scrape time.
Each `serve` process exposes its own numbers: scrape every process
(docs/deploy.md). The workers of `serve --workers N` share one port, so
there their parent sets PROMETHEUS_MULTIPROC_DIR: counters and the histogram
live in files there (prometheus-client's multiprocess mode) and any worker
answers for all; each worker writes its two gauges there every second.
Open from loopback; from elsewhere only with
`Authorization: Bearer STEPSTREAM_METRICS_TOKEN` (unset: refused).
"""

import asyncio
import hmac
import ipaddress
import os
import time

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily

from stepstream.http.views import error_response
from stepstream.metrics import REGISTRY, REQUEST_DURATION

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_CONNECTIONS_HELP = "Open WebSocket connections."
_SUBSCRIPTIONS_HELP = "Live state_change subscriptions."


def live_counts(runtime) -> tuple[int, int]:
    """Open connections and live subscriptions of one runtime (stepstream.http.runtime)."""
    hub = runtime.node.hub
    subscriptions = sum(len(c.subs) for c in list(hub.channels.values())) if hub else 0
    return len(runtime.guard.connections), subscriptions


class LiveGauges:
    """Open connections and subscriptions of this process, read when scraped: registered by
    the runtime while it runs."""

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self):
        connections, subscriptions = live_counts(self.runtime)
        yield GaugeMetricFamily("stepstream_connections", _CONNECTIONS_HELP, value=connections)
        yield GaugeMetricFamily(
            "stepstream_subscriptions", _SUBSCRIPTIONS_HELP, value=subscriptions
        )


# in `serve --workers N`: summed over the workers alive (the parent marks a dead one's file)
_CONNECTIONS = Gauge(
    "stepstream_connections", _CONNECTIONS_HELP, multiprocess_mode="livesum", registry=None
)
_SUBSCRIPTIONS = Gauge(
    "stepstream_subscriptions", _SUBSCRIPTIONS_HELP, multiprocess_mode="livesum", registry=None
)


async def write_live_gauges(runtime) -> None:
    """In a worker of `serve --workers N`: the gauges into the shared files, every second."""
    while True:
        connections, subscriptions = live_counts(runtime)
        _CONNECTIONS.set(connections)
        _SUBSCRIPTIONS.set(subscriptions)
        await asyncio.sleep(1.0)


def _registry():
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


class RequestDurationMiddleware:
    """Times every HTTP request into stepstream_request_duration_seconds."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        try:
            return self.get_response(request)
        finally:
            REQUEST_DURATION.observe(time.perf_counter() - started)


def _from_loopback(request) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@csrf_exempt  # serves GET only: any other method is a 405 from here, not a CSRF 403
def view(request):
    """GET /metrics: open to loopback, else the bearer token (no token set: refused)."""
    if request.method not in ("GET", "HEAD"):
        return error_response(
            405, "method_not_allowed", f'Method "{request.method}" not allowed.', Allow="GET, HEAD"
        )
    if not _from_loopback(request):
        token = settings.STEPSTREAM["METRICS_TOKEN"]
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if not token:
            return error_response(
                403,
                "forbidden",
                "Metrics are served to loopback only: set STEPSTREAM_METRICS_TOKEN to scrape "
                "from elsewhere.",
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
            return error_response(
                401,
                "unauthenticated",
                "Send 'Authorization: Bearer <STEPSTREAM_METRICS_TOKEN>'.",
                WWW_Authenticate='Bearer realm="metrics"',
            )
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
