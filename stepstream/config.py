"""Reads Stepstream's configuration from the environment.

Kept apart from Django's settings so the command line can check the data
directory and database before Django starts.
"""

import os
import secrets
from pathlib import Path
from typing import TypedDict
from urllib.parse import unquote, urlparse

WORKER_INDEX_ENV = "STEPSTREAM_WORKER_INDEX"  # set by `serve --workers N` for each worker


def is_first_worker() -> bool:
    """True in a plain `serve` and in worker 0 of `serve --workers N`: where once-only jobs run."""
    return os.environ.get(WORKER_INDEX_ENV, "0") == "0"


def data_dir() -> Path:
    return Path(os.environ.get("STEPSTREAM_DATA_DIR", ".stepstream")).resolve()


def database_url() -> str | None:
    return os.environ.get("DATABASE_URL") or None


def redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None


def secret_key() -> str:
    """The server secret: from STEPSTREAM_SECRET_KEY, else made once in the data dir.

    Several machines sharing one database must share this value: key digests
    are keyed with it.
    """
    configured = os.environ.get("STEPSTREAM_SECRET_KEY")
    if configured:
        return configured
    path = data_dir() / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        value = secrets.token_urlsafe(48)
        f.write(value)
    return value


def database_settings() -> dict:
    url = database_url()
    if url is None:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(data_dir() / "stepstream.sqlite3"),
            "OPTIONS": {
                # Writers queue on the busy timeout instead of failing with
                # "database is locked"; IMMEDIATE takes the write lock at BEGIN so
                # a read-then-write transaction can never deadlock on upgrade.
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
            },
            # Each database thread keeps its connection: opening one re-runs the
            # PRAGMAs and re-registers Django's SQL functions (about 1 ms).
            "CONN_MAX_AGE": None,
            # a file (threads share it), one per test run (runs can overlap)
            "TEST": {"NAME": str(data_dir() / f"test-{os.getpid()}.sqlite3")},
        }
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must start with postgres://, not {parsed.scheme}://")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        # A pool (fail fast while the database is down). No check query each time
        # a connection is taken: it was a round trip on every request and job.
        # A connection broken by a database restart fails its one request (503),
        # the pool drops it when it comes back broken, and the next one is new.
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "OPTIONS": {
            "connect_timeout": int_setting("STEPSTREAM_DB_CONNECT_TIMEOUT", 3),
            "pool": {
                "min_size": 2,
                "max_size": int_setting("STEPSTREAM_DB_POOL_SIZE", 20, minimum=2),
                "timeout": 2,  # fail fast (503) while the database is unreachable
            },
        },
    }


def psycopg_kwargs(database: dict) -> dict:
    """psycopg.connect's arguments for a direct connection to a PostgreSQL settings dict."""
    return {
        "dbname": database["NAME"],
        "user": database["USER"] or None,
        "password": database["PASSWORD"] or None,
        "host": database["HOST"] or None,
        "port": database["PORT"] or None,
        "connect_timeout": database["OPTIONS"]["connect_timeout"],
    }


def _setting(name: str, default, parse, kind: str):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ValueError(f"{name} must be {kind}, not {raw!r}") from None


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _at_least(parse, minimum, maximum=None):
    def parse_bounded(raw: str):
        value = parse(raw)
        if value != value or value < minimum:  # NaN too
            raise ValueError(raw)
        if maximum is not None and value > maximum:
            raise ValueError(raw)
        return value

    return parse_bounded


# Settings renamed: the old name is still read while the new one is unset (documented
# as deprecated in the README and docs/security.md; `serve` warns when it is used).
RENAMED = {
    # it always counted an environment's sockets, all its publishable keys together
    "STEPSTREAM_WS_MAX_CONNECTIONS_PER_ENVIRONMENT": "STEPSTREAM_WS_MAX_CONNECTIONS_PER_KEY",
}


def renamed(name: str) -> str:
    """The variable to read for the setting `name`: itself, or its deprecated old name
    when only that one is set."""
    old = RENAMED[name]
    if os.environ.get(name, "").strip() or not os.environ.get(old, "").strip():
        return name
    return old


