"""Waiting on conditions instead of sleeping: the suite's one polling helper.

A test waits for what it needs (an answer, a state, a count) with a deadline
that only a failure reaches, so a quick machine is not held up and a busy one
does not fail. Polling is for what has no event to await (another process's
state, a log, a gauge); the interval is how often to look, not how long to wait.
"""

import asyncio
import time

INTERVAL = 0.02


def wait_until(predicate, timeout: float = 10.0, interval: float = INTERVAL, what: str = ""):
    """Calls `predicate` until it returns something truthy and returns that; fails at the deadline.

    The predicate is called once more at the deadline, so a slow last look still counts.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not true within {timeout} s: {what or predicate.__doc__ or predicate}"
            )
        time.sleep(interval)


async def until(predicate, timeout: float = 10.0, interval: float = 0.005, what: str = ""):
    """`wait_until` for a test on the event loop: between looks the loop runs everything else."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not true within {timeout} s: {what or predicate.__doc__ or predicate}"
            )
        await asyncio.sleep(interval)
