"""Delivery of committed state changes to subscribed connections.

Generation, delivery and resume are explained in docs/architecture.md.

A server process's delivery is one `Node` (Centrifuge's word): its broker,
its hub, and who hears that keys changed. The runtime (stepstream.http.runtime)
builds it in the ASGI lifespan, registers `notify_committed` with the engine's
commits, and stops it on shutdown. Records reach the hub of this process
directly and other processes through the broker; every hub also follows the
log itself, so a record missed by both still arrives.
"""

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from django.conf import settings

from stepstream.delivery.broker import Broker
from stepstream.engine.log import Record

if TYPE_CHECKING:
    from stepstream.dbthreads import DbThreads
    from stepstream.delivery.hub import Hub


def make_broker(on_keys: Callable[[], None] | None = None) -> Broker:
    """Redis between processes when REDIS_URL is set; else the relay of `serve --workers N`
    when this is one of its workers; else nothing (one process). `on_keys` is called when
    another process says keys changed, or may have said so unheard (a reconnect)."""
    url = settings.STEPSTREAM["REDIS_URL"]
    if url:
        from stepstream.delivery.broker_redis import RedisBroker

        return RedisBroker(url, on_keys)
    relay = os.environ.get("STEPSTREAM_RELAY_SOCKET")
    if relay:
        from stepstream.delivery.broker_relay import RelayBroker

        return RelayBroker(relay)
    from stepstream.delivery.broker_memory import MemoryBroker

    return MemoryBroker()


def tell_keys_changed() -> None:
    """For a process without a Node (a command): tells the servers that keys changed, with a
    broker of its own for the one message."""
    broker = make_broker()
    try:
        broker.publish_keys_changed()
    finally:
        broker.close()


class Node:
    """This process's delivery: the broker, the hub once started, and the listeners of
    "keys changed"."""

    def __init__(self, db: "DbThreads") -> None:
        self.db = db
        self._key_listeners: list[Callable[[], None]] = []
        self.broker = make_broker(self.keys_heard)
        self.hub: Hub | None = None

    async def start(self) -> "Hub":
        from stepstream.delivery.hub import Hub

        hub = Hub(self.broker, self.db)
        await hub.start()
        self.hub = hub
        return hub

    async def stop(self) -> None:
        hub, self.hub = self.hub, None
        if hub is not None:
            await hub.stop()
        self.broker.close()

    def on_keys_changed(self, callback: Callable[[], None]) -> None:
        """Calls `callback()` whenever another process says keys changed, or may have said
        so unheard (the broker reconnected): the runtime's key memory forgets what it holds."""
        self._key_listeners.append(callback)

    def keys_heard(self) -> None:
        for callback in list(self._key_listeners):
            callback()

    def keys_changed(self) -> None:
        """Tells every other process that keys changed (revoked, rotated); never raises."""
        self.broker.publish_keys_changed()

    def hears_keys(self) -> bool:
        """Whether another process's "keys changed" would reach this one now (Redis, healthy)."""
        return self.broker.tells_key_changes and self.broker.healthy

    def notify_committed(self, records: Sequence[Record]) -> None:
        """Called after commit, from whichever thread committed."""
        hub = self.hub
        if hub is not None:
            hub.feed_threadsafe(records)
        self.broker.publish(records)
