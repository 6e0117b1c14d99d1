"""Redis pub/sub between server processes.

One PUBLISH per committed transaction, one pub/sub connection per process,
whatever the number of subscribers: fan-out to sockets happens in each hub.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import redis
import redis.asyncio as aioredis

from stepstream.delivery.broker import Broker, OnGap, OnRecords, decode, encode
from stepstream.engine.log import Record

CHANNEL_PREFIX = "stepstream:changes:"
KEYS_PREFIX = "stepstream:keys:"  # "keys changed": every process forgets the keys it remembers
log = logging.getLogger("stepstream.delivery")


def channel_name() -> str:
    """One channel per database: deployments (or test runs) sharing a Redis never mix."""
    import hashlib

    from django.db import connection

    s = connection.settings_dict
    identity = f"{s['ENGINE']}|{s.get('HOST')}|{s.get('PORT')}|{s['NAME']}"
    return CHANNEL_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:16]


class RedisBroker(Broker):
    cross_process = True
    tells_key_changes = True

    def __init__(self, url: str, on_keys: Callable[[], None] | None = None) -> None:
        self.url = url
        self.on_keys = on_keys or (lambda: None)
        self.channel = channel_name()
        self.keys_channel = KEYS_PREFIX + self.channel.removeprefix(CHANNEL_PREFIX)
        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._down_until = 0.0
        self._listening = False
        self.published = 0
        self.skipped = 0

    @property
    def healthy(self) -> bool:
        return self._listening and time.monotonic() >= self._down_until

    def publish(self, records: Sequence[Record]) -> None:
        if time.monotonic() < self._down_until:
            self.skipped += len(records)
            return
        try:
            self._client.publish(self.channel, encode(records))
            self.published += len(records)
        except redis.RedisError as e:
            self._down_until = time.monotonic() + 1.0
            self.skipped += len(records)
            log.warning("redis publish failed, the log relay will deliver: %s", e)

    def close(self) -> None:
        self._client.close()

    def publish_keys_changed(self) -> None:
        try:
            self._client.publish(self.keys_channel, b"1")
        except redis.RedisError as e:
            # the others keep re-checking each key they remember every KEY_CHECK_INTERVAL
            log.warning("redis publish of a key change failed: %s", e)

    async def listen(self, on_records: OnRecords, on_gap: OnGap) -> None:
        keys_heard = self.on_keys
        backoff = 0.1
        while True:
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=1.0)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel, self.keys_channel)
                keys_heard()  # what was said while not subscribed is lost: forget all
                self._listening = True
                on_gap()
                backoff = 0.1
                keys_channel = self.keys_channel.encode()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None and message["type"] == "message":
                        if message["channel"] == keys_channel:
                            keys_heard()
                        else:
                            on_records(decode(message["data"]))
            except (redis.RedisError, OSError) as e:
                if self._listening:
                    log.warning("redis subscription lost, following the log meanwhile: %s", e)
                self._listening = False
            finally:
                self._listening = False
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis
                    await client.aclose()
                except (redis.RedisError, OSError):
                    pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
