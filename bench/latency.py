"""Commit-to-receipt latency of one change to one subscriber, through the Python client.

Starts a real `stepstream serve` (embedded SQLite unless DATABASE_URL is
set), follows a person with `stepstream_client.Client` (snapshot, then
subscriptions), then makes N changes one at a time through the client's
`transition` and measures, for each event, receipt time minus the event's
`occurred_at` (stamped inside the engine's transaction, just before commit:
so this slightly over-states commit-to-receipt). Same machine, same clock.
It also checks that the client's live copy ends where the server's does.

    python -m bench.latency [--changes 1000]
"""

import argparse
import asyncio
import json
import statistics
import tempfile
import time

from bench.targets import BENCH_SERVER_ENV
from stepstream.testing.flows import LOOP_FLOW, occurred_at
from stepstream.testing.servers import Server
from stepstream_client import Client


async def follow(server: Server, key: str, changes: int) -> list[float]:
    latencies: list[float] = []

    def on_event(change) -> None:
        latencies.append(time.time() - occurred_at(change["occurred_at"]))

    async with Client(server.url, key, "p", identify=False) as client:
        client.on_event(on_event)
        for _ in range(changes):
            await client.transition("loop", "flip")
        await client.wait_for(lambda c: len(latencies) >= changes * 2, timeout=30)
        expected = "b" if changes % 2 else "a"
        if client.step("loop", expected).state != "active":
            raise SystemExit(f"the client's copy disagrees: step {expected} is not active")
    return latencies


def run(changes: int) -> dict:
    with tempfile.TemporaryDirectory() as data_dir:
        server = Server(data_dir, **BENCH_SERVER_ENV).start()  # no per-socket rate limit
        try:
            keys = server.init_project("bench")["environments"][0]
            with server.rest(keys["secret_key"]) as rest:
                rest.post("/flows", json=LOOP_FLOW).raise_for_status()
                rest.put("/people/p", json={"data": {}}).raise_for_status()
                rest.post("/people/p/flows", json={"flow": "loop"}).raise_for_status()
                rest.post("/people/p/flows/loop/transitions", json={"transition": "go"})
            latencies = asyncio.run(follow(server, keys["publishable_key"], changes))
            # each flip is one transaction with two step events: keep the last one of each
            per_change = sorted(latencies[1::2])
            return {
                "changes": len(per_change),
                "database": "postgresql" if "PostgreSQL at" in server.log() else "sqlite",
                "median_ms": round(statistics.median(per_change) * 1000, 2),
                "p99_ms": round(per_change[int(len(per_change) * 0.99) - 1] * 1000, 2),
                "max_ms": round(per_change[-1] * 1000, 2),
            }
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=1000)
    print(json.dumps(run(parser.parse_args().changes)))


if __name__ == "__main__":
    main()
