"""The reconnect storm (issue 15): a server with thousands of subscribers dies and comes back.

For each target (Stepstream, then the reference in the same run):

1. **Connect.** Each follower's snapshot (`get_state`: its `seq` and `epoch`)
   is read first, untimed. Then `clients` followers connect, `concurrency` at
   a time, and send `subscribe_state_change` for `flow` and for `step`, each
   with `since_seq` and `epoch`: the SDK's (re)connect. The rate of this
   phase is the "connect + subscribe" figure.
2. **Before.** `moving` of the people (the others stay quiet) get a change
   each (a `loop` flip: two step events) through a publisher socket, and the
   server is killed (SIGKILL) 50 ms later, with events still in flight.
3. **Down.** Every follower sees its socket drop and reconnects with the
   SDK's backoff (exponential, full jitter: `stepstream_client.backoff_delay`,
   the same formula as the browser SDK's `backoffDelay`), failing until the
   server is back. Meanwhile (Stepstream) another process flips the moving
   people again (`bench.inproc flip`): changes committed while no server runs.
4. **Up.** The server restarts on the same port and data. Each follower
   resubscribes both entities with `since_seq` (its last seq of each) and the
   `epoch`, as the SDK does; the publisher flips the moving people once more
   while the storm is under way.
5. **Check.** Every follower must be live again, and have received each moving
   person's step changes after its snapshot exactly once and in order (checked
   against the server's own `seq` for that person, read with `get_state` at
   the end); a quiet person's follower must have received nothing.

Reported: connect + subscribe per second (phase 1), the time from the
restarted server being ready until the last follower is live again, the same
from the kill, connection attempts, and the check's outcome. The reference
keeps nothing across a restart (no log, no `since_seq`): it gets no changes,
is kept down exactly as long as Stepstream was (so its clients meet the same
backoff windows), and only its reconnection is compared.
"""

import asyncio
import contextlib
import random
import time
from collections import Counter

from bench import wire
from bench.scenarios import log, run_async
from bench.targets import (
    Profiler,
    Reference,
    Stepstream,
    cpu_seconds,
    reset_bench_database,
    wait_for_quiet,
)
from stepstream_client import backoff_delay

ENTITIES = ("flow", "step")


class _Socket(wire.WsClient):
    """A harness socket that also tells when it is lost."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        if not self.lost.done():
            self.lost.set_result(None)


class Follower:
    """One browser: a person, its resume points, the step seqs it received, when it was live."""

    __slots__ = (
        "person",
        "seq",
        "epoch",
        "start_seq",
        "steps",
        "live_at",
        "connects",
        "failures",
        "why",
    )

    def __init__(self, person: str):
        self.person = person
        self.seq = {"flow": 0, "step": 0}
        self.epoch = None
        self.start_seq = 0
        self.steps: list[int] = []
        self.live_at = None  # perf_counter when its subscriptions last answered 200
        self.connects = 0
        self.failures = 0
        self.why = None  # a Counter of failed attempts by kind, shared by all followers


def _sink(client, seq, data, start, end, now) -> None:
    follower = client.tag
    entity = "flow" if data.find(b'"entity":"flow"', start, end) >= 0 else "step"
    if seq > follower.seq[entity]:
        follower.seq[entity] = seq
    if entity == "step":
        follower.steps.append(seq)


async def _open(port: int, key: str, follower: Follower, timeout: float) -> _Socket:
    loop = asyncio.get_running_loop()
    _, sock = await asyncio.wait_for(
        loop.create_connection(
            lambda: _Socket(f"/ws?key={key}", port, _sink, follower), wire.HOST, port
        ),
        timeout,
    )
    try:  # shielded: a timeout must not cancel the future the protocol resolves later
        await asyncio.wait_for(asyncio.shield(sock.handshake), timeout)
    except BaseException:
        sock.handshake.add_done_callback(_consume)
        sock.close()
        raise
    return sock


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


async def _subscribe_both(sock: _Socket, follower: Follower, timeout: float) -> None:
    futures = []
    for entity in ENTITIES:
        data = {"person_key": follower.person, "entity": entity, "since_seq": follower.seq[entity]}
        if follower.epoch is not None:
            data["epoch"] = follower.epoch
        futures.append(sock.send("subscribe_state_change", data)[1])
    try:
        for future in futures:
            message, _ = await asyncio.wait_for(asyncio.shield(future), timeout)
            if message.get("status") != 200:
                raise ConnectionError(f"subscribe answered {message.get('status')}")
    except BaseException:
        for future in futures:  # their outcome no longer matters
            future.add_done_callback(_consume)
        raise


async def _snapshots(port, key, followers: list[Follower], timeout: float) -> None:
    """Each follower's snapshot (`get_state`: its seq and epoch), read over one socket.

    The SDK takes it once, when it first connects; the storm is about what
    comes after, so it is not part of the timed connect + subscribe."""
    sock = await wire.connect(port, key)
    try:
        for start in range(0, len(followers), 500):
            chunk = followers[start : start + 500]
            futures = [sock.send("get_state", {"person_key": f.person})[1] for f in chunk]
            for follower, future in zip(chunk, futures, strict=True):
                state, _ = await asyncio.wait_for(future, timeout)
                if state.get("status") != 200:
                    raise RuntimeError(f"get_state failed: {state}")
                seq = state["data"]["seq"]
                follower.start_seq = seq
                follower.seq = {"flow": seq, "step": seq}
                follower.epoch = state["data"].get("epoch")
    finally:
        sock.close()


async def _first_connect(port, key, follower: Follower, timeout: float) -> _Socket:
    """A connection and both subscriptions from the snapshot's seq, as the SDK does."""
    sock = await _open(port, key, follower, timeout)
    follower.connects += 1
    await _subscribe_both(sock, follower, timeout)
    follower.live_at = time.perf_counter()
    return sock


