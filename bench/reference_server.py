"""The reference: a bare `websockets` server doing the least work that still does the job.

It speaks just enough of Stepstream's WebSocket protocol for the benchmark
harness to drive it exactly as it drives Stepstream:

* `subscribe_state_change` {person_key, entity}: adds the socket to the
  person's subscribers (any person; there is no database);
* `get_state` {person_key}: answers the person's `seq`;
* `transition` {person_key, ...}: the "publish" call. Like a Stepstream
  flip (one step completes, another becomes active) it makes two state
  changes: it numbers them with the person's next two `seq`s, stamps
  `occurred_at`, encodes each event ONCE (same keys, same order, same size
  as Stepstream's) and hands the bytes to every subscribed socket with
  `websockets.broadcast`, then answers with the new `seq`;
* `ping`: answers 200.

One process, one event loop (uvloop, as uvicorn uses), no threads, no
database, no per-subscriber encoding: the ceiling for a Python WebSocket
server on this machine.

    python -m bench.reference_server --port 8765
"""

import argparse
import asyncio
import uuid
from datetime import UTC, datetime

import orjson
from websockets.asyncio.connection import broadcast
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

people: dict[str, dict] = {}


def _person(key: str) -> dict:
    person = people.get(key)
    if person is None:
        person = people[key] = {
            "seq": 0,
            "subs": {"flow": {}, "step": {}},  # entity -> {socket: request_id}
            "flow_id": str(uuid.uuid4()),
            "steps": {"a": str(uuid.uuid4()), "b": str(uuid.uuid4())},
            "active": "a",
        }
    return person


def _response(rid, action, data=None) -> str:
    body = {"request_id": rid, "errors": [], "status": 200, "action": action}
    if data is not None:
        body["data"] = data
    return orjson.dumps(body).decode()


def _publish(key: str, person: dict) -> int:
    """Two step changes, as a Stepstream flip makes them; each encoded once per request_id."""
    subs = person["subs"]["step"]
    source = person["active"]
    target = "b" if source == "a" else "a"
    person["active"] = target
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for identifier, state, previous in (
        (source, "completed", "active"),
        (target, "active", "inactive"),
    ):
        person["seq"] += 1
        if not subs:
            continue
        data = orjson.dumps(
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
        by_rid: dict = {}
        for ws, rid in subs.items():
            by_rid.setdefault(rid, []).append(ws)
        for rid, sockets in by_rid.items():
            event = b'{"event":"state_change","request_id":' + orjson.dumps(rid) + b',"data":'
            broadcast(sockets, event + data + b"}", text=True)
    return person["seq"]


async def handler(ws) -> None:
    mine: list[tuple[dict, str]] = []
    try:
        async for raw in ws:
            message = orjson.loads(raw)
            rid = message.get("request_id")
            action = message.get("action")
            data = message.get("data") or {}
            if action == "transition":
                key = data["person_key"]
                seq = _publish(key, _person(key))
                await ws.send(_response(rid, action, {"seq": seq}))
            elif action == "subscribe_state_change":
                person = _person(data["person_key"])
                entity = data.get("entity", "step")
                person["subs"][entity].setdefault(ws, rid)
                mine.append((person, entity))
                await ws.send(_response(rid, action))
            elif action == "get_state":
                person = _person(data["person_key"])
                await ws.send(_response(rid, action, {"seq": person["seq"]}))
            else:
                await ws.send(_response(rid, action))
    except ConnectionClosed:
        pass
    finally:
        for person, entity in mine:
            person["subs"][entity].pop(ws, None)


async def main(host: str, port: int) -> None:
    async with serve(
        handler,
        host,
        port,
        compression=None,
        max_size=64 * 1024,
        ping_interval=20,
        ping_timeout=20,
        backlog=2048,
    ) as server:
        print(f"reference: serving ws://{host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.host, args.port))
    except ImportError:
        asyncio.run(main(args.host, args.port))
