"""Reads Stepstream's configuration from the environment.

Kept apart from Django's settings so the command line can check the data
directory and database before Django starts.
"""

import os
import secrets
from pathlib import Path
from urllib.parse import unquote, urlparse


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
            "connect_timeout": int(os.environ.get("STEPSTREAM_DB_CONNECT_TIMEOUT", "3")),
            "pool": {
                "min_size": 2,
                "max_size": int(os.environ.get("STEPSTREAM_DB_POOL_SIZE", "20")),
                "timeout": 2,  # fail fast (503) while the database is unreachable
            },
        },
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


def int_setting(name: str, default: int) -> int:
    return _setting(name, default, int, "a whole number")


def bool_setting(name: str, default: bool) -> bool:
    return _setting(name, default, _boolean, "true or false")


def float_setting(name: str, default: float) -> float:
    return _setting(name, default, float, "a number")


def positive_int_setting(name: str, default: int) -> int:
    value = int_setting(name, default)
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


def positive_float_setting(name: str, default: float) -> float:
    value = float_setting(name, default)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a number of seconds above 0, not {value!r}")
    return value
