"""The WebSocket actions: each checks its fields, then calls the engine or the hub."""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from stepstream import engine
from stepstream.engine import flows, log, pages, theme
from stepstream.errors import Conflict, Invalid, RateLimited
from stepstream.strictjson import validate_identifier, validate_person_key
from stepstream.trust import identity

if TYPE_CHECKING:
    from stepstream.models import Environment
    from stepstream.ws.connection import Connection
    from stepstream.ws.endpoint import Gateway

Data = dict[str, Any]  # an action's `data` object, as the client sent it

ENTITIES = ("flow", "step")


def _text(data: Data, field: str) -> str:
    return validate_identifier(data.get(field), f"data.{field}")


def _entity(data: Data) -> str:
    entity = data.get("entity")
    if not isinstance(entity, str) or entity not in ENTITIES:
        raise Invalid("data.entity must be 'flow' or 'step'.")
    return entity


def _environment(conn: "Connection") -> "Environment":
    """The socket's environment: every /ws socket has one (only the dashboard's has none)."""
    assert conn.environment is not None
    return conn.environment


def _gateway(conn: "Connection") -> "Gateway":
    """The socket's endpoint: its database threads, positions and verification policies."""
    assert conn.gateway is not None  # every /ws socket's (made by the Gateway)
    return conn.gateway


def _verified(
    conn: "Connection", data: Data, *checked: Callable[[Data], object]
) -> tuple[str, identity.Grant | None]:
    """The request's person_key and its token's grant, once its fields are checked."""
    person_key = validate_person_key(data.get("person_key"), "data.person_key")
    for check in checked:
        check(data)
    # 401 / 403 when verification refuses
    return person_key, _gateway(conn).guard.policies.check(_environment(conn), person_key, data)


def _person(conn: "Connection", data: Data, *checked: Callable[[Data], object]) -> str:
    """The request's person_key, once its other fields are checked and identity verified."""
    return _verified(conn, data, *checked)[0]


def _since_seq(data: Data) -> int | None:
    value: object = data.get("since_seq")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid("data.since_seq must be a non-negative integer.")
    return value


def _epoch(data: Data) -> str | None:
    value: object = data.get("epoch")
    if value is not None and (not isinstance(value, str) or len(value) > 100):
        raise Invalid("data.epoch must be a string: the epoch of an event or of get_state.")
    return value


async def subscribe_state_change(conn: "Connection", data: Data, request_id: object) -> Any:
    from django.conf import settings

    person_key, grant = _verified(conn, data, _entity, _since_seq, _epoch)
    entity, since_seq, epoch = data["entity"], data.get("since_seq"), data.get("epoch")
    existing = conn.subscriptions.get((person_key, entity))
    if existing is not None and since_seq is None:
        existing.grant = grant  # a fresh token extends the subscription's life
        return None
    # shared with the other subscribes waiting now: one database job for all of them
    person_id, last_seq = await _gateway(conn).positions.position(_environment(conn), person_key)
    if since_seq is not None and epoch is not None and epoch != log.epoch(person_id):
        raise Conflict(
            f"epoch '{epoch[:100]}' is not the current epoch of person '{person_key}': their "
            "log restarted (they were deleted and created again), so since_seq does not apply. "
            "Start again from get_state."
        )
    if since_seq is not None and since_seq > last_seq:
        raise Conflict(
            f"since_seq {since_seq} is beyond the latest seq ({last_seq}) of person "
            f"'{person_key}': their log was reset (deleted and created again). "
            "Start again from get_state."
        )
    existing = conn.subscriptions.get((person_key, entity))
    if existing is not None and existing.person_id == person_id:
        existing.grant = grant
        if since_seq is not None:
            conn.hub.resend_since(existing, since_seq)
        return None
    if existing is not None:  # the person was deleted and created again
        conn.hub.unsubscribe(existing)
    elif len(conn.subscriptions) >= settings.STEPSTREAM["WS_MAX_SUBSCRIPTIONS"]:
        raise RateLimited(
            f"Too many subscriptions on this connection (at most "
            f"{settings.STEPSTREAM['WS_MAX_SUBSCRIPTIONS']})."
        )
    sub = conn.hub.subscribe(conn, person_id, last_seq, entity, request_id, since_seq)
    sub.grant = grant
    conn.subscriptions[(person_key, entity)] = sub
    return None


async def unsubscribe_state_change(conn: "Connection", data: Data, request_id: object) -> Any:
    person_key = _person(conn, data, _entity)
    sub = conn.subscriptions.pop((person_key, data["entity"]), None)
    if sub is not None:
        conn.hub.unsubscribe(sub)
    return None


def _identify(environment: "Environment", person_key: str, data: Data | None) -> Data:
    # the connection's environment was read at connect: a schema set since then applies
    environment.refresh_from_db(fields=["person_schema"])
    merged = engine.do_identify(environment, person_key, data, via="websocket")
    state = engine.snapshot(environment, person_key)
    state["data"] = merged
    return state


def _person_data(data: Data) -> Data | None:
    person_data = data.get("data")
    if person_data is not None and not isinstance(person_data, dict):
        raise Invalid("data.data must be a JSON object.")
    return person_data


