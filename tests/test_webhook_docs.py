"""The signature-checking examples in docs/webhooks.md work against real signed requests."""

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from stepstream.delivery.webhooks import signing
from tests import receiver

DOC = (Path(__file__).parent.parent / "docs" / "webhooks.md").read_text()
SECRET = signing.new_secret()


def example(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC, re.S)
    assert len(blocks) == 1, f"expected one {language} example"
    return blocks[0]


def signed(body: bytes, secret=SECRET, at=None) -> dict:
    return signing.headers(secret, "msg_1_42", int(at or time.time()), body)


BODY = json.dumps({"type": "state_change", "data": {"seq": 1, "person_key": "ann"}}).encode()


def cases() -> list[tuple]:
    """Signed now (not when the module was collected: the examples refuse old timestamps)."""
    return [
        ("genuine", signed(BODY), BODY, True),
        ("body changed", signed(BODY), BODY.replace(b"ann", b"bob"), False),
        ("other secret", signed(BODY, signing.new_secret()), BODY, False),
        ("too old", signed(BODY, at=time.time() - 3600), BODY, False),
        (
            "several signatures",
            {
                **signed(BODY),
                "webhook-signature": "v1,bm9wZQ== " + signed(BODY)["webhook-signature"],
            },
            BODY,
            True,
        ),
    ]


NAMES = [c[0] for c in cases()]


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_python_example(index):
    name, headers, body, valid = cases()[index]
    scope: dict = {}
    exec(example("python"), scope)
    assert scope["verify"](SECRET, headers, body) is valid, name


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_the_standardwebhooks_package_agrees(index):
    """The server's signatures, checked by the reference library (tests/receiver.py)."""
    name, headers, body, valid = cases()[index]
    assert receiver.verify(SECRET, headers, body) is valid, name


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_node_example():
    signed_now = [
        {"headers": h, "body": b.decode(), "valid": v, "name": n} for n, h, b, v in cases()
    ]
    script = example("javascript") + (
        "\nconst cases = JSON.parse(process.argv[1]);"
        "\nfor (const c of cases) {"
        "\n  const got = verify(process.argv[2], c.headers, Buffer.from(c.body));"
        "\n  if (got !== c.valid) { console.log('FAIL ' + c.name); process.exit(1); }"
        "\n}\nconsole.log('ok');"
    )
    done = subprocess.run(
        ["node", "-e", script, json.dumps(signed_now), SECRET],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
