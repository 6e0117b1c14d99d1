"""Authoring under concurrency, with real connections (threads; transactional tests):
promotions in opposite directions at once (A -> B while B -> A) never deadlock into a 500,
and of many saves of one draft sent with one ETag at once exactly one is accepted."""

import os
import threading
from collections import Counter

import pytest
from django.db import connection

from stepstream.models import AuditEntry, Flow
from stepstream.testing.flows import LINEAR_FLOW
from tests.openapi import APIClient

ON_POSTGRES = bool(os.environ.get("DATABASE_URL"))
needs_postgres = pytest.mark.skipif(not ON_POSTGRES, reason="needs PostgreSQL: set DATABASE_URL")
ROUNDS = 25


@pytest.fixture
def pair(transactional_db):
    """Two environments of one project, each with a REST client and version 1 of the flow."""
    from stepstream.trust.tenants import create_project

    made = create_project("concurrency")["environments"]
    clients = []
    for keys in made[:2]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['secret_key']}")
        assert client.post("/api/v1/flows", LINEAR_FLOW, format="json").status_code == 201
        clients.append((keys["identifier"], client))
    return clients


def together(*calls):
    """Runs each call in its own thread, released at once; returns their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        try:
            barrier.wait(timeout=30)
            results[i] = call()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            results[i] = e
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a call did not finish: a deadlock?"
    return results


@needs_postgres
def test_promotions_in_opposite_directions_and_publishes_at_once_never_fail(pair):
    (a_name, a), (b_name, b) = pair
    promote = "/api/v1/flows/onboarding/versions/1/promote"
    statuses: Counter = Counter()
    for _ in range(ROUNDS):
        answers = together(
            lambda: a.post(promote, {"to": b_name}, format="json"),
            lambda: b.post(promote, {"to": a_name}, format="json"),
            # and a publish into each, which takes one of the two locks
            lambda: a.post("/api/v1/flows", LINEAR_FLOW, format="json"),
            lambda: b.post("/api/v1/flows", LINEAR_FLOW, format="json"),
        )
        for answer in answers:
            assert not isinstance(answer, BaseException), answer
            statuses[answer.status_code] += 1
            assert answer.status_code == 201, answer.content
    assert statuses == {201: 4 * ROUNDS}
    # each environment: its version 1, then one per promotion or publish into it, no gap
    for name in (a_name, b_name):
        versions = sorted(
            Flow.objects.filter(environment__identifier=name, identifier="onboarding")
            .filter(environment__project__name="concurrency")
            .values_list("version", flat=True)
        )
        assert versions == list(range(1, 2 * ROUNDS + 2))
    # a promotion is recorded in both environments: 2 per round, each seen twice
    promotions = AuditEntry.objects.filter(action="promote").count()
    assert promotions == 4 * ROUNDS


def test_one_etag_many_saves_at_once_exactly_one_is_accepted(pair):
    (_, a), _ = pair
    draft = "/api/v1/flows/onboarding/draft"
    tag = a.put(draft, LINEAR_FLOW, format="json")["ETag"]
    answers = together(
        *(
            lambda i=i: a.put(
                draft,
                {**LINEAR_FLOW, "name": f"Save {i}"},
                format="json",
                headers={"if_match": tag},
            )
            for i in range(6)
        )
    )
    assert not [x for x in answers if isinstance(x, BaseException)]
    assert sorted(x.status_code for x in answers) == [200] + [409] * 5
    winner = next(x for x in answers if x.status_code == 200).json()
    assert a.get(draft).json() == winner and winner["revision"] == 2
