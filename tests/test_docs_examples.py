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