async def _stay(
    port, key, follower: Follower, sock: _Socket, cfg, stop: asyncio.Event, rng, sockets
):
    """Waits for the socket to drop, then reconnects and resubscribes as the SDK does."""
    attempt = 0
    while True:
        await sock.lost
        if stop.is_set():
            return
        while not stop.is_set():
            await asyncio.sleep(
                backoff_delay(attempt, cfg.storm_base_s, cfg.storm_cap_s, rng.random)
            )
            attempt += 1
            try:
                follower.connects += 1
                sock = await _open(port, key, follower, cfg.storm_timeout_s)
                sockets[follower] = sock
                await _subscribe_both(sock, follower, cfg.storm_timeout_s)
            except (OSError, ConnectionError, TimeoutError) as e:
                follower.failures += 1
                if follower.why is not None:
                    follower.why[_kind(e)] += 1
                if sock is not None and not sock.lost.done():
                    sock.close()
                continue
            follower.live_at = time.perf_counter()
            attempt = 0
            break


def _kind(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "refused (server down)"
    if isinstance(error, TimeoutError):
        return "timeout"
    return f"{type(error).__name__}: {str(error)[:60]}"


async def _flip_all(sock: _Socket, people: list[str], timeout: float, wait: bool = True):
    futures = [
        sock.send("transition", {"person_key": p, "flow": "loop", "transition": "flip"})[1]
        for p in people
    ]
    if not wait:
        return futures
    done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout)
    return sum(1 for d in done if not isinstance(d, BaseException) and d[0].get("status") == 200)


async def _final_seqs(target, people: list[str], timeout: float) -> dict[str, int]:
    """The server's latest seq of each person, over a socket of its own (retried)."""
    for attempt in range(5):
        sock = None
        try:
            sock = await wire.connect(target.port, target.key)
            answers = await asyncio.gather(
                *(sock.request("get_state", {"person_key": p}, timeout) for p in people)
            )
            return {p: a["data"]["seq"] for p, a in zip(people, answers, strict=True)}
        except (OSError, ConnectionError, TimeoutError, RuntimeError):
            if attempt == 4:
                raise
            await asyncio.sleep(1)
        finally:
            if sock is not None:
                sock.close()
    raise AssertionError("unreachable")


