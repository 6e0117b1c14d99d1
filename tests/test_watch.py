"""`stepstream watch`, run for real in a pseudo-terminal, as a person at a terminal would."""

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r")


class Terminal:
    """A process on a pseudo-terminal (120x40), its output kept as plain text."""

    def __init__(self, args: list[str]):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(TERM="xterm-256color", COLUMNS="120", LINES="40", PYTHONUNBUFFERED="1")
        env.pop("NO_COLOR", None)
        self.master = master
        self.raw = b""
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stepstream", *args],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                close_fds=True,
                start_new_session=True,  # its own terminal session, like a real shell's job
            )
        finally:
            os.close(slave)

    @property
    def text(self) -> str:
        return ANSI.sub(b"", self.raw).decode("utf-8", errors="replace")

    def read(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], min(left, 0.1))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the process is gone and the terminal closed
                    return
                if not chunk:
                    return
                self.raw += chunk

    def wait_for(self, pattern: str, timeout: float = 15.0, after: int = 0) -> re.Match:
        """Reads until `pattern` shows (at or after position `after` of the text)."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = compiled.search(self.text, after)
            if found:
                return found
            if self.process.poll() is not None:
                self.read(0.2)
                break
            self.read(0.2)
        found = compiled.search(self.text, after)
        if not found:
            pytest.fail(f"no {pattern!r} on the terminal; it shows:\n{self.text[-3000:]}")
        return found

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self.master)


def test_watch_shows_a_change_live_and_exits_cleanly_on_ctrl_c(server, tenant, rest, person_key):
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
    args = ["watch", "--url", server.url, "--key", tenant["dev"]["publishable_key"]]
    terminal = Terminal([*args, "--person", person_key])
    try:
        # the table: the person's flow and every step with its state, once live
        terminal.wait_for(rf"{re.escape(person_key)}\s+live")
        terminal.wait_for(r"onboarding\s*│\s*1\s*│\s*active\s*│\s*welcome\s*│\s*active")
        terminal.wait_for(r"│\s*profile\s*│\s*inactive")

        # a change made elsewhere: a line for each event, and the table redrawn
        response = rest.post(
            f"/people/{person_key}/flows/onboarding/transitions", json={"transition": "next"}
        )
        assert response.status_code == 200, response.text
        terminal.wait_for(r"#3\s+step onboarding/welcome\s+active → completed")
        line = terminal.wait_for(r"#4\s+step onboarding/profile\s+inactive → active")
        redrawn = terminal.wait_for(r"welcome\s*│\s*completed", after=line.end())
        terminal.wait_for(r"profile\s*│\s*active", after=redrawn.end())

        # Ctrl-C: a clean exit, code 0, no traceback
        os.kill(terminal.process.pid, signal.SIGINT)
        assert terminal.process.wait(timeout=10) == 0
        terminal.read(0.5)
        assert "Traceback" not in terminal.text
        assert "KeyboardInterrupt" not in terminal.text
    finally:
        terminal.close()


def test_watch_with_a_wrong_key_says_so_and_exits(server, tenant, person_key):
    done = subprocess.run(
        [sys.executable, "-m", "stepstream", "watch", "--url", server.url]
        + ["--key", "pk_wrong", "--person", person_key],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "key" in done.stderr
    assert "Traceback" not in done.stderr


def test_watch_does_not_create_an_unknown_person(server, tenant, rest):
    done = subprocess.run(
        [sys.executable, "-m", "stepstream", "watch", "--url", server.url]
        + ["--key", tenant["dev"]["publishable_key"], "--person", "never-created"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "never-created" in done.stderr
    assert "Traceback" not in done.stderr
    assert rest.get("/people/never-created").status_code == 404


@pytest.mark.slow
def test_watch_history_prints_the_recorded_changes_in_seq_order(server, tenant, rest, person_key):
    """The flow and step subscriptions are two streams: their backlogs must not show as
    #2 #3 #4, then #1."""
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
    url = f"/people/{person_key}/flows/onboarding/transitions"
    for transition in ("next", "next"):
        assert rest.post(url, json={"transition": transition}).status_code == 200
    last = rest.get(f"/people/{person_key}/events?since_seq=0").json()[-1]["seq"]
    args = ["watch", "--url", server.url, "--key", tenant["dev"]["publishable_key"]]
    terminal = Terminal([*args, "--person", person_key, "--history"])
    try:
        terminal.wait_for(rf"#{last}\s+(flow|step) ")
        terminal.read(1.0)  # anything still held back
        lines = re.findall(r"\d\d:\d\d:\d\d #(\d+)\s+(?:flow|step) ", terminal.text)
        shown = [int(n) for n in lines]
        assert shown == list(range(1, last + 1)), terminal.text
    finally:
        terminal.close()
