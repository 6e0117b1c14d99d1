"""The durable reference (bench/reference_server.py --durable) does the durable work it claims.

Stepstream's "many people" figures are judged against it (docs/performance.md,
"Durable reference"), so a reference that answered before writing, or wrote
nothing, would flatter it. Here: every answered change is in its SQLite file,
one log row per event holding the bytes the subscriber got, and it survives a
SIGKILL: a new process goes on from the committed `seq`.
"""

import signal
import sqlite3
import subprocess
import sys

import orjson
import pytest

from bench import wire
from bench.targets import ROOT, stop_process, wait_for_port
from stepstream.testing.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.backend_agnostic]


def _start(path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.reference_server", "--port", str(port), "--durable", path],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return process, port


class Events:
    def __init__(self):
        self.got: list[tuple[int, bytes]] = []

    def __call__(self, client, seq, data, start, end, now):
        self.got.append((seq, bytes(data[start:end])))


def _flip(client, person):
    return client.request("transition", {"person_key": person, "flow": "loop"})


async def test_every_answered_change_is_committed_and_survives_a_kill(tmp_path):
    path = str(tmp_path / "reference.sqlite3")
    process, port = _start(path)
    try:
        events = Events()
        follower = await wire.connect(port, "reference", sink=events)
        publisher = await wire.connect(port, "reference")
        answer = await follower.request("subscribe_state_change", {"person_key": "p1"})
        assert answer["status"] == 200
        seqs = [(await _flip(publisher, "p1"))["data"]["seq"] for _ in range(3)]
        assert (await _flip(publisher, "p2"))["data"]["seq"] == 2
        assert seqs == [2, 4, 6]
        # answered after the events on the same socket: every event has arrived
        assert (await follower.request("get_state", {"person_key": "p1"}))["data"]["seq"] == 6
        follower.close()
        publisher.close()
    finally:
        stop_process(process, signal.SIGKILL)

    assert [seq for seq, _ in events.got] == [1, 2, 3, 4, 5, 6]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        people = {
            key: (seq, active)
            for key, seq, active in db.execute("SELECT key, seq, active FROM person")
        }
        log = db.execute("SELECT seq, event FROM log WHERE person_key = 'p1' ORDER BY seq")
        logged = {seq: orjson.loads(event) for seq, event in log}
    assert people == {"p1": (6, "b"), "p2": (2, "b")}  # three flips a -> b -> a -> b
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    for seq, frame in events.got:  # the log holds what the subscriber was sent
        assert orjson.loads(frame)["data"] == logged[seq]
    assert (logged[6]["identifier"], logged[6]["state"]) == ("b", "active")

    process, port = _start(path)  # a new process starts where the killed one stopped
    try:
        client = await wire.connect(port, "reference")
        assert (await client.request("get_state", {"person_key": "p1"}))["data"]["seq"] == 6
        assert (await _flip(client, "p1"))["data"]["seq"] == 8
        client.close()
    finally:
        stop_process(process)
