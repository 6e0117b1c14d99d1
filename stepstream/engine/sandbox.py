"""Defence in depth for conditions: costly ones run in a child process with a deadline.

The estimate (conditioncost) refuses every condition that could cost more
than the budget for inputs within the limits. Should it ever be wrong, or
data stored before the limits exceed them, the CEL package would hold the
GIL (and, on SQLite, the write lock) for as long as the evaluation runs.
So a condition estimated above STEPSTREAM_CONDITION_INLINE_COST is
evaluated in a child process (stepstream.celchild) while the calling thread
waits without the GIL. Once the child has computed for STEPSTREAM_CONDITION_TIMEOUT
seconds of CPU it is killed, the write fails with a 503 (nothing of it is
committed), and the condition is suspended in this process for
STEPSTREAM_CONDITION_SUSPEND_SECONDS: evaluated as false (as an evaluation
error is) without running, so no one write after another can stall on it.
The child's own CPU time decides, not the wall clock: on a saturated machine
a child that could not run is no sign against its condition (after
STARVED_SECONDS that write alone gets a 503, nothing is suspended).
`/api/v1/health` counts evaluations, timeouts and suspensions. A child is
started in the background when a costly condition is compiled, so the first
evaluation does not wait for a process to start inside a write.

Conditions within the inline cost, the usual ones, never cross a process.
"""

import contextlib
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from typing import Any

from stepstream.celchild import HEADER
from stepstream.errors import Unavailable

log = logging.getLogger("stepstream.conditions")

MAX_SUSPENDED = 1000  # suspended conditions remembered per process (the oldest forgotten)
MAX_CHILDREN = 16  # children at once per process (one per thread evaluating; more wait)
IDLE_CHILDREN = 2  # children kept between evaluations
START_TIMEOUT = 30.0  # seconds a new child may take to start
STARVED_SECONDS = 2.0  # the longest a write waits for a child the machine cannot run


class ConditionTimeout(Unavailable):
    code = "condition_timeout"


class Starved(Exception):
    """A child that could not run (the machine saturated) before its answer was due."""


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class _Child:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stepstream.celchild"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        # both are pipes
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        self.out = self.stdout.fileno()
        try:  # started and loaded: only then do evaluations' deadlines run
            ready = self._read(HEADER.size, time.monotonic() + START_TIMEOUT)
        except (TimeoutError, EOFError):
            self.kill()
            raise Unavailable("The condition evaluator did not start; try again shortly.") from None
        if ready != HEADER.pack(0):
            self.kill()
            raise Unavailable("The condition evaluator did not start; try again shortly.")

    def ask(self, payload: bytes, timeout: float, most: float) -> bool | None:
        """The child's answer; TimeoutError once it has computed for `timeout` seconds of CPU
        (a runaway), Starved once `most` seconds passed while it could not run (the machine
        is saturated: no sign against the condition)."""
        before = self.cpu_seconds()
        started = time.monotonic()
        self.stdin.write(HEADER.pack(len(payload)) + payload)
        self.stdin.flush()
        while True:
            try:
                # the child writes its answer in one write: whole once anything is readable
                header = self._read(HEADER.size, time.monotonic() + timeout)
                break
            except TimeoutError:
                now = self.cpu_seconds()
                if before is None or now is None or now - before >= timeout:
                    raise
                if time.monotonic() - started >= most:
                    raise Starved from None
        (length,) = HEADER.unpack(header)
        answer: bool | None = pickle.loads(self._read(length, time.monotonic() + most))
        return answer

    def cpu_seconds(self) -> float | None:
        """The CPU the child has used (Linux's /proc), or None where that cannot be read."""
        try:
            with open(f"/proc/{self.process.pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            return None

    def _read(self, n: int, deadline: float) -> bytes:
        data = b""
        while len(data) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.out], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self.out, n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                stream.close()


