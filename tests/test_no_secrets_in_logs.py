"""No secrets in logs: a full session against a real server logging at DEBUG, with keys,
person tokens and identity secrets, good and bad, then a grep of everything it logged."""

import json
import uuid

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from stepstream.testing.flows import LINEAR_FLOW
from stepstream.testing.servers import Server
from tests.trust import mint, with_signature_flipped
from tests.wsclient import WsClient, refused


def refused_handshake(url: str) -> int:
    return refused(url)[0]


@pytest.mark.parametrize("log_format", ["plain", "json"])
@pytest.mark.slow
def test_a_full_session_logs_no_key_token_or_identity_secret(tmp_path, log_format):
    srv = Server(
        tmp_path / "srv",
        STEPSTREAM_LOG_LEVEL="DEBUG",
        STEPSTREAM_LOG_FORMAT=log_format,
        STEPSTREAM_KEY_CHECK_INTERVAL=0.3,
    )
    secrets: list[str] = []
    command_logs: list[str] = []
    srv.start()
    try:
        name = f"logged-{uuid.uuid4().hex[:8]}"  # servers on PostgreSQL share one database
        done = srv.command("init-project", name)
        assert done.returncode == 0
        command_logs.append(done.stderr)
        project = json.loads(done.stdout)
        dev, prod = project["environments"]
        for env in (dev, prod):
            secrets += [env["secret_key"], env["publishable_key"]]
        wrong_secret = "sk_" + uuid.uuid4().hex + uuid.uuid4().hex
        wrong_publishable = "pk_" + uuid.uuid4().hex + uuid.uuid4().hex
        secrets += [wrong_secret, wrong_publishable]

        # REST, good and bad
        with srv.rest(dev["secret_key"]) as rest:
            assert rest.post("/flows", json=LINEAR_FLOW).status_code == 201
            assert rest.put("/people/ann", json={"data": {}}).status_code == 201
            assert rest.post("/people/ann/flows", json={"flow": "onboarding"}).status_code == 201
            identity_secret = rest.post("/identity-verification/secret").json()["identity_secret"]
            secrets.append(identity_secret)
            assert rest.put("/identity-verification", json={"mode": "enforce"}).status_code == 200
            new_secret_key = rest.post("/keys", json={"kind": "secret"}).json()["key"]
            new_publishable = rest.post("/keys", json={"kind": "publishable"}).json()
            secrets += [new_secret_key, new_publishable["key"]]
            assert rest.get("/keys").status_code == 200
            assert rest.put("/people/bob", json={"data": {"k": "x" * 2_000_000}}).status_code == 413
            bad_json = b'{"data": ' + dev["secret_key"].encode() + identity_secret.encode()
            assert (
                rest.put(
                    "/people/bob", content=bad_json, headers={"content-type": "application/json"}
                ).status_code
                == 400
            )
            assert rest.get(f"/flows?key={dev['secret_key']}&token={identity_secret}").is_success
        for wrong in (wrong_secret, dev["publishable_key"], identity_secret):
            with srv.rest(wrong) as rest:
                assert rest.get("/flows").status_code == 401
                assert rest.get(f"/people/ann?key={wrong}").status_code == 401

        # WebSocket, good and bad
        good = mint(identity_secret, "ann")
        expired = mint(identity_secret, "ann", expires_in=-60)
        tampered = with_signature_flipped(mint(identity_secret, "ann"))
        foreign = mint(identity_secret, "bob")
        secrets += [good, expired, tampered, foreign]
        for key in (wrong_publishable, dev["secret_key"], identity_secret):
            assert refused_handshake(f"{srv.ws_url}/ws?key={key}") == 4401
        with WsClient(srv.ws_url, new_publishable["key"]) as ws:
            for token in (good, expired, tampered, foreign, None):
                data = {"person_key": "ann", "entity": "step", "since_seq": 0}
                if token:
                    data["person_token"] = token
                ws.request("subscribe_state_change", data)
                ws.request("get_state", data)
                ws.request("identify", {**data, "data": {"note": "hello"}})
            unknown = {"action": "fly", "request_id": 1, "data": {"person_token": good}}
            assert ws.send_raw(orjson.dumps(unknown))["status"] == 400
            assert ws.send_raw('{"not json ' + dev["secret_key"] + good)["status"] == 400
            huge = orjson.dumps({"action": "ping", "data": {"t": good * 3000}})
            assert ws.send_raw(huge)["status"] == 413
            assert ws.send_raw(good)["status"] == 400

            # revoking the key of an open connection closes it
            with srv.rest(new_secret_key) as rest:
                assert rest.post(f"/keys/{new_publishable['id']}/revoke").status_code == 200
            with pytest.raises(ConnectionClosed):
                while True:
                    ws._recv(10)
            assert ws.close_code == 4403
        assert refused_handshake(f"{srv.ws_url}/ws?key={new_publishable['key']}") == 4403

        # the command line
        done = srv.command("keys", "rotate", f"{name}/production")
        assert done.returncode == 0
        rotated = json.loads(done.stdout)
        secrets += [rotated["secret_key"], rotated["publishable_key"]]
        command_logs.append(done.stderr)
        done = srv.command("keys", "list", f"{name}/production")
        assert done.returncode == 0
        command_logs.append(done.stderr + done.stdout)
    finally:
        srv.stop()

    log = srv.log()
    assert "WebSocket" in log and "/api/v1/flows" in log, "the log was not captured"
    assert len(log.splitlines()) > 40
    everything = "\n".join([log, *command_logs])
    for secret in secrets:
        for chunk in secret_chunks(secret):
            assert chunk not in everything, f"a part of a secret reached the logs: {chunk[:4]}…"


def secret_chunks(secret: str, width: int = 10) -> list[str]:
    """Overlapping pieces of a secret's random part: even a fragment must not be logged."""
    # a JWT: header and claims are no secret, its signature is; a key: what follows its prefix
    is_jwt = secret.count(".") == 2
    random_part = secret.split(".")[2] if is_jwt else secret.split("_", 1)[1]
    assert len(random_part) >= 32
    return [random_part[i : i + width] for i in range(0, len(random_part) - width + 1, 3)]
