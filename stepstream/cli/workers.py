"""`stepstream serve --workers N`: N server processes on one port, supervised by this one.

* The parent (this module's `supervise`) has already migrated the database
  and made the demo. It opens N listening sockets bound to the one port
  with SO_REUSEPORT, so the kernel spreads new connections evenly over the
  workers, and gives socket i to worker i. It keeps every socket open
  itself: a worker that is restarted finds the connections that queued
  meanwhile, and the port is never free while the server runs.
* Each worker (`python -m stepstream.cli.workers`) is a whole `serve`
  process without migrations: its own hub, database threads and connection
  pool. Changes cross workers through Redis when REDIS_URL is set, else
  through the parent's relay (stepstream/delivery/broker_relay.py); either
  way each hub also reconciles with the log, as separate `serve` processes do.
* Jobs that must run once run in worker 0 only (webhook delivery;
  its leases would keep N copies correct, but N would poll for nothing).
* SIGTERM or SIGINT: each worker gets one SIGTERM (sockets close with 1012,
  as one `serve` does), then SIGKILL after STOP_TIMEOUT. A worker that dies
  is started again; one that dies at start three times in a row stops the
  server (a configuration error does not get better by repeating).
  Workers run in their own process group, so Ctrl-C reaches only the parent
  (a second signal would make uvicorn skip its graceful shutdown), and each
  asks the kernel for SIGTERM should the parent die.
"""

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from stepstream.config import WORKER_INDEX_ENV as INDEX_ENV

log = logging.getLogger("stepstream")
STOP_TIMEOUT = 20.0  # seconds for every worker to end after SIGTERM (each closes in ~5)
FAST_EXIT = 10.0  # a worker ending sooner than this after its start failed to start
MAX_FAST_EXITS = 3
RESTART_DELAY = 1.0


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening on one port (SO_REUSEPORT), or one shared one without it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reuse_port = hasattr(socket, "SO_REUSEPORT")
    sockets = []
    try:
        for _ in range(count if reuse_port else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(2048)  # connections queue here before a worker accepts them
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets * count if not reuse_port else sockets


class Slot:
    """Worker i: its socket, its process, how often it failed to start."""

    def __init__(self, index: int, sock: socket.socket):
        self.index = index
        self.sock = sock
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.fast_exits = 0
        self.restart_at: float | None = None

    def start(self, host: str, port: int, run_dir: str) -> None:
        env = dict(os.environ)
        env[INDEX_ENV] = str(self.index)
        env["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(run_dir, "metrics")
        if not env.get("REDIS_URL"):
            from stepstream.delivery.broker_relay import ENV

            env[ENV] = os.path.join(run_dir, "relay.sock")
        fd = self.sock.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stepstream.cli.workers"]
            + ["--fd", str(fd), "--host", host, "--port", str(port)]
            + ["--parent", str(os.getpid())],
            env=env,
            pass_fds=(fd,),
            process_group=0,
        )
        self.started = time.monotonic()
        self.restart_at = None


def supervise(host: str, port: int, count: int) -> int:
    """Runs `count` workers until SIGTERM or SIGINT; 0 once all ended, 1 if they could not start."""
    try:
        sockets = listening_sockets(host, port, count)
    except OSError as e:
        print(f"stepstream: cannot listen on {host}:{port}: {e.strerror}", file=sys.stderr)
        return 2
    # private (0700): the relay's socket and the shared metrics files
    run_dir = tempfile.mkdtemp(prefix="stepstream-workers-")
    os.mkdir(os.path.join(run_dir, "metrics"))
    try:
        return asyncio.run(_supervise(host, port, sockets, run_dir))
    finally:
        for sock in set(sockets):
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)


async def _supervise(host, port, sockets, run_dir) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    relay_server = None
    if not os.environ.get("REDIS_URL"):
        from stepstream.delivery.broker_relay import Relay

        path = os.path.join(run_dir, "relay.sock")
        relay_server = await asyncio.start_unix_server(Relay().handle, path=path)
    slots = [Slot(i, sock) for i, sock in enumerate(sockets)]
    for slot in slots:
        slot.start(host, port, run_dir)
    failed = False
    try:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.2)
            if stopping.is_set():
                break
            failed = _check(slots, host, port, run_dir)
            if failed:
                break
    finally:
        await _stop(slots)
        if relay_server is not None:
            relay_server.close()
    return 1 if failed else 0


def _check(slots: list[Slot], host, port, run_dir) -> bool:
    """Restarts workers that ended; True when one keeps failing at start."""
    now = time.monotonic()
    for slot in slots:
        if slot.restart_at is not None:
            if now >= slot.restart_at:
                slot.start(host, port, run_dir)
            continue
        process = slot.process
        assert process is not None  # every slot is started before the first check
        code = process.poll()
        if code is None:
            if now - slot.started > FAST_EXIT:
                slot.fast_exits = 0
            continue
        if now - slot.started < FAST_EXIT:
            slot.fast_exits += 1
        log.error("worker %d (pid %d) ended with %s", slot.index, process.pid, code)
        _forget_gauges(run_dir, process.pid)
        if slot.fast_exits >= MAX_FAST_EXITS:
            log.error("worker %d failed to start %d times: stopping", slot.index, MAX_FAST_EXITS)
            return True
        slot.restart_at = now + RESTART_DELAY * slot.fast_exits
    return False


def _forget_gauges(run_dir: str, pid: int) -> None:
    """A dead worker's connections and subscriptions no longer count (its counters still do)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, os.path.join(run_dir, "metrics"))


async def _stop(slots: list[Slot]) -> None:
    running = [s.process for s in slots if s.process is not None and s.process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(p.poll() is None for p in running):
        await asyncio.sleep(0.05)
    for process in running:
        if process.poll() is None:
            log.error("worker pid %d did not stop in %.0f s: killed", process.pid, STOP_TIMEOUT)
            process.kill()
            process.wait()


# -- in each worker -------------------------------------------------------------


def _end_with_parent(parent: int) -> None:
    """Asks Linux for SIGTERM when the parent dies (PR_SET_PDEATHSIG), else nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request: end now
        os.kill(os.getpid(), signal.SIGTERM)


class FileWriterLock:
    """This process's writer lock, extended to every worker: a thread lock, then flock.

    SQLite has one write lock per file. Writers of one process queue on the
    engine's lock (stepstream/engine/store.py: `writing`), which hands the
    file over at once; writers of different processes met in SQLite's busy
    handler instead, whose sleeps grow to 100 ms, and two workers committed
    less than one. flock(2) queues them in the kernel and wakes the next one
    on release. Only the workers of one `serve --workers N` take it; any
    other writer on the file (a script) still waits on the busy timeout.
    """

    def __init__(self, path: str):
        import threading

        self._thread = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self):
        import fcntl

        self._thread.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()


def _share_sqlite_writer_lock() -> None:
    """On SQLite, the engine's per-process writer lock becomes one for all the workers."""
    from django.db import connection

    from stepstream.engine import db

    if connection.vendor == "sqlite":
        db.share_writer_lock(FileWriterLock(connection.settings_dict["NAME"] + ".writers.lock"))


def worker_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="stepstream serve worker")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--parent", type=int, required=True)
    args = p.parse_args(argv)
    _end_with_parent(args.parent)
    from stepstream.cli.server import build_server
    from stepstream.cli.setup import fail, setup

    problem = setup(migrate=False)
    if problem:
        return fail(problem)
    _share_sqlite_writer_lock()
    try:
        server = build_server(args.host, args.port)
    except RuntimeError as exc:
        return fail(str(exc))
    server.run(sockets=[socket.socket(fileno=args.fd)])
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
