"""Authoring (docs/dashboard.md, "Authoring"): versions, drafts, switches, archive, promotion.

Every successful change here is recorded in the audit in the change's own transaction
(engine.audit); a draft save is not a change of what runs, and is not recorded.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from stepstream import strictjson
from stepstream.engine import audit, conditions, flows, rules
from stepstream.errors import Conflict, Invalid, NotFound
from stepstream.models import Environment, Flow, FlowDraft, FlowSwitch

MAX_VERSIONS_LISTED = 1000  # newest first; older ones are read one by one with ?version=N


# --- versions -----------------------------------------------------------------


def version_hash(flow: Flow) -> str:
    """The version's stored hash; one published before hashes existed gets it now."""
    if not flow.hash:
        flow.hash = flows.content_hash(flows.describe(flow))
        Flow.objects.filter(pk=flow.pk).update(hash=flow.hash)
    return flow.hash


def version_meta(flow: Flow) -> dict[str, Any]:
    return {
        "version": flow.version,
        "published_at": flows.iso(flow.created_at),
        "published_by": flow.published_by or None,
        "hash": version_hash(flow),
    }


def versions(environment: Environment, identifier: str) -> list[dict[str, Any]]:
    rows = list(
        Flow.objects.filter(environment=environment, identifier=identifier).order_by("-version")[
            :MAX_VERSIONS_LISTED
        ]
    )
    if not rows:
        raise NotFound(f"No flow '{identifier}' in this environment.")
    return [version_meta(f) for f in rows]


def switch_of(environment: Environment, identifier: str) -> FlowSwitch:
    """The flow's switches (an unsaved default row when it never had any)."""
    found = FlowSwitch.objects.filter(environment=environment, identifier=identifier).first()
    return found or FlowSwitch(environment=environment, identifier=identifier)


def describe_full(environment: Environment, flow: Flow) -> dict[str, Any]:
    """A version as `GET /flows/{identifier}` answers it: content, version, switches."""
    switch = switch_of(environment, flow.identifier)
    return {
        **flows.describe(flow),
        **{k: v for k, v in version_meta(flow).items() if k != "version"},
        "enabled": switch.enabled,
        "starts_at": flows.iso(switch.starts_at),
        "ends_at": flows.iso(switch.ends_at),
        "archived": switch.archived,
    }


def answer(environment: Environment, described: dict[str, Any]) -> dict[str, Any]:
    """A version just published, as `GET /flows/{identifier}` will read it."""
    return describe_full(
        environment, flows.version(environment, described["identifier"], described["version"])
    )


def archived_identifiers(environment: Environment) -> set[str]:
    return set(
        FlowSwitch.objects.filter(environment=environment, archived=True).values_list(
            "identifier", flat=True
        )
    )


# --- drafts -------------------------------------------------------------------


def problems(environment: Environment, body: object) -> list[str]:
    """Why a definition would not publish here (empty when it would): the publish check."""
    try:
        flows.checked(environment, body)
    except Invalid as e:
        return list(e.messages)
    return []


