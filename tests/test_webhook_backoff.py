"""Webhook retries: exponential backoff with equal jitter, as docs/webhooks.md and the README
say, and within the contract's "the first retry within 10 s"."""

from pathlib import Path

import pytest

from stepstream.delivery.webhooks.worker import retry_delay

ROOT = Path(__file__).resolve().parent.parent
BASE, CAP = 2.0, 600.0  # the settings' defaults


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 9, 10, 40, 10_000])
def test_retry_n_waits_half_to_all_of_the_doubled_base_capped(attempt):
    ceiling = min(CAP, BASE * 2 ** (attempt - 1)) if attempt < 60 else CAP
    assert retry_delay(attempt, BASE, CAP, rand=lambda: 0.0) == ceiling / 2
    assert retry_delay(attempt, BASE, CAP, rand=lambda: 0.999999) == pytest.approx(ceiling, 1e-5)
    assert ceiling / 2 <= retry_delay(attempt, BASE, CAP) <= ceiling


def test_the_first_retry_comes_after_one_to_two_seconds_never_at_once():
    delays = [retry_delay(1, BASE, CAP) for _ in range(2000)]
    assert min(delays) >= 1.0 and max(delays) <= 2.0  # the contract: within 10 s
    assert max(delays) - min(delays) > 0.5  # jittered, not a fixed delay


def test_the_docs_say_equal_jitter_and_none_says_full():
    webhooks = (ROOT / "docs" / "webhooks.md").read_text()
    assert "equal jitter" in webhooks and "0.5 and 1 times" in webhooks
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if "WEBHOOK_RETRY_BASE_SECONDS" in line)
    assert "equal jitter" in row and "0.5 to 1 times" in row
    worker = ROOT / "stepstream" / "delivery" / "webhooks" / "worker.py"
    for path in [ROOT / "docs" / "architecture.md", worker]:
        text = path.read_text()
        failures = text[text.index("Failures") :].split("\n\n")[0].split("\n- ")[0]
        assert "backoff and equal jitter" in failures, (path, failures)
        assert "backoff and full jitter" not in text, path
