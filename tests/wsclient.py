"""A small synchronous WebSocket client for tests: requests, responses and events."""

import itertools
import time

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


class WsClient:
    def __init__(self, ws_url: str, key: str, **kw):
        self._context = connect(f"{ws_url}/ws?key={key}", max_size=None, **kw)
        self.ws = self._context.__enter__()
        self.events: list[dict] = []
        self.notices: list[dict] = []  # other events (subscription_ended), in arrival order
        self.close_code: int | None = None
        self._ids = itertools.count(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._context.__exit__(None, None, None)

    def _recv(self, timeout: float) -> dict | None:
        try:
            return orjson.loads(self.ws.recv(timeout=timeout))
        except TimeoutError:
            return None
        except ConnectionClosed as e:
            self.close_code = e.rcvd.code if e.rcvd else None
            raise

    def send_raw(self, text: str | bytes, timeout: float = 10) -> dict:
        """Sends one message and returns the next response (events are kept aside)."""
        self.ws.send(text)
        return self.next_response(timeout)

    def next_response(self, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self._recv(left)
            if message is None:
                break
            if message.get("event") == "state_change":
                self.events.append(message)
            elif "event" in message:
                self.notices.append(message)
            else:
                return message
        raise TimeoutError("no response")

    def request(self, action: str, data: dict | None = None, request_id=..., **kw) -> dict:
        if request_id is ...:
            request_id = next(self._ids)
        message = {"action": action, "request_id": request_id}
        if data is not None:
            message["data"] = data
        response = self.send_raw(orjson.dumps(message).decode(), **kw)
        assert response["request_id"] == request_id, response
        return response

    def subscribe(self, person_key: str, entity: str, **data) -> dict:
        return self.request(
            "subscribe_state_change", {"person_key": person_key, "entity": entity, **data}
        )

    def wait_events(self, count: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and (left := deadline - time.monotonic()) > 0:
            message = self._recv(left)
            if message is not None and message.get("event") == "state_change":
                self.events.append(message)
        return self.events

    def wait_seq(self, seq: int, timeout: float = 10) -> list[dict]:
        """Reads events until one with `seq` (or later) arrives."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.events and self.events[-1]["data"]["seq"] >= seq:
                break
            message = self._recv(left)
            if message is not None and message.get("event") == "state_change":
                self.events.append(message)
        return self.events

    def quiet(self, seconds: float = 0.3) -> list[dict]:
        """Collects whatever arrives in the next `seconds`; returns the new events."""
        before = len(self.events)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self._recv(left)
            if message is not None and message.get("event") == "state_change":
                self.events.append(message)
        return self.events[before:]

    def seqs(self, entity: str | None = None) -> list[int]:
        return [
            e["data"]["seq"] for e in self.events if entity is None or e["data"]["entity"] == entity
        ]


def refused(url: str, timeout: float = 10, **kw) -> tuple[int | None, str]:
    """Opens a socket the server must refuse: (close code, reason), having been served nothing.

    The server accepts the handshake, then closes at once with a code and a
    reason sentence (browsers cannot read an HTTP status, only these).
    """
    with connect(url, open_timeout=timeout, max_size=None, **kw) as socket:
        try:
            served = socket.recv(timeout=timeout)
        except ConnectionClosed as e:
            return (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, "")
        raise AssertionError(f"the socket was served: {served!r}")
