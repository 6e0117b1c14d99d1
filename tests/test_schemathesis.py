"""Schemathesis fuzzes a live server against its own OpenAPI document: zero failures.

Every check runs but `positive_data_acceptance`: the contract refuses some
schema-valid inputs that a schema cannot express (NUL characters, a flow
graph with no start step or a cycle of automatic transitions), so a 400 for a
valid-looking body is not a bug. The run is bounded (a few examples per
operation, a fixed seed unless STEPSTREAM_FUZZ_SEED is set) so CI stays fast;
STEPSTREAM_FUZZ_EXAMPLES raises the number of examples for a longer hunt.
"""

import json
import os
import subprocess
import sys

import httpx
import pytest

from stepstream.testing.flows import LINEAR_FLOW

pytestmark = pytest.mark.slow  # fuzzes a live server

# Operations of CONTRACT.md that no route serves yet on this branch: each is
# built on another branch (rules, outbound, analytics). They are excluded from
# the fuzzing run only while they answer the router's 404; the test below
# fails as soon as one is served, asking to delete it from this list.
# LEAD: empty this list after merging those branches.
NOT_BUILT_YET: list[str] = []

# Fuzzed in a second run of its own, after everything else: once the fuzzer
# has made a second secret key (POST /keys) it may revoke the one it uses,
# and every later request of that run is then, rightly, a 401.
LAST = "/api/v1/keys/{key_id}/revoke"

EXAMPLES = {
    "{person_key}": "user-1",
    "{flow}": "onboarding",
    "{identifier}": "pro",
    "{webhook_id}": "7",
    "{key_id}": "1",
    "{version}": "1",
}


def _concrete(path: str) -> str:
    for name, value in EXAMPLES.items():
        path = path.replace(name, value)
    return path


@pytest.fixture(scope="module")
def fuzz_target(server):
    """A project of its own on the shared server, with the document's examples in it."""
    keys = server.init_project("schemathesis")["environments"][0]
    with server.rest(keys["secret_key"]) as rest:
        flow = {**LINEAR_FLOW, "identifier": "onboarding"}
        assert rest.post("/flows", json=flow).status_code == 201
        assert rest.put("/people/user-1", json={"data": {}}).status_code == 201
        assert rest.post("/people/user-1/flows", json={"flow": "onboarding"}).status_code == 201
    return server, keys["secret_key"]


def _schemathesis(server, secret_key, report_dir, label, *selection) -> dict:
    seed = os.environ.get("STEPSTREAM_FUZZ_SEED", "20261201")
    examples = os.environ.get("STEPSTREAM_FUZZ_EXAMPLES", "20")
    command = [
        sys.executable,
        "-c",
        "from schemathesis.cli import schemathesis; schemathesis()",
        "run",
        f"{server.url}/api/v1/openapi.json",
        "--url",
        server.url,
        "--checks",
        "all",
        "--exclude-checks",
        # use_after_free: an archived flow (DELETE /flows/{identifier}) stays readable
        # with "archived": true, as CONTRACT.md says, as do its versions;
        # ensure_resource_availability: it follows POST /flows with every path under
        # /flows/{identifier}, and .../draft/publish is rightly a 404 for a flow with no draft
        "positive_data_acceptance,use_after_free,ensure_resource_availability",
        "--header",
        f"Authorization: Bearer {secret_key}",
        "--max-examples",
        examples,
        "--seed",
        seed,
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report",
        "json",
        "--report-dir",
        str(report_dir),
        *selection,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    reports = list(report_dir.glob("json-*.json"))
    assert reports, f"schemathesis wrote no report:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads(reports[0].read_text())
    cases = report["test_cases"]
    print(
        f"schemathesis, {label}: {report['operations']['tested']} "
        f"operations, {cases['generated']} cases, {cases['unique_failures']} failures, "
        f"{len(report['errors'])} errors, {report['running_time']:.1f} s"
    )
    assert cases["unique_failures"] == 0 and not report["errors"], done.stdout[-12000:]
    assert report["operations"]["tested"] > 0 and not report["operations"]["errored"]
    return report


def test_operations_left_out_are_really_not_served_yet(fuzz_target):
    """Keeps NOT_BUILT_YET honest: an operation served today must be fuzzed, not skipped."""
    server, secret_key = fuzz_target
    served = []
    for path in NOT_BUILT_YET:
        response = httpx.get(
            server.url + _concrete(path), headers={"Authorization": f"Bearer {secret_key}"}
        )
        router_404 = response.status_code == 404 and "Nothing is served at" in response.text
        if not router_404:
            served.append(path)
    assert not served, f"served now: remove from NOT_BUILT_YET in {__file__}: {served}"


@pytest.mark.timeout(2 * 240 + 60)  # its two runs are bounded themselves (240 s each)
def test_schemathesis_finds_no_failure(fuzz_target, tmp_path):
    server, secret_key = fuzz_target
    excluded = [arg for path in [*NOT_BUILT_YET, LAST] for arg in ("--exclude-path", path)]
    report = _schemathesis(server, secret_key, tmp_path / "all", "all but revoke", *excluded)
    operations = report["operations"]
    assert operations["tested"] == operations["selected"] >= 20 and not operations["skipped"]
    _schemathesis(server, secret_key, tmp_path / "last", "revoke", "--include-path", LAST)