async def _listening(port: int, restarting: asyncio.Task) -> float:
    """When the port first accepts a TCP connection (the restarted server listens)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            transport, _ = await loop.create_connection(asyncio.Protocol, wire.HOST, port)
        except OSError:
            if restarting.done():
                restarting.result()  # raises if the restart failed
            await asyncio.sleep(0.01)
            continue
        at = time.perf_counter()
        transport.close()
        return at


async def _connect_with_retry(port, key, deadline: float) -> wire.WsClient:
    while True:
        try:
            return await wire.connect(port, key, timeout=5)
        except (OSError, ConnectionError, TimeoutError):
            if time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.05)


def _profile(cfg, target, phase: str) -> Profiler | None:
    if target.name not in cfg.profile:
        return None
    ext = {"flamegraph": "svg", "speedscope": "json"}.get(cfg.profile_format, "txt")
    suffix = f"-{target.database}" if target.name == "stepstream" else ""
    output = cfg.results_dir / f"profile-storm-{phase}-{target.name}{suffix}.{ext}"
    log(f"profiling {target.name} (pid {target.pid}, {phase}) into {output}")
    return Profiler(target.pid, output, cfg.profile_format)


async def _storm(cfg, target, down_s: float) -> dict:
    n, moving = cfg.storm_clients, cfg.storm_moving
    followers = [Follower(f"m{i}") for i in range(moving)] + [
        Follower(f"q{i}") for i in range(n - moving)
    ]
    if target.name == "reference":
        moving = 0  # nothing survives its restart: no changes, no log to resume from
    movers = [f.person for f in followers[:moving]]
    sockets: dict[Follower, _Socket] = {}
    rng = random.Random(15)
    why = Counter()
    for follower in followers:
        follower.why = why
    stop = asyncio.Event()
    timeout = cfg.storm_timeout_s

    await _snapshots(target.port, target.key, followers, timeout)
    profiler = await asyncio.to_thread(_profile, cfg, target, "connect")
    # 1. connect + subscribe (flow and step, since_seq), `concurrency` at a time
    queue = iter(followers)
    started = time.perf_counter()
    cpu_before = cpu_seconds(target.pid)

    async def opener():
        for follower in queue:
            sockets[follower] = await _first_connect(target.port, target.key, follower, timeout)

    await asyncio.gather(*(opener() for _ in range(min(cfg.storm_concurrency, n))))
    connect_s = time.perf_counter() - started
    connect_rate = round(n / connect_s, 1)
    # the server's own CPU per connection: a figure other work on the machine hardly moves
    connect_cpu_ms = round(1000 * (cpu_seconds(target.pid) - cpu_before) / n, 3)
    log(f"storm {target.name}: {n} followers live, {connect_rate} connect+subscribe/s")
    stays = [
        asyncio.create_task(_stay(target.port, target.key, f, sockets[f], cfg, stop, rng, sockets))
        for f in followers
    ]
    publisher = await wire.connect(target.port, target.key)
    flips = {"before": 0, "down": 0, "after": 0}
    result: dict = {
        "clients": n,
        "moving": moving,
        "connect_subscribe_per_s": connect_rate,
        "server_cpu_ms_per_connect": connect_cpu_ms,
    }
    try:
        # 2. changes just before the kill, some still in flight when it dies
        in_flight = await _flip_all(publisher, movers, timeout, wait=False)
        await asyncio.sleep(0.05)
        killed = time.perf_counter()
        await asyncio.to_thread(_kill, target)
        if profiler is not None:
            await asyncio.to_thread(profiler.stop)
        flips["before"] = sum(
            1
            for f in in_flight
            if f.done() and not f.exception() and f.result()[0]["status"] == 200
        )
        # 3. down: another process writes; the server stays down at least down_s
        if moving:
            done = await asyncio.to_thread(
                target.inproc,
                "flip",
                "--secret-key",
                target.secret,
                "--prefix",
                "m",
                "--count",
                str(moving),
            )
            flips["down"] = done["flips"]
        rest = down_s - (time.perf_counter() - killed)
        if rest > 0:
            await asyncio.sleep(rest)
        # 4. up: restart on the same port and data; changes while the storm is under way.
        # "ready" is the first moment the port takes a connection (polled every 10 ms)
        restarting = asyncio.create_task(asyncio.to_thread(_restart, target))
        ready = await _listening(target.port, restarting)
        await restarting
        storm_cpu = cpu_seconds(target.pid)  # the new process: from its start
        profiler = _profile(cfg, target, "restart")  # attaching blocks 0.5 s: clients wait
        log(f"storm {target.name}: restarted, ready {ready - killed:.2f} s after the kill")
        publisher.close()
        if moving:
            try:  # the publisher queues like everyone else: the storm can keep it out a while
                publisher = await _connect_with_retry(target.port, target.key, ready + 120)
                flips["after"] = await _flip_all(publisher, movers, timeout * 4)
            except (OSError, ConnectionError, TimeoutError, RuntimeError) as e:
                result["publisher_error"] = f"{type(e).__name__}: {e}"  # the check still holds
        deadline = ready + cfg.storm_deadline_s

        def all_live():
            return all(f.live_at is not None and f.live_at > killed for f in followers)

        while not all_live() and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        storm_cpu = cpu_seconds(target.pid) - storm_cpu
        live_times = sorted(
            f.live_at - ready for f in followers if f.live_at and f.live_at > killed
        )
        # only when every client came back within the deadline: a partial figure would flatter
        last_live = max(live_times) if len(live_times) == n else None
        # 5. check: the server's seq of each moving person, then what each follower got
        finals = {}
        if moving:
            finals = await _final_seqs(target, movers, timeout * 4)
            settle = time.perf_counter() + cfg.storm_deadline_s
            while time.perf_counter() < settle and any(
                f.seq["step"] < finals[f.person] for f in followers[:moving]
            ):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # anything sent twice would arrive now
        check = _check(followers, finals)
        result.update(
            {
                "down_s": round(down_s, 2),
                "ready_after_kill_s": round(ready - killed, 2),
                "live_again": len(live_times),
                "last_live_after_ready_s": round(last_live, 2) if last_live is not None else None,
                "last_live_after_kill_s": (
                    round(last_live + ready - killed, 2) if last_live is not None else None
                ),
                "median_live_after_ready_s": (
                    round(live_times[len(live_times) // 2], 2) if live_times else None
                ),
                "reconnect_per_s": (
                    round(len(live_times) / last_live, 1) if last_live and last_live > 0 else None
                ),
                # the restarted server's CPU from listening until the last client was live,
                # per client (it includes the changes made meanwhile)
                "server_cpu_ms_per_resume": round(1000 * storm_cpu / n, 3),
                "connection_attempts": sum(f.connects for f in followers) - n,
                "failed_attempts": sum(f.failures for f in followers),
                "failed_by_kind": dict(why.most_common()),
                "changes": flips,
                "backoff": {"base_s": cfg.storm_base_s, "cap_s": cfg.storm_cap_s},
                **check,
            }
        )
        log(
            f"storm {target.name}: {len(live_times)}/{n} live again, the last "
            f"{result['last_live_after_ready_s']} s after the restart was ready; "
            f"checked: {check['resumed_ok']} ok, lost {check['lost_events']}, "
            f"duplicated {check['duplicate_events']}, out of order {check['out_of_order']}"
        )
    finally:
        if profiler is not None:
            await asyncio.to_thread(profiler.stop)
        stop.set()
        for sock in list(sockets.values()):
            sock.close()
        publisher.close()
        for task in stays:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*stays, return_exceptions=True)
        await asyncio.sleep(0.2)
    return result


def _check(followers: list[Follower], finals: dict) -> dict:
    """Each follower's step seqs against what its person's log holds after its snapshot."""
    ok = lost = duplicated = disorder = 0
    wrong = []
    for f in followers:
        final = finals.get(f.person, f.start_seq)
        expected = list(range(f.start_seq + 1, final + 1))
        got = f.steps
        if got == expected:
            ok += 1
            continue
        duplicated += len(got) - len(set(got))
        lost += len(set(expected) - set(got))
        disorder += sum(1 for a, b in zip(got, got[1:], strict=False) if b < a)
        if len(wrong) < 5:
            wrong.append({"person": f.person, "expected": expected[:10], "got": got[:10]})
    return {
        "resumed_ok": ok,
        "lost_events": lost,
        "duplicate_events": duplicated,
        "out_of_order": disorder,
        "wrong_examples": wrong,
    }


def _kill(target) -> None:
    if isinstance(target, Stepstream):
        target.server.kill()
    else:
        target.process.kill()
        target.process.wait(timeout=15)


def _restart(target) -> None:
    if isinstance(target, Stepstream):
        target.server.start(timeout=60)
    else:
        target.start()


def _run(cfg, kind: str, down_s: float) -> dict:
    if kind == "stepstream":
        if cfg.database_url:
            reset_bench_database(cfg.database_url)
        target = Stepstream(cfg.database_url, cfg.server_env)
        moving = cfg.storm_moving
        target.keys = target.inproc(
            "setup",
            *("--people", "m", str(moving), "--start-loop"),
            *("--idle-people", "q", str(cfg.storm_clients - moving)),
        )
    else:
        target = Reference()
    try:
        if cfg.quiet_wait_s:
            load = wait_for_quiet(cfg.quiet_wait_s)
            log(f"storm {kind}: other work on the machine uses {load:.0f}% of a core")
        target.start()
        return run_async(_storm(cfg, target, down_s))
    finally:
        target.stop()


def storm(cfg) -> dict:
    """Stepstream first; the reference is then kept down as long as Stepstream was
    (not in quick mode, which keeps the run short)."""
    out = {}
    down_s = cfg.storm_down_s
    for kind in cfg.targets:
        out[kind] = _run(cfg, kind, down_s)
        if kind == "stepstream" and not cfg.quick:
            down_s = max(down_s, out[kind]["ready_after_kill_s"])
    return out
