"""The Python client's reconnect delays: exponential backoff with full jitter and a cap.

The same formula as the browser SDK's (tests/test_browser.py checks that one):
attempt n waits a random time in [0, min(cap, base * 2**n)].
"""

import random
import socket
import time

import pytest

from stepstream_client import Client, backoff_delay
from stepstream_client import client as client_module
from tests.waiting import until


def test_each_delay_is_within_its_window_and_the_window_doubles_up_to_the_cap():
    rng = random.Random(15)
    for attempt in range(12):
        ceiling = min(10.0, 0.25 * 2**attempt)
        delays = [backoff_delay(attempt, 0.25, 10.0, rng.random) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in delays), attempt
        # full jitter: the whole window is used, down to (nearly) no wait at all
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling, attempt
    assert backoff_delay(6, 0.25, 10.0, lambda: 0.999) == pytest.approx(9.99)
    assert backoff_delay(10_000, 0.25, 10.0, lambda: 0.5) == pytest.approx(5.0)  # no overflow


def test_the_bounds_are_exact_at_both_ends():
    assert backoff_delay(3, 0.25, 10.0, lambda: 0.0) == 0.0
    assert backoff_delay(3, 0.25, 10.0, lambda: 1.0) == 2.0
    assert backoff_delay(0, 0.25, 10.0, lambda: 1.0) == 0.25


def test_mean_waits_grow_until_the_cap():
    rng = random.Random(7)
    means = [
        sum(backoff_delay(a, 0.25, 10.0, rng.random) for _ in range(2000)) / 2000 for a in range(8)
    ]
    assert all(later > earlier for earlier, later in zip(means[:5], means[1:6], strict=True))
    assert means[6] == pytest.approx(5.0, rel=0.1) and means[7] == pytest.approx(5.0, rel=0.1)


async def test_a_refused_client_waits_its_backoff_between_attempts(monkeypatch):
    """Against a port where nothing listens, the client tries again after waits that stay
    within each attempt's window and grow, never a tight loop."""
    tries: list[float] = []
    delays: list[tuple[int, float]] = []  # (attempt, the wait the client computed)
    real_connect = client_module.ws_connect
    real_delay = client_module.backoff_delay

    def counting_connect(*args, **kwargs):
        tries.append(time.monotonic())
        return real_connect(*args, **kwargs)

    def recorded_delay(attempt, base, cap, rand=None):
        delay = real_delay(attempt, base, cap, rand)
        delays.append((attempt, delay))
        return delay

    monkeypatch.setattr(client_module, "ws_connect", counting_connect)
    monkeypatch.setattr(client_module, "backoff_delay", recorded_delay)
    with socket.socket() as s:  # a port that was free a moment ago: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", "pk_x", "p", min_backoff=0.02, max_backoff=0.16)
    await client.start(wait=False)
    try:
        await until(lambda: len(tries) >= 12, timeout=10)
    finally:
        await client.close()
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)][:11]
    assert len(gaps) == 11 and client.status == "closed"
    # attempt n (from 0) waited a delay drawn in its window, and that wait came before the
    # next try: never a tight loop (the windows are the client's, not the machine's timing)
    assert [attempt for attempt, _ in delays[:11]] == list(range(11))
    for (attempt, delay), gap in zip(delays, gaps, strict=False):
        assert 0 <= delay <= min(0.16, 0.02 * 2**attempt), (attempt, delays)
        assert gap >= delay - 0.005, (attempt, delay, gap)  # the loop's clock resolution
    waits = [delay for _, delay in delays[:11]]
    assert sum(waits[-6:]) > sum(waits[:3])  # the waits grew with the window
