"""The embedded default: nothing crosses processes through a broker.

The process that commits feeds its own hub directly (stepstream.delivery);
other processes on the same SQLite file see the rows by following the log.
"""

import asyncio

from stepstream.delivery.broker import Broker, OnGap, OnRecords


class MemoryBroker(Broker):
    async def listen(self, on_records: OnRecords, on_gap: OnGap) -> None:
        await asyncio.Event().wait()
