"""PostgreSQL tells every server process that keys changed (LISTEN/NOTIFY).

Without Redis, nothing told a server that another process (`stepstream keys
revoke`, another server on the same database) had revoked a key, so the key
cache re-checked a remembered key on every REST request: one more round trip
each (docs/performance-history.md, "REST at full speed"). On PostgreSQL a trigger on
the keys' table (migration 0009) notifies CHANNEL for every statement that
changes keys, whoever runs it (a server, the command line, the admin, plain
SQL), and PostgreSQL delivers the notification when that transaction
commits. Each server process listens on a connection of its own; while it
listens, the key cache trusts the keys it remembers, as it does with the
Redis broker (stepstream/trust/keycache.py). Each time the connection is made
(again), the cache forgets everything first: what was said while it was
down was not heard. If the connection breaks, the cache re-checks keys on
every request until it is back.
"""

import logging
import threading

from stepstream import config

log = logging.getLogger(__name__)

CHANNEL = "stepstream_keys"
_TABLE = "stepstream_apikey"
_FUNCTION = "stepstream_keys_changed"
POLL_SECONDS = 1.0  # how soon a stop is seen; notifications wake the thread at once
RETRY_SECONDS = (0.2, 5.0)  # first and longest wait before connecting again

INSTALL = [
    f"CREATE OR REPLACE FUNCTION {_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$",
    f"DROP TRIGGER IF EXISTS {_FUNCTION} ON {_TABLE}",
    f"CREATE TRIGGER {_FUNCTION} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {_TABLE} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {_FUNCTION}()",
]
UNINSTALL = [
    f"DROP TRIGGER IF EXISTS {_FUNCTION} ON {_TABLE}",
    f"DROP FUNCTION IF EXISTS {_FUNCTION}()",
]


def install(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for statement in INSTALL:
            schema_editor.execute(statement)


def uninstall(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for statement in UNINSTALL:
            schema_editor.execute(statement)


class Watcher:
    """A thread holding one LISTEN connection; `listening` while it is up.

    `others`: more channels heard on the same connection, each with its callback (the
    timer loop's, stepstream.engine.firing), called too when the connection is made."""

    def __init__(self, connect_kwargs: dict, on_change, others: dict | None = None):
        self.connect_kwargs = connect_kwargs
        self.on_change = on_change
        self.others = dict(others or {})
        self.listening = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keywatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=POLL_SECONDS + 5)

    def _run(self) -> None:
        import psycopg

        wait = RETRY_SECONDS[0]
        while not self._stop.is_set():
            try:
                with psycopg.connect(**self.connect_kwargs, autocommit=True) as conn:
                    for channel in self.others:
                        conn.execute(f"LISTEN {channel}")
                    conn.execute(f"LISTEN {CHANNEL}")  # last: the connection's query says it
                    for heard in self.others.values():
                        heard()
                    self.on_change()  # changes made while not listening were not heard
                    self.listening = True
                    wait = RETRY_SECONDS[0]
                    log.info("listening for key changes on PostgreSQL")
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=POLL_SECONDS, stop_after=1):
                            self.others.get(notice.channel, self.on_change)()
            except Exception as e:  # noqa: BLE001 - never take the server down; retried
                if not self._stop.is_set():
                    log.warning("key change listener lost (%s); keys re-checked each request", e)
            finally:
                self.listening = False
            self._stop.wait(wait)
            wait = min(wait * 2, RETRY_SECONDS[1])


def start(on_change, others: dict | None = None) -> Watcher | None:
    """A started listener for this process (a server on PostgreSQL), owned by the runtime,
    which stops it; None on SQLite, or with STEPSTREAM_KEY_NOTIFY=false (a pooler that
    cannot pass LISTEN). `others`: see Watcher."""
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql" or not settings.STEPSTREAM["KEY_NOTIFY"]:
        return None
    watcher = Watcher(config.psycopg_kwargs(connection.settings_dict), on_change, others)
    watcher.start()
    return watcher
