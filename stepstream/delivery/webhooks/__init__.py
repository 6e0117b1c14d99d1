"""Webhooks: every state change of an environment, POSTed and signed, at least once, in order.

Registration lives here; delivery in `worker.py` (how and why: docs/webhooks.md
and docs/architecture.md). A webhook's position is a change-feed position
(stepstream/engine/feed.py): everything at or before it has been acknowledged.
"""

from typing import Any

from django.db import transaction

from stepstream.delivery.webhooks.addresses import check_url
from stepstream.delivery.webhooks.signing import new_secret
from stepstream.engine import audit, feed
from stepstream.errors import Invalid, NotFound
from stepstream.models import Environment, StateChange, Webhook, WebhookAttempt

MAX_WEBHOOKS_PER_ENVIRONMENT = 50
MAX_DELIVERIES_LIMIT = 1000


def describe(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.pk,
        "url": hook.url,
        "state": hook.state,
        "description": hook.description,
        "failing_since": hook.failing_since.isoformat() if hook.failing_since else None,
    }


def current_position() -> tuple[int, int]:
    """A feed position before every change not yet committed: where a new webhook starts.

    On PostgreSQL, every row with an xid at or above the horizon is after it
    (a few changes committed just before may be sent too: at least once).
    """
    below = feed.horizon()
    if below is not None:
        return below, 0
    last = StateChange.objects.order_by("-id").values_list("id", flat=True).first()
    return 0, last or 0


def create(environment: Environment, body: object, actor: str = "cli") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object.")
    url = check_url(body.get("url"))
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > 500 or "\x00" in description:
        raise Invalid("description must be a string of at most 500 characters.")
    after = body.get("after")
    if after is not None and not isinstance(after, str):
        raise Invalid("after must be a cursor string from the change feed ('' for the start).")
    if Webhook.objects.filter(environment=environment).count() >= MAX_WEBHOOKS_PER_ENVIRONMENT:
        raise Invalid(f"An environment has at most {MAX_WEBHOOKS_PER_ENVIRONMENT} webhooks.")
    if after is None:
        xid, row_id = current_position()
    else:  # replay: start from a feed cursor ("" = the very beginning)
        xid, row_id = feed.decode_cursor(environment.pk, after)
    with transaction.atomic():
        hook = Webhook.objects.create(
            environment=environment,
            url=url,
            description=description,
            secret=new_secret(),
            position_xid=xid,
            position_id=row_id,
        )
        audit.record(environment.pk, actor, "webhook.create", f"webhook:{hook.pk}", {"url": url})
    return {**describe(hook), "secret": hook.secret}


def get(environment: Environment, hook_id: int | str, lock: bool = False) -> Webhook:
    rows = Webhook.objects.select_for_update() if lock else Webhook.objects
    hook = rows.filter(environment=environment, pk=int(hook_id)).first()
    if hook is None:
        raise NotFound(f"No webhook {hook_id} in this environment.")
    return hook


def listing(environment: Environment) -> list[dict[str, Any]]:
    return [describe(h) for h in Webhook.objects.filter(environment=environment).order_by("pk")]


def delete(environment: Environment, hook_id: int | str, actor: str = "cli") -> None:
    """Deletes a webhook and its attempt log.

    The row is locked first: a worker saving a batch holds it, and its new
    attempt rows would otherwise reference a webhook deleted under them.
    """
    with transaction.atomic():
        hook = get(environment, hook_id, lock=True)
        audit.record(
            environment.pk, actor, "webhook.delete", f"webhook:{hook.pk}", {"url": hook.url}
        )
        hook.delete()


def enable(environment: Environment, hook_id: int | str, actor: str = "cli") -> dict[str, Any]:
    """Resumes a disabled webhook where it stopped (its position never moved past a failure)."""
    with transaction.atomic():
        hook = get(environment, hook_id)
        Webhook.objects.filter(pk=hook.pk).update(state="enabled", failing_since=None)
        audit.record(
            environment.pk, actor, "webhook.enable", f"webhook:{hook.pk}", {"url": hook.url}
        )
    hook.refresh_from_db()
    return describe(hook)


def deliveries(environment: Environment, hook_id: int | str, limit: int) -> list[dict[str, Any]]:
    hook = get(environment, hook_id)
    rows = WebhookAttempt.objects.filter(webhook=hook).order_by("-id")[:limit]
    return [
        {
            "webhook_id": hook.pk,
            "message_id": a.message_id,
            "person_key": a.person_key,
            "seq": a.seq,
            "attempt": a.attempt,
            "status_code": a.status_code,
            "error": a.error,
            "at": a.at.isoformat(),
        }
        for a in rows
    ]
