"""Prometheus metrics at GET /metrics (prometheus-client), one registry per process.

Counters and the request histogram are updated where things happen; the two
gauges are read from the live hub and connection set at scrape time. Each
`serve` process exposes its own numbers: scrape every process (docs/deploy.md).
Open from loopback; from elsewhere only with `Authorization: Bearer
STEPSTREAM_METRICS_TOKEN` (unset: refused).
"""

import hmac
import ipaddress
import time

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry()

STATE_CHANGES = Counter(
    "stepstream_state_changes", "State changes recorded by this process.", registry=REGISTRY
)
EVENTS_DELIVERED = Counter(
    "stepstream_events_delivered",
    "State-change events handed to WebSocket connections (live and backlog).",
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "stepstream_webhook_deliveries",
    "Webhook delivery attempts by outcome (success: a 2xx answer; failure: anything else).",
    ["outcome"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "stepstream_request_duration_seconds",
    "Time to answer an HTTP request (REST, admin, pages).",
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
for outcome in ("success", "failure"):
    WEBHOOK_DELIVERIES.labels(outcome)


class _LiveGauges:
    """Open connections and subscriptions of this process, read when scraped."""

    def collect(self):
        from stepstream import delivery
        from stepstream.ws import guard

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
    from stepstream.views import error_response  # errors are JSON, as everywhere

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
