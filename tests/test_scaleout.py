"""Several `serve` processes as one system on PostgreSQL (+ Redis): nothing lost, nothing twice.

Each fault is made for real: a server SIGKILLed, Redis killed and restarted,
PostgreSQL stopped and started, a writer dying between commit and publish.
Every test ends by checking that the seq values a client saw are exactly the
person's log.
"""

import contextlib
import os
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from stepstream.testing.servers import Server
from tests.conftest import LOOP_FLOW
from tests.services import PrivatePostgres, PrivateRedis
from tests.waiting import wait_until
from tests.wsclient import WsClient

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"),
        reason="needs PostgreSQL: set DATABASE_URL (and REDIS_URL)",
    ),
    pytest.mark.slow,  # servers started, killed and restarted, with PostgreSQL and Redis
]


def step_seqs(rest, person: str) -> list[int]:
    """The person's step changes according to the log (the truth clients must match)."""
    events, since = [], 0
    while True:
        page = rest.get(f"/people/{person}/events", params={"since_seq": since}).json()
        if not page:
            return [e["seq"] for e in events if e["entity"] == "step"]
        events += page
        since = page[-1]["seq"]


def new_person(rest, key: str) -> None:
    rest.put(f"/people/{key}", json={"data": {}}).raise_for_status()
    rest.post(f"/people/{key}/flows", json={"flow": "loop"}).raise_for_status()
    rest.post(f"/people/{key}/flows/loop/transitions", json={"transition": "go"}).raise_for_status()


def flip(rest, key: str) -> httpx.Response:
    return rest.post(f"/people/{key}/flows/loop/transitions", json={"transition": "flip"})


