"""A logging filter that keeps keys, tokens and identity secrets out of every log line.

Known shapes are masked wherever they appear (keys by their prefix, JWTs by
theirs, `key=`-style query parameters, JSON fields by name), and the
WebSocket library's DEBUG frame dumps lose their contents altogether: a
truncated frame can cut a token where no pattern recognises it, and frames
carry people's data besides. Tracebacks are cleaned the same way.
"""

import logging
import re

_FRAME = re.compile(r"^([<>] (?:TEXT|BINARY|CONT)) .*( \[[^\]]*bytes[^\]]*\])$", re.DOTALL)
_PATTERNS = [
    (_FRAME, r"\1 [contents not logged]\2"),
    (re.compile(r"((?:key|token|person_token|secret)=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"\b(pk|sk|ids)_[A-Za-z0-9_-]{16,}"), r"\1_[redacted]"),
    (
        re.compile(
            r"(['\"](?:person_token|identity_secret|key|secret_key|publishable_key)['\"]"
            r"\s*:\s*['\"])[^'\"]*"
        ),
        r"\1[redacted]",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"), "[redacted-jwt]"),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
