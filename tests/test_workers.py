"""`stepstream serve --workers N`: one port, N processes, the delivery guarantees of one.

Run on the embedded SQLite (workers talk through the parent's relay) and on
PostgreSQL (+ Redis when REDIS_URL is set). Which worker serves a connection
is read from /proc (the worker holding the server end of its TCP socket), so
each test knows it crossed processes.
"""

import contextlib
import os
import signal
import threading
import time

import pytest

from stepstream.testing.servers import Server, run_command
from tests.conftest import LOOP_FLOW
from tests.test_scaleout import flip, new_person, step_seqs
from tests.waiting import wait_until
from tests.wsclient import WsClient

pytestmark = [
    pytest.mark.skipif(not os.path.isdir("/proc/net"), reason="reads /proc (Linux)"),
    pytest.mark.slow,  # a server of three processes per test
]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return sorted(found)


def _server_inode(server_port: int, client_port: int) -> str | None:
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return fields[9]
    return None


def worker_of(server: Server, client: WsClient) -> int:
    """The PID of the worker that holds this client's connection."""
    client_port = client.ws.socket.getsockname()[1]

    def holder() -> int | None:
        inode = _server_inode(server.port, client_port)
        if inode:
            for pid in children(server.process.pid):
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                            return pid
                    except OSError:
                        continue
        return None

    return wait_until(holder, 5, what=f"a worker holds the connection from port {client_port}")


