"""The README's REST examples, run as written against a live server.

The "Using it" block is read from README.md, not copied here: each command is
run with only the placeholders filled in (the secret key `init-project`
printed, the server's address for localhost:8000), and every answer goes
through the test client that validates it against the OpenAPI document.
"""

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def code_block(markdown: str, heading: str, language: str) -> str:
    """The first ```language block under `## heading`."""
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert found, f"no ```{language} block under '## {heading}'"
    return found.group(1)


def commands(block: str) -> list[list[str]]:
    """Shell commands of a block as argv lists; a quote left open continues on the next line."""
    argvs, pending = [], ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            argv = shlex.split(pending, comments=True)
        except ValueError:  # "No closing quotation": the command goes on
            continue
        if argv:
            argvs.append(argv)
        pending = ""
    assert not pending, f"unfinished command: {pending}"
    return argvs


def curl_request(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="curl", add_help=False, exit_on_error=False)
    parser.add_argument("-X", dest="method")
    parser.add_argument("-H", dest="headers", action="append", default=[])
    parser.add_argument("-d", dest="data")
    parser.add_argument("url")
    return parser.parse_args(argv[1:])


def test_the_readme_block_parses_into_its_commands():
    block = code_block(README.read_text(), "Using it", "sh")
    argvs = commands(block)
    assert [argv[0] for argv in argvs] == ["stepstream", "export", "curl", "curl", "curl"]
    assert json.loads(curl_request(argvs[2]).data)["identifier"] == "onboarding"


@pytest.mark.slow
def test_readme_rest_examples_run_against_a_live_server(server):
    block = code_block(README.read_text(), "Using it", "sh")
    variables: dict[str, str] = {}
    answers = []
    for argv in commands(block):
        if argv[:2] == ["stepstream", "init-project"]:
            done = server.command(*argv[1:])
            assert done.returncode == 0, done.stderr
            printed = json.loads(done.stdout)  # the README says: one JSON object
            development = printed["environments"][0]
            assert development["identifier"] == "development"
        elif argv[0] == "export":
            name, _, placeholder = argv[1].partition("=")
            assert placeholder == "sk_…", "the README's placeholder for the secret key"
            variables[name] = development["secret_key"]
        elif argv[0] == "curl":
            request = curl_request(argv)
            expand = lambda text: re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], text)  # noqa: E731
            headers = dict(h.split(": ", 1) for h in map(expand, request.headers))
            url = request.url.replace("localhost:8000", server.url.removeprefix("http://"))
            assert url.removeprefix("http://").startswith(server.url.removeprefix("http://"))
            with server.rest(variables["SK"]) as rest:
                response = rest.request(
                    request.method or ("POST" if request.data else "GET"),
                    url if "://" in url else "http://" + url,
                    headers=headers,
                    content=request.data.encode() if request.data else None,
                )
            assert 200 <= response.status_code < 300, (argv, response.text)
            answers.append(response.json())
        else:
            pytest.fail(f"the README's block has a command this test cannot run: {argv}")
    flow, person, instance = answers
    assert flow["version"] == 1 and person == {"person_key": "user-1", "data": {}}
    assert instance["state"] == "active"
    assert [s["state"] for s in instance["steps"]] == ["active", "inactive", "inactive"]


# -- the Python examples of docs/clients.md and docs/protocol.md, against the demo --

DOCS = README.parent / "docs"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from stepstream.testing.servers import Server

    srv = Server(tmp_path_factory.mktemp("demo"), args=("--demo",)).start()
    keys = json.loads((Path(srv.data_dir) / "demo.json").read_text())
    yield srv, keys
    srv.stop()


