"""The servers under test, each in a process of its own, and what the bench reads from them.

* `Stepstream`: a real `stepstream serve` (stepstream.testing.servers.Server) on a fresh
  data directory: embedded SQLite, or PostgreSQL when given a URL. Its
  project, flows and people are made in-process (bench.inproc) before it
  starts, which is much faster than through REST.
* `Reference`: `python -m bench.reference_server` (bare: no database).
* `DurableReference`: the same with `--durable` on a fresh SQLite file: every
  change committed (WAL, group commit) before it is answered and sent.
* `Profiler`: py-spy attached to a server's PID for one scenario.

Every process started here is ended by its PID (`stop()` in a finally).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from stepstream.testing.servers import Server, free_port, server_env

ROOT = Path(__file__).resolve().parent.parent

# The bench measures delivery, not the per-connection request limiter: a publisher
# connection sends thousands of requests a second. Everything else is the default.
BENCH_SERVER_ENV = {
    "STEPSTREAM_WS_RATE_PER_SECOND": "1000000",
    "STEPSTREAM_WS_RATE_BURST": "1000000",
    "STEPSTREAM_LOG_LEVEL": "WARNING",
}


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the workers of `serve --workers N`), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def rss_kib(pid: int) -> int:
    """Resident set size of a process and its workers, from /proc/PID/status (KiB)."""
    return sum(_rss_kib(p) for p in process_tree(pid))


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # ended meanwhile
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User plus system CPU time of this process alone (not the servers it started)."""
    return _cpu_seconds(os.getpid())


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its workers so far."""
    return sum(_cpu_seconds(p) for p in process_tree(pid))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def background_load(seconds: float = 1.0) -> float:
    """How busy the machine is with anything else, in % of one core, measured over `seconds`.

    Call it while the bench itself is idle."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return round(100 * (machine_busy_seconds() - before) / seconds, 1)


def wait_for_quiet(max_wait: float, threshold: float = 25.0) -> float:
    """Waits (at most `max_wait` s) until others use under `threshold` % of a core.

    Returns the last reading."""
    deadline = time.monotonic() + max_wait
    load = background_load()
    while load > threshold and time.monotonic() < deadline:
        load = background_load()
    return load


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


def stop_process(process: subprocess.Popen | None, sig=signal.SIGTERM, timeout=15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def reset_bench_database(url: str) -> None:
    """Empties a PostgreSQL database used only by the bench (its name must contain 'bench')."""
    name = urlparse(url).path.lstrip("/")
    if "bench" not in name:
        return  # never empty a database the bench does not own
    import psycopg

    _create_bench_database(url)  # a new machine has none yet
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True) as c:
        c.execute("DROP SCHEMA IF EXISTS public CASCADE")
        c.execute("CREATE SCHEMA public")


def _create_bench_database(url: str) -> None:
    """Creates the bench's own database (a name containing 'bench') if it is missing."""
    import psycopg
    from psycopg import sql

    parsed = urlparse(url.replace("postgres://", "postgresql://", 1))
    name = parsed.path.lstrip("/")
    if "bench" not in name:
        return
    maintenance = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=3) as c:
        exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_reachable(url: str | None) -> str | None:
    """None if PostgreSQL answers at `url` (creating the bench's database), else why not."""
    if not url:
        return "no PostgreSQL URL"
    try:
        import psycopg

        _create_bench_database(url)
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=3):
            return None
    except Exception as e:  # noqa: BLE001
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


class Stepstream:
    name = "stepstream"

    def __init__(self, database_url: str | None = None, env: dict | None = None, workers: int = 1):
        self.database_url = database_url
        self.workers = workers
        self.data_dir = tempfile.mkdtemp(prefix="stepstream-bench-")
        self.env = {
            **BENCH_SERVER_ENV,
            "DATABASE_URL": database_url or "",
            "REDIS_URL": "",
            **(env or {}),
        }
        self.server: Server | None = None
        self.keys: dict = {}

    @property
    def database(self) -> str:
        return "postgresql" if self.database_url else "sqlite"

    def inproc(self, *args, timeout: float = 300.0) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "bench.inproc", *args],
            env=server_env(self.data_dir, **self.env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench.inproc {args[0]} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def prepare(self, people: list[tuple[str, int]], start_loop: bool = True) -> dict:
        args = ["setup"] + [a for prefix, n in people for a in ("--people", prefix, str(n))]
        if start_loop:
            args.append("--start-loop")
        self.keys = self.inproc(*args)
        return self.keys

    def start(self) -> "Stepstream":
        args = ("--workers", str(self.workers)) if self.workers > 1 else ()
        self.server = Server(self.data_dir, args=args, **self.env).start(timeout=60)
        return self

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.process.pid

    @property
    def key(self) -> str:
        return self.keys["publishable_key"]

    @property
    def secret(self) -> str:
        return self.keys["secret_key"]

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class ChildServer:
    """A Python server module run as a child process on a free port (the references)."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - the child writes it until stop()

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", *self.argv()],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


class Reference(ChildServer):
    name = "reference"
    key = "reference"
    database = "none"

    def prepare(self, people=(), start_loop=True) -> dict:
        return {}

    def argv(self) -> list[str]:
        return ["bench.reference_server", "--port", str(self.port)]


class DurableReference(Reference):
    name = "durable"
    database = "sqlite"

    def __init__(self):
        super().__init__()
        self.data_dir = tempfile.mkdtemp(prefix="stepstream-bench-durable-")

    def argv(self) -> list[str]:
        return [*super().argv(), "--durable", os.path.join(self.data_dir, "reference.sqlite3")]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    return found


class Profiler:
    """py-spy recording one server for one scenario (a no-op when not asked for)."""

    def __init__(self, pid: int | None, output: Path | None, fmt: str = "flamegraph"):
        self.process = None
        self.output = output
        if pid is None or output is None:
            return
        binary = py_spy()
        if binary is None:
            raise SystemExit("--profile needs py-spy: pip install -e '.[bench]'")
        output.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--output", str(output), "--format", fmt]
            + ["--rate", "200", "--nonblocking", "--threads", "--subprocesses"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)  # attached before the work begins

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGINT, timeout=60)
            self.process = None