def _draft_body(identifier: str, body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object describing the flow.")
    strictjson.check(body, "The draft")
    given = body.get("identifier")
    if given is not None and given != identifier:
        raise Invalid(
            f"identifier: the body names '{str(given)[:100]}' but the path names "
            f"'{identifier}'; they must be the same (or leave identifier out)."
        )
    limits = settings.STEPSTREAM
    for name, most in (
        ("steps", limits["MAX_FLOW_STEPS"]),
        ("transitions", limits["MAX_FLOW_TRANSITIONS"]),
    ):
        value = body.get(name)
        if isinstance(value, list) and len(value) > most:
            raise Invalid(f"{name}: a draft may have at most {most} {name}, as a flow.")
    return {**body, "identifier": identifier}


@dataclass(frozen=True, slots=True)
class DraftCheck:
    """What a save or publish expects of the draft (HTTP's If-Match / If-None-Match): one
    of the drafts it read (`tags`), any draft (`If-Match: *`) or none (`If-None-Match: *`).
    Nothing expected: the save overwrites, as the contract's PUT always did."""

    tags: tuple[str, ...] = ()
    any_draft: bool = False
    no_draft: bool = False


@dataclass(frozen=True, slots=True)
class DraftAnswer:
    """A draft as `GET /flows/{identifier}/draft` answers it, and its ETag."""

    body: dict[str, Any]
    etag: str


_TAG = re.compile(r'^(?:W/)?"[\x21\x23-\x7e]*"$')


def draft_check(if_match: str | None, if_none_match: str | None) -> DraftCheck:
    """The request's conditions; a malformed one is a 400 saying how it is written."""
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise Invalid(
                'If-None-Match: only "*" is understood here (save only if the flow has no '
                "draft yet); to save over a draft you read, send its ETag in If-Match."
            )
        if if_match is not None:
            raise Invalid("Send either If-Match or If-None-Match, not both.")
        return DraftCheck(no_draft=True)
    if if_match is None:
        return DraftCheck()
    if if_match.strip() == "*":
        return DraftCheck(any_draft=True)
    tags = tuple(t.strip() for t in if_match.split(",") if t.strip())
    if not tags or len(if_match) > 1000 or not all(_TAG.match(t) for t in tags):
        raise Invalid(
            "If-Match must be the draft's ETag as GET or PUT gave it, in double quotes "
            '(If-Match: "12.3"), or *.'
        )
    return DraftCheck(tags=tags)


def etag_of(draft: FlowDraft) -> str:
    """The row's id and revision: a draft published or deleted and then started again has
    another id, so an ETag read from the old one never matches the new one."""
    return f'"{draft.pk}.{draft.revision}"'


class DraftChanged(Conflict):
    """A 409: the draft is not the one the saver read. The dashboard words its own sentence
    from the fields (the REST sentence speaks of ETags)."""

    def __init__(self, message: str, draft: FlowDraft | None):
        super().__init__(message)
        self.revision = draft.revision if draft else None
        self.saved_by = draft.saved_by if draft else ""
        self.saved_at = draft.updated_at if draft else None


def _checked(identifier: str, draft: FlowDraft | None, check: DraftCheck) -> None:
    """Refuses (409) a save or publish whose expectation the draft no longer meets."""
    reread = f"read it again (GET /api/v1/flows/{identifier}/draft)"
    if draft is None:
        if check.tags or check.any_draft:
            raise DraftChanged(
                f"'{identifier}' has no draft any more: it was published or deleted after you "
                f"read it. Nothing was saved; read the flow again (GET /api/v1/flows/"
                f"{identifier}) and make your change there.",
                None,
            )
        return
    if check.no_draft or (check.tags and etag_of(draft) not in check.tags):
        who = f" by {draft.saved_by}" if draft.saved_by else ""
        at = draft.updated_at.strftime("%H:%M:%S UTC") if draft.updated_at else "a moment ago"
        since = "" if check.no_draft else " after the revision you read"
        raise DraftChanged(
            f"The draft of '{identifier}' was saved{who} at {at}{since}: it is at revision "
            f"{draft.revision} now (ETag {etag_of(draft)}). Nothing was saved; {reread}, "
            "make your change again and save with its ETag in If-Match.",
            draft,
        )


def _describe_draft(environment: Environment, draft: FlowDraft) -> DraftAnswer:
    body = {
        "draft": draft.body,
        "problems": problems(environment, draft.body),
        "revision": draft.revision,
    }
    return DraftAnswer(body, etag_of(draft))


def put_draft(
    environment: Environment,
    identifier: str,
    body: object,
    actor: str = "",
    check: DraftCheck | None = None,
) -> DraftAnswer:
    """Saves the draft as the next revision; `check` refuses a save over one not read."""
    strictjson.validate_identifier(identifier, "identifier")
    saved = _draft_body(identifier, body)
    try:
        return _save_draft(environment, identifier, saved, actor, check or DraftCheck())
    except IntegrityError:  # a first save raced this one; checked against it now
        return _save_draft(environment, identifier, saved, actor, check or DraftCheck())


def _save_draft(
    environment: Environment, identifier: str, saved: dict[str, Any], actor: str, check: DraftCheck
) -> DraftAnswer:
    with transaction.atomic():
        draft = (
            FlowDraft.objects.select_for_update()
            .filter(environment=environment, identifier=identifier)
            .first()
        )
        _checked(identifier, draft, check)
        if draft is None:
            most = settings.STEPSTREAM["MAX_FLOWS"]
            if FlowDraft.objects.filter(environment=environment).count() >= most:
                raise Invalid(
                    f"An environment may have at most {most:,} drafts (STEPSTREAM_MAX_FLOWS): "
                    "publish or delete one first."
                )
            draft = FlowDraft(environment=environment, identifier=identifier, revision=0)
        draft.body = saved
        draft.revision += 1
        draft.saved_by = actor[:255]
        draft.save()
    return _describe_draft(environment, draft)


def get_draft_row(environment: Environment, identifier: str) -> FlowDraft:
    draft = FlowDraft.objects.filter(environment=environment, identifier=identifier).first()
    if draft is None:
        raise NotFound(f"Flow '{identifier}' has no draft.")
    return draft


def get_draft(environment: Environment, identifier: str) -> DraftAnswer:
    return _describe_draft(environment, get_draft_row(environment, identifier))


def delete_draft(environment: Environment, identifier: str) -> None:
    get_draft_row(environment, identifier).delete()


def publish_draft(
    environment: Environment, identifier: str, actor: str, check: DraftCheck | None = None
) -> dict[str, Any]:
    """Publishes the draft as `POST /flows` would; the draft goes in the same transaction.
    With `check`, only the revision the publisher read (If-Match)."""
    draft = get_draft_row(environment, identifier)
    _checked(identifier, draft, check or DraftCheck())
    definition = flows.checked(environment, draft.body)  # 400 with every problem; draft stays
    with transaction.atomic():
        # the row as checked, or nothing: a save in between changed what would publish
        gone = FlowDraft.objects.filter(pk=draft.pk, revision=draft.revision).delete()[0]
        if not gone:
            _checked(identifier, get_draft_row(environment, identifier), DraftCheck(no_draft=True))
        return answer(environment, flows.publish_definition(environment, definition, actor))


# --- conditions checked while typing --------------------------------------------


def check_condition(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid('The request body must be a JSON object: {"condition": "CEL"}.')
    text = body.get("condition")
    if not isinstance(text, str):
        raise Invalid("condition is required and must be a string of CEL.")
    try:
        compiled = conditions.compile_condition(text, "condition", saving=True)
    except Invalid as e:
        return {"ok": False, "errors": list(e.messages), "variables": []}
    variables = sorted({f"{root}.{key}" if key else root for root, key in compiled.deps})
    return {"ok": True, "errors": [], "variables": variables}


# --- switches and archive -------------------------------------------------------


def _moment(body: dict[str, Any], name: str, current: datetime | None) -> datetime | None:
    if name not in body:
        return current
    value = body[name]
    if value is None:
        return None
    try:  # a well-formed but impossible date (month 13) is a ValueError
        parsed = parse_datetime(value) if isinstance(value, str) and len(value) <= 64 else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise Invalid(f"{name} must be an ISO 8601 date and time (2026-01-31T09:00:00Z) or null.")
    if timezone.is_naive(parsed):
        raise Invalid(f"{name} must name its time zone (end it with Z or +01:00).")
    return parsed


def _changed_switch(
    environment: Environment,
    identifier: str,
    actor: str,
    action: str,
    change: Callable[[FlowSwitch], dict[str, Any]],
) -> dict[str, Any]:
    """Applies `change(switch)` to the locked switch row, records it, bumps the rules so
    every process reads the switches again at its next write, and answers the flow."""
    with transaction.atomic():
        latest = flows.latest(environment, identifier)
        switch = (
            FlowSwitch.objects.select_for_update()
            .filter(environment=environment, identifier=identifier)
            .first()
        ) or FlowSwitch(environment=environment, identifier=identifier)
        details = change(switch)
        switch.save()
        audit.record(environment.pk, actor, action, f"flow:{identifier}", details)
        rules.bump(environment.pk)
    return describe_full(environment, latest)


def patch_switches(
    environment: Environment, identifier: str, body: object, actor: str
) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid(
            'The request body must be a JSON object: {"enabled"?, "starts_at"?, "ends_at"?}.'
        )
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise Invalid("enabled must be true or false.")

    def change(switch: FlowSwitch) -> dict[str, Any]:
        starts_at = _moment(body, "starts_at", switch.starts_at)
        ends_at = _moment(body, "ends_at", switch.ends_at)
        if starts_at is not None and ends_at is not None and starts_at >= ends_at:
            raise Invalid("starts_at must be before ends_at.")
        if "enabled" in body:
            switch.enabled = body["enabled"]
        switch.starts_at, switch.ends_at = starts_at, ends_at
        return {
            "enabled": switch.enabled,
            "starts_at": flows.iso(starts_at),
            "ends_at": flows.iso(ends_at),
        }

    return _changed_switch(environment, identifier, actor, "switch", change)


def set_archived(
    environment: Environment, identifier: str, archived: bool, actor: str
) -> dict[str, Any]:
    def change(switch: FlowSwitch) -> dict[str, Any]:
        switch.archived = archived
        return {}

    return _changed_switch(
        environment, identifier, actor, "archive" if archived else "unarchive", change
    )


# --- promotion ----------------------------------------------------------------


def as_definition(described: dict[str, Any]) -> dict[str, Any]:
    """A described version as `POST /flows` takes it again: no version number, and blank
    names left out (publish stores a missing name as "", but refuses a blank one)."""
    definition = {k: v for k, v in described.items() if k != "version"}
    if not definition.get("name"):
        definition.pop("name", None)
    definition["steps"] = [
        {k: v for k, v in step.items() if k != "name" or v} for step in definition["steps"]
    ]
    return definition


def promote(
    environment: Environment, identifier: str, number: int, body: object, actor: str
) -> dict[str, Any]:
    """Copies one exact version into another environment of the project as its next version."""
    if not isinstance(body, dict) or not isinstance(body.get("to"), str) or not body["to"]:
        raise Invalid('to is required: the identifier of an environment, {"to": "production"}.')
    source = flows.version(environment, identifier, number)
    target = Environment.objects.filter(
        project_id=environment.project_id, identifier=body["to"]
    ).first()
    if target is None:
        raise NotFound(f"This project has no environment '{str(body['to'])[:100]}'.")
    if target.pk == environment.pk:
        raise Invalid(
            f"to: version {number} is already in '{target.identifier}'; name another "
            "environment of the project."
        )
    definition = as_definition(flows.describe(source))
    try:
        checked = flows.checked(target, definition)
    except Invalid as e:
        raise Invalid(*(f"In environment '{target.identifier}': {m}" for m in e.messages)) from None
    origin = {"environment": environment.identifier, "version": source.version}
    with transaction.atomic():
        audit.lock_environments(environment.pk, target.pk)  # in id order: no deadlock
        promoted = flows.publish_definition(target, checked, actor, "promote", {"from": origin})
        audit.record(
            environment.pk,
            actor,
            "promote",
            f"flow:{identifier}",
            {"version": source.version, "to": target.identifier, "to_version": promoted["version"]},
        )
    return answer(target, promoted)
