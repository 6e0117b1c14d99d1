"""A server's memory of secret keys it has already looked up (the REST hot path).

Looking a key up (its digest, then the row and its environment through the
ORM) was a third of the time of every REST request (docs/performance-history.md,
"REST at full speed"). A key found live is remembered here by its digest,
with its row id and its environment's id; each request then gets an
Environment instance of its own whose mutable fields (schema, identity
settings, origins) are deferred, so reading one still reads the database
and is never stale. Only live keys are remembered: a wrong key is looked up
every time, as before.

A revocation must be refused at once by every process, so a remembered key
is trusted without a query only while something will tell this process
that keys changed:

* every key saved or deleted here (a revocation, a new key, a cascade from
  a deleted environment) forgets everything in this process once
  committed, then tells the other processes through the broker;
* with the Redis broker subscribed and healthy (`Peers.hear`, given by
  delivery), a remembered key is used without a query; the broker's message
  (or its reconnecting: messages may have been missed) forgets everything;
  each entry is still re-checked after `KEY_CHECK_INTERVAL` (1 s), the bound
  should a message be lost while Redis stays up;
* on PostgreSQL, a server process listens for the database's own
  notification of any change to the keys' table (stepstream/trust/keywatch.py);
  while it listens, it trusts what it remembers in the same way, Redis or not;
* without either (the embedded SQLite default, or a listener or Redis down),
  nothing would tell this process of a revocation made by another one
  (`stepstream keys revoke`, another server on the same database): the
  remembered key is re-checked by its row id in one small indexed query,
  which is still much cheaper than the lookup it replaces.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save

from stepstream.metrics import KEY_RECHECKS
from stepstream.models import ApiKey, Environment

MAX_ENTRIES = 10_000  # live keys remembered; beyond, the memory starts again
_ENV_FIELDS = ["id", "project_id", "identifier"]  # the rest is deferred: read when used


@dataclass(slots=True)
class Peers:
    """How this process tells the others that keys changed, whether it would hear them,
    and what it forgets when they change: given by the layers above trust, a command's
    from apps.py, a server's by its runtime (stepstream.http.runtime) while it runs."""

    tell: Callable[[], None]  # publish "keys changed"; never raises
    # True while another process's change would be heard: the broker's message (Redis,
    # healthy) or PostgreSQL's own notice (stepstream.trust.keywatch, listening)
    hear: Callable[[], bool]
    forget: Callable[[], None] = lambda: None  # the runtime's KeyMemory.forget


# the one in use: a command's (tells with a broker of its own, hears nothing), or while a
# runtime runs, its own (its broker, its key listener, its memory)
_peers: list[Peers] = []


def use_peers(peers: Peers | None) -> None:
    _peers[:] = [peers] if peers is not None else []


def current_peers() -> Peers | None:
    return _peers[0] if _peers else None


def changed() -> None:
    """Keys changed (committed): forget here, and tell every other process."""
    for peers in list(_peers):
        peers.forget()
        peers.tell()


def _on_key_saved_or_deleted(sender, **kwargs) -> None:
    transaction.on_commit(changed)


def watch_keys(peers: Peers) -> None:
    """Any key saved (revoked, made) or deleted (with its environment, from the admin
    too) makes every process forget, once committed (called by the app's ready(), with
    a command's `peers`)."""
    use_peers(peers)
    post_save.connect(_on_key_saved_or_deleted, sender=ApiKey, dispatch_uid="keycache-save")
    post_delete.connect(_on_key_saved_or_deleted, sender=ApiKey, dispatch_uid="keycache-delete")


def _trusted() -> bool:
    return any(peers.hear() for peers in _peers)


def _environment(env_id: int, project_id: int, identifier: str) -> Environment:
    return Environment.from_db(connection.alias, _ENV_FIELDS, [env_id, project_id, identifier])


def _still_live(key_id: int) -> bool:
    KEY_RECHECKS.inc()
    table = ApiKey._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s AND revoked_at IS NULL", [key_id])
        return cursor.fetchone() is not None


def live_check_sql() -> str:
    """The re-check as a scalar subquery taking the key's row id: a caller may run it in
    the same round trip as its own query (stepstream.http.fast). Counted as a re-check."""
    KEY_RECHECKS.inc()
    return f"(SELECT 1 FROM {ApiKey._meta.db_table} WHERE id = %s AND revoked_at IS NULL)"


@dataclass(frozen=True, slots=True)
class Entry:
    """A remembered live key: its row, its environment's fields, and when it was checked."""

    key_id: int
    environment_id: int
    project_id: int
    identifier: str  # the environment's
    checked_at: float  # monotonic

    def environment(self) -> Environment:
        return _environment(self.environment_id, self.project_id, self.identifier)


class KeyMemory:
    """The keys one runtime remembers (stepstream.http.runtime); bounded by MAX_ENTRIES."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        self._lock = threading.Lock()
        self._generation = 0  # grows with every forget: a lookup that raced one is dropped

    def forget(self) -> None:
        """Forgets every remembered key (keys changed here or elsewhere, or messages were
        missed)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def remembered(self, digest: str, kind: str) -> tuple[Entry, bool] | None:
        """(entry, needs_check) for a remembered key, without touching the database, or None.

        For callers on the event loop (stepstream.http.fast): they run `confirm()` on a
        database thread when `needs_check`, then `entry.environment()`.
        """
        entry = self._entries.get((digest, kind))
        if entry is None:
            return None
        fresh = time.monotonic() - entry.checked_at < settings.STEPSTREAM["KEY_CHECK_INTERVAL"]
        return entry, not (fresh and _trusted())

    def confirm(self, digest: str, kind: str, entry: Entry) -> bool:
        """Re-checks a remembered key by its row id (a database thread); forgets it if
        revoked."""
        return self.confirmed(digest, kind, entry, _still_live(entry.key_id))

    def confirmed(self, digest: str, kind: str, entry: Entry, live: bool) -> bool:
        """Records the outcome of a re-check: the key is trusted again, or forgotten."""
        if live:
            self._entries[(digest, kind)] = replace(entry, checked_at=time.monotonic())
            return True
        with self._lock:
            self._entries.pop((digest, kind), None)
        return False

    def environment(self, digest: str, kind: str, lookup) -> Environment | None:
        """The environment of the live key with this digest and kind, or None.

        `lookup()` is the full lookup (tenants.key_row), run when the key is not
        remembered. The answer is an instance of its own for the caller.
        """
        entry = self._entries.get((digest, kind))
        now = time.monotonic()
        if entry is not None:
            fresh = now - entry.checked_at < settings.STEPSTREAM["KEY_CHECK_INTERVAL"]
            if (fresh and _trusted()) or _still_live(entry.key_id):
                if not fresh:
                    self._entries[(digest, kind)] = replace(entry, checked_at=now)
                return entry.environment()
            with self._lock:
                self._entries.pop((digest, kind), None)
            return None
        generation = self._generation
        row = lookup()
        if row is None:
            return None
        env = row.environment
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
                self._entries[(digest, kind)] = Entry(
                    row.pk, env.pk, env.project_id, env.identifier, now
                )
        return env