def deprecated_names() -> list[str]:
    """A sentence for each deprecated name set in the environment."""
    sentences = []
    for name, old in RENAMED.items():
        if not os.environ.get(old, "").strip():
            continue
        if renamed(name) == old:
            sentences.append(f"{old} is deprecated: set {name} instead (same meaning).")
        else:
            sentences.append(f"{old} is deprecated and ignored: {name} is set.")
    return sentences


def int_setting(name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number, at least `minimum` (1 unless said: a zero limit or pool is a typo)
    and, when given, at most `maximum` (a limit the contract caps)."""
    kind = f"a whole number of at least {minimum}"
    if maximum is not None:
        kind = f"a whole number from {minimum} to {maximum}"
    return _setting(name, default, _at_least(int, minimum, maximum), kind)


def bool_setting(name: str, default: bool) -> bool:
    return _setting(name, default, _boolean, "true or false")


def float_setting(name: str, default: float, minimum: float = 0.001) -> float:
    """A number of seconds (or a rate), at least `minimum`."""
    return _setting(name, default, _at_least(float, minimum), f"a number of at least {minimum}")


def choice_setting(name: str, default: str, choices: list[str]) -> str:
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(raw)
        return raw.lower()

    return _setting(name, default, parse, "one of " + ", ".join(choices))


class StepstreamSettings(TypedDict):
    """What settings.STEPSTREAM holds (stepstream/settings.py), each with its type."""

    REDIS_URL: str | None
    WS_MAX_MESSAGE_BYTES: int
    WS_RATE_PER_SECOND: int
    WS_RATE_BURST: int
    WS_MAX_SUBSCRIPTIONS: int
    WS_MAX_CONNECTIONS_PER_ENVIRONMENT: int
    WS_OUTBOX_LIMIT: int
    WS_MAX_BUFFER_BYTES: int
    WS_STALL_TIMEOUT: float
    WS_COMPRESSION: bool
    WS_PING_INTERVAL: float
    WS_PING_TIMEOUT: float
    LOG_POLL_INTERVAL: float
    RECONCILE_INTERVAL: float
    DB_THREADS: int
    KEY_NOTIFY: bool
    GROUP_COMMIT: bool
    GROUP_COMMIT_MAX_BATCH: int
    GROUP_COMMIT_QUEUE: int
    GROUP_COMMIT_WAIT: float
    HTTP_THREADS: int
    MAX_FLOW_STEPS: int
    MAX_FLOW_TRANSITIONS: int
    DATA_MAX_ITEMS: int
    DATA_MAX_STRING: int
    DATA_MAX_BYTES: int
    MAX_EVENT_NAMES: int
    MAX_FLOWS: int
    MAX_CONTENT_BYTES: int
    AUDIT_MAX_ENTRIES: int
    CONDITION_COST_BUDGET: int
    CONDITION_INLINE_COST: int
    CONDITION_TIMEOUT: float
    CONDITION_SUSPEND_SECONDS: float
    KEY_CHECK_INTERVAL: float
    HTTP_MAX_HEADER_BYTES: int
    HTTP_REQUEST_TIMEOUT: float
    HTTP_MAX_PENDING: int
    HTTP_MAX_PENDING_BYTES: int
    WEBHOOK_ALLOW_PRIVATE: bool
    WEBHOOK_RETRY_HOURS: float
    WEBHOOK_RETRY_BASE_SECONDS: float
    WEBHOOK_RETRY_MAX_SECONDS: float
    WEBHOOK_TIMEOUT_SECONDS: float
    WEBHOOK_CONCURRENCY: int
    WEBHOOK_POLL_INTERVAL: float
    WEBHOOK_LEASE_SECONDS: float
    METRICS_TOKEN: str
    LOGIN_MAX_FAILURES: int
    LOGIN_LOCKOUT_SECONDS: int
    LOGIN_THROTTLE_ROWS: int