class Sandbox:
    """Children evaluating costly conditions for one server process, and what was suspended."""

    def __init__(self, timeout: float, suspend_seconds: float):
        self.timeout = timeout
        self.suspend_seconds = suspend_seconds
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._slots = threading.BoundedSemaphore(MAX_CHILDREN)
        self._suspended: dict[str, float] = {}  # condition text -> monotonic time it ends
        self.timeouts = 0
        self.evaluations = 0
        self._warming = False

    def suspended(self, text: str) -> bool:
        until = self._suspended.get(text)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        with self._lock:
            self._suspended.pop(text, None)
        return False

    def report(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "evaluated_apart": self.evaluations,
            "timeouts": self.timeouts,
            "suspended": sum(1 for until in list(self._suspended.values()) if until > now),
        }

    def evaluate(self, text: str, variables: dict[str, Any]) -> bool | None:
        """True, False or None (an evaluation error); ConditionTimeout past the deadline."""
        if self.suspended(text):
            return None
        payload = pickle.dumps((text, variables), protocol=pickle.HIGHEST_PROTOCOL)
        if not self._slots.acquire(timeout=self.timeout):
            raise ConditionTimeout(
                "Too many costly conditions are being evaluated at once; try again shortly."
            )
        try:
            child = self._take()
            try:
                answer = child.ask(payload, self.timeout, STARVED_SECONDS)
            except Starved:
                child.kill()
                raise ConditionTimeout(
                    "The server is too busy to evaluate a condition now, so this write was not "
                    "made. Try again shortly."
                ) from None
            except TimeoutError:
                child.kill()
                self._suspend(text)
                raise ConditionTimeout(
                    f"A condition computed for longer than {self.timeout * 1000:.0f} ms, so this "
                    "write was not made. The condition is suspended (counted false) "
                    f"for {self.suspend_seconds:.0f} s; the environment's owners see it "
                    "in the server's log. Try again."
                ) from None
            except (OSError, EOFError, pickle.UnpicklingError):
                child.kill()  # died (killed from outside, out of memory): an error, false
                return None
            self._give(child)
            self.evaluations += 1
            return answer
        finally:
            self._slots.release()

    def _suspend(self, text: str) -> None:
        with self._lock:
            self.timeouts += 1
            if len(self._suspended) >= MAX_SUSPENDED:
                self._suspended.pop(next(iter(self._suspended)))
            self._suspended[text] = time.monotonic() + self.suspend_seconds
        shown = text if len(text) <= 200 else text[:197] + "..."
        log.warning(
            "condition suspended for %.0f s: it computed for over %.0f ms: %r",
            self.suspend_seconds,
            self.timeout * 1000,
            shown,
        )

    def warm(self) -> None:
        """Starts a child in the background unless one is idle, so the first costly
        evaluation does not wait for a process to start inside a write."""
        with self._lock:
            if self._idle or self._warming:
                return
            self._warming = True

        def start() -> None:
            try:
                child = _Child()
            except Exception:  # noqa: BLE001 - the first evaluation starts one itself
                log.warning("could not start a condition evaluator", exc_info=True)
                return
            finally:
                with self._lock:
                    self._warming = False
            self._give(child)

        threading.Thread(target=start, name="stepstream-cel-warm", daemon=True).start()

    def _take(self) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.process.poll() is None:
                    return child
                child.kill()
        return _Child()

    def _give(self, child: _Child) -> None:
        with self._lock:
            if len(self._idle) < IDLE_CHILDREN:
                self._idle.append(child)
                return
        child.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.kill()


_sandbox: list[Sandbox] = []  # this process's, made at first use
_made = threading.Lock()


def current() -> Sandbox:
    if _sandbox:
        return _sandbox[0]
    from django.conf import settings

    with _made:
        if not _sandbox:
            s = settings.STEPSTREAM
            _sandbox.append(Sandbox(s["CONDITION_TIMEOUT"], s["CONDITION_SUSPEND_SECONDS"]))
    return _sandbox[0]


def report() -> dict[str, Any]:
    """For `/api/v1/health`: costly conditions evaluated apart, timeouts, suspended now."""
    if not _sandbox:
        return {"evaluated_apart": 0, "timeouts": 0, "suspended": 0}
    return _sandbox[0].report()
