"""GET /metrics (prometheus-client): the counters of `stepstream.metrics`, plus gauges.

The two gauges are read from the live hub and connection set at scrape time.
Each `serve` process exposes its own numbers: scrape every process
(docs/deploy.md). Open from loopback; from elsewhere only with
`Authorization: Bearer STEPSTREAM_METRICS_TOKEN` (unset: refused).
"""

import hmac
import ipaddress
import time

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily

from stepstream import delivery
from stepstream.http.views import error_response
from stepstream.metrics import REGISTRY, REQUEST_DURATION
from stepstream.ws import guard


class _LiveGauges:
    """Open connections and subscriptions of this process, read when scraped."""

    def collect(self):
        hub = delivery.current_hub()
        subscriptions = sum(len(c.subs) for c in list(hub.channels.values())) if hub else 0
        yield GaugeMetricFamily(
            "stepstream_connections", "Open WebSocket connections.", value=len(guard._connections)
        )
        yield GaugeMetricFamily(
            "stepstream_subscriptions", "Live state_change subscriptions.", value=subscriptions
        )


REGISTRY.register(_LiveGauges())


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
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
