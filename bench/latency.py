"""Commit-to-receipt latency of one change to one subscriber.

Starts a real `stepstream serve` (embedded SQLite unless DATABASE_URL is
set), subscribes one socket to a person, then makes N changes one at a time
through REST and measures, for each event, receipt time minus the event's
`occurred_at` (stamped inside the engine's transaction, just before commit:
so this slightly over-states commit-to-receipt). Same machine, same clock.

    python -m bench.latency [--changes 1000]
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, ".")

from tests.helpers import LOOP_FLOW, occurred_at  # noqa: E402
from tests.servers import Server  # noqa: E402
from tests.wsclient import WsClient  # noqa: E402


def run(changes: int) -> dict:
    with tempfile.TemporaryDirectory() as data_dir:
        server = Server(data_dir).start()
        try:
            keys = server.init_project("bench")["environments"][0]
            with server.rest(keys["secret_key"]) as rest:
                rest.post("/flows", json=LOOP_FLOW).raise_for_status()
                rest.put("/people/p", json={"data": {}}).raise_for_status()
                rest.post("/people/p/flows", json={"flow": "loop"}).raise_for_status()
                rest.post("/people/p/flows/loop/transitions", json={"transition": "go"})
                latencies = []
                with WsClient(server.ws_url, keys["publishable_key"]) as ws:
                    ws.subscribe("p", "flow")  # the flow stays active: no flow events
                    ws.subscribe("p", "step")
                    done = threading.Event()

                    def reader():
                        while len(latencies) < changes * 2:
                            message = json.loads(ws.ws.recv(timeout=10))
                            received = time.time()
                            if message.get("event") == "state_change":
                                latencies.append(
                                    received - occurred_at(message["data"]["occurred_at"])
                                )
                        done.set()

                    thread = threading.Thread(target=reader, daemon=True)
                    thread.start()
                    for _ in range(changes):
                        rest.post("/people/p/flows/loop/transitions", json={"transition": "flip"})
                    done.wait(30)
            # each flip is one transaction with two step events: keep the last one of each
            per_change = latencies[1::2]
            per_change.sort()
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
