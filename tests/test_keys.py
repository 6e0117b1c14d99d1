"""Key lifecycle: listing, creating and revoking keys over REST and the command line,
and rotation with no downtime through real servers and sockets."""

import json
import os
import time
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from stepstream.testing.flows import LINEAR_FLOW
from stepstream.testing.servers import Server
from tests.openapi import APIClient
from tests.trust import eventually
from tests.wsclient import WsClient, refused

BASE = "/api/v1"
KEY_FIELDS = {"id", "kind", "hint", "created_at", "revoked_at"}


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


# -- REST ----------------------------------------------------------------------


def test_keys_are_listed_without_their_secret_part(api, keys):
    response = api.get(f"{BASE}/keys")
    assert response.status_code == 200
    listed = response.json()
    assert [k["kind"] for k in listed] == ["publishable", "secret"]
    for entry in listed:
        assert entry.keys() == KEY_FIELDS
        assert entry["revoked_at"] is None
        assert len(entry["hint"]) == 7
    text = response.content.decode()
    for key in (keys["publishable_key"], keys["secret_key"]):
        assert key not in text
        assert key[7:15] not in text  # not even a part beyond the hint
    assert keys["publishable_key"].startswith(listed[0]["hint"])
    assert keys["secret_key"].startswith(listed[1]["hint"])


@pytest.mark.parametrize("kind", ["secret", "publishable"])
def test_a_new_key_is_shown_once_and_works_at_once(api, kind):
    response = api.post(f"{BASE}/keys", {"kind": kind, "colour": "ignored"}, format="json")
    assert response.status_code == 201
    made = response.json()
    assert made.keys() == KEY_FIELDS | {"key"}
    assert made["kind"] == kind and made["revoked_at"] is None
    assert made["key"].startswith({"secret": "sk_", "publishable": "pk_"}[kind])
    assert len(made["key"]) >= 32 and made["key"].startswith(made["hint"])
    listed = api.get(f"{BASE}/keys").json()
    assert made["id"] in [k["id"] for k in listed]
    assert made["key"] not in json.dumps(listed)
    status = bearer(made["key"]).get(f"{BASE}/flows").status_code
    assert status == (200 if kind == "secret" else 401)


@pytest.mark.parametrize("body", [{}, {"kind": "admin"}, {"kind": None}, ["secret"]], ids=repr)
def test_a_new_key_needs_a_kind(api, body):
    response = api.post(f"{BASE}/keys", body, format="json")
    assert response.status_code == 400
    assert "kind" in " ".join(response.json()["errors"])
    assert len(api.get(f"{BASE}/keys").json()) == 2


def test_a_revoked_secret_key_stops_working_and_the_old_one_works_until_then(api, keys):
    new = api.post(f"{BASE}/keys", {"kind": "secret"}, format="json").json()
    newer = bearer(new["key"])
    assert api.get(f"{BASE}/flows").status_code == 200  # the old key still works
    old_id = next(
        k["id"] for k in newer.get(f"{BASE}/keys").json() if k["hint"] in keys["secret_key"]
    )
    response = newer.post(f"{BASE}/keys/{old_id}/revoke")
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    assert response.json().keys() == KEY_FIELDS
    refused = api.get(f"{BASE}/flows")
    assert refused.status_code == 401
    assert keys["secret_key"] not in refused.content.decode()
    assert newer.get(f"{BASE}/flows").status_code == 200
    # revoking again changes nothing
    again = newer.post(f"{BASE}/keys/{old_id}/revoke")
    assert again.status_code == 200 and again.json() == response.json()


def test_the_only_live_secret_key_cannot_be_revoked(api):
    secret_id = next(k["id"] for k in api.get(f"{BASE}/keys").json() if k["kind"] == "secret")
    response = api.post(f"{BASE}/keys/{secret_id}/revoke")
    assert response.status_code == 409
    assert "only live secret key" in " ".join(response.json()["errors"])
    assert api.get(f"{BASE}/flows").status_code == 200


def test_a_key_can_revoke_itself_when_another_secret_key_lives(api, keys):
    api.post(f"{BASE}/keys", {"kind": "secret"}, format="json")
    own = next(k for k in api.get(f"{BASE}/keys").json() if k["hint"] in keys["secret_key"])
    assert api.post(f"{BASE}/keys/{own['id']}/revoke").status_code == 200
    assert api.get(f"{BASE}/keys").status_code == 401


