"""The `stepstream` command line, run for real as a subprocess on the embedded database.

Every run gets a fresh STEPSTREAM_DATA_DIR under tmp_path and no DATABASE_URL, REDIS_URL or
STEPSTREAM_SECRET_KEY, so it never touches the test database or another test's files.
"""

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from tests.waiting import wait_until

STARTUP_SECONDS = 60  # a start on a loaded CI machine (two suites at once) is not what is tested


def cli_env(data_dir: Path, **extra: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "STEPSTREAM_SECRET_KEY")
    }
    env["STEPSTREAM_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def run(args: list[str], env: dict, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stepstream", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `stepstream serve` process; its output goes to files so pipes never fill up."""

    def __init__(self, tmp_path: Path, env: dict, port: int, *extra: str, name: str = "serve"):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.out_path = tmp_path / f"{name}-{port}.out"
        self.err_path = tmp_path / f"{name}-{port}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stepstream", "serve", "--port", str(port), *extra],
                env=env,
                cwd=tmp_path,
                stdout=out,
                stderr=err,
            )

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.stderr}")
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"{self.base}/api/v1/health", timeout=2)
                if response.status_code == 200:
                    assert response.json()["status"] == "ok"
                    return True
            return False

        try:
            wait_until(healthy, STARTUP_SECONDS, interval=0.1)
        except AssertionError:
            pytest.fail(
                f"serve did not answer /api/v1/health in {STARTUP_SECONDS} s:\n{self.stderr}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@contextlib.contextmanager
def serving(tmp_path: Path, env: dict, *extra: str, name: str = "serve"):
    server = Server(tmp_path, env, free_port(), *extra, name=name)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def demo_keys(stderr: str) -> tuple[str, str]:
    secret = re.search(r"secret key:\s*(\S+)", stderr)
    publishable = re.search(r"publishable key:\s*(\S+)", stderr)
    assert secret and publishable, stderr
    return secret.group(1), publishable.group(1)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def env(data_dir) -> dict:
    return cli_env(data_dir)


# --- help, init-project -----------------------------------------------------------------------


def test_help(tmp_path, env):
    result = run(["--help"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "init-project", "keys", "watch", "manage"):
        assert command in result.stdout
    serve_help = run(["serve", "--help"], env, tmp_path).stdout
    assert "DATABASE_URL" in serve_help and "default: 8000" in serve_help
    version = run(["--version"], env, tmp_path)
    assert version.returncode == 0 and re.fullmatch(r"stepstream \d+\.\d+\.\d+\n", version.stdout)


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http"])
def test_serve_refuses_an_out_of_range_port_in_one_line(tmp_path, env, port):
    done = run(["serve", "--port", port], env, tmp_path)
    assert done.returncode == 2
    assert "--port" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_init_project_says_which_database_and_project_id(tmp_path, env, data_dir):
    result = run(["init-project", "Acme"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert isinstance(body["project_id"], int)
    assert f"id {body['project_id']}" in result.stderr
    assert str(data_dir / "stepstream.sqlite3") in result.stderr


@pytest.mark.slow
def test_another_server_secret_is_refused_in_one_sentence(tmp_path, env):
    assert run(["init-project", "Acme"], env, tmp_path).returncode == 0
    other = dict(env, STEPSTREAM_SECRET_KEY="not-the-secret-this-database-was-set-up-with")
    for command in (["init-project", "Beta"], ["serve", "--port", str(free_port())]):
        done = run(command, other, tmp_path)
        assert done.returncode == 2, done.stderr
        assert "was set up with another STEPSTREAM_SECRET_KEY" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_init_project_prints_one_json_object(tmp_path, env, data_dir):
    result = run(["init-project", "Acme"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)  # fails on anything else on stdout
    assert result.stdout.strip().count("\n") == 0, result.stdout
    assert body["project"] == "Acme"
    environments = body["environments"]
    assert [e["identifier"] for e in environments] == ["development", "production"]
    keys = []
    for e in environments:
        for kind in ("publishable_key", "secret_key"):
            assert isinstance(e[kind], str) and len(e[kind]) >= 32, e
            keys.append(e[kind])
    assert len(set(keys)) == 4
    assert data_dir.is_dir()

    again = json.loads(run(["init-project", "Acme"], env, tmp_path).stdout)
    assert again["project"] == "Acme"  # names need not be unique
    again_keys = {e[k] for e in again["environments"] for k in ("publishable_key", "secret_key")}
    assert not again_keys & set(keys)


def test_init_project_on_unwritable_data_dir_fails(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run(["init-project", "Acme"], cli_env(blocker / "data"), tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "data directory" in result.stderr, result.stderr


# --- serve: startup failures ------------------------------------------------------------------


@pytest.mark.slow
def test_serve_on_port_in_use_fails_naming_the_port(tmp_path, env):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["serve", "--port", str(port)], env, tmp_path, timeout=60)
    assert result.returncode != 0
    assert str(port) in result.stderr, result.stderr


def test_serve_on_unwritable_data_dir_fails_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data_dir = blocker / "data"
    result = run(["serve", "--port", str(free_port())], cli_env(data_dir), tmp_path, timeout=60)
    assert result.returncode != 0
    assert "data directory" in result.stderr, result.stderr
    assert str(data_dir) in result.stderr, result.stderr


@pytest.mark.parametrize(
    "database_url",
    ["postgres://postgres@127.0.0.1:1/nope", "postgres://u:hunter2@127.0.0.1:1/x"],
)
@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["init-project", "Acme"]])
@pytest.mark.slow
def test_unreachable_database_fails_fast_without_password(
    tmp_path, data_dir, database_url, command
):
    if command[0] == "serve":
        command = ["serve", "--port", str(free_port())]
    env = cli_env(data_dir, DATABASE_URL=database_url)
    began = time.monotonic()
    result = run(command, env, tmp_path, timeout=60)
    elapsed = time.monotonic() - began
    assert result.returncode != 0
    assert elapsed < 15, elapsed
    assert "database" in result.stderr.lower(), result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert result.stdout == ""


@pytest.mark.skipif(not os.environ.get("DATABASE_URL"), reason="needs PostgreSQL (DATABASE_URL)")
@pytest.mark.parametrize(
    "database_url, cause",
    [
        (
            "postgres://postgres@127.0.0.1:5432/stepstream_no_such_db",
            'database "stepstream_no_such_db" does not exist',
        ),
        (
            "postgres://stepstream_no_role@127.0.0.1:5432/postgres",
            'role "stepstream_no_role" does not exist',
        ),
    ],
)
def test_a_missing_database_or_role_is_named(tmp_path, data_dir, database_url, cause):
    parsed = urllib.parse.urlparse(os.environ["DATABASE_URL"])
    database_url = database_url.replace(
        "127.0.0.1:5432", f"{parsed.hostname}:{parsed.port or 5432}"
    )
    result = run(["init-project", "Acme"], cli_env(data_dir, DATABASE_URL=database_url), tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(cause), result.stderr
    assert "WARNING" not in result.stderr


# --- serve: running ---------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_demo_prints_working_keys_and_reuses_them(tmp_path, env):
    with serving(tmp_path, env, "--demo", name="first") as server:
        secret, publishable = demo_keys(server.stderr)
        response = httpx.get(
            f"{server.base}/api/v1/people/demo-user/flows", headers=bearer(secret), timeout=5
        )
        assert response.status_code == 200, response.text
        instances = response.json()
        assert [i["flow"] for i in instances] == ["onboarding"]
        assert instances[0]["state"] == "active"
        response = httpx.post(
            f"{server.base}/api/v1/people/demo-user/flows/onboarding/transitions",
            json={"transition": "start"},
            headers=bearer(secret),
            timeout=5,
        )
        assert response.status_code == 200, response.text
        # the publishable key is not for the REST API
        response = httpx.get(
            f"{server.base}/api/v1/people/demo-user/flows", headers=bearer(publishable), timeout=5
        )
        assert response.status_code == 401
        assert response.json()["errors"]
        # a dashboard sign-in without a second terminal: a staff user made, its password told
        login = re.search(r"sign in as (\S+), password (\S+)", server.stderr)
        if not os.environ.get("DATABASE_URL"):  # (a shared database may have staff already)
            assert login, server.stderr
        if login:
            with httpx.Client(base_url=server.base, timeout=5) as http:
                form = http.get("/dashboard/login/").text
                token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
                assert token, form
                signed = http.post(
                    "/dashboard/login/",
                    data={
                        "username": login.group(1),
                        "password": login.group(2),
                        "csrfmiddlewaretoken": token.group(1),
                    },
                )
                assert signed.status_code == 302, signed.text
                assert http.get("/dashboard/").status_code == 200

    with serving(tmp_path, env, "--demo", name="second") as server:
        assert demo_keys(server.stderr) == (secret, publishable)
        assert ", password " not in server.stderr  # told once, when it was made
        response = httpx.get(
            f"{server.base}/api/v1/people/demo-user/flows", headers=bearer(secret), timeout=5
        )
        assert response.status_code == 200, response.text
        # the demo person kept their progress
        (instance,) = response.json()
        steps = {s["identifier"]: s["state"] for s in instance["steps"]}
        assert steps["welcome"] == "completed"
        flows = httpx.get(f"{server.base}/api/v1/flows", headers=bearer(secret), timeout=5)
        # the demo was created once: its flows (onboarding, the rules demo's and the tour
        # the SDK renders) at version 1
        assert [(f["identifier"], f["version"]) for f in flows.json()] == [
            ("habits", 1),
            ("onboarding", 1),
            ("plan-tip", 1),
            ("tour", 1),
        ]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.slow
def test_serve_demo_try_commands_run_as_printed(tmp_path, env):
    """The "Try:" lines, pasted into a shell as they are, each succeed (the last one once
    joined its continuation and ended in `<- ...`, which a shell reads as a redirection)."""
    with serving(tmp_path, env, "--demo") as server:
        block = server.stderr.split("Try:\n", 1)[1].split("\n\n", 1)[0]
        result = subprocess.run(
            ["bash", "-e", "-c", block], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (block, result.stderr)
        assert '"errors"' not in result.stdout and '"event":"searched"' in result.stdout
        secret, _ = demo_keys(server.stderr)
        flows = httpx.get(
            f"{server.base}/api/v1/people/demo-user/flows", headers=bearer(secret), timeout=5
        )
        assert "habits" in [i["flow"] for i in flows.json()]  # the rule the comment promises


@pytest.mark.slow
def test_serve_demo_serves_the_demo_page(tmp_path, env):
    with serving(tmp_path, env, "--demo") as server:
        response = httpx.get(f"{server.base}/demo", timeout=5, follow_redirects=True)
        assert response.status_code == 200
        assert "text/html" in response.headers.get("content-type", "")


@pytest.mark.slow
def test_the_root_is_a_landing_page_linking_demo_dashboard_and_api(tmp_path, env):
    with serving(tmp_path, env, "--demo") as server:
        response = httpx.get(f"{server.base}/", timeout=5)
        assert response.status_code == 200 and "text/html" in response.headers["content-type"]
        links = dict(re.findall(r'<a href="([^"]+)" data-link="([^"]+)"', response.text))
        assert set(links.values()) >= {"demo", "dashboard", "openapi", "sdk", "health"}
        for href in links:
            assert httpx.get(f"{server.base}{href}", timeout=5).status_code in (200, 302), href


@pytest.mark.slow
def test_demo_starts_over_from_its_button_and_its_command(tmp_path, env):
    def demo_flows(server, secret):
        url = f"{server.base}/api/v1/people/demo-user"
        return httpx.get(f"{url}/flows", headers=bearer(secret), timeout=5)

    with serving(tmp_path, env, "--demo", name="first") as server:
        secret, _ = demo_keys(server.stderr)
        url = f"{server.base}/api/v1/people/demo-user/flows/onboarding/transitions"
        moved = httpx.post(url, json={"transition": "start"}, headers=bearer(secret), timeout=5)
        assert moved.status_code == 200
        # another site may not reset it; the page itself may
        other = {"Origin": "https://elsewhere.example"}
        assert httpx.post(f"{server.base}/demo/reset", headers=other, timeout=5).status_code == 403
        same = {"Origin": server.base}
        reset = httpx.post(f"{server.base}/demo/reset", headers=same, timeout=5)
        assert reset.status_code == 200, reset.text
        (instance,) = demo_flows(server, secret).json()
        assert instance["seq"] == 2  # a new log: the flow and its start step
        assert {s["identifier"]: s["state"] for s in instance["steps"]}["welcome"] == "active"
        # deleting the demo person no longer breaks the next start
        deleted = httpx.delete(
            f"{server.base}/api/v1/people/demo-user", headers=bearer(secret), timeout=5
        )
        assert deleted.status_code == 204
    with serving(tmp_path, env, "--demo", name="second") as server:
        (instance,) = demo_flows(server, secret).json()
        assert instance["state"] == "active"
    done = run(["reset-demo"], env, tmp_path)
    assert done.returncode == 0 and "starts over" in done.stderr, done.stderr


@pytest.mark.slow
def test_reset_demo_without_a_demo_says_so(tmp_path, env):
    done = run(["reset-demo"], env, tmp_path)
    assert done.returncode == 2 and "no demo here yet" in done.stderr, done.stderr


@pytest.mark.slow
def test_init_project_keys_work_on_a_running_server(tmp_path, env):
    with serving(tmp_path, env) as server:
        result = run(["init-project", "Late"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        dev, prod = json.loads(result.stdout)["environments"]
        response = httpx.get(
            f"{server.base}/api/v1/flows", headers=bearer(dev["secret_key"]), timeout=5
        )
        assert response.status_code == 200, response.text
        assert response.json() == []
        response = httpx.put(
            f"{server.base}/api/v1/people/a%2Bb%40example.com",
            json={"data": {"plan": "pro"}},
            headers=bearer(dev["secret_key"]),
            timeout=5,
        )
        assert response.status_code == 201, response.text
        assert response.json() == {"person_key": "a+b@example.com", "data": {"plan": "pro"}}
        response = httpx.get(
            f"{server.base}/api/v1/people/a%2Bb%40example.com",
            headers=bearer(prod["secret_key"]),
            timeout=5,
        )
        assert response.status_code == 404
        response = httpx.get(
            f"{server.base}/api/v1/flows", headers=bearer(dev["publishable_key"]), timeout=5
        )
        assert response.status_code == 401


@pytest.mark.slow
def test_serve_person_key_with_slash(tmp_path, env):
    with serving(tmp_path, env) as server:
        result = run(["init-project", "Slash"], env, tmp_path)
        secret = json.loads(result.stdout)["environments"][0]["secret_key"]
        path = f"{server.base}/api/v1/people/team%2Falice"
        response = httpx.put(path, json={"data": {}}, headers=bearer(secret), timeout=5)
        assert response.status_code == 201, response.text
        assert response.json()["person_key"] == "team/alice"
        response = httpx.get(path, headers=bearer(secret), timeout=5)
        assert response.status_code == 200
        assert response.json()["person_key"] == "team/alice"


@pytest.mark.parametrize(
    "variable, value, complaint",
    [
        ("STEPSTREAM_WS_RATE_BURST", "lots", "must be a whole number of at least 1, not 'lots'"),
        ("STEPSTREAM_WS_RATE_BURST", "-5", "must be a whole number of at least 1, not '-5'"),
        ("STEPSTREAM_HTTP_THREADS", "0", "must be a whole number of at least 1, not '0'"),
        ("STEPSTREAM_DB_THREADS", "0", "must be a whole number of at least 1, not '0'"),
        ("STEPSTREAM_WS_PING_INTERVAL", "soon", "must be a number of at least 0.001, not 'soon'"),
        ("STEPSTREAM_WS_COMPRESSION", "maybe", "must be true or false, not 'maybe'"),
        ("STEPSTREAM_LOG_FORMAT", "xml", "must be one of plain, json, not 'xml'"),
        ("STEPSTREAM_LOG_LEVEL", "loud", "must be one of debug, info, warning, error"),
    ],
)
@pytest.mark.slow
def test_a_bad_setting_is_named_in_one_line(tmp_path, variable, value, complaint):
    env = cli_env(tmp_path, **{variable: value})
    done = run(["serve", "--port", str(free_port())], env, tmp_path)
    assert done.returncode != 0
    assert f"{variable} {complaint}" in done.stderr
    assert "Traceback" not in done.stderr
