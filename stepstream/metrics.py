"""Prometheus counters, one registry per process: a leaf every layer may count into.

Counters and the request histogram are updated where things happen; the
gauges and the GET /metrics view live in `stepstream.http.metrics_view`.
"""

from prometheus_client import CollectorRegistry, Counter, Histogram

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
KEY_RECHECKS = Counter(
    "stepstream_key_rechecks",
    "Remembered secret keys re-checked against the database: nothing (Redis, or PostgreSQL's "
    "notifications) would have told this process of a revocation, or the key's last check "
    "was older than STEPSTREAM_KEY_CHECK_INTERVAL.",
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
