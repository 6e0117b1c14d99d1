"""Reads one client message and produces exactly one response.

Thin on purpose: parse, check limits, dispatch on `action`, render the
result or the StepstreamError with the same status and code as REST.
"""

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings
from django.db import DataError

from stepstream import strictjson as strict_json
from stepstream.errors import Invalid, RateLimited, StepstreamError, TooLarge
from stepstream.ws.actions import ACTIONS

if TYPE_CHECKING:
    from stepstream.ws.connection import Connection

logger = logging.getLogger("stepstream.ws")


def render(
    request_id: object,
    status: int,
    errors: Iterable[str] = (),
    action: str | None = None,
    data: object = None,
    code: str | None = None,
) -> str:
    response: dict[str, Any] = {"request_id": request_id, "errors": list(errors), "status": status}
    if action is not None:
        response["action"] = action
    if code is not None:
        response["code"] = code
    if data is not None:
        response["data"] = data
    try:
        return orjson.dumps(response).decode()
    except orjson.JSONEncodeError:
        # an integer beyond 64 bits in data stored before such numbers were
        # refused (PostgreSQL hands a stored 1e300 back as one): orjson refuses
        # those, the standard library writes them; the request_id may be an
        # orjson.Fragment (its text as sent), so only data goes that way
        written = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        response["data"] = orjson.Fragment(written.encode())
        return orjson.dumps(response).decode()


def render_error(request_id: object, error: StepstreamError, action: str | None = None) -> str:
    return render(request_id, error.status, error.messages, action, code=error.code)


async def handle(conn: "Connection", text: str) -> str:
    request_id = None
    action = None
    try:
        if len(text) > settings.STEPSTREAM["WS_MAX_MESSAGE_BYTES"] or (
            len(text.encode()) > settings.STEPSTREAM["WS_MAX_MESSAGE_BYTES"]
        ):
            raise TooLarge(f"Message is over {settings.STEPSTREAM['WS_MAX_MESSAGE_BYTES']} bytes.")
        try:  # the request_id comes back exactly as sent (its numbers in their very digits)
            message, request_id = strict_json.read_message(text)
        except Invalid as error:
            request_id = getattr(error, "request_id", None)
            raise
        if not isinstance(message, dict):
            raise Invalid("Message must be a JSON object with action, request_id and data.")
        if not conn.allow_request():
            raise RateLimited("Too many requests on this connection; slow down.")
        action = message.get("action")
        if not isinstance(action, str):
            raise Invalid("action is missing; it must be a string naming the action.")
        handler = ACTIONS.get(action)
        if handler is None:
            action_text, action = action, None
            raise Invalid(f"Unknown action '{action_text[:100]}'.")
        data = message.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise Invalid("data must be a JSON object.")
        result = await handler(conn, data, request_id)
        return render(request_id, 200, action=action, data=result)
    except StepstreamError as error:
        return render_error(request_id, error, action)
    except DataError:
        refused = Invalid("A value in the request cannot be stored (bad characters or size).")
        return render_error(request_id, refused, action)
    except Exception:
        logger.exception("unexpected error handling action %r", action)
        return render(request_id, 500, ["Internal server error."], action, code="internal")
