"""The two ways a REST call is answered agree (issue 28, "one REST stack").

`GET /api/v1/people/{key}` and transition calls with a remembered secret key are
answered on the event loop (stepstream/http/fast.py); anything unusual goes to
DRF. Both take keys from the runtime's one key memory, render with DRF's
renderer and answer errors as `{"errors", "code"}`. Here hypothesis sends the
same random requests down both: a request the fast path answers, and its twin
with an Accept header the fast path declines (`application/json;q=1`, which DRF
reads as the same), against twin people in the same state.
"""

import itertools
import re
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepstream.testing.flows import LINEAR_FLOW

pytestmark = pytest.mark.slow

SLOW_ACCEPT = "application/json;q=1"  # the same to DRF, not plain enough for the fast path
IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_twins = itertools.count()

keys = st.sampled_from(["secret", "publishable", "wrong"])
person_keys = st.sampled_from(["known", "unknown", "with/slash", "x" * 256, "tab\tkey"])
transitions = st.sampled_from(["next", "nope", ""])
bodies = st.one_of(
    transitions.map(lambda t: {"transition": t}),
    st.just({}),
    st.just({"transition": 7}),
    st.just([1, 2]),
    st.just({"transition": "next", "extra": True}),
)
flows_named = st.sampled_from(["onboarding", "missing"])


@pytest.fixture(scope="module")
def twin_server(tmp_path_factory):
    from stepstream.testing.servers import Server

    srv = Server(tmp_path_factory.mktemp("paths")).start()
    project = srv.init_project("paths")["environments"][0]
    with srv.rest(project["secret_key"]) as rest:
        assert rest.post("/flows", json=LINEAR_FLOW).status_code == 201
        rest.get("/flows")  # the secret key is now remembered: the fast path answers
    yield srv, project
    srv.stop()


def _normal(response: httpx.Response, twin: str, other: str) -> tuple:
    text = IDS.sub("<id>", response.text.replace(twin, other))
    text = re.sub(r'"seq":\d+', '"seq":<n>', text)
    headers = {
        k: v
        for k, v in response.headers.items()
        if k not in ("x-request-id", "content-length", "date")
    }
    return response.status_code, text, sorted(headers.items())


def _twin_people(rest, state: int) -> tuple[str, str]:
    n = next(_twins)
    pair = (f"fast-{n}-{uuid.uuid4().hex[:6]}", f"drf-{n}-{uuid.uuid4().hex[:6]}")
    for key in pair:
        assert rest.put(f"/people/{key}", json={"data": {}}).status_code == 201
        if state:
            assert rest.post(f"/people/{key}/flows", json={"flow": "onboarding"}).is_success
        for _ in range(state - 1):
            path = f"/people/{key}/flows/onboarding/transitions"
            assert rest.post(path, json={"transition": "next"}).is_success
    return pair


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=keys,
    person=person_keys,
    flow=flows_named,
    body=bodies,
    state=st.integers(0, 3),
    read=st.booleans(),
)
def test_the_fast_path_and_drf_answer_alike(twin_server, key, person, flow, body, state, read):
    srv, project = twin_server
    presented = {
        "secret": project["secret_key"],
        "publishable": project["publishable_key"],
        "wrong": "sk_" + "0" * 40,
    }[key]
    with srv.rest(project["secret_key"]) as rest:
        fast_key, drf_key = _twin_people(rest, state) if person == "known" else (person, person)
    answers = []
    for who, accept in ((fast_key, None), (drf_key, SLOW_ACCEPT)):
        headers = {"Authorization": f"Bearer {presented}"}
        if accept:
            headers["Accept"] = accept
        segment = who.replace("/", "%2F").replace("\t", "%09")
        with httpx.Client(base_url=srv.url + "/api/v1", timeout=10) as client:
            if read:
                response = client.get(f"/people/{segment}", headers=headers)
            else:
                response = client.post(
                    f"/people/{segment}/flows/{flow}/transitions", json=body, headers=headers
                )
        answers.append(response)
    fast, drf = answers
    assert _normal(fast, fast_key, "P") == _normal(drf, drf_key, "P")