@pytest.fixture
def cluster(tmp_path):
    """Start servers on demand; all are stopped at the end."""
    started = []

    def start(name: str, **env) -> Server:
        server = Server(tmp_path / name, **env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def tenant_on(cluster):
    def setup(server: Server) -> dict:
        keys = server.init_project("scale")["environments"][0]
        with server.rest(keys["secret_key"]) as rest:
            rest.post("/flows", json=LOOP_FLOW).raise_for_status()
        return keys

    return setup


def test_a_change_through_one_process_reaches_a_subscriber_on_another(cluster, tenant_on):
    # b's reconciliation (the safety net) is off: the change must come by Redis or the log's tail
    a, b = cluster("a"), cluster("b", STEPSTREAM_RECONCILE_INTERVAL="3600")
    keys = tenant_on(a)
    with a.rest(keys["secret_key"]) as rest_a, WsClient(b.ws_url, keys["publishable_key"]) as ws:
        new_person(rest_a, "p")
        ws.subscribe("p", "step")
        flip(rest_a, "p").raise_for_status()
        events = ws.wait_events(2, timeout=5)
    assert [(e["data"]["identifier"], e["data"]["state"]) for e in events] == [
        ("a", "completed"),
        ("b", "active"),
    ]
    delivered = httpx.get(b.url + "/api/v1/health").json()["delivered"]
    assert delivered.get("log", 0) == 0, delivered  # not read back from the log by a fill


def test_a_thousand_changes_over_two_processes_arrive_on_both_in_order(cluster, tenant_on):
    a, b = cluster("a"), cluster("b")
    keys = tenant_on(a)
    with a.rest(keys["secret_key"]) as rest_a, b.rest(keys["secret_key"]) as rest_b:
        new_person(rest_a, "p")
        on_a = WsClient(a.ws_url, keys["publishable_key"])
        on_b = WsClient(b.ws_url, keys["publishable_key"])
        for client in (on_a, on_b):
            client.subscribe("p", "step", since_seq=0)
        errors = []

        def writer(rest):
            for _ in range(250):
                if flip(rest, "p").status_code != 200:
                    errors.append(1)

        threads = [threading.Thread(target=writer, args=(r,)) for r in (rest_a, rest_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        expected = step_seqs(rest_a, "p")
        for client in (on_a, on_b):
            client.wait_seq(expected[-1], timeout=20)
            client.quiet(0.3)
            client.close()
    assert not errors
    assert len(expected) == 3 + 1000  # begin; go (begin, a); then 500 flips of 2 steps each
    assert on_a.seqs() == expected
    assert on_b.seqs() == expected


class Follower:
    """A subscriber that reconnects to the next server with since_seq when its socket dies."""

    def __init__(self, servers, key, person):
        self.servers, self.key, self.person = list(servers), key, person
        self.seqs: list[int] = []
        self.reconnects = 0
        self.subscribed = threading.Event()  # set once its first subscription is served
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            server = self.servers[self.reconnects % len(self.servers)]
            try:
                with WsClient(server.ws_url, self.key) as ws:
                    since = self.seqs[-1] if self.seqs else 0
                    if ws.subscribe(self.person, "step", since_seq=since)["status"] != 200:
                        raise ConnectionError("subscribe refused")
                    self.subscribed.set()
                    while not self.stop.is_set():
                        before = len(ws.events)
                        ws.quiet(0.1)
                        self.seqs += [e["data"]["seq"] for e in ws.events[before:]]
            except (ConnectionClosed, OSError, TimeoutError):
                self.reconnects += 1
                time.sleep(0.1)  # a client's pause before it reconnects

    def ready(self, timeout: float = 10) -> None:
        assert self.subscribed.wait(timeout), "the follower never subscribed"

    def finish(self, last_seq: int, timeout: float = 20):
        with contextlib.suppress(AssertionError):  # the caller compares what was seen
            wait_until(lambda: self.seqs and self.seqs[-1] >= last_seq, timeout)
        time.sleep(0.3)  # an absence: anything repeated would arrive now
        self.stop.set()
        self.thread.join(timeout=10)
        return self.seqs


def test_clients_of_a_killed_server_resume_on_another_with_nothing_lost(cluster, tenant_on):
    a, b = cluster("a"), cluster("b")
    keys = tenant_on(a)
    with b.rest(keys["secret_key"]) as rest:
        new_person(rest, "p")
        followers = [Follower([a, b], keys["publishable_key"], "p") for _ in range(5)]
        for follower in followers:
            follower.ready()
        for i in range(200):
            flip(rest, "p").raise_for_status()
            if i == 80:
                a.kill()  # SIGKILL while clients are subscribed to it
        expected = step_seqs(rest, "p")
    for follower in followers:
        assert follower.finish(expected[-1]) == expected
        assert follower.reconnects >= 1


def test_a_writer_dying_between_commit_and_publish_loses_nothing(cluster, tenant_on):
    a = cluster("a")
    keys = tenant_on(a)
    with a.rest(keys["secret_key"]) as rest, WsClient(a.ws_url, keys["publishable_key"]) as ws:
        new_person(rest, "p")
        ws.subscribe("p", "step")
        code = (
            "import os\n"
            "from stepstream.engine import commits\n"
            "from stepstream import engine\nfrom stepstream.trust import tenants\n"
            "commits._announce = lambda records: os._exit(9)  # dies after commit\n"
            f"env = tenants.environment_for_key({keys['secret_key']!r}, 'secret')\n"
            "engine.do_transition(env, 'p', 'loop', 'flip')\n"
        )
        before = httpx.get(a.url + "/api/v1/health").json()["delivered"]
        died = a.command("manage", "shell", "-c", code)
        events = ws.wait_events(2, timeout=5)
        expected = step_seqs(rest, "p")
        after = httpx.get(a.url + "/api/v1/health").json()["delivered"]
    assert died.returncode == 9
    assert [e["data"]["seq"] for e in events] == expected[-2:]
    # never announced: both came from the log (its tail, or reconciliation's fill)
    from_log = sum(after.get(k, 0) - before.get(k, 0) for k in ("log", "tail"))
    assert from_log == 2, (before, after)


def test_redis_killed_and_restarted_under_load_loses_nothing(cluster, tenant_on):
    redis = PrivateRedis()
    try:
        a = cluster("a", REDIS_URL=redis.url)
        b = cluster("b", REDIS_URL=redis.url)
        keys = tenant_on(a)
        with a.rest(keys["secret_key"]) as rest:
            new_person(rest, "p")
            follower = Follower([b], keys["publishable_key"], "p")
            follower.ready()
            slowest = 0.0
            outage_ready = None
            for i in range(150):
                started = time.monotonic()
                flip(rest, "p").raise_for_status()  # the server answers while Redis is down
                slowest = max(slowest, time.monotonic() - started) if 50 <= i < 100 else slowest
                if i == 50:
                    redis.stop()
                    outage_ready = httpx.get(a.url + "/api/v1/ready", timeout=5)
                if i == 100:
                    redis.start()
                time.sleep(0.01)  # the writes spread over time, so the outage falls among them
            expected = step_seqs(rest, "p")
            seen = follower.finish(expected[-1])
            stats = httpx.get(b.url + "/api/v1/health").json()["delivered"]
    finally:
        redis.stop()
    assert seen == expected
    assert outage_ready.status_code == 503 and outage_ready.json()["redis"].startswith("unavail")
    assert slowest < 2.0
    relayed = stats.get("log", 0) + stats.get("tail", 0)
    print(
        f"\nredis outage: {len(expected)} step changes, relayed from the log: {relayed}, "
        f"by stats {stats}"
    )
    assert relayed > 0


def test_postgresql_restart_fails_fast_with_503_then_recovers(cluster, tenant_on):
    pg = PrivatePostgres()
    try:
        a = cluster("a", DATABASE_URL=pg.url, REDIS_URL="")
        keys = tenant_on(a)
        with a.rest(keys["secret_key"]) as rest:
            new_person(rest, "p")
            follower = Follower([a], keys["publishable_key"], "p")
            follower.ready()
            for _ in range(10):
                flip(rest, "p").raise_for_status()
            pg.stop()
            outage = []
            for _ in range(3):
                started = time.monotonic()
                response = flip(rest, "p")
                outage.append((response.status_code, time.monotonic() - started, response.json()))
            pg.start()
            wait_until(lambda: flip(rest, "p").status_code == 200, timeout=30, interval=0.2)
            for _ in range(10):
                flip(rest, "p").raise_for_status()
            expected = step_seqs(rest, "p")
            seen = follower.finish(expected[-1], timeout=30)
    finally:
        pg.destroy()
    for status, seconds, body in outage:
        assert status == 503, body
        assert seconds < 5.0
        assert body["errors"]
    assert seen == expected
    assert expected == list(range(expected[0], expected[0] + len(expected)))  # nothing half-written


def test_sigterm_closes_sockets_with_1012_so_clients_go_elsewhere(cluster, tenant_on):
    a = cluster("a")
    keys = tenant_on(a)
    with a.rest(keys["secret_key"]) as rest:
        new_person(rest, "p")
    client = WsClient(a.ws_url, keys["publishable_key"])
    client.subscribe("p", "step")
    started = time.monotonic()
    a.stop()  # SIGTERM
    with pytest.raises(ConnectionClosed):
        client.quiet(5)
    assert client.close_code == 1012
    assert a.process.returncode is not None and time.monotonic() - started < 10