async def identify(conn: "Connection", data: Data, request_id: object) -> Any:
    person_key = _person(conn, data, _person_data)
    return await _gateway(conn).db.run(_identify, _environment(conn), person_key, data.get("data"))


async def get_state(conn: "Connection", data: Data, request_id: object) -> Any:
    return await _gateway(conn).db.run(engine.snapshot, _environment(conn), _person(conn, data))


async def transition(conn: "Connection", data: Data, request_id: object) -> Any:
    person_key = _person(conn, data, lambda d: _text(d, "flow"), lambda d: _text(d, "transition"))
    flow, name = data["flow"], data["transition"]
    return await _gateway(conn).db.run(
        engine.do_transition, _environment(conn), person_key, flow, name, via="websocket"
    )


def _properties(data: Data) -> None:
    value = data.get("properties")
    if value is not None and not isinstance(value, dict):
        raise Invalid("data.properties must be a JSON object.")


def _track(environment: "Environment", person_key: str, event: str, properties: Data | None) -> Any:
    # the connection's environment was read at connect: a schema set since then applies
    environment.refresh_from_db(fields=["person_schema"])
    return engine.do_track(environment, person_key, event, properties, via="websocket")


async def track(conn: "Connection", data: Data, request_id: object) -> Any:
    """Records a tracked event for the person; rules it sets off run in the same transaction."""
    person_key = _person(conn, data, lambda d: _text(d, "event"), _properties)
    event, properties = data["event"], data.get("properties")
    return await _gateway(conn).db.run(_track, _environment(conn), person_key, event, properties)


async def page(conn: "Connection", data: Data, request_id: object) -> Any:
    """Where the person is: their latest page, evaluated like any write (docs/protocol.md)."""
    person_key = _person(conn, data, lambda d: pages.check_url(d.get("url")))
    return await _gateway(conn).db.run(
        engine.do_page, _environment(conn), person_key, data["url"], via="websocket"
    )


async def restart(conn: "Connection", data: Data, request_id: object) -> Any:
    person_key = _person(conn, data, lambda d: _text(d, "flow"))
    return await _gateway(conn).db.run(
        engine.do_restart, _environment(conn), person_key, data["flow"], via="websocket"
    )


def _flow_action(action: str) -> "Action":
    """pause, resume or exit, as the REST calls: so a browser can close a flow."""

    async def handler(conn: "Connection", data: Data, request_id: object) -> Any:
        person_key = _person(conn, data, lambda d: _text(d, "flow"))
        return await _gateway(conn).db.run(
            engine.do_flow_action,
            _environment(conn),
            person_key,
            data["flow"],
            action,
            via="websocket",
        )

    handler.__name__ = action
    return handler


async def complete_step(conn: "Connection", data: Data, request_id: object) -> Any:
    """Completes an active final step that stayed active for its content (docs/content.md)."""
    person_key = _person(conn, data, lambda d: _text(d, "flow"), lambda d: _text(d, "step"))
    return await _gateway(conn).db.run(
        engine.do_complete_step,
        _environment(conn),
        person_key,
        data["flow"],
        data["step"],
        via="websocket",
    )


MAX_LOCALE_LENGTH = 35  # BCP 47 tags browsers send are far shorter


def _version(data: Data) -> None:
    value = data.get("version")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31
    ):
        raise Invalid("data.version must be a version number (an integer from 1), or left out.")


def _locale(data: Data) -> None:
    value = data.get("locale")
    if value is not None and (
        not isinstance(value, str) or not 0 < len(value) <= MAX_LOCALE_LENGTH
    ):
        raise Invalid(
            f"data.locale must be a BCP 47 language tag (at most {MAX_LOCALE_LENGTH} "
            "characters, for example fr or pt-BR), or left out."
        )


def _content(
    environment: "Environment", flow: str, version: int | None, locale: str | None
) -> Data:
    answer = flows.get_content(environment, flow, version, locale)
    return {**answer, "theme": theme.get(environment)}


async def get_content(conn: "Connection", data: Data, request_id: object) -> Any:
    """A version's step content in one locale, and the environment's theme.

    Public content: no person is named, so identity verification does not
    apply. The answer is bounded (STEPSTREAM_MAX_CONTENT_BYTES) and memoized
    per version and locale; the connection's rate limit bounds how often.
    """
    _text(data, "flow")
    _version(data)
    _locale(data)
    return await _gateway(conn).db.run(
        _content, _environment(conn), data["flow"], data.get("version"), data.get("locale")
    )


async def get_theme(conn: "Connection", data: Data, request_id: object) -> Any:
    """The environment's theme tokens, as GET /theme answers them."""
    return await _gateway(conn).db.run(theme.get, _environment(conn))


async def ping(conn: "Connection", data: Data, request_id: object) -> Any:
    return None


Action = Callable[["Connection", Data, object], Awaitable[Any]]
ACTIONS: dict[str, Action] = {
    "subscribe_state_change": subscribe_state_change,
    "unsubscribe_state_change": unsubscribe_state_change,
    "identify": identify,
    "get_state": get_state,
    "transition": transition,
    "track": track,
    "page": page,
    "restart": restart,
    "pause": _flow_action("pause"),
    "resume": _flow_action("resume"),
    "exit": _flow_action("exit"),
    "complete_step": complete_step,
    "get_content": get_content,
    "get_theme": get_theme,
    "ping": ping,
}
