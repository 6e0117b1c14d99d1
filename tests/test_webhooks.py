"""Webhooks: registration, Standard Webhooks signatures, delivery to a real receiver.

Delivery tests run real `serve` processes (tests/servers.py) and a real HTTP
receiver (tests/receiver.py) with short retry timings.
"""

import asyncio
import itertools
import json
import os
import socket
import threading
import time
import urllib.parse

import pytest

from stepstream.testing.flows import LOOP_FLOW
from stepstream.testing.servers import Server
from tests.receiver import Receiver, verify

FAST = {
    "STEPSTREAM_WEBHOOK_ALLOW_PRIVATE": "1",
    "STEPSTREAM_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "STEPSTREAM_WEBHOOK_RETRY_MAX_SECONDS": "1",
    "STEPSTREAM_WEBHOOK_TIMEOUT_SECONDS": "1",
    "STEPSTREAM_WEBHOOK_POLL_INTERVAL": "0.05",
    "STEPSTREAM_WEBHOOK_LEASE_SECONDS": "3",
}


# -- signatures ---------------------------------------------------------------


def test_signature_matches_the_specifications_test_vector():
    """The Standard Webhooks libraries' published known value."""
    from stepstream.delivery.webhooks.signing import sign

    assert (
        sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


# -- registration (in process) -----------------------------------------------


def test_register_list_get_delete(api, settings):
    settings.STEPSTREAM = {**settings.STEPSTREAM, "WEBHOOK_ALLOW_PRIVATE": True}
    made = api.post(
        "/api/v1/webhooks", {"url": "http://127.0.0.1:9/x", "description": "crm"}, format="json"
    )
    assert made.status_code == 201, made.content
    hook = made.json()
    assert hook["state"] == "enabled" and hook["secret"].startswith("whsec_")
    assert set(hook) == {"id", "url", "state", "description", "failing_since", "secret"}
    listed = api.get("/api/v1/webhooks").json()
    assert listed == [
        {
            "id": hook["id"],
            "url": "http://127.0.0.1:9/x",
            "state": "enabled",
            "description": "crm",
            "failing_since": None,
        }
    ]
    assert api.get(f"/api/v1/webhooks/{hook['id']}").json() == listed[0]
    assert "secret" not in json.dumps(listed)
    assert api.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json() == []
    assert api.post(f"/api/v1/webhooks/{hook['id']}/enable").status_code == 200
    assert api.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    assert api.get(f"/api/v1/webhooks/{hook['id']}").status_code == 404


def test_other_environments_webhooks_are_404(api, project, settings):
    from rest_framework.test import APIClient

    settings.STEPSTREAM = {**settings.STEPSTREAM, "WEBHOOK_ALLOW_PRIVATE": True}
    hook = api.post("/api/v1/webhooks", {"url": "http://127.0.0.1:9/"}, format="json").json()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {project['environments'][1]['secret_key']}")
    for call in (other.get, other.delete):
        assert call(f"/api/v1/webhooks/{hook['id']}").status_code == 404
    assert other.post(f"/api/v1/webhooks/{hook['id']}/enable").status_code == 404
    assert other.get(f"/api/v1/webhooks/{hook['id']}/deliveries").status_code == 404
    assert other.get("/api/v1/webhooks").json() == []


@pytest.mark.parametrize(
    "url, says",
    [
        ("http://127.0.0.1:8000/hook", "loopback, private or link-local"),
        ("http://localhost/hook", "loopback, private or link-local"),
        ("https://10.1.2.3/hook", "loopback, private or link-local"),
        ("http://192.168.0.10/", "loopback, private or link-local"),
        ("http://169.254.169.254/latest/meta-data", "loopback, private or link-local"),
        ("http://[::1]/", "loopback, private or link-local"),
        ("http://[::ffff:127.0.0.1]/", "loopback, private or link-local"),
        ("ftp://example.com/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http:///nohost", "must name a host"),
        ("", "url is required"),
        (None, "url is required"),
        ("http://bad-host.invalid/", "does not resolve"),
    ],
)
def test_private_and_bad_urls_are_refused(api, url, says):
    response = api.post("/api/v1/webhooks", {"url": url}, format="json")
    assert response.status_code == 400
    assert says in " ".join(response.json()["errors"])


def test_connect_time_check_refuses_a_name_that_resolves_to_a_private_address(settings):
    """Even a webhook accepted earlier cannot reach a private address: checked at connect."""
    from stepstream.delivery.webhooks.addresses import literal_refused
    from stepstream.delivery.webhooks.client import GuardedResolver

    settings.STEPSTREAM = {**settings.STEPSTREAM, "WEBHOOK_ALLOW_PRIVATE": False}

    async def resolve():
        resolver = GuardedResolver()
        try:
            return await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()

    with pytest.raises(OSError, match="non-public"):
        asyncio.run(resolve())
    assert literal_refused("http://127.0.0.1:9/x") and literal_refused("http://[::1]/")
    assert not literal_refused("http://93.184.215.14/") and not literal_refused("http://x.test/")


def test_connect_time_check_resolves_when_allowed(settings):
    from stepstream.delivery.webhooks.addresses import literal_refused
    from stepstream.delivery.webhooks.client import GuardedResolver

    settings.STEPSTREAM = {**settings.STEPSTREAM, "WEBHOOK_ALLOW_PRIVATE": True}

    async def resolve():
        resolver = GuardedResolver()
        try:
            return await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()

    assert any(r["host"] in ("127.0.0.1", "::1") for r in asyncio.run(resolve()))
    assert not literal_refused("http://127.0.0.1:9/x")


# IPv6 addresses carrying an IPv4 address: (url, the IPv4 inside or None when refused as a whole)
EMBEDDED_PRIVATE = [
    ("http://[64:ff9b::a9fe:a9fe]/latest/meta-data", "169.254.169.254"),  # NAT64
    ("http://[64:ff9b::7f00:1]:8000/", "127.0.0.1"),  # NAT64
    ("http://[2002:7f00:1::]/", "127.0.0.1"),  # 6to4
    ("http://[::127.0.0.1]/", "127.0.0.1"),  # IPv4-compatible
    ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),  # IPv4-mapped
    ("http://[::ffff:a9fe:a9fe]/", "169.254.169.254"),  # IPv4-mapped, hex
    ("http://[2001:0:7f00:1::f7f7:f7f7]/", "127.0.0.1"),  # Teredo, server 127.0.0.1
    ("http://[2001:0:808:808::80ff:fefe]/", "127.0.1.1"),  # Teredo, client 127.0.1.1 (XOR'd)
    ("http://[64:ff9b:1::7f00:1]/", None),  # NAT64 local use: refused whole
    ("http://[::ffff:0:7f00:1]/", None),  # SIIT IPv4-translated: outside 2000::/3
]
EMBEDDED_PUBLIC = [
    "http://[2001:4860:4860::8888]/hook",  # a public IPv6 address
    "http://[64:ff9b::808:808]/hook",  # NAT64 of 8.8.8.8
    "http://[2002:808:808::1]/hook",  # 6to4 of 8.8.8.8
    "http://[::ffff:8.8.8.8]/hook",  # IPv4-mapped 8.8.8.8
]