def test_revoking_an_unknown_or_foreign_key_is_404(api, project):
    prod = bearer(project["environments"][1]["secret_key"])
    foreign_ids = [k["id"] for k in prod.get(f"{BASE}/keys").json()]
    for key_id in [*foreign_ids, 999999999]:
        response = api.post(f"{BASE}/keys/{key_id}/revoke")
        assert response.status_code == 404, key_id
        assert "No key" in response.json()["errors"][0]
    assert api.post(f"{BASE}/keys/abc/revoke").status_code == 404
    assert all(k["revoked_at"] is None for k in prod.get(f"{BASE}/keys").json())


# -- rotation with no downtime, through real servers ---------------------------


def wait_closed(client: WsClient, timeout: float = 6.0) -> int | None:
    """Reads until the server closes the socket; its close code."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            client._recv(deadline - time.monotonic())
    except ConnectionClosed:
        return client.close_code
    raise AssertionError("the connection stayed open")


@pytest.mark.slow
def test_rotation_without_downtime_then_revocation_closes_the_old_clients(server):
    name = f"rotate-{uuid.uuid4().hex[:8]}"
    old = server.init_project(name)["environments"][0]
    with server.rest(old["secret_key"]) as rest:
        assert rest.post("/flows", json=LINEAR_FLOW).status_code == 201
        assert rest.put("/people/ann", json={"data": {}}).status_code == 201
        assert rest.post("/people/ann/flows", json={"flow": "onboarding"}).status_code == 201
    old_client = WsClient(server.ws_url, old["publishable_key"])
    assert old_client.subscribe("ann", "step")["status"] == 200

    done = server.command("keys", "rotate", f"{name}/development")
    assert done.returncode == 0, done.stderr
    rotated = json.loads(done.stdout)
    assert rotated["environment"] == "development" and rotated["project"] == name
    assert len(rotated["old_key_ids"]) == 2
    assert "revoke" in done.stderr
    new_client = WsClient(server.ws_url, rotated["publishable_key"])
    try:
        assert new_client.subscribe("ann", "step")["status"] == 200
        # both generations of keys work side by side
        with server.rest(old["secret_key"]) as rest:
            assert rest.post(
                "/people/ann/flows/onboarding/transitions", json={"transition": "next"}
            ).is_success
        for client in (old_client, new_client):
            assert client.wait_seq(4)[-1]["data"]["seq"] == 4

        # revoke the old publishable key over REST with the new secret key
        with server.rest(rotated["secret_key"]) as rest:
            listed = rest.get("/keys").json()
            old_pk = next(
                k["id"]
                for k in listed
                if k["kind"] == "publishable" and k["id"] != rotated["new_key_ids"]["publishable"]
            )
            revoked_at = time.monotonic()
            assert rest.post(f"/keys/{old_pk}/revoke").status_code == 200
        assert wait_closed(old_client) == 4403
        assert time.monotonic() - revoked_at < 4
        # the new client is unaffected and still gets every change
        assert new_client.request("ping")["status"] == 200
        with server.rest(rotated["secret_key"]) as rest:
            assert rest.post(
                "/people/ann/flows/onboarding/transitions", json={"transition": "next"}
            ).is_success
        assert new_client.wait_seq(6)[-1]["data"]["seq"] == 6
        # the old publishable key opens nothing any more
        code, reason = refused(f"{server.ws_url}/ws?key={old['publishable_key']}")
        assert code == 4403
        assert "revoked" in reason

        # revoke the old secret key on the command line
        old_sk = next(i for i in rotated["old_key_ids"] if i != old_pk)
        done = server.command("keys", "revoke", f"{rotated['project_id']}/development", str(old_sk))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[0]["revoked_at"] is not None
        with server.rest(old["secret_key"]) as rest:
            assert rest.get("/flows").status_code == 401
        with server.rest(rotated["secret_key"]) as rest:
            assert rest.get("/flows").status_code == 200
    finally:
        old_client.close()
        new_client.close()


@pytest.fixture(scope="module")
def twin_servers(tmp_path_factory, request):
    """Two server processes on one database (one SQLite file, or the PostgreSQL database)."""
    data_dir = tmp_path_factory.mktemp("twins")
    servers = [Server(data_dir, STEPSTREAM_KEY_CHECK_INTERVAL=0.5) for _ in range(2)]
    for srv in servers:
        request.addfinalizer(srv.stop)
        srv.start()
    return servers


@pytest.mark.slow
def test_a_revoked_key_is_closed_on_every_server_process(twin_servers):
    first, second = twin_servers
    keys = first.init_project(f"twins-{uuid.uuid4().hex[:8]}")["environments"][0]
    with first.rest(keys["secret_key"]) as rest:
        spare = rest.post("/keys", json={"kind": "publishable"}).json()
    clients = [WsClient(srv.ws_url, keys["publishable_key"]) for srv in twin_servers]
    spared = [WsClient(srv.ws_url, spare["key"]) for srv in twin_servers]
    try:
        for client in clients + spared:
            assert client.request("ping")["status"] == 200
        with second.rest(keys["secret_key"]) as rest:
            old_id = next(
                k["id"]
                for k in rest.get("/keys").json()
                if k["kind"] == "publishable" and k["id"] != spare["id"]
            )
            assert rest.post(f"/keys/{old_id}/revoke").status_code == 200
        for client in clients:
            assert wait_closed(client) == 4403
        for client in spared:
            assert client.request("ping")["status"] == 200
    finally:
        for client in clients + spared:
            client.close()


# -- the command line -------------------------------------------------------------


@pytest.mark.slow
def test_keys_commands_name_the_environment_clearly(server):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = server.init_project(name)
    listed = server.command("keys", "list", f"{name}/production")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [e["kind"] for e in entries] == ["publishable", "secret"]
    for environment in created["environments"]:
        for key in (environment["publishable_key"], environment["secret_key"]):
            assert key not in listed.stdout + listed.stderr

    problems = {
        ("rotate", f"no-such-project-{uuid.uuid4().hex}/production"): "No project",
        ("rotate", f"{name}/staging"): "no environment 'staging'",
        ("rotate", "production"): "PROJECT/ENVIRONMENT",
        ("list", f"{name}"): "PROJECT/ENVIRONMENT",
    }
    for args, words in problems.items():
        done = server.command("keys", *args)
        assert done.returncode == 2, (args, done.stdout)
        assert words in done.stderr, (args, done.stderr)
        assert done.stdout == ""

    server.init_project(name)  # a second project of the same name
    done = server.command("keys", "rotate", f"{name}/production")
    assert done.returncode == 2
    assert "2 projects are named" in done.stderr and "by its id" in done.stderr


def test_keys_revoke_refuses_the_last_secret_key_on_the_command_line(server):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    keys = server.init_project(name)["environments"][0]
    secret_id = next(
        e["id"]
        for e in json.loads(server.command("keys", "list", f"{name}/development").stdout)
        if e["kind"] == "secret"
    )
    done = server.command("keys", "revoke", f"{name}/development", str(secret_id))
    assert done.returncode == 2
    assert "only live secret key" in done.stderr
    with server.rest(keys["secret_key"]) as rest:
        assert rest.get("/flows").status_code == 200


@pytest.mark.slow
def test_a_rotated_key_works_at_once_on_a_running_server(server):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    server.init_project(name)
    done = server.command("keys", "rotate", f"{name}/production", "--kind", "publishable")
    assert done.returncode == 0, done.stderr
    rotated = json.loads(done.stdout)
    assert "secret_key" not in rotated and len(rotated["old_key_ids"]) == 1

    def answers():
        with WsClient(server.ws_url, rotated["publishable_key"]) as client:
            return client.request("ping")["status"] == 200

    eventually(answers)


# -- remembered keys (stepstream/trust/keycache.py) stay honest across processes --------


def _secret_id(rest, secret_key: str) -> int:
    return next(k["id"] for k in rest.get("/keys").json() if k["hint"] in secret_key)


def test_a_revoked_secret_key_is_refused_at_once_by_every_server_process(twin_servers):
    """Each server remembers the key after its first request; a revocation made on one
    (or from the command line) is refused by both on the very next request."""
    first, second = twin_servers
    created = first.init_project(f"cache-{uuid.uuid4().hex[:8]}")
    keys, project_id = created["environments"][0], created["project_id"]
    current = keys["secret_key"]
    for round_number in range(4):
        revoker, other = (first, second) if round_number % 2 == 0 else (second, first)
        with revoker.rest(current) as rest:
            new_key = rest.post("/keys", json={"kind": "secret"}).json()["key"]
        for srv in twin_servers:  # both remember the key about to be revoked
            with srv.rest(current) as rest:
                for _ in range(3):
                    assert rest.get("/flows").status_code == 200
        if round_number == 3:  # from another process, without any server's help
            with revoker.rest(new_key) as rest:
                old_id = _secret_id(rest, current)
            done = revoker.command("keys", "revoke", f"{project_id}/development", str(old_id))
            assert done.returncode == 0, done.stderr
        else:
            with revoker.rest(new_key) as rest:
                assert rest.post(f"/keys/{_secret_id(rest, current)}/revoke").status_code == 200
        for srv in (other, revoker):
            with srv.rest(current) as rest:
                # a person read is answered without Django for a remembered key
                assert rest.get("/people/anyone").status_code == 401, (round_number, srv.port)
                assert rest.get("/flows").status_code == 401, (round_number, srv.port)
            with srv.rest(new_key) as rest:
                assert rest.get("/flows").status_code == 200
        current = new_key


def rechecks(srv) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(srv.url + "/metrics", timeout=5).text
    families = text_string_to_metric_families(text)
    return next(f for f in families if f.name == "stepstream_key_rechecks").samples[0].value


postgresql_only = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL"), reason="PostgreSQL only: set DATABASE_URL to run"
)


@postgresql_only
def test_on_postgresql_without_redis_keys_are_not_rechecked_and_any_revocation_is_heard(
    tmp_path,
):
    """PostgreSQL itself tells every server that keys changed (stepstream/trust/keywatch.py):
    without Redis, a remembered key costs no re-check, and a revocation made by plain SQL,
    past every server and signal, is refused by both long before any periodic re-check."""
    import psycopg

    servers = [Server(tmp_path, REDIS_URL="", STEPSTREAM_KEY_CHECK_INTERVAL=600) for _ in range(2)]
    try:
        for srv in servers:
            srv.start()
            eventually(lambda srv=srv: "listening for key changes" in srv.log())
        created = servers[0].init_project(f"notify-{uuid.uuid4().hex[:8]}")
        secret = created["environments"][0]["secret_key"]
        for srv in servers:  # remembered (a first request may re-check it)
            with srv.rest(secret) as rest:
                assert rest.get("/flows").status_code == 200
        before = [rechecks(srv) for srv in servers]
        for srv in servers:
            with srv.rest(secret) as rest:
                for _ in range(10):
                    assert rest.get("/flows").status_code == 200
                    assert rest.get("/people/nobody").status_code == 404
        assert [rechecks(srv) for srv in servers] == before
        with servers[0].rest(secret) as rest:
            key_id = _secret_id(rest, secret)
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("UPDATE stepstream_apikey SET revoked_at = now() WHERE id = %s", [key_id])
        for srv in servers:
            with srv.rest(secret) as rest:

                def refused(rest=rest):
                    return rest.get("/flows").status_code == 401

                eventually(refused, timeout=5)
                assert rest.get("/people/nobody").status_code == 401
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            conn.execute(  # every listener's connection breaks: each server makes a new one
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = 'LISTEN stepstream_keys' AND pid <> pg_backend_pid()"
            )
        for srv in servers:
            eventually(lambda srv=srv: srv.log().count("listening for key changes") >= 2, 15)
            assert "key change listener lost" in srv.log()
    finally:
        for srv in servers:
            srv.stop()


@postgresql_only
def test_with_key_notify_off_every_request_rechecks_its_key(tmp_path):
    """STEPSTREAM_KEY_NOTIFY=false (a pooler that cannot pass LISTEN): no listener, and a
    remembered key is re-checked on every request instead."""
    srv = Server(tmp_path, REDIS_URL="", STEPSTREAM_KEY_NOTIFY="false").start()
    try:
        secret = srv.init_project(f"quiet-{uuid.uuid4().hex[:8]}")["environments"][0]["secret_key"]
        with srv.rest(secret) as rest:
            assert rest.get("/flows").status_code == 200
            before = rechecks(srv)
            for _ in range(5):
                assert rest.get("/flows").status_code == 200
        assert rechecks(srv) >= before + 5
        assert "listening for key changes" not in srv.log()
    finally:
        srv.stop()


def test_a_remembered_key_never_hides_a_new_schema_set_on_another_process(twin_servers):
    first, second = twin_servers
    keys = first.init_project(f"schema-{uuid.uuid4().hex[:8]}")["environments"][0]
    with second.rest(keys["secret_key"]) as rest:
        assert rest.put("/people/ann", json={"data": {"age": "old"}}).status_code == 201
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    with first.rest(keys["secret_key"]) as rest:
        assert rest.put("/schema/person", json=schema).status_code == 200
    with second.rest(keys["secret_key"]) as rest:
        assert rest.get("/schema/person").json() == schema
        refused = rest.put("/people/bob", json={"data": {"age": "old"}})
        assert refused.status_code == 400, refused.text
        assert "age" in " ".join(refused.json()["errors"])
