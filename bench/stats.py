"""Quantiles and the clocks the harness compares."""

import time
from datetime import datetime

P999_MIN_SAMPLES = 2000  # below this a p99.9 is just the maximum: not reported


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, int(round(q * len(sorted_values))) - 1))
    return sorted_values[rank]


def summarize(values: list[float]) -> dict:
    """Median, p99 (and p99.9 when there are enough samples) and max, rounded to 0.01."""
    values = sorted(values)
    if not values:
        return {"n": 0, "median": None, "p99": None, "p99_9": None, "max": None}
    return {
        "n": len(values),
        "median": round(quantile(values, 0.5), 2),
        "p99": round(quantile(values, 0.99), 2),
        "p99_9": round(quantile(values, 0.999), 2) if len(values) >= P999_MIN_SAMPLES else None,
        "max": round(values[-1], 2),
    }


def wall_offset() -> float:
    """time.time() - time.perf_counter(), read back to back (the smallest of a few tries)."""
    best = None
    for _ in range(5):
        a = time.perf_counter()
        wall = time.time()
        b = time.perf_counter()
        if best is None or b - a < best[0]:
            best = (b - a, wall - (a + b) / 2)
    return best[1]


def parse_stamp(text: bytes) -> float:
    """An event's occurred_at ("2026-11-28T10:00:00.000000Z") as a Unix timestamp."""
    return datetime.fromisoformat(text.decode()).timestamp()
