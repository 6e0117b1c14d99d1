"""A real HTTP receiver for webhook tests: records every request, answers as the test says."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.waiting import wait_until


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """Standard Webhooks verification by the `standardwebhooks` package (not the server's code):
    the signature, and a timestamp within its five minutes' tolerance."""
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


class Receiver:
    """`policy(message_id, attempt) -> (status, delay_seconds)`; default 200 at once."""

    def __init__(self, policy=None):
        self.policy = policy or (lambda message_id, attempt: (200, 0))
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                message_id = headers.get("webhook-id", "")
                with receiver.lock:
                    attempt = receiver.attempts[message_id] = (
                        receiver.attempts.get(message_id, 0) + 1
                    )
                status, delay = receiver.policy(message_id, attempt)
                with receiver.lock:  # recorded on arrival
                    receiver.requests.append(
                        {
                            "headers": headers,
                            "body": body,
                            "json": json.loads(body),
                            "status": status,
                            "attempt": attempt,
                            "at": time.time(),
                        }
                    )
                if delay:  # the behaviour under test: a receiver slow to answer
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up (timeout)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def acknowledged(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if 200 <= r["status"] < 300]

    def wait_for(self, predicate, timeout=60.0):
        """True once `predicate()` is, False if it is not within `timeout` seconds."""
        try:
            wait_until(predicate, timeout, interval=0.05)
        except AssertionError:
            return False
        return True

    def close(self):
        self.server.shutdown()
        self.server.server_close()