@pytest.mark.parametrize("url, inside", EMBEDDED_PRIVATE)
def test_ipv6_addresses_embedding_a_private_ipv4_are_refused(api, url, inside):
    response = api.post("/api/v1/webhooks", {"url": url}, format="json")
    assert response.status_code == 400, response.content
    said = " ".join(response.json()["errors"])
    host = urllib.parse.urlsplit(url).hostname
    assert f"url's host '{host}'" in said and "loopback, private or link-local" in said
    assert inside is None or f"which embeds {inside}" in said
    assert "STEPSTREAM_WEBHOOK_ALLOW_PRIVATE=1" in said
    assert api.get("/api/v1/webhooks").json() == []


@pytest.mark.parametrize("url", EMBEDDED_PUBLIC)
def test_public_ipv6_addresses_and_public_ipv4_embedded_are_accepted(api, url):
    made = api.post("/api/v1/webhooks", {"url": url}, format="json")
    assert made.status_code == 201, made.content
    assert made.json()["url"] == url


def test_embedded_ipv4_is_judged_at_registration_and_at_connect_time(settings, monkeypatch):
    """One judgement: literals, names resolving to such addresses, and the connect-time resolver."""
    from stepstream.delivery.webhooks import addresses, client
    from stepstream.errors import Invalid

    settings.STEPSTREAM = {**settings.STEPSTREAM, "WEBHOOK_ALLOW_PRIVATE": False}
    for url, inside in EMBEDDED_PRIVATE:
        host = urllib.parse.urlsplit(url).hostname
        assert addresses.blocked(host) and addresses.literal_refused(url), url
        assert inside is None or addresses.refusal(host) == f"{host}, which embeds {inside}"
    for url in EMBEDDED_PUBLIC:
        host = urllib.parse.urlsplit(url).hostname
        assert not addresses.blocked(host) and not addresses.literal_refused(url), url
    assert addresses.blocked("::1") and addresses.blocked("::") and addresses.blocked("fc00::1")

    # a name whose DNS answer is such an address, at registration
    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::a9fe:a9fe", port, 0, 0))]

    monkeypatch.setattr(addresses.socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(Invalid, match="64:ff9b::a9fe:a9fe, which embeds 169.254.169.254"):
        addresses.check_url("https://rebinding.example/hook")

    # and at connect time, where aiohttp resolves with GuardedResolver
    async def resolve(answer):
        resolver = client.GuardedResolver()

        async def inner(host, port=0, family=socket.AF_INET):
            return [
                {"hostname": host, "host": answer, "port": port, "family": socket.AF_INET6}
                | {"proto": 0, "flags": socket.AI_NUMERICHOST}
            ]

        resolver._inner.resolve = inner
        try:
            return await resolver.resolve("rebinding.example", 443)
        finally:
            await resolver.close()

    with pytest.raises(OSError, match="2002:7f00:1::, which embeds 127.0.0.1"):
        asyncio.run(resolve("2002:7f00:1::"))
    assert asyncio.run(resolve("64:ff9b::808:808"))[0]["host"] == "64:ff9b::808:808"


@pytest.mark.slow
def test_a_server_refuses_to_send_to_a_private_address_at_connect_time(hook_server):
    """Registered while allowed, then the server runs without the allowance: nothing is sent."""
    receiver = Receiver()
    server = hook_server()
    keys = setup_tenant(server)
    with server.rest(keys["secret_key"]) as rest:
        hook = register(rest, receiver.url.replace("127.0.0.1", "localhost"))
    server.stop()
    strict = hook_server(STEPSTREAM_WEBHOOK_ALLOW_PRIVATE="0")
    with strict.rest(keys["secret_key"]) as rest:
        try:
            start_person(rest, "s")

            def errors():
                found = rest.get(f"/webhooks/{hook['id']}/deliveries").json()
                return [d["error"] for d in found]

            assert receiver.wait_for(lambda: len(errors()) >= 2, timeout=30)
            assert all("non-public" in e for e in errors()), errors()
            assert receiver.requests == []
        finally:
            rest.delete(f"/webhooks/{hook['id']}")
            receiver.close()


# -- delivery through real servers -------------------------------------------


def setup_tenant(server: Server) -> dict:
    keys = server.init_project("hooks")["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        rest.post("/flows", json=LOOP_FLOW).raise_for_status()
    return keys


def start_person(rest, key: str) -> None:
    rest.put(f"/people/{key}", json={"data": {}}).raise_for_status()
    rest.post(f"/people/{key}/flows", json={"flow": "loop"}).raise_for_status()
    rest.post(f"/people/{key}/flows/loop/transitions", json={"transition": "go"}).raise_for_status()


def flip(rest, key: str) -> None:
    rest.post(
        f"/people/{key}/flows/loop/transitions", json={"transition": "flip"}
    ).raise_for_status()


def expected_events(rest, keys) -> set[tuple[str, int]]:
    found = set()
    for key in keys:
        for event in rest.get(f"/people/{key}/events", params={"limit": 10000}).json():
            found.add((key, event["seq"]))
    return found


def first_receipts(receiver: Receiver) -> dict[str, list[int]]:
    """Each person's seqs in the order first acknowledged."""
    seen, order = set(), {}
    for r in receiver.acknowledged():
        data = r["json"]["data"]
        if (data["person_key"], data["seq"]) not in seen:
            seen.add((data["person_key"], data["seq"]))
            order.setdefault(data["person_key"], []).append(data["seq"])
    return order


@pytest.fixture(scope="module")
def own_database():
    """On PostgreSQL, a database of this module's own: servers started by other tests
    share DATABASE_URL's database, and the webhooks they left there (some aimed at
    addresses that never answer) would be this module's servers' work too."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        yield {}
        return
    import psycopg

    parts = urllib.parse.urlparse(url)
    name = f"stepstream_webhooks_{os.getpid()}"
    admin = dict(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username or None,
        password=parts.password or None,
        dbname="postgres",
        autocommit=True,
    )
    with psycopg.connect(**admin) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name}")
        c.execute(f"CREATE DATABASE {name}")
    yield {"DATABASE_URL": parts._replace(path=f"/{name}").geturl()}
    with psycopg.connect(**admin) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def hook_server(tmp_path, own_database):
    servers = []

    def start(**extra):
        server = Server(tmp_path, **{**FAST, **own_database, **extra}).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


def register(rest, url: str) -> dict:
    made = rest.post("/webhooks", json={"url": url, "description": "test"})
    assert made.status_code == 201, made.text
    return made.json()


def aiohttp_loaded(server: Server) -> bool:
    """Whether the server process has mapped aiohttp's compiled parts (imported it)."""
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/maps") as maps:
        return "/aiohttp/" in maps.read()


@pytest.mark.slow
def test_every_change_is_delivered_signed_and_in_order_per_person(hook_server):
    receiver = Receiver()
    server = hook_server()
    keys = setup_tenant(server)
    # a server without webhooks has not imported their HTTP client (issue 29)
    assert not aiohttp_loaded(server)
    people = [f"p{i}" for i in range(6)]
    with server.rest(keys["secret_key"]) as rest:
        hook = register(rest, receiver.url)
        try:
            for key in people:
                start_person(rest, key)
            for _ in range(5):
                for key in people:
                    flip(rest, key)
            want = expected_events(rest, people)
            assert receiver.wait_for(lambda: len(first_receipts_set(receiver)) >= len(want), 60), (
                len(want),
                sorted(first_receipts_set(receiver)),
            )
            assert first_receipts_set(receiver) == want
            assert aiohttp_loaded(server)  # imported once there was a webhook to deliver
            for key, seqs in first_receipts(receiver).items():
                assert seqs == sorted(seqs), key
            for r in receiver.requests:
                assert verify(hook["secret"], r["headers"], r["body"])
                assert r["json"]["type"] == "state_change"
                assert r["json"]["timestamp"] == r["json"]["data"]["occurred_at"]
                assert abs(int(r["headers"]["webhook-timestamp"]) - time.time()) < 60
            ids = [r["headers"]["webhook-id"] for r in receiver.requests]
            assert len(set(ids)) == len(want)  # one id per event

            def deliveries():
                return rest.get(f"/webhooks/{hook['id']}/deliveries", params={"limit": 5}).json()

            # the attempt log is written with the position, once a batch is acknowledged
            assert receiver.wait_for(lambda: len(deliveries()) == 5, timeout=30)
            deliveries = deliveries()
            newest = deliveries[0]
            assert newest["webhook_id"] == hook["id"] and newest["status_code"] == 200
            assert newest["error"] is None and newest["attempt"] == 1
            assert newest["message_id"] in ids and newest["person_key"] in people
        finally:
            rest.delete(f"/webhooks/{hook['id']}")
            receiver.close()


def first_receipts_set(receiver: Receiver) -> set[tuple[str, int]]:
    return {
        (r["json"]["data"]["person_key"], r["json"]["data"]["seq"]) for r in receiver.acknowledged()
    }


@pytest.mark.slow
def test_failures_and_timeouts_are_retried_with_the_same_id_and_order_holds(hook_server):
    """Each message: 500, then a timeout (receiver slower than 1 s), then 200."""

    def policy(message_id, attempt):
        if attempt == 1:
            return 500, 0
        if attempt == 2:
            return 200, 1.6  # answered after the sender's timeout: not acknowledged
        return 200, 0

    receiver = Receiver(policy)
    server = hook_server()
    keys = setup_tenant(server)
    with server.rest(keys["secret_key"]) as rest:
        hook = register(rest, receiver.url)
        try:
            start_person(rest, "a")
            start_person(rest, "b")
            flip(rest, "a")
            want = expected_events(rest, ["a", "b"])

            def third_tries():
                return {
                    (r["json"]["data"]["person_key"], r["json"]["data"]["seq"])
                    for r in receiver.requests
                    if r["attempt"] == 3
                }

            assert receiver.wait_for(lambda: third_tries() == want, timeout=60)
            by_id: dict[str, list[int]] = {}
            for r in receiver.requests:
                by_id.setdefault(r["headers"]["webhook-id"], []).append(r["attempt"])
            assert all(a == [1, 2, 3] for a in by_id.values()), by_id
            # a person's next event is sent only after the previous one was acknowledged
            for key in ("a", "b"):
                mine = [r for r in receiver.requests if r["json"]["data"]["person_key"] == key]
                acked = 0
                for r in sorted(mine, key=lambda r: r["at"]):
                    assert r["json"]["data"]["seq"] <= acked + 1
                    if r["attempt"] >= 3:
                        acked = max(acked, r["json"]["data"]["seq"])
            deliveries = rest.get(f"/webhooks/{hook['id']}/deliveries").json()
            errors = {d["error"] for d in deliveries}
            assert {"HTTP 500", "timeout", None} <= errors
            assert any(d["status_code"] == 500 for d in deliveries)
        finally:
            rest.delete(f"/webhooks/{hook['id']}")
            receiver.close()


@pytest.mark.slow
def test_a_sigkilled_server_restarted_delivers_everything(hook_server):
    # The receiver answers the first ten requests, then holds every later one
    # until the server is dead, so the kill lands mid-way however fast or
    # loaded the machine is. A held request is then refused: its sender is gone.
    answered, killed = itertools.count(), threading.Event()

    def policy(message_id, attempt):
        if next(answered) < 10 or killed.is_set():
            return 200, 0
        killed.wait(60)
        return 503, 0

    receiver = Receiver(policy)
    server = hook_server()
    keys = setup_tenant(server)
    people = [f"k{i}" for i in range(4)]
    with server.rest(keys["secret_key"]) as rest:
        hook = register(rest, receiver.url)
        for key in people:
            start_person(rest, key)
        for _ in range(15):
            for key in people:
                flip(rest, key)
        want = expected_events(rest, people)
    assert receiver.wait_for(lambda: len(receiver.acknowledged()) >= 10)
    server.kill()
    killed.set()
    got_before = len(first_receipts_set(receiver))
    assert got_before < len(want), "killed too late to test anything"
    restarted = hook_server()
    serving_at = time.time()  # sending resumes once the new server answers, however long a
    # loaded machine took to start it
    assert receiver.wait_for(lambda: first_receipts_set(receiver) >= want, timeout=60)
    assert first_receipts_set(receiver) == want
    resumed = min(r["at"] for r in receiver.acknowledged()[got_before:])
    assert resumed - serving_at < 10
    for key, seqs in first_receipts(receiver).items():
        assert seqs == sorted(seqs), key
    with restarted.rest(keys["secret_key"]) as rest:
        rest.delete(f"/webhooks/{hook['id']}")
    receiver.close()


@pytest.mark.slow
def test_a_webhook_failing_past_the_window_is_disabled_and_enable_resumes_where_it_stopped(
    hook_server,
):
    healthy = {"ok": False}
    receiver = Receiver(lambda m, a: (200, 0) if healthy["ok"] else (503, 0))
    server = hook_server(STEPSTREAM_WEBHOOK_RETRY_HOURS="0.0005")  # 1.8 s
    keys = setup_tenant(server)
    with server.rest(keys["secret_key"]) as rest:
        hook = register(rest, receiver.url)
        try:
            start_person(rest, "d")

            def state():
                return rest.get(f"/webhooks/{hook['id']}").json()

            assert receiver.wait_for(lambda: state()["state"] == "disabled", timeout=60)
            assert state()["failing_since"] is not None
            assert receiver.acknowledged() == []
            tries = len(receiver.requests)
            for _ in range(3):
                flip(rest, "d")  # made while disabled: must arrive after enable
            time.sleep(1.0)  # an absence: ten of the idle webhook's polls, and nothing sent
            assert len(receiver.requests) == tries  # nothing is sent while disabled
            healthy["ok"] = True
            enabled = rest.post(f"/webhooks/{hook['id']}/enable")
            assert enabled.status_code == 200 and enabled.json()["state"] == "enabled"
            want = expected_events(rest, ["d"])
            assert receiver.wait_for(lambda: first_receipts_set(receiver) >= want, timeout=60)
            assert first_receipts(receiver)["d"] == sorted(s for _, s in want)
            assert rest.get(f"/webhooks/{hook['id']}").json()["failing_since"] is None
        finally:
            rest.delete(f"/webhooks/{hook['id']}")
            receiver.close()


def test_admin_registers_a_webhook_and_shows_its_secret_once(admin_client, env, settings):
    from stepstream.models import Webhook

    refused = admin_client.post(
        "/admin/stepstream/webhook/add/",
        {"environment": env.pk, "url": "http://127.0.0.1:9/x", "state": "enabled"},
    )
    assert refused.status_code == 200 and b"loopback, private or link-local" in refused.content
    assert not Webhook.objects.exists()
    settings.STEPSTREAM = {**settings.STEPSTREAM, "WEBHOOK_ALLOW_PRIVATE": True}
    made = admin_client.post(
        "/admin/stepstream/webhook/add/",
        {"environment": env.pk, "url": "http://127.0.0.1:9/x", "state": "enabled"},
        follow=True,
    )
    hook = Webhook.objects.get()
    assert hook.secret.startswith("whsec_") and hook.secret.encode() in made.content
    page = admin_client.get(f"/admin/stepstream/webhook/{hook.pk}/change/")
    assert page.status_code == 200 and hook.secret.encode() not in page.content


@pytest.mark.slow
def test_two_server_processes_send_each_event_once(hook_server):
    """Both processes run a deliverer; the lease lets exactly one of them send the webhook."""
    receiver = Receiver()
    a, b = hook_server(), hook_server()
    keys = setup_tenant(a)
    people = [f"t{i}" for i in range(4)]
    with a.rest(keys["secret_key"]) as rest_a, b.rest(keys["secret_key"]) as rest_b:
        hook = register(rest_a, receiver.url)
        try:
            for i, key in enumerate(people):
                start_person(rest_a if i % 2 else rest_b, key)
            for _ in range(5):
                for i, key in enumerate(people):
                    flip(rest_b if i % 2 else rest_a, key)
            want = expected_events(rest_a, people)
            assert receiver.wait_for(lambda: first_receipts_set(receiver) >= want)
            time.sleep(1.0)  # an absence: a second sender would show up as duplicates by now
            ids = [r["headers"]["webhook-id"] for r in receiver.requests]
            assert len(ids) == len(set(ids)) == len(want)
        finally:
            rest_a.delete(f"/webhooks/{hook['id']}")
            receiver.close()
