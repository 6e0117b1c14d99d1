"""Shared fixtures: a fresh project per test, REST clients, and real servers.

Tests that need PostgreSQL or Redis read DATABASE_URL / REDIS_URL and are
skipped, saying so, when those are unset.
"""

import os

import pytest

from stepstream.testing import servers
from stepstream.testing.flows import LINEAR_FLOW, LOOP_FLOW
from tests.openapi import APIClient, check_httpx_response

# every REST answer the suite gets, from either client, is checked against the document
servers.RESPONSE_HOOKS.append(check_httpx_response)


# Tests that drive a browser are slow whatever they check: marked here, by their fixture.
SLOW_FIXTURES = {"browser_page"}


# Tests marked `backend_agnostic` check what no database backend changes (a page's layout
# in a browser, the API document, the browser renderer against a fake server, command-line
# parsing): they run in the embedded-default suite only, not again with DATABASE_URL set.
ONCE = pytest.mark.skip(
    reason="backend_agnostic: nothing here depends on the database; it runs in the "
    "embedded-default suite (unset DATABASE_URL)"
)


def pytest_collection_modifyitems(config, items):
    again = bool(os.environ.get("DATABASE_URL"))
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if again and item.get_closest_marker("backend_agnostic"):
            item.add_marker(ONCE)


def pytest_report_header(config):
    db = os.environ.get("DATABASE_URL") or "embedded SQLite"
    return f"stepstream database: {db}; redis: {os.environ.get('REDIS_URL') or 'none'}"


@pytest.fixture
def project(db):
    """A new project: {"project", "environments": [{identifier, publishable_key, secret_key}]}."""
    from stepstream.trust.tenants import create_project

    return create_project("test project")


@pytest.fixture
def keys(project):
    return project["environments"][0]


@pytest.fixture
def env(keys):
    from stepstream.trust.tenants import environment_for_key

    return environment_for_key(keys["secret_key"], "secret")


@pytest.fixture
def other_env(project):
    """The same project's production environment: another tenant for isolation checks."""
    from stepstream.trust.tenants import environment_for_key

    return environment_for_key(project["environments"][1]["secret_key"], "secret")


@pytest.fixture
def api(keys):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['secret_key']}")
    return client


@pytest.fixture
def linear_flow(env):
    from stepstream.engine import flows

    return flows.publish(env, LINEAR_FLOW)


# -- real servers (black-box WebSocket and delivery tests) ------------------


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    from stepstream.testing.servers import Server

    srv = Server(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tenant(server):
    """A project on the shared server, with the test flows published."""
    keys = server.init_project("ws tests")
    dev = keys["environments"][0]
    with server.rest(dev["secret_key"]) as rest:
        for flow in (LINEAR_FLOW, LOOP_FLOW):
            assert rest.post("/flows", json=flow).status_code == 201
    return {"dev": dev, "prod": keys["environments"][1]}


@pytest.fixture
def rest(server, tenant):
    with server.rest(tenant["dev"]["secret_key"]) as client:
        yield client


@pytest.fixture
def person_key(rest, request):
    """A new person on the shared server (unique per test)."""
    import uuid

    key = f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
    assert rest.put(f"/people/{key}", json={"data": {}}).status_code == 201
    return key


@pytest.fixture
def ws(server, tenant):
    from tests.wsclient import WsClient

    with WsClient(server.ws_url, tenant["dev"]["publishable_key"]) as client:
        yield client


@pytest.fixture
def connect(server, tenant):
    """Opens more clients; all are closed at the end of the test."""
    from tests.wsclient import WsClient

    opened = []

    def open_client(key=None, **kw):
        client = WsClient(server.ws_url, key or tenant["dev"]["publishable_key"], **kw)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()
