"""The client distribution (clients/python) alone, as someone without the server installs it.

A fresh virtual environment gets `pip install ./clients/python` and nothing
else: Django is not there, yet the client imports, `stepstream-watch` answers
`--help`, and the client reads a person's state from a live server.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stepstream.testing.flows import states
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "python"

# Reads a person's state with the installed client, from outside the repository.
READ_STATE = textwrap.dedent(
    """
    import asyncio, json, sys

    import stepstream_client
    from stepstream_client import connect


    async def main(url, key, person):
        async with connect(url, key, person, identify=False) as client:
            print(json.dumps({
                "file": stepstream_client.__file__,
                "flows": {
                    name: {"flow": f.state, **{s.identifier: s.state for s in f.steps}}
                    for name, f in client.flows.items()
                },
            }))


    asyncio.run(main(*sys.argv[1:]))
    """
)


# a fresh environment and an install (pip's cache is reused): ~25 s here
# installs into a new virtualenv; the client and its packaging are the same whatever
# database the server it reads from uses: run once, in the embedded-default suite
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow, pytest.mark.backend_agnostic]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A new environment with only the client distribution installed."""
    base = tmp_path_factory.mktemp("client-venv")
    # built from a copy: the build leaves files beside its source, and two runs may overlap
    source = base / "python"
    shutil.copytree(
        PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    path = base / "venv"
    run([sys.executable, "-m", "venv", str(path)], timeout=60)
    run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", str(source)], timeout=240)
    return path


def clean_env() -> dict:
    """The environment minus anything that could let the repository or the server leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "VIRTUAL_ENV"))}
    for name in ("PYTHONPATH", "PYTHONHOME", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    return env


def run(args: list[str], timeout: float = 30, check: bool = True, **kw):
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=clean_env(), **kw
    )
    if check:
        assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stderr}"
    return done


def test_the_client_installs_alone_without_django_and_reads_a_live_state(
    venv, tmp_path, server, tenant, rest, person_key
):
    python = str(venv / "bin" / "python")
    # run from elsewhere, so nothing of the checkout is importable by accident
    nodjango = run([python, "-c", "import django"], check=False, cwd=tmp_path)
    assert nodjango.returncode != 0 and "No module named 'django'" in nodjango.stderr
    noserver = run([python, "-c", "import stepstream"], check=False, cwd=tmp_path)
    assert noserver.returncode != 0

    helped = run([str(venv / "bin" / "stepstream-watch"), "--help"], cwd=tmp_path)
    assert helped.stdout.startswith("usage: stepstream-watch")
    assert "--person" in helped.stdout and "--key" in helped.stdout

    assert rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"}).is_success
    assert rest.post(
        f"/people/{person_key}/flows/onboarding/transitions", json={"transition": "next"}
    ).is_success
    script = tmp_path / "read_state.py"
    script.write_text(READ_STATE)
    read = run(
        [python, str(script), server.url, tenant["dev"]["publishable_key"], person_key],
        cwd=tmp_path,
    )
    answer = json.loads(read.stdout)
    assert Path(answer["file"]).is_relative_to(venv)  # the installed copy, not the checkout
    server_side = rest.get(f"/people/{person_key}/flows").json()
    assert answer["flows"] == {i["flow"]: states(i) for i in server_side}
    assert answer["flows"]["onboarding"]["profile"] == "active"


def test_stepstream_watch_draws_its_table_with_the_client_alone(
    venv, tmp_path, server, tenant, rest, person_key
):
    """No table library: the client alone (websockets, nothing else) watches; its output,
    not a terminal here, is each table printed whole."""
    import signal

    norich = run([str(venv / "bin" / "python"), "-c", "import rich"], check=False, cwd=tmp_path)
    assert norich.returncode != 0
    assert rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"}).is_success
    key = tenant["dev"]["publishable_key"]
    args = ["--url", server.url, "--key", key, "--person", person_key]
    out = tmp_path / "watch.out"
    with open(out, "w") as sink:
        watching = subprocess.Popen(
            [str(venv / "bin" / "stepstream-watch"), *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=clean_env(),
        )
    try:
        with contextlib.suppress(AssertionError):  # what it printed is checked below
            wait_until(lambda: "│ welcome │ active" in out.read_text(), 20, interval=0.1)
        watching.send_signal(signal.SIGINT)  # only this test's own process
        assert watching.wait(timeout=10) == 0
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait(timeout=10)
    text = out.read_text()
    assert f"{person_key}  live" in text, text
    assert "│ onboarding │ 1 │ active     │ welcome │ active" in text, text
    assert "\x1b[" not in text and "Traceback" not in text, text
