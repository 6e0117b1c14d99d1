"""Private PostgreSQL and Redis instances for fault tests: stopped and started for real
without disturbing the machine's shared services (or anyone else's tests)."""

import glob
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from stepstream.testing.servers import free_port
from tests.waiting import wait_until


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else None


def _as_postgres(*args, **kw):
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], **kw)


class PrivatePostgres:
    """A throwaway cluster (trust auth, no fsync) on its own port."""

    def __init__(self):
        if os.geteuid() != 0 or not _pg_bin("initdb") or not shutil.which("runuser"):
            pytest.skip("needs root, runuser and PostgreSQL's initdb to run a private cluster")
        self.base = tempfile.mkdtemp(prefix="stepstream-pg-")
        os.chmod(self.base, 0o755)
        shutil.chown(self.base, "postgres")
        self.data = os.path.join(self.base, "data")
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        done = _as_postgres(
            _pg_bin("initdb"),
            "-D",
            self.data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        done = _as_postgres(
            _pg_bin("pg_ctl"),
            "-D",
            self.data,
            "-o",
            options,
            "-w",
            "-l",
            os.path.join(self.base, "log"),
            "start",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def stop(self) -> None:
        _as_postgres(
            _pg_bin("pg_ctl"),
            "-D",
            self.data,
            "-m",
            "fast",
            "-w",
            "stop",
            capture_output=True,
            timeout=60,
        )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class PrivateRedis:
    def __init__(self):
        if not shutil.which("redis-server"):
            pytest.skip("needs redis-server to run a private Redis")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            """the private redis answers PING"""
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            )
            return ping.stdout.strip() == "PONG"

        wait_until(answers, timeout=10, interval=0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
