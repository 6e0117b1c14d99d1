"""A logging filter that keeps keys and tokens out of every log line."""

import logging
import re

_PATTERNS = [
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
        return True