@pytest.fixture
def workers(tmp_path, request):
    """Two workers; a test may set their environment by parametrizing this fixture."""
    server = Server(tmp_path / "w", args=("--workers", "2"), **getattr(request, "param", {}))
    server.start()
    keys = server.init_project("workers")["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        rest.post("/flows", json=LOOP_FLOW).raise_for_status()
    opened: list[WsClient] = []

    def clients_on_each_worker(count: int = 1) -> list[list[WsClient]]:
        """`count` WebSocket clients on each of the two workers."""
        by_worker: dict[int, list[WsClient]] = {}
        for _ in range(200):
            if len(by_worker) == 2 and all(len(c) >= count for c in by_worker.values()):
                break
            client = WsClient(server.ws_url, keys["publishable_key"])
            opened.append(client)
            by_worker.setdefault(worker_of(server, client), []).append(client)
        assert len(by_worker) == 2, "every connection went to one worker"
        return [by_worker[pid][:count] for pid in sorted(by_worker)]

    yield server, keys, clients_on_each_worker
    for client in opened:
        client.close()
    server.kill()  # the parent; its workers end with it (PR_SET_PDEATHSIG)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not children(server.process.pid), 10, interval=0.1)


def ws_flip(client: WsClient, person: str) -> dict:
    data = {"person_key": person, "flow": "loop", "transition": "flip"}
    return client.request("transition", data)


def test_changes_made_through_both_workers_reach_subscribers_on_both_in_order(workers):
    server, keys, clients_on_each_worker = workers
    (sub_a, writer_a), (sub_b, writer_b) = clients_on_each_worker(2)
    with server.rest(keys["secret_key"]) as rest:
        new_person(rest, "p")
        for sub in (sub_a, sub_b):
            assert sub.subscribe("p", "step", since_seq=0)["status"] == 200
        errors = []

        def write(client):
            for _ in range(150):
                if ws_flip(client, "p")["status"] != 200:
                    errors.append(1)

        threads = [threading.Thread(target=write, args=(w,)) for w in (writer_a, writer_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        expected = step_seqs(rest, "p")
    assert not errors
    assert len(expected) == 3 + 600  # begin; go (begin, a); then 300 flips of 2 steps each
    for sub in (sub_a, sub_b):
        sub.wait_seq(expected[-1], timeout=20)
        sub.quiet(0.3)
        assert sub.seqs() == expected  # every change, once, in order, whoever made it


# reconciliation (the safety net that reads the log) off: only the relay (or Redis) can deliver
@pytest.mark.parametrize("workers", [{"STEPSTREAM_RECONCILE_INTERVAL": "3600"}], indirect=True)
def test_a_change_on_one_worker_reaches_the_other_relayed(workers):
    server, keys, clients_on_each_worker = workers
    (sub,), (writer,) = clients_on_each_worker(1)
    with server.rest(keys["secret_key"]) as rest:
        new_person(rest, "q")
    assert sub.subscribe("q", "step")["status"] == 200
    assert ws_flip(writer, "q")["status"] == 200
    events = sub.wait_events(2, timeout=5)
    assert [(e["data"]["identifier"], e["data"]["state"]) for e in events] == [
        ("a", "completed"),
        ("b", "active"),
    ]


def test_resuming_with_since_seq_on_the_other_worker_loses_and_repeats_nothing(workers):
    server, keys, clients_on_each_worker = workers
    (first, writer), (second, _) = clients_on_each_worker(2)
    with server.rest(keys["secret_key"]) as rest:
        new_person(rest, "r")
        assert first.subscribe("r", "step", since_seq=0)["status"] == 200
        for _ in range(20):
            assert ws_flip(writer, "r")["status"] == 200
        seen = step_seqs(rest, "r")
        first.wait_seq(seen[-1])
        first.close()  # the browser goes away...
        for _ in range(20):
            flip(rest, "r").raise_for_status()  # ...changes go on, through either worker
        # ...and it comes back on the other worker, from where it was
        assert second.subscribe("r", "step", since_seq=first.seqs()[-1])["status"] == 200
        for _ in range(20):
            assert ws_flip(writer, "r")["status"] == 200
        expected = step_seqs(rest, "r")
    second.wait_seq(expected[-1], timeout=10)
    second.quiet(0.3)
    assert first.seqs() + second.seqs() == expected


def test_two_workers_start_serve_and_stop_cleanly_on_sigterm(tmp_path):
    server = Server(tmp_path / "s", args=("--workers", "2")).start()
    try:
        parent = server.process.pid
        pids = children(parent)
        assert len(pids) == 2
        import httpx

        health = httpx.get(server.url + "/api/v1/health").json()
        redis = bool(os.environ.get("REDIS_URL"))
        assert health["broker"] == ("RedisBroker" if redis else "RelayBroker")
        keys = server.init_project("stop")["environments"][0]
        with server.rest(keys["secret_key"]) as rest:
            rest.post("/flows", json=LOOP_FLOW).raise_for_status()
            new_person(rest, "s")
        client = WsClient(server.ws_url, keys["publishable_key"])
        assert client.subscribe("s", "step")["status"] == 200
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        stopped_in = time.monotonic() - started
        with pytest.raises(Exception):  # noqa: B017 - the socket is closed, whatever the type
            client.quiet(2)
        assert client.close_code == 1012  # clients are told to go elsewhere, as with one process
        assert stopped_in < 15
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
        log = server.log()
        assert "with 2 workers" in log
        assert "Traceback" not in log
    finally:
        server.kill()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_worker_that_dies_is_replaced_and_the_port_keeps_answering(workers):
    server, keys, clients_on_each_worker = workers
    (sub,), (writer,) = clients_on_each_worker(1)
    with server.rest(keys["secret_key"]) as rest:
        new_person(rest, "k")
    assert sub.subscribe("k", "step", since_seq=0)["status"] == 200
    victim = worker_of(server, writer)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        pids = children(server.process.pid)
        return len(pids) == 2 and victim not in pids

    with contextlib.suppress(AssertionError):
        wait_until(replaced, 30, interval=0.1)
    assert len(children(server.process.pid)) == 2 and victim not in children(server.process.pid)
    with server.rest(keys["secret_key"]) as rest:
        for _ in range(10):
            flip(rest, "k").raise_for_status()  # whichever worker answers
        expected = step_seqs(rest, "k")
    sub.wait_seq(expected[-1], timeout=10)
    assert sub.seqs() == expected


@pytest.mark.parametrize(
    "value, said",
    [
        ("0", "must be between 1 and"),
        ("-2", "must be between 1 and"),
        ("100000", "must be between 1 and"),
        ("two", "must be a whole number, not 'two'"),
    ],
)
def test_a_bad_workers_value_is_a_clear_error(tmp_path, value, said):
    done = run_command(tmp_path, "serve", "--workers", value, "--port", "1")
    assert done.returncode == 2
    assert "--workers" in done.stderr and said in done.stderr
    assert "Traceback" not in done.stderr


def _metric(server: Server, name: str) -> float:
    """One scrape of GET /metrics on a new connection (any worker may answer)."""
    import httpx

    with httpx.Client() as client:
        text = client.get(server.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_metrics_count_every_worker_whichever_one_answers(workers):
    server, keys, clients_on_each_worker = workers
    (writer_a,), (writer_b,) = clients_on_each_worker(1)
    with server.rest(keys["secret_key"]) as rest:
        new_person(rest, "m")
    before = _metric(server, "stepstream_state_changes_total")
    for _ in range(5):
        assert ws_flip(writer_a, "m")["status"] == 200
    middle = _metric(server, "stepstream_state_changes_total")
    for _ in range(5):
        assert ws_flip(writer_b, "m")["status"] == 200
    after = [_metric(server, "stepstream_state_changes_total") for _ in range(6)]
    assert middle - before > 0
    assert after == [after[0]] * 6  # the same total whichever worker answered
    assert after[0] - middle == middle - before  # the other worker's changes count too
    # each worker writes its gauges every second
    wait_until(lambda: _metric(server, "stepstream_connections") >= 2, 5, interval=0.1)


def test_writers_on_both_workers_at_once_all_succeed(workers):
    """SQLite: 8 writers over 2 processes on one file; none meets "database is locked"."""
    server, keys, clients_on_each_worker = workers
    group_a, group_b = clients_on_each_worker(4)
    writers = group_a + group_b
    with server.rest(keys["secret_key"]) as rest:
        for i in range(len(writers)):
            new_person(rest, f"w{i}")
    statuses: list[int] = []

    def write(i: int, client: WsClient) -> None:
        for _ in range(40):
            statuses.append(ws_flip(client, f"w{i}")["status"])

    threads = [threading.Thread(target=write, args=(i, c)) for i, c in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert statuses == [200] * (40 * len(writers))
    with server.rest(keys["secret_key"]) as rest:
        for i in range(len(writers)):
            assert len(step_seqs(rest, f"w{i}")) == 3 + 80
    assert "locked" not in server.log()


def test_a_key_revoked_through_one_worker_is_refused_by_every_worker_at_once(workers):
    """Each worker remembers keys it has seen; a revocation on either must not wait."""
    server, keys, _ = workers
    old = keys["secret_key"]
    with server.rest(old) as rest:
        new = rest.post("/keys", json={"kind": "secret"}).json()
        old_id = next(k["id"] for k in rest.get("/keys").json() if k["hint"] in old)
        rest.put("/people/p1", json={"data": {}}).raise_for_status()

    def statuses(key: str, path: str) -> set[int]:
        found = set()
        for _ in range(24):  # fresh connections: the kernel spreads them over both workers
            with server.rest(key) as fresh:
                found.add(fresh.get(path).status_code)
        return found

    for path in ("/people/p1", "/flows"):  # the fast person read and a Django view
        assert statuses(old, path) == {200}
    with server.rest(new["key"]) as rest:
        assert rest.post(f"/keys/{old_id}/revoke").status_code == 200
    for path in ("/people/p1", "/flows"):
        assert statuses(old, path) == {401}
        assert statuses(new["key"], path) == {200}
