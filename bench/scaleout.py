"""Commit-to-receipt latency across two server processes (PostgreSQL + Redis).

Two `stepstream serve` processes share DATABASE_URL and REDIS_URL; N
subscribers of one person are split evenly over them; changes are made one at
a time through REST, alternating between the processes. For every delivered
event: receipt time minus the event's `occurred_at` (stamped in the engine's
transaction just before commit).

    DATABASE_URL=postgres://... REDIS_URL=redis://... python -m bench.scaleout --subscribers 1000
"""

import argparse
import asyncio
import json
import os
import resource
import statistics
import tempfile
import time

import httpx
import websockets

from stepstream.testing.flows import LOOP_FLOW, occurred_at
from stepstream.testing.servers import Server


async def subscriber(url: str, latencies: list, ready: asyncio.Event, counter: list, total: int):
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(
            json.dumps(
                {
                    "action": "subscribe_state_change",
                    "request_id": 1,
                    "data": {"person_key": "p", "entity": "step"},
                }
            )
        )
        await ws.recv()
        counter[0] += 1
        if counter[0] == total:
            ready.set()
        async for message in ws:
            received = time.time()
            data = json.loads(message)
            if data.get("event") == "state_change":
                latencies.append(received - occurred_at(data["data"]["occurred_at"]))


async def run(subscribers: int, changes: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        servers = [Server(f"{tmp}/a").start(), Server(f"{tmp}/b").start()]
        try:
            keys = servers[0].init_project("bench")["environments"][0]
            rests = [
                httpx.AsyncClient(
                    base_url=s.url + "/api/v1",
                    timeout=30,
                    headers={"Authorization": f"Bearer {keys['secret_key']}"},
                )
                for s in servers
            ]
            await rests[0].post("/flows", json=LOOP_FLOW)
            await rests[0].put("/people/p", json={"data": {}})
            await rests[0].post("/people/p/flows", json={"flow": "loop"})
            await rests[0].post("/people/p/flows/loop/transitions", json={"transition": "go"})
            latencies: list[float] = []
            ready, counter = asyncio.Event(), [0]
            tasks = [
                asyncio.create_task(
                    subscriber(
                        f"{servers[i % 2].ws_url}/ws?key={keys['publishable_key']}",
                        latencies,
                        ready,
                        counter,
                        subscribers,
                    )
                )
                for i in range(subscribers)
            ]
            await asyncio.wait_for(ready.wait(), 120)
            for i in range(changes):
                await rests[i % 2].post(
                    "/people/p/flows/loop/transitions", json={"transition": "flip"}
                )
                await asyncio.sleep(0.05)
            deadline = time.monotonic() + 30
            while len(latencies) < subscribers * changes * 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for rest in rests:
                await rest.aclose()
        finally:
            for server in servers:
                server.stop()
    latencies.sort()
    return {
        "processes": 2,
        "subscribers": subscribers,
        "changes": changes,
        "events_expected": subscribers * changes * 2,
        "events_received": len(latencies),
        "median_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
        "database": os.environ.get("DATABASE_URL", "sqlite").split("@")[-1],
        "redis": bool(os.environ.get("REDIS_URL")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("bench.scaleout needs a shared DATABASE_URL=postgres://...")
    print(json.dumps(asyncio.run(run(args.subscribers, args.changes))))


if __name__ == "__main__":
    main()
