"""The engine's clock: the time a write happens at (Recorder.now), which activations,
timers, limits and switch windows are measured by.

Real time, unless a test sets another with `at` (a context variable, so it
stays with the code that set it): model tests move time on without waiting.
"""

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime

from django.utils import timezone

_fixed: ContextVar[datetime | None] = ContextVar("stepstream_engine_clock", default=None)


def now() -> datetime:
    fixed = _fixed.get()
    return timezone.now() if fixed is None else fixed


@contextlib.contextmanager
def at(moment: datetime) -> Iterator[None]:
    """The engine's now is `moment` inside the block (tests)."""
    token = _fixed.set(moment)
    try:
        yield
    finally:
        _fixed.reset(token)
