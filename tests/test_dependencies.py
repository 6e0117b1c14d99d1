"""Dependency hygiene (issue 28): what the shipped code needs, and what replaced what it dropped."""

import io
import re

import pytest

from stepstream_client.state import FlowState
from stepstream_client.watch import Screen, event_line, render

# -- `stepstream watch` without rich: its own table and redraw --------------------------------


class _Terminal(io.StringIO):
    """A terminal as far as Screen uses one: lines, a cursor row, CR, LF, CSI n A and CSI J."""

    def isatty(self) -> bool:
        return True

    def screen(self) -> list[str]:
        rows, row = [""], 0
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.getvalue())  # colours do not move anything
        for token in re.findall(r"\x1b\[\d*[AJ]|\r|\n|[^\x1b\r\n]+", text):
            if token == "\n":
                row += 1
                rows += [""] * (row + 1 - len(rows))
            elif token == "\r":
                pass  # every line here is written whole from column 0
            elif token.endswith("A"):
                row -= int(token[2:-1] or 1)
                assert row >= 0, "the cursor went above the screen"
            elif token.endswith("J"):
                del rows[row:]
                rows.append("")
            else:
                rows[row] += token
        return rows[:-1] if rows[-1] == "" else rows


class _Client:
    def __init__(self, states: list[str], status: str = "live"):
        self.person_key, self.status, self.seq = "alice", status, {"flow": 1, "step": 2}
        steps = [
            {"id": str(i), "identifier": name, "name": "", "state": state}
            for i, (name, state) in enumerate(zip(["welcome", "profile"], states, strict=True))
        ]
        instance = {"id": "f", "flow": "onboarding", "version": 1, "state": "active"}
        self.flows = {"onboarding": FlowState.from_instance({**instance, "steps": steps}, 2)}


def test_the_watch_table_is_redrawn_in_place_below_the_event_lines(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = _Terminal()
    screen = Screen(terminal)
    screen.print([("watching alice", "")])
    screen.show(render(_Client(["active", "inactive"], status="connecting")))
    screen.show(render(_Client(["active", "inactive"])))
    change = {
        "occurred_at": "2026-01-01T10:00:03.000000Z",
        "seq": 3,
        "entity": "step",
        "flow": "onboarding",
        "identifier": "welcome",
        "previous_state": "active",
        "state": "completed",
    }
    screen.print(event_line(change))
    screen.show(render(_Client(["completed", "active"])))
    assert "\x1b[1;36m" in terminal.getvalue()  # "active" in bold cyan on a terminal
    assert terminal.screen() == [
        "watching alice",
        "10:00:03 #3    step onboarding/welcome  active → completed",
        "alice  live",
        "┌────────────┬───┬────────────┬─────────┬────────────┐",
        "│ flow       │ v │ flow state │ step    │ step state │",
        "├────────────┼───┼────────────┼─────────┼────────────┤",
        "│ onboarding │ 1 │ active     │ welcome │ completed  │",
        "│            │   │            │ profile │ active     │",
        "└────────────┴───┴────────────┴─────────┴────────────┘",
        "resume points: flow #1, step #2",
    ]


def test_the_watch_table_is_cut_to_the_terminal_so_a_redraw_erases_it_all(monkeypatch):
    import os

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr("shutil.get_terminal_size", lambda: os.terminal_size((30, 6)))
    terminal = _Terminal()
    screen = Screen(terminal)
    screen.show(render(_Client(["active", "inactive"])))
    screen.show(render(_Client(["completed", "active"])))
    assert "\x1b[1" not in terminal.getvalue()  # NO_COLOR
    shown = terminal.screen()
    assert len(shown) == 4 and shown[-1] == "…", shown
    assert all(len(line) <= 29 for line in shown), shown


def test_the_watch_output_elsewhere_has_no_escapes_and_each_table_once():
    out = io.StringIO()
    screen = Screen(out)
    table = render(_Client(["active", "inactive"]))
    screen.show(table)
    screen.show(table)  # unchanged: not printed again
    screen.print([("a line", "bold")])
    text = out.getvalue()
    assert "\x1b" not in text
    assert text.count("alice  live") == 1 and text.endswith("a line\n")


# -- the WSGI environ, without a2wsgi ------------------------------------------------------------


def test_the_wsgi_environ_of_an_asgi_request():
    from stepstream.http.bridge import wsgi_environ

    body = io.BytesIO(b'{"data": {}}')
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "root_path": "",
        "path": "/api/v1/people/zoë/x",  # percent-decoded by the server
        "query_string": b"a=1&b=%C3%A9",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50123),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"12"),
            (b"content_length", b"999"),  # not Content-Length: a header of its own
            (b"x-request-id", b"abc"),
            (b"accept", b"text/html"),
            (b"accept", b"application/json"),
            (b"user-agent", "é".encode()),
        ],
    }
    environ = wsgi_environ(scope, body)
    assert environ.pop("wsgi.input") is body
    assert environ.pop("wsgi.errors") is not None
    assert environ == {
        "REQUEST_METHOD": "PUT",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/api/v1/people/zoë/x".encode().decode("latin-1"),  # PEP 3333's native
        "QUERY_STRING": "a=1&b=%C3%A9",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50123",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "12",
        "HTTP_CONTENT_LENGTH": "999",
        "HTTP_X_REQUEST_ID": "abc",
        "HTTP_ACCEPT": "text/html,application/json",  # repeated: joined, as Django reads it
        "HTTP_USER_AGENT": "é".encode().decode("latin-1"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    prefixed = wsgi_environ({**scope, "root_path": "/api"}, body)
    assert (prefixed["SCRIPT_NAME"], prefixed["PATH_INFO"][:10]) == ("/api", "/v1/people")


# -- the OpenAPI document: YAML by hand, JSON at run time ----------------------------------------


def test_the_shipped_openapi_json_is_exactly_the_yaml():
    from tests.openapi_json import COPY, generated

    assert COPY.read_text(encoding="utf-8") == generated(), (
        "stepstream/http/api/openapi.json is not openapi.yaml's copy: "
        "run `python -m tests.openapi_json` and commit both"
    )


BLOCKED = """
import sys


class NotInstalled:  # as if PyYAML, a2wsgi, rich and httpx were not installed

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("yaml", "a2wsgi", "rich", "httpx"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NotInstalled())
import django

django.setup()
import stepstream.cli.main
import stepstream.http.asgi
import stepstream.http.urls
import stepstream.testing.servers
import stepstream_client.watch
from stepstream.http.api.reference import document

assert document()["openapi"].startswith("3.1")
print("ok")
"""


@pytest.mark.slow
def test_the_server_runs_without_the_dropped_dependencies(tmp_path):
    """PyYAML, a2wsgi and rich are not server dependencies, nor httpx for the shipped
    stepstream.testing.servers: everything imports, and the document is read, without them."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "stepstream.settings"}
    env["STEPSTREAM_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=60, env=env
    )
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr
