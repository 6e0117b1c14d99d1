"""Shared fixtures: a fresh project per test, REST clients, and real servers.

Tests that need PostgreSQL or Redis read DATABASE_URL / REDIS_URL and are
skipped, saying so, when those are unset.
"""

import os

import pytest
from rest_framework.test import APIClient

from tests.helpers import LINEAR_FLOW


def pytest_report_header(config):
    db = os.environ.get("DATABASE_URL") or "embedded SQLite"
    return f"stepstream database: {db}; redis: {os.environ.get('REDIS_URL') or 'none'}"


@pytest.fixture
def project(db):
    """A new project: {"project", "environments": [{identifier, publishable_key, secret_key}]}."""
    from stepstream.tenants import create_project

    return create_project("test project")


@pytest.fixture
def keys(project):
    return project["environments"][0]


@pytest.fixture
def env(keys):
    from stepstream.tenants import environment_for_key

    return environment_for_key(keys["secret_key"], "secret")


@pytest.fixture
def other_env(project):
    """The same project's production environment: another tenant for isolation checks."""
    from stepstream.tenants import environment_for_key

    return environment_for_key(project["environments"][1]["secret_key"], "secret")


@pytest.fixture
def api(keys):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['secret_key']}")
    return client


@pytest.fixture
def linear_flow(env):
    from stepstream import flows

    return flows.publish(env, LINEAR_FLOW)
