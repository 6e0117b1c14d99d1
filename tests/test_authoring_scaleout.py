"""Switches across server processes (PostgreSQL): a switch changed through one process
applies at once to starts through another, whose rules were already loaded."""

import os

import pytest

from stepstream.testing.flows import LINEAR_FLOW
from stepstream.testing.servers import Server

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"),
        reason="needs PostgreSQL: set DATABASE_URL (and REDIS_URL)",
    ),
    pytest.mark.slow,  # two server processes
]


def flows_of(rest, key: str) -> list[str]:
    return [i["flow"] for i in rest.get(f"/people/{key}/flows").json()]


def test_a_switch_through_one_process_applies_on_another(tmp_path):
    one = Server(tmp_path / "one").start()
    two = Server(tmp_path / "two").start()
    try:
        keys = one.init_project("switches")["environments"][0]
        with one.rest(keys["secret_key"]) as a, two.rest(keys["secret_key"]) as b:
            flow = {**LINEAR_FLOW, "start_when": 'person.plan == "pro"'}
            assert a.post("/flows", json=flow).status_code == 201
            # the second process loads the environment's rules
            assert b.put("/people/warm", json={"data": {"plan": "pro"}}).status_code == 201
            assert flows_of(b, "warm") == ["onboarding"]
            assert b.put("/people/ann", json={"data": {}}).status_code == 201

            assert a.patch("/flows/onboarding", json={"enabled": False}).status_code == 200
            refused = b.post("/people/ann/flows", json={"flow": "onboarding"})
            assert refused.status_code == 409 and "disabled" in refused.json()["errors"][0]
            assert b.put("/people/bob", json={"data": {"plan": "pro"}}).status_code == 201
            assert flows_of(b, "bob") == []

            assert a.patch("/flows/onboarding", json={"enabled": True}).status_code == 200
            assert b.put("/people/bob", json={"data": {"plan": "pro", "n": 1}}).status_code == 200
            assert flows_of(b, "bob") == ["onboarding"]

            assert a.delete("/flows/onboarding").status_code == 204
            refused = b.post("/people/ann/flows", json={"flow": "onboarding"})
            assert refused.status_code == 409 and "archived" in refused.json()["errors"][0]
    finally:
        one.kill()
        two.kill()
