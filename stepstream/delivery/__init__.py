"""Delivery of committed state changes to subscribed connections.

Generation, delivery and resume are explained in docs/architecture.md.

The engine calls `notify_committed` after each commit. Records reach the hub
of this process directly and other processes through the broker; every hub
also follows the log itself, so a record missed by both still arrives.
"""

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from django.conf import settings

from stepstream.delivery.broker import Broker
from stepstream.engine.log import Record

if TYPE_CHECKING:
    from stepstream.delivery.hub import Hub

_hub: "Hub | None" = None
_broker: Broker | None = None
_key_listeners: list[Callable[[], None]] = []


def make_broker() -> Broker:
    """Redis between processes when REDIS_URL is set; else the relay of `serve --workers N`
    when this is one of its workers; else nothing (one process)."""
    url = settings.STEPSTREAM["REDIS_URL"]
    if url:
        from stepstream.delivery.broker_redis import RedisBroker

        return RedisBroker(url)
    relay = os.environ.get("STEPSTREAM_RELAY_SOCKET")
    if relay:
        from stepstream.delivery.broker_relay import RelayBroker

        return RelayBroker(relay)
    from stepstream.delivery.broker_memory import MemoryBroker

    return MemoryBroker()


def on_keys_changed(callback: Callable[[], None]) -> None:
    """Calls `callback()` whenever another process says keys changed, or may have said so
    unheard (the broker reconnected): stepstream.trust.keycache forgets what it holds."""
    _key_listeners.append(callback)


def keys_heard() -> None:
    for callback in list(_key_listeners):
        callback()


def keys_changed() -> None:
    """Tells every other process that keys changed (revoked, rotated); never raises."""
    broker().publish_keys_changed()


def hears_keys() -> bool:
    """Whether another process's "keys changed" would reach this one now (Redis, healthy)."""
    current = broker()
    return current.tells_key_changes and current.healthy


def broker() -> Broker:
    global _broker
    if _broker is None:
        _broker = make_broker()
    return _broker


def set_hub(hub: "Hub | None") -> None:
    global _hub
    _hub = hub


def current_hub() -> "Hub | None":
    return _hub


def notify_committed(records: Sequence[Record]) -> None:
    """Called after commit, from whichever thread committed."""
    hub = _hub
    if hub is not None:
        hub.feed_threadsafe(records)
    broker().publish(records)
