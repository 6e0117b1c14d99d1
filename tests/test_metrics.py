"""GET /metrics: Prometheus text that prometheus-client's own parser reads, and that moves."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

FAMILIES = {
    "stepstream_connections": "gauge",
    "stepstream_subscriptions": "gauge",
    "stepstream_state_changes": "counter",
    "stepstream_events_delivered": "counter",
    "stepstream_webhook_deliveries": "counter",
    "stepstream_request_duration_seconds": "histogram",
    "stepstream_key_rechecks": "counter",
}


def scrape(server) -> dict[str, float]:
    response = httpx.get(server.url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values, kinds = {}, {}
    for family in text_string_to_metric_families(response.text):
        kinds[family.name] = family.type
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    for name, kind in FAMILIES.items():
        assert kinds.get(name) == kind, (name, kinds.get(name))
    return values


def test_metrics_parse_and_move(server, rest, person_key, connect):
    before = scrape(server)
    assert "stepstream_webhook_deliveries_total{outcome=success}" in before
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"}).raise_for_status()
    client = connect()
    client.subscribe(person_key, "step")
    middle = scrape(server)
    assert middle["stepstream_state_changes_total"] >= before["stepstream_state_changes_total"] + 2
    assert middle["stepstream_connections"] >= 1
    assert middle["stepstream_subscriptions"] >= before["stepstream_subscriptions"] + 1
    rest.post(
        f"/people/{person_key}/flows/onboarding/transitions", json={"transition": "next"}
    ).raise_for_status()
    client.wait_events(2)
    after = scrape(server)
    assert (
        after["stepstream_events_delivered_total"]
        >= middle["stepstream_events_delivered_total"] + 2
    )
    assert (
        after["stepstream_request_duration_seconds_count"]
        > before["stepstream_request_duration_seconds_count"]
    )
    client.close()


@pytest.mark.parametrize("token", ["", "s3cret-token"])
def test_metrics_from_elsewhere_need_the_token(client, settings, token):
    settings.STEPSTREAM = {**settings.STEPSTREAM, "METRICS_TOKEN": token}
    far = {"REMOTE_ADDR": "203.0.113.9"}
    refused = client.get("/metrics", **far)
    assert refused.status_code == (401 if token else 403)
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope", **far)
    assert wrong.status_code == (401 if token else 403)
    if token:
        right = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}", **far)
        assert right.status_code == 200 and b"stepstream_state_changes_total" in right.content
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
