"""Names the docs give must be what the code does (issue 28): every WebSocket close code the
server sends is in docs/protocol.md's table, and the per-environment connection cap goes by
its name, STEPSTREAM_WS_MAX_CONNECTIONS_PER_ENVIRONMENT, its old per-key name still read."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stepstream import config

ROOT = Path(__file__).resolve().parent.parent
NEW = "STEPSTREAM_WS_MAX_CONNECTIONS_PER_ENVIRONMENT"
OLD = "STEPSTREAM_WS_MAX_CONNECTIONS_PER_KEY"

# sent by uvicorn's WebSocket protocol on the server's behalf (stepstream.ws.sansio's base)
UVICORN_SENDS = {1009: "a message over ws_max_size", 1012: "shutdown"}


def _sent_by_the_code() -> set[int]:
    codes = set(UVICORN_SENDS)
    for package in ("ws", "delivery"):
        for path in (ROOT / "stepstream" / package).rglob("*.py"):
            text = path.read_text()
            codes |= {int(c) for c in re.findall(r"\bclose\(\s*(\d{4})\b", text)}
            codes |= {int(c) for c in re.findall(r"\bCLOSE_\w+\s*=\s*(\d{4})\b", text)}
    return codes


def _documented() -> dict[int, str]:
    section = (ROOT / "docs" / "protocol.md").read_text().split("\n## Close codes\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return {int(m[1]): m[2] for m in re.finditer(r"^\| (\d{4}) \| ([^|]+) \|", section, re.M)}


def test_every_close_code_the_server_sends_is_in_the_protocol_table():
    sent, documented = _sent_by_the_code(), _documented()
    assert {1011, 1012, 1013, 4401, 4403, 4408} <= sent  # the search finds them
    assert sent - set(documented) == set(), f"sent but not documented: {sent - set(documented)}"


def test_1011_and_1012_say_when_they_are_sent():
    documented = _documented()
    assert "internal error" in documented[1011]
    assert "stopping or restarting" in documented[1012] and "log" in documented[1012]
    assert "not sent by Stepstream" in documented[1001]


# -- STEPSTREAM_WS_MAX_CONNECTIONS_PER_ENVIRONMENT, the old name still read -------------------


@pytest.mark.parametrize(
    "env, read, warned",
    [
        ({}, NEW, []),
        ({NEW: "7"}, NEW, []),
        ({OLD: "5"}, OLD, [f"{OLD} is deprecated: set {NEW} instead (same meaning)."]),
        ({NEW: "7", OLD: "5"}, NEW, [f"{OLD} is deprecated and ignored: {NEW} is set."]),
    ],
)
def test_the_new_name_is_read_and_the_old_one_while_it_is_unset(monkeypatch, env, read, warned):
    monkeypatch.delenv(NEW, raising=False)
    monkeypatch.delenv(OLD, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert config.renamed(NEW) == read
    assert config.deprecated_names() == warned


@pytest.mark.parametrize(
    "env, expected", [({}, 20000), ({NEW: "7"}, 7), ({OLD: "5"}, 5), ({NEW: "7", OLD: "5"}, 7)]
)
def test_the_setting_takes_its_value_from_either_name(tmp_path, env, expected):
    code = (
        "from django.conf import settings;"
        "print(settings.STEPSTREAM['WS_MAX_CONNECTIONS_PER_ENVIRONMENT'])"
    )
    base = {k: v for k, v in os.environ.items() if k not in (NEW, OLD)}
    base.update(DJANGO_SETTINGS_MODULE="stepstream.settings", STEPSTREAM_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True
    )
    assert done.stdout.strip() == str(expected), done.stderr


def test_a_wrong_old_name_is_named_in_its_one_line(tmp_path):
    from stepstream.testing.servers import free_port

    env = {k: v for k, v in os.environ.items() if k not in (NEW, OLD, "DATABASE_URL")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(STEPSTREAM_DATA_DIR=str(tmp_path), **{OLD: "many"})
    done = subprocess.run(
        [sys.executable, "-m", "stepstream", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"{OLD} must be a whole number of at least 1, not 'many'" in done.stderr


@pytest.mark.backend_agnostic
@pytest.mark.slow
def test_serve_warns_of_the_old_name(tmp_path):
    from stepstream.testing.servers import Server

    server = Server(tmp_path, **{OLD: "3"})
    try:
        server.start()
    finally:
        server.stop()
    assert f"{OLD} is deprecated: set {NEW} instead" in server.log()


def test_the_readme_and_security_md_name_both_the_new_and_the_deprecated_name():
    for doc in (ROOT / "README.md", ROOT / "docs" / "security.md"):
        row = next(line for line in doc.read_text().splitlines() if f"`{NEW}`" in line)
        assert f"`{OLD}`" in row and "deprecated" in row, doc
