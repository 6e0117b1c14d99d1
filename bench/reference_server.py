"""The references: bare `websockets` servers doing the least work that still does the job.

They speak just enough of Stepstream's WebSocket protocol for the benchmark
harness to drive them exactly as it drives Stepstream:

* `subscribe_state_change` {person_key, entity}: adds the socket to the
  person's subscribers (any person: one is made on first use);
* `get_state` {person_key}: answers the person's `seq`;
* `transition` {person_key, ...}: the "publish" call. Like a Stepstream
  flip (one step completes, another becomes active) it makes two state
  changes: it numbers them with the person's next two `seq`s, stamps
  `occurred_at`, encodes each event ONCE (same keys, same order, same size
  as Stepstream's) and hands the bytes to every subscribed socket with
  `websockets.broadcast`, then answers with the new `seq`;
* `ping`: answers 200.

One process, one event loop (uvloop, as uvicorn uses), no per-subscriber
encoding. Two modes:

* bare (the default): no database, no threads; the ceiling for a Python
  WebSocket server on this machine.
* durable (`--durable PATH`): the least durable work of a change, the limit
  for this language and SQLite on this machine. A `transition` is answered and
  its events sent only once committed: one writer thread takes every change
  waiting on its queue, writes them all in one transaction of a SQLite database
  in WAL mode with `synchronous=NORMAL` (as Stepstream's embedded default is
  set up, stepstream/config.py): per change one upsert of the person's row
  (new `seq`, active step) and one log row per event (the encoded event, keyed
  by person and `seq`), commits, then hands the whole batch back to the event
  loop at once. The person's position is kept in memory (loaded from the
  database at start), so a change reads nothing.

    python -m bench.reference_server --port 8765
    python -m bench.reference_server --port 8765 --durable /tmp/ref.sqlite3
"""

import argparse
import asyncio
import queue
import sqlite3
import threading
import uuid
from datetime import UTC, datetime

import orjson
from websockets.asyncio.connection import broadcast
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

SCHEMA = """
CREATE TABLE IF NOT EXISTS person (
    key TEXT PRIMARY KEY, seq INTEGER NOT NULL, active TEXT NOT NULL,
    flow_id TEXT NOT NULL, step_a TEXT NOT NULL, step_b TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    person_key TEXT NOT NULL, seq INTEGER NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (person_key, seq)
) WITHOUT ROWID;
"""
UPSERT_PERSON = (
    "INSERT INTO person (key, seq, active, flow_id, step_a, step_b) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, active = excluded.active"
)
INSERT_LOG = "INSERT INTO log (person_key, seq, event) VALUES (?, ?, ?)"


class Writer:
    """One writer thread: every change waiting on its queue in one transaction (group commit)."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.batches = self.changes = 0
        self.thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def load(self) -> dict[str, dict]:
        """The people as the database has them (the server starts where it stopped)."""
        rows = self.db.execute("SELECT key, seq, active, flow_id, step_a, step_b FROM person")
        return {
            key: _new_person(seq, active, flow_id, {"a": step_a, "b": step_b})
            for key, seq, active, flow_id, step_a, step_b in rows
        }

    def submit(self, person_row: tuple, log_rows: list[tuple]) -> asyncio.Future:
        """Queues one change; the future is resolved on the loop once its batch committed."""
        future = self.loop.create_future()
        self.jobs.put((future, person_row, log_rows))
        return future

    def _run(self) -> None:
        db, jobs = self.db, self.jobs
        while True:
            batch = [jobs.get()]
            while True:
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            error = None
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(UPSERT_PERSON, [job[1] for job in batch])
                db.executemany(INSERT_LOG, [row for job in batch for row in job[2]])
                db.execute("COMMIT")
            except sqlite3.Error as e:
                error = e
                if db.in_transaction:
                    db.execute("ROLLBACK")
            self.batches += 1
            self.changes += len(batch)
            self.loop.call_soon_threadsafe(_resolve, batch, error)


def _resolve(batch: list, error: BaseException | None) -> None:
    """On the loop: a batch's callers in queue order, so each person's events stay in order."""
    for future, _, _ in batch:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def _new_person(seq=0, active="a", flow_id=None, steps=None) -> dict:
    return {
        "seq": seq,
        "subs": {"flow": {}, "step": {}},  # entity -> {socket: request_id}
        "flow_id": flow_id or str(uuid.uuid4()),
        "steps": steps or {"a": str(uuid.uuid4()), "b": str(uuid.uuid4())},
        "active": active,
    }


def _response(rid, action, data=None) -> str:
    body = {"request_id": rid, "errors": [], "status": 200, "action": action}
    if data is not None:
        body["data"] = data
    return orjson.dumps(body).decode()


def _unwritten(rid, action, error: Exception) -> str:
    body = {"request_id": rid, "errors": [{"message": f"not written: {error}"}], "status": 503}
    return orjson.dumps({**body, "action": action}).decode()


class Reference:
    """The people (in memory) and, in durable mode, the writer that makes their changes last."""

    def __init__(self, writer: Writer | None = None):
        self.writer = writer
        self.people: dict[str, dict] = writer.load() if writer else {}

    def person(self, key: str) -> dict:
        person = self.people.get(key)
        if person is None:
            person = self.people[key] = _new_person()
        return person

    def change(self, key: str, person: dict) -> list[bytes]:
        """Two step changes, as a Stepstream flip makes them: each event's data encoded once.

        Bare, nothing is encoded for a person without subscribers; durable, always
        (the log keeps it)."""
        source = person["active"]
        target = "b" if source == "a" else "a"
        person["active"] = target
        if not person["subs"]["step"] and self.writer is None:
            person["seq"] += 2
            return []
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        events = []
        for identifier, state, previous in (
            (source, "completed", "active"),
            (target, "active", "inactive"),
        ):
            person["seq"] += 1
            events.append(
                orjson.dumps(
                    {
                        "entity": "step",
                        "id": person["steps"][identifier],
                        "identifier": identifier,
                        "state": state,
                        "previous_state": previous,
                        "seq": person["seq"],
                        "person_key": key,
                        "flow": "loop",
                        "flow_id": person["flow_id"],
                        "occurred_at": now,
                    }
                )
            )
        return events

    async def commit(self, key: str, person: dict, events: list[bytes]) -> None:
        """Durable mode: returns once the change is committed (its batch's COMMIT returned)."""
        assert self.writer is not None
        seq = person["seq"]
        steps = person["steps"]
        await self.writer.submit(
            (key, seq, person["active"], person["flow_id"], steps["a"], steps["b"]),
            [(key, seq - len(events) + 1 + i, data) for i, data in enumerate(events)],
        )

    @staticmethod
    def send(person: dict, events: list[bytes]) -> None:
        """Hands each event's bytes to every subscriber of the person's steps."""
        subs = person["subs"]["step"]
        if not subs:
            return
        by_rid: dict = {}
        for ws, rid in subs.items():
            by_rid.setdefault(rid, []).append(ws)
        for data in events:
            for rid, sockets in by_rid.items():
                event = b'{"event":"state_change","request_id":' + orjson.dumps(rid) + b',"data":'
                broadcast(sockets, event + data + b"}", text=True)

    async def handler(self, ws) -> None:
        mine: list[tuple[dict, str]] = []
        try:
            async for raw in ws:
                message = orjson.loads(raw)
                rid = message.get("request_id")
                action = message.get("action")
                data = message.get("data") or {}
                if action == "transition":
                    key = data["person_key"]
                    person = self.person(key)
                    events = self.change(key, person)
                    seq = person["seq"]
                    if self.writer is not None:
                        try:
                            await self.commit(key, person, events)
                        except sqlite3.Error as e:
                            await ws.send(_unwritten(rid, action, e))
                            continue
                    self.send(person, events)
                    await ws.send(_response(rid, action, {"seq": seq}))
                elif action == "subscribe_state_change":
                    person = self.person(data["person_key"])
                    entity = data.get("entity", "step")
                    person["subs"][entity].setdefault(ws, rid)
                    mine.append((person, entity))
                    await ws.send(_response(rid, action))
                elif action == "get_state":
                    person = self.person(data["person_key"])
                    await ws.send(_response(rid, action, {"seq": person["seq"]}))
                else:
                    await ws.send(_response(rid, action))
        except ConnectionClosed:
            pass
        finally:
            for person, entity in mine:
                person["subs"][entity].pop(ws, None)


async def main(host: str, port: int, durable: str | None = None) -> None:
    writer = Writer(durable, asyncio.get_running_loop()) if durable else None
    reference = Reference(writer)
    if writer is not None:
        writer.thread.start()
    async with serve(
        reference.handler,
        host,
        port,
        compression=None,
        max_size=64 * 1024,
        ping_interval=20,
        ping_timeout=20,
        backlog=2048,
    ) as server:
        mode = f"durable ({durable})" if durable else "bare"
        print(f"reference, {mode}: serving ws://{host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--durable",
        metavar="PATH",
        help="commit every change to this SQLite database (WAL, group commit) before answering",
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.host, args.port, args.durable))
    except ImportError:
        asyncio.run(main(args.host, args.port, args.durable))