class Example:
    """A documented Python example run in its own process, its output read line by line."""

    def __init__(self, code: str):
        import queue
        import subprocess
        import sys
        import threading

        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for_line(self, predicate, timeout=15.0) -> str:
        import queue
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if predicate(line):
                return line
        self.stop()
        pytest.fail(f"no such line; printed {self.seen}; stderr:\n{self.stderr}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # only this example's own process
            self.process.wait(timeout=10)
        self.stderr = self.process.stderr.read()


def _fill(code: str, server, keys) -> str:
    code = code.replace("pk_…", keys["publishable_key"])
    code = code.replace("http://127.0.0.1:8000", server.url)
    return code.replace("ws://127.0.0.1:8000", server.ws_url)


@pytest.mark.slow
def test_the_python_client_example_runs_against_the_demo(demo):
    server, keys = demo
    code = code_block((DOCS / "clients.md").read_text(), "Python", "python")
    example = Example(_fill(code, server, keys))
    example.wait_for_line(lambda line: line.startswith("active ["))  # the demo's flow
    example.wait_for_line(lambda line: line == "completed")  # welcome, after "start"
    # "whoever changes it": the rest of the demo flow, from the product's backend
    with server.rest(keys["secret_key"]) as rest:
        for transition in ("task-created", "invited", "due-date-set"):
            path = "/people/demo-user/flows/onboarding/transitions"
            assert rest.post(path, json={"transition": transition}).status_code == 200
        # then the example follows every change: start another flow to see one
        tour = {"identifier": "tour", "steps": [{"identifier": "tour-start"}]}
        assert rest.post("/flows", json=tour).status_code == 201
        assert rest.post("/people/demo-user/flows", json={"flow": "tour"}).status_code == 201
    example.wait_for_line(lambda line: line.endswith("flow tour active"))
    example.stop()
    assert "Traceback" not in example.stderr, example.stderr


def test_the_protocol_python_example_runs_against_the_demo(demo):
    server, keys = demo
    code = code_block((DOCS / "protocol.md").read_text(), "An example session", "python")
    example = Example(_fill(code, server, keys))
    response = json.loads(example.wait_for_line(lambda line: '"request_id":1' in line))
    assert response["status"] == 200 and response["errors"] == []
    event = json.loads(example.wait_for_line(lambda line: "state_change" in line))
    assert event["data"]["person_key"] == "demo-user" and event["data"]["seq"] >= 1
    example.stop()
    assert "Traceback" not in example.stderr, example.stderr


def _signature(message: str) -> tuple:
    """What a line of the session must match: whose answer or event it is, and what it says."""
    request_id = re.search(r'"request_id":\s*(\d+)', message)
    identifier = re.search(r'"identifier":\s*"([^"]+)"', message)
    status = re.search(r'"status":\s*(\d+)', message)
    if '"event":"state_change"' in message.replace(" ", ""):
        return ("event", int(request_id.group(1)), identifier.group(1))
    return ("answer", int(request_id.group(1)), int(status.group(1)))


@pytest.mark.slow
def test_the_protocol_example_session_is_what_the_server_sends(tmp_path):
    """The websocat session of docs/protocol.md, replayed on a fresh demo: every line the
    server sends arrives, in the order shown (a change's events before the call's answer)."""
    import asyncio

    import websockets

    from stepstream.testing.servers import Server

    block = code_block((DOCS / "protocol.md").read_text(), "An example session", "")
    lines = [line for line in block.splitlines() if line and not line.startswith("$ ")]
    server = Server(tmp_path / "data", args=("--demo",)).start()
    try:
        keys = json.loads((Path(server.data_dir) / "demo.json").read_text())

        async def replay() -> list[tuple]:
            url = f"{server.ws_url}/ws?key={keys['publishable_key']}"
            shown, received = [], []
            async with websockets.connect(url) as ws:
                for line in lines:
                    if line.startswith('{"action"'):
                        await ws.send(line)
                        continue
                    shown.append(_signature(line))
                    received.append(_signature(await asyncio.wait_for(ws.recv(), 10)))
            return shown, received

        shown, received = asyncio.run(replay())
    finally:
        server.stop()
    assert received == shown
