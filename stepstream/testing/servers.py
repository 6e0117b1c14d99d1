"""Real `stepstream serve` processes for black-box tests, and the commands beside them.

Each server gets its own data directory; on PostgreSQL (DATABASE_URL set)
servers share that database and one secret, as a multi-machine deployment
would. Every process started here is ended by its PID.
"""

import atexit
import contextlib
import functools
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # httpx is the test extra's: imported where a REST client is made
    import httpx

# Called with every answer of a `Server.rest` client: the test suite adds its
# OpenAPI check here (tests/conftest.py), so each REST answer it gets is
# validated against the document; other users (bench) add nothing.
RESPONSE_HOOKS: list = []

SHARED_SECRET = "test-secret-shared-by-every-test-server-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["STEPSTREAM_DATA_DIR"] = str(data_dir)
    env["STEPSTREAM_SECRET_KEY"] = SHARED_SECRET
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


DATABASE_FILE = "stepstream.sqlite3"  # in the data directory (config.database_settings)


@functools.cache
def _migrated_database() -> str:
    """A SQLite database brought up to date once per test process, under the shared secret.

    Migrating a new database is most of a server's start on SQLite (about a
    second of CPU); the suite starts a few hundred servers and commands, each in
    a new data directory. Their first start now copies this file instead: the
    server still runs `migrate` (finding nothing to do) and its secret check.
    A test that wants a database made by the server itself passes `fresh=True`.
    """
    directory = tempfile.mkdtemp(prefix="stepstream-migrated-")
    atexit.register(shutil.rmtree, directory, True)
    done = subprocess.run(
        [sys.executable, "-m", "stepstream", "manage", "check"],  # setup() migrates first
        env=server_env(directory, DATABASE_URL=""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"could not make the migrated database:\n{done.stderr}")
    return os.path.join(directory, DATABASE_FILE)


def seed_database(data_dir, extra: dict) -> None:
    """Copies the migrated database into a new SQLite data directory (see above); does
    nothing on PostgreSQL, with another secret, or where a database is already."""
    env = server_env(data_dir, **extra)
    target = os.path.join(str(data_dir), DATABASE_FILE)
    if env.get("DATABASE_URL") or env["STEPSTREAM_SECRET_KEY"] != SHARED_SECRET:
        return
    if os.path.exists(target):
        return
    os.makedirs(str(data_dir), exist_ok=True)
    source = sqlite3.connect(_migrated_database())
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)  # consistent whatever the source's WAL holds
        finally:
            copy.close()
    finally:
        source.close()


def run_command(
    data_dir, *args, timeout=60, fresh: bool = False, **extra
) -> subprocess.CompletedProcess:
    if not fresh:
        seed_database(data_dir, extra)
    return subprocess.run(
        [sys.executable, "-m", "stepstream", *args],
        env=server_env(data_dir, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _end_group(pid: int) -> None:
    """SIGKILL to what is left of a server's process group (nothing, after a clean stop)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Server:
    def __init__(
        self,
        data_dir,
        port: int | None = None,
        args: tuple[str, ...] = (),
        fresh: bool = False,
        **extra,
    ):
        self.data_dir = data_dir
        self.fresh = fresh  # True: the server makes its own database (see seed_database)
        self.args = tuple(args)  # more `serve` options, e.g. ("--demo",)
        self.extra = extra
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = os.path.join(str(data_dir), f"serve-{self.port}.log")

    def start(self, timeout: float = 30.0) -> "Server":
        os.makedirs(self.data_dir, exist_ok=True)
        if not self.fresh:
            seed_database(self.data_dir, self.extra)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stepstream", "serve", "--port", str(self.port), *self.args],
            env=server_env(self.data_dir, **self.extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it takes its workers too
        )
        log.close()
        # whatever ends the test (a timeout, a crashed xdist worker), the server and its
        # workers do not outlive this process: orphans held database connections and CPU
        weakref.finalize(self, _end_group, self.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/api/v1/health", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):  # not listening yet, or not healthy
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)  # the server alone: it stops its workers itself
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        _end_group(self.process.pid)  # any worker left behind (after a SIGKILL, say)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def command(self, *args, **kw) -> subprocess.CompletedProcess:
        return run_command(self.data_dir, *args, **{**self.extra, **kw})

    def init_project(self, name="test") -> dict:
        import json

        done = self.command("init-project", name)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def shell(self, code: str) -> str:
        """Runs Python in a separate `stepstream manage shell` process (another writer)."""
        done = self.command("manage", "shell", "-c", code)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def rest(self, secret_key: str) -> "httpx.Client":
        """An httpx client for the REST API with this secret key (httpx: the test extra)."""
        import httpx

        return httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {secret_key}"},
            timeout=10,
            event_hooks={"response": list(RESPONSE_HOOKS)},
        )
