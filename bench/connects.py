"""Where a connect's CPU goes: connect + two subscribes on four servers, side by side.

    python -m bench.connects [--n 5000] [--rounds 2]

Each server gets `n` sockets, 100 opening at a time, each sending two
`subscribe_state_change` requests (flow and step, no `since_seq`) and waiting
for both answers, as bench/storm.py's connect phase does. Reported: the
server's CPU per connect + subscribe (user + system, from /proc), the
steadiest figure on a shared machine, and the rate. Servers, one after the
other, `rounds` times in turn:

* `bare uvicorn`: bench/bare_app.py, answering every request with 200;
* `bare uvicorn + serve's protocols`: the same app under the HTTP and
  WebSocket protocol classes `stepstream serve` runs (its limits, bounded
  buffers) and its collector setting;
* `reference`: bench/reference_server.py, a bare `websockets` server;
* `stepstream`: `stepstream serve` on SQLite with `n` people.

The first two answer without reading anything: the difference between the
second and Stepstream is Stepstream's own work per connect (docs/performance-history.md,
"Reconnect storm", "Round three").
"""

import argparse
import asyncio
import time

from bench import wire
from bench.targets import ChildServer, Reference, Stepstream, cpu_seconds

CONCURRENCY = 100


class BareUvicorn(ChildServer):
    name = "bare uvicorn"
    key = "any"
    extra: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        return ["bench.bare_app", "--port", str(self.port), *self.extra]


class BareWithProtocols(BareUvicorn):
    name = "bare uvicorn + serve's protocols"
    extra = ("--stepstream-protocols",)


async def _connects(port: int, pid: int, key: str, n: int) -> tuple[float, float]:
    """(connects + subscribes per s, server CPU ms per connect + subscribe)."""
    sockets = []
    people = iter(range(n))

    async def opener():
        for i in people:
            sock = await wire.connect(port, key)
            sockets.append(sock)
            for entity in ("flow", "step"):
                answer = await sock.request(
                    "subscribe_state_change", {"person_key": f"c{i}", "entity": entity}
                )
                if answer.get("status") != 200:
                    raise RuntimeError(f"subscribe answered {answer}")

    cpu_before, started = cpu_seconds(pid), time.perf_counter()
    try:
        await asyncio.gather(*(opener() for _ in range(CONCURRENCY)))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
    finally:
        for sock in sockets:
            sock.close()
        await asyncio.sleep(1)  # the server lets them go before the next round
    return n / elapsed, 1000 * cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    stepstream = Stepstream()
    stepstream.prepare([("c", args.n)], start_loop=True)
    targets = [BareUvicorn(), BareWithProtocols(), Reference(), stepstream]
    results: dict[str, list] = {t.name: [] for t in targets}
    try:
        for target in targets:
            target.start()
        for _ in range(args.rounds):
            for target in targets:
                rate, ms = asyncio.run(_connects(target.port, target.pid, target.key, args.n))
                results[target.name].append((rate, ms))
                print(f"{target.name}: {rate:,.0f}/s, {ms:.3f} ms CPU each", flush=True)
    finally:
        for target in targets:
            target.stop()
    print("\n| server | connect + subscribe per s | server CPU ms each |\n| --- | ---: | ---: |")
    for name, runs in results.items():
        rates = ", ".join(f"{r:,.0f}" for r, _ in runs)
        cpus = ", ".join(f"{m:.2f}" for _, m in runs)
        print(f"| {name} | {rates} | {cpus} |")


if __name__ == "__main__":
    main()
