"""Limits: at most N starts of some flows per person in any sliding window (docs/rules.md).

A limit is part of an environment's rules (stepstream.engine.rules), so a
change bumps `rules_version`; the engine checks it inside the start's
transaction, under the person's lock, so it holds across server processes.
"""

from typing import Any

from django.db import transaction

from stepstream import strictjson
from stepstream.engine import audit, durations, rules
from stepstream.errors import Invalid, NotFound
from stepstream.models import Environment, Flow, Limit

MAX_LIMITS = 100  # per environment: each start checks those naming its flow
MAX_STARTS = 1_000_000  # the largest `max`


def _identifier(value: object) -> str:
    if isinstance(value, str) and not value.strip():
        raise Invalid("The limit identifier must not be blank.")
    return strictjson.validate_identifier(value, "The limit identifier")


def describe(limit: Limit) -> dict[str, Any]:
    return {
        "identifier": limit.identifier,
        "flows": limit.flows,
        "max": limit.max,
        "window": limit.window,
    }


def _check(environment: Environment, body: object) -> tuple[list[str] | str, int, str, int]:
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object: {flows, max, window}.")
    problems: list[str] = []
    flows = body.get("flows")
    if flows != "*":
        if not isinstance(flows, list) or not flows or not all(isinstance(f, str) for f in flows):
            problems.append(
                'flows must be "*" (every flow) or a non-empty list of flow identifiers.'
            )
            flows = []
        else:
            flows = sorted(set(flows))
            known = set(
                Flow.objects.filter(environment=environment, identifier__in=flows).values_list(
                    "identifier", flat=True
                )
            )
            problems.extend(
                f"flows names unknown flow '{f}': publish it first, or remove it."
                for f in flows
                if f not in known
            )
    most = body.get("max")
    if not isinstance(most, int) or isinstance(most, bool) or not 1 <= most <= MAX_STARTS:
        problems.append(f"max must be a whole number from 1 to {MAX_STARTS:,}.")
        most = 1
    window = body.get("window")
    seconds = 0
    try:
        seconds = durations.parse(window, "window")
    except Invalid as e:
        problems.extend(e.messages)
    if problems:
        raise Invalid(*problems)
    assert isinstance(window, str)  # parsed above
    return flows, most, window, seconds


def put(
    environment: Environment, identifier: object, body: object, actor: str = "cli"
) -> tuple[dict[str, Any], bool]:
    """Creates or replaces a limit; True when created. Audited like a segment: a limit
    changes who sees what as much as a switch does."""
    identifier = _identifier(identifier)
    flows, most, window, seconds = _check(environment, body)
    with transaction.atomic():
        limit = (
            Limit.objects.select_for_update()
            .filter(environment=environment, identifier=identifier)
            .first()
        )
        created = limit is None
        if limit is None:
            if Limit.objects.filter(environment=environment).count() >= MAX_LIMITS:
                raise Invalid(f"An environment may have at most {MAX_LIMITS} limits.")
            limit = Limit(environment=environment, identifier=identifier)
        limit.flows, limit.max, limit.window, limit.window_seconds = flows, most, window, seconds
        limit.save()
        audit.record(
            environment.pk,
            actor,
            "limit.create" if created else "limit.replace",
            f"limit:{identifier}",
            {"flows": flows, "max": most, "window": window},
        )
        rules.bump(environment.pk)
    return describe(limit), created


def get(environment: Environment, identifier: str) -> Limit:
    limit = Limit.objects.filter(environment=environment, identifier=identifier).first()
    if limit is None:
        raise NotFound(f"No limit '{identifier}' in this environment.")
    return limit


def delete(environment: Environment, identifier: str, actor: str = "cli") -> None:
    with transaction.atomic():
        deleted, _ = Limit.objects.filter(environment=environment, identifier=identifier).delete()
        if not deleted:
            raise NotFound(f"No limit '{identifier}' in this environment.")
        audit.record(environment.pk, actor, "limit.delete", f"limit:{identifier}")
        rules.bump(environment.pk)


def list_all(environment: Environment) -> list[dict[str, Any]]:
    return [
        describe(lim)
        for lim in Limit.objects.filter(environment=environment).order_by("identifier")
    ]
