"""What every command does first: check the data directory, start Django, migrate.

A leaf module: the commands import it, it imports no command.
"""

import hmac
import os
import re
import sys
from urllib.parse import urlparse

from stepstream import config

# HMAC of this text under the server secret is kept in the database (Installation)
SECRET_CHECK_TEXT = b"stepstream: the server secret this database was set up with"


def fail(message: str) -> int:
    print(f"stepstream: {message}", file=sys.stderr)
    return 2


def _check_data_dir() -> str | None:
    directory = config.data_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        return (
            f"cannot write to the data directory {directory} ({e.strerror}); "
            "set STEPSTREAM_DATA_DIR to a writable directory."
        )
    return None


def database_label() -> str:
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"SQLite file {s['NAME']}"
    return f"PostgreSQL at {s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"


def _postgresql_problem() -> str | None:
    """One direct connection before the pool starts: the pool only says "couldn't get a
    connection" and leaves the server's own sentence (no such database, no such role)
    in a stream of warnings."""
    import psycopg

    s = config.database_settings()
    where = f"PostgreSQL at {s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"
    try:
        psycopg.connect(**config.psycopg_kwargs(s)).close()
    except psycopg.Error as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        reason = lines[0] if lines else "no answer"
        if "FATAL:" in reason:
            reason = reason.split("FATAL:", 1)[1].strip()
        return f"cannot reach the database ({where}): {reason}"
    return None


def _redis_label(url: str) -> str:
    """REDIS_URL as it may be shown: without its user and password."""
    head, at, host = url.rpartition("@")
    if at:
        scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", head)
        url = (scheme.group(0) if scheme else "") + host
    return url[:200]


def redis_problem() -> str | None:
    """One connection to REDIS_URL before the server starts, or None when it is unset or
    answers: a wrong or unreachable one otherwise fails in the lifespan with uvicorn's lines,
    or, its database path ignored by redis-py, starts on another database."""
    url = config.redis_url()
    if url is None:
        return None
    import redis

    shown = _redis_label(url)
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        return (
            f"REDIS_URL must start with redis://, rediss:// or unix:// "
            f"(e.g. redis://127.0.0.1:6379/0), not {shown!r}."
        )
    database = parsed.path.strip("/")
    if parsed.scheme != "unix" and database and not database.isdigit():
        return (
            f"REDIS_URL's database (its path) must be a whole number, as in "
            f"redis://127.0.0.1:6379/0, not {database[:40]!r} ({shown})."
        )
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    except ValueError as e:  # a port that is not a number, an unknown option
        return f"REDIS_URL ({shown}) is not valid: {str(e).rstrip('.')}."
    try:
        client.ping()
    except redis.RedisError as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        if parsed.password:
            reason = reason.replace(parsed.password, "***")
        if isinstance(e, redis.AuthenticationError):  # a ConnectionError to redis-py
            return f"Redis at REDIS_URL ({shown}) refused the connection: {reason}"
        if isinstance(e, redis.ConnectionError | redis.TimeoutError):
            return f"cannot reach Redis at REDIS_URL ({shown}): {reason}"
        return f"Redis at REDIS_URL ({shown}) refused the connection: {reason}"
    finally:
        client.close()
    return None


def setup(migrate: bool = True) -> str | None:
    """Starts Django and brings the database up to date; an error message or None.

    The workers of `serve --workers N` pass migrate=False: their parent migrated once.
    """
    if config.database_url() is None or not os.environ.get("STEPSTREAM_SECRET_KEY"):
        problem = _check_data_dir()
        if problem:
            return problem
    if config.database_url() is not None:
        try:
            problem = _postgresql_problem()
        except ValueError as e:  # a malformed DATABASE_URL or setting
            return str(e)
        if problem:
            return problem
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
    try:
        import django

        django.setup()
    except ValueError as e:
        return str(e)
    from django.db import OperationalError, connection

    try:
        connection.ensure_connection()
    except OperationalError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else "no answer"
        return f"cannot reach the database ({database_label()}): {first_line}"
    if migrate:
        _migrate()
    return _check_secret()


def _migrate() -> None:
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(724031)")
            try:
                call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)
            finally:
                cursor.execute("SELECT pg_advisory_unlock(724031)")
    else:
        call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)


def _check_secret() -> str | None:
    """Refuses a server secret other than the one the database was set up with."""
    from django.conf import settings

    from stepstream.models import Installation

    expected = hmac.new(settings.SECRET_KEY.encode(), SECRET_CHECK_TEXT, "sha256").hexdigest()
    row = Installation.objects.order_by("id").first()
    if row is None:
        Installation.objects.create(secret_check=expected)
        return None
    if not hmac.compare_digest(row.secret_check, expected):
        return (
            f"the database ({database_label()}) was set up with another "
            "STEPSTREAM_SECRET_KEY; every key would be refused. Start with the secret it "
            "was set up with (or the data directory that holds it)."
        )
    return None
