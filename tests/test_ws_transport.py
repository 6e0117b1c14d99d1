"""Issue 14: the socket write path behind one interface, and /health saying which one serves."""

import httpx
import pytest

from stepstream.testing.servers import RESPONSE_HOOKS
from tests.waiting import until


def test_a_real_serve_reports_the_sansio_protocol_and_direct_writes(server, ws):
    """An uvicorn upgrade that lost the fast path would show here, not only in a benchmark."""
    ws.request("get_state", {"person_key": "nobody-in-particular"})  # the socket is served
    with httpx.Client(timeout=5, event_hooks={"response": list(RESPONSE_HOOKS)}) as client:
        response = client.get(server.url + "/api/v1/health")  # checked against openapi.yaml
    assert response.status_code == 200
    websocket = response.json()["websocket"]
    assert websocket["protocol"] == "websockets-sansio"
    assert websocket["writes"] == "direct"
    assert websocket["sockets"].get("direct", 0) >= 1
    assert "asgi" not in websocket["sockets"]  # no socket fell back to ASGI `send`
    assert response.json()["hub"] == {"healthy": True, "errors": {}}


async def test_under_another_asgi_server_a_socket_writes_through_asgi_send(settings):
    """The fallback: every message goes through `send`, in order, and none is lost."""
    from stepstream.delivery.broker_memory import MemoryBroker
    from stepstream.delivery.hub import Hub
    from stepstream.ws.connection import Connection
    from stepstream.ws.writer import AsgiWriter, writer_for

    sent = []

    async def send(message):
        sent.append(message)

    assert isinstance(writer_for(send), AsgiWriter)
    conn = Connection(send, None, Hub(MemoryBroker()))
    for n in range(5):
        conn.push(f'{{"n":{n}}}')
    await until(lambda: len(sent) >= 5, timeout=5)
    assert [m["text"] for m in sent] == [f'{{"n":{n}}}' for n in range(5)]
    await conn.finish()


def _config(ws):
    import uvicorn

    from stepstream.http.asgi import application

    return uvicorn.Config(application, ws=ws, log_config=None)


def test_startup_accepts_the_bounded_sansio_protocol(settings):
    from stepstream.ws import sansio, serving

    sansio.verify(_config("stepstream.ws.sansio:BoundedWebSocketProtocol"))
    assert serving.report()["protocol"] == "websockets-sansio"


@pytest.mark.parametrize("ws", ["websockets-sansio", "websockets"])
def test_startup_refuses_any_other_websocket_implementation_in_one_sentence(settings, ws):
    from stepstream.ws import sansio

    with pytest.raises(RuntimeError, match="not stepstream's websockets-sansio protocol"):
        sansio.verify(_config(ws))


def test_startup_names_what_uvicorn_no_longer_has(settings, monkeypatch):
    """An upgrade that renamed an attribute the direct path reads fails before listening."""
    from stepstream.ws import sansio

    monkeypatch.setattr(sansio, "_ATTRIBUTES", (*sansio._ATTRIBUTES, "renamed_in_uvicorn"))
    with pytest.raises(RuntimeError, match="lacks renamed_in_uvicorn"):
        sansio.verify(_config("stepstream.ws.sansio:BoundedWebSocketProtocol"))


def test_at_info_a_socket_logs_its_access_line_and_not_the_librarys_open_and_closed(tmp_path):
    """One line per socket at the default level (uvicorn's access line), not three."""
    from stepstream.testing.servers import Server
    from tests.wsclient import WsClient

    srv = Server(tmp_path / "srv", STEPSTREAM_LOG_LEVEL="INFO")
    srv.start()
    try:
        key = srv.init_project()["environments"][0]["publishable_key"]
        for _ in range(3):
            with WsClient(srv.ws_url, key) as ws:
                ws.request("get_state", {"person_key": "nobody-in-particular"})
    finally:
        srv.stop()
    log = srv.log()
    assert log.count('"WebSocket /ws?key=') == 3, log
    assert "connection open" not in log and "connection closed" not in log, log
