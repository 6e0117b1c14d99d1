"""The WebSocket actions: each checks its fields, then calls the engine or the hub."""

from stepstream import engine
from stepstream.engine import log
from stepstream.errors import Conflict, Invalid, RateLimited
from stepstream.text import validate_identifier, validate_person_key
from stepstream.trust import identity

ENTITIES = ("flow", "step")


def _text(data: dict, field: str) -> str:
    return validate_identifier(data.get(field), f"data.{field}")


def _entity(data: dict) -> str:
    entity = data.get("entity")
    if entity not in ENTITIES:
        raise Invalid("data.entity must be 'flow' or 'step'.")
    return entity


def _verified(conn, data: dict, *checked) -> tuple[str, identity.Grant | None]:
    """The request's person_key and its token's grant, once its fields are checked."""
    person_key = validate_person_key(data.get("person_key"), "data.person_key")
    for check in checked:
        check(data)
    # 401 / 403 when verification refuses
    return person_key, conn.gateway.guard.policies.check(conn.environment, person_key, data)


def _person(conn, data: dict, *checked) -> str:
    """The request's person_key, once its other fields are checked and identity verified."""
    return _verified(conn, data, *checked)[0]


def _since_seq(data: dict) -> int | None:
    value = data.get("since_seq")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid("data.since_seq must be a non-negative integer.")
    return value


def _epoch(data: dict) -> str | None:
    value = data.get("epoch")
    if value is not None and (not isinstance(value, str) or len(value) > 100):
        raise Invalid("data.epoch must be a string: the epoch of an event or of get_state.")
    return value


async def subscribe_state_change(conn, data, request_id):
    from django.conf import settings

    person_key, grant = _verified(conn, data, _entity, _since_seq, _epoch)
    entity, since_seq, epoch = data["entity"], data.get("since_seq"), data.get("epoch")
    existing = conn.subscriptions.get((person_key, entity))
    if existing is not None and since_seq is None:
        existing.grant = grant  # a fresh token extends the subscription's life
        return None
    # shared with the other subscribes waiting now: one database job for all of them
    person_id, last_seq = await conn.gateway.positions.position(conn.environment, person_key)
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


async def unsubscribe_state_change(conn, data, request_id):
    person_key = _person(conn, data, _entity)
    sub = conn.subscriptions.pop((person_key, data["entity"]), None)
    if sub is not None:
        conn.hub.unsubscribe(sub)
    return None


def _identify(environment, person_key, data):
    # the connection's environment was read at connect: a schema set since then applies
    environment.refresh_from_db(fields=["person_schema"])
    merged = engine.do_identify(environment, person_key, data, via="websocket")
    state = engine.snapshot(environment, person_key)
    state["data"] = merged
    return state


def _person_data(data: dict) -> dict | None:
    person_data = data.get("data")
    if person_data is not None and not isinstance(person_data, dict):
        raise Invalid("data.data must be a JSON object.")
    return person_data


async def identify(conn, data, request_id):
    person_key = _person(conn, data, _person_data)
    return await conn.gateway.db.run(_identify, conn.environment, person_key, data.get("data"))


async def get_state(conn, data, request_id):
    return await conn.gateway.db.run(engine.snapshot, conn.environment, _person(conn, data))


async def transition(conn, data, request_id):
    person_key = _person(conn, data, lambda d: _text(d, "flow"), lambda d: _text(d, "transition"))
    flow, name = data["flow"], data["transition"]
    return await conn.gateway.db.run(
        engine.do_transition, conn.environment, person_key, flow, name, via="websocket"
    )


def _properties(data: dict) -> None:
    value = data.get("properties")
    if value is not None and not isinstance(value, dict):
        raise Invalid("data.properties must be a JSON object.")


def _track(environment, person_key, event, properties):
    # the connection's environment was read at connect: a schema set since then applies
    environment.refresh_from_db(fields=["person_schema"])
    return engine.do_track(environment, person_key, event, properties, via="websocket")


async def track(conn, data, request_id):
    """Records a tracked event for the person; rules it sets off run in the same transaction."""
    person_key = _person(conn, data, lambda d: _text(d, "event"), _properties)
    event, properties = data["event"], data.get("properties")
    return await conn.gateway.db.run(_track, conn.environment, person_key, event, properties)


async def restart(conn, data, request_id):
    person_key = _person(conn, data, lambda d: _text(d, "flow"))
    return await conn.gateway.db.run(
        engine.do_restart, conn.environment, person_key, data["flow"], via="websocket"
    )


async def ping(conn, data, request_id):
    return None


ACTIONS = {
    "subscribe_state_change": subscribe_state_change,
    "unsubscribe_state_change": unsubscribe_state_change,
    "identify": identify,
    "get_state": get_state,
    "transition": transition,
    "track": track,
    "restart": restart,
    "ping": ping,
}
