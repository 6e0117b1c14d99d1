"""Starts and stops this process's hub with the server (ASGI lifespan)."""

import asyncio

from stepstream import delivery
from stepstream.delivery.hub import Hub

_lock: asyncio.Lock | None = None


async def ensure_hub() -> Hub:
    global _lock
    hub = delivery.current_hub()
    if hub is not None:
        return hub
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        hub = delivery.current_hub()
        if hub is None:
            hub = Hub(delivery.broker())
            await hub.start()
            delivery.set_hub(hub)
    return hub


async def stop_hub() -> None:
    hub = delivery.current_hub()
    if hub is not None:
        delivery.set_hub(None)
        await hub.stop()
