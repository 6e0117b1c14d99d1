"""The audit: one entry per successful configuration change, per environment.

`record` is called inside the change's own transaction, so a refused or
rolled-back change leaves no entry and a committed one always has its entry.
Every writer of configuration (flows, switches, promotion, segments, webhooks,
keys, the theme) calls it with the actor: a dashboard username or `key_actor`.
"""

import base64
import hashlib
import hmac
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from stepstream.errors import Invalid
from stepstream.models import AuditEntry, Environment

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
KEY_CHARS = 8  # of a secret key shown as the actor: enough to tell keys apart, never more
CLI_ACTOR = "cli"  # changes made with the command line (stepstream keys ...)
# about one entry in this many prunes its environment's oldest entries beyond
# STEPSTREAM_AUDIT_MAX_ENTRIES, so an environment keeps at most a few more than that
PRUNE_EVERY = 64


def key_actor(key: str) -> str:
    """The actor for a change made with a secret key: `key:` and its first 8 characters."""
    return "key:" + key[:KEY_CHARS]


def record(
    environment_id: int, actor: str, action: str, obj: str, details: dict[str, Any] | None = None
) -> None:
    """Adds an entry; call it inside the change's transaction (alone, it makes its own)."""
    with transaction.atomic():
        _record(environment_id, actor, action, obj, details or {})


def lock_environments(*environment_ids: int) -> None:
    """Takes the environments' row locks, the ones `record` takes, in id order, at the start
    of a change: a change recorded in two environments (a promotion) and any change in
    either then never wait on each other in a circle (promotions A -> B and B -> A at once
    deadlocked on PostgreSQL when each took its target's lock first)."""
    for pk in sorted(set(environment_ids)):
        Environment.objects.select_for_update().filter(pk=pk).values_list("pk").first()


def _record(
    environment_id: int, actor: str, action: str, obj: str, details: dict[str, Any]
) -> None:
    # the environment's row is locked first: entries of one environment take their ids
    # in commit order, so a reader paging by id never skips one committed later
    Environment.objects.select_for_update().filter(pk=environment_id).values_list("pk").first()
    entry = AuditEntry.objects.create(
        environment_id=environment_id,
        at=timezone.now(),
        actor=actor[:160],
        action=action,
        object=obj[:300],
        details=details,
    )
    most = settings.STEPSTREAM["AUDIT_MAX_ENTRIES"]
    if entry.pk % PRUNE_EVERY == 0:  # now and then, the oldest beyond the limit go
        first_gone = (
            AuditEntry.objects.filter(environment_id=environment_id)
            .order_by("-id")
            .values_list("id", flat=True)[most : most + 1]
        )
        if first_gone:
            AuditEntry.objects.filter(environment_id=environment_id, id__lte=first_gone[0]).delete()


def describe(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at.isoformat().replace("+00:00", "Z"),
        "actor": entry.actor,
        "action": entry.action,
        "object": entry.object,
        "details": entry.details,
    }


def _digest(text: str) -> str:
    key = ("stepstream-audit-cursor:" + settings.SECRET_KEY).encode()
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:16]


def encode_cursor(environment_id: int, entry_id: int) -> str:
    text = f"{environment_id}.{entry_id}"
    return base64.urlsafe_b64encode(f"{text}.{_digest(text)}".encode()).decode().rstrip("=")


def decode_cursor(environment_id: int, cursor: str | None) -> int:
    """The entry id a cursor names; 400 when malformed or another environment's."""
    if not cursor:
        return 0
    bad = Invalid("The cursor 'after' is malformed: pass a 'next' value this audit gave.")
    if len(cursor) > 200:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        env, entry_id, digest = raw.split(".")
        if not hmac.compare_digest(digest, _digest(f"{env}.{entry_id}")):
            raise ValueError
        if int(env) != environment_id:
            raise ValueError
        return int(entry_id)
    except (ValueError, UnicodeDecodeError):
        raise bad from None


def page(environment_id: int, after: str | None, limit: int) -> dict[str, Any]:
    """Entries after the cursor, oldest first; `next` always (the same cursor when none)."""
    position = decode_cursor(environment_id, after)
    rows = list(
        AuditEntry.objects.filter(environment_id=environment_id, id__gt=position).order_by("id")[
            :limit
        ]
    )
    last = rows[-1].pk if rows else position
    return {
        "entries": [describe(r) for r in rows],
        "next": encode_cursor(environment_id, last),
    }


def for_object(environment_id: int, obj: str, limit: int = 100) -> list[dict[str, Any]]:
    """The newest entries about one object (a flow's page), newest first."""
    rows = AuditEntry.objects.filter(environment_id=environment_id, object=obj).order_by("-id")
    return [describe(r) for r in rows[:limit]]
