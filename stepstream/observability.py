"""Structured logs with request ids, and the readiness check.

Every HTTP request gets an id (the caller's `X-Request-ID` when it is sane,
else a new one), echoed in the response and attached to every log line made
while serving it; WebSocket log lines carry their connection's id. Set
`STEPSTREAM_LOG_FORMAT=json` for one JSON object per line.

Log lines quote what clients send (paths, header values, reasons), so both
formatters escape control characters: a request for `/x%0A2026-... INFO ...`
cannot forge a line of its own, nor colour a terminal. In the plain format a
record is one line, and the lines of its traceback are indented.
"""

import contextvars
import logging
import os
import re
import time

import orjson

from stepstream.redact import redact

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_log = logging.getLogger("stepstream.access")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class SuspiciousRequestFilter(logging.Filter):
    """Django's `django.security.*` records as one warning line, without a traceback.

    Django logs a SuspiciousOperation (a malformed Host header such as a second
    `Host: a/b`, too many form fields) at ERROR with its traceback, and answers 400:
    the client's error, not the server's, and the traceback said nothing more
    than the message. A request of hostile header bytes thus left a traceback in
    the log (tests/test_http_hardening.py, `test_the_server_is_whole_after_the_byte_storm`,
    failed whenever the generated headers held a second Host).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security.") and record.exc_info:
            record.exc_info = record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# C0, DEL, C1 (NEL among them) and the Unicode line and paragraph separators:
# everything str.splitlines() or a terminal treats as more than a character
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape_controls(text: str) -> str:
    """`text` with every control character written as a Python-style escape."""
    return _CONTROL.sub(_escape, text)


class PlainFormatter(logging.Formatter):
    """logging's format, with the message escaped to one line and tracebacks indented."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        blocks = [record.exc_text] if record.exc_text else []
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            for part in block.split("\n"):
                line += "\n  " + escape_controls(part)
        return line


# orjson escapes C0 controls itself; these it leaves as they are
_JSON_UNESCAPED = re.compile("[\x7f-\x9f\u2028\u2029]")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key in ("method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return _JSON_UNESCAPED.sub(
            lambda m: f"\\u{ord(m.group(0)):04x}", orjson.dumps(entry).decode()
        )


def sane_request_id(value: str) -> bool:
    """A caller's X-Request-ID we echo and log as it is."""
    return bool(_SANE_ID.match(value))


def new_request_id() -> str:
    """32 random hex digits, as uuid4().hex gave, without building a UUID (seen in profiles)."""
    return os.urandom(16).hex()


class RequestIdMiddleware:
    """Names each request and logs one line for it (never its query string)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if _SANE_ID.match(incoming) else new_request_id()
        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = rid
            duration = round((time.perf_counter() - started) * 1000, 2)
            access_log.info(
                "%s %s %s %.2fms",
                request.method,
                request.path,
                response.status_code,
                duration,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": duration,
                },
            )
            return response
        finally:
            request_id.reset(token)


def readiness() -> tuple[bool, dict]:
    """Touches the database and Redis (when configured): can this process serve?"""
    from django.conf import settings
    from django.db import connection

    report, ok = {}, True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        report["database"] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        ok, report["database"] = False, f"unavailable: {type(e).__name__}"
    url = settings.STEPSTREAM["REDIS_URL"]
    if url:
        import redis

        try:
            redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping()
            report["redis"] = "ok"
        except redis.RedisError as e:
            ok, report["redis"] = False, f"unavailable: {type(e).__name__}"
    else:
        report["redis"] = "not configured"
    return ok, report
