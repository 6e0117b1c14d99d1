"""The broker carries committed records between server processes.

Ordering guarantee: none beyond best effort. A broker may delay, reorder,
duplicate or lose records (a publisher can die after commit; Redis can be
down). Correctness never rests on it: each hub restores per-person `seq`
order, drops what it has already passed, and reads gaps from the log. The
broker only makes delivery fast.
"""

from collections.abc import Callable, Iterable, Sequence

import orjson

from stepstream.engine.log import Record

# what a broker's listener calls: with records heard, and when some may have been missed
OnRecords = Callable[[list[Record]], None]
OnGap = Callable[[], None]


def encode(records: Iterable[Record]) -> bytes:
    """Records as one JSON array: how every cross-process broker carries them."""
    return orjson.dumps([[r.person_id, r.seq, r.entity, r.data] for r in records])


def decode(payload: bytes) -> list[Record]:
    return [Record(p, s, e, d) for p, s, e, d in orjson.loads(payload)]


class Broker:
    cross_process = False
    # True when every process that can change a key (servers and the command
    # line) tells this broker's subscribers: only then may a key be remembered
    # without a re-check (stepstream/trust/keycache.py).
    tells_key_changes = False

    def publish(self, records: Sequence[Record]) -> None:
        """Sends committed records to every process; never blocks long, never raises."""

    def publish_keys_changed(self) -> None:
        """Tells every other process that keys changed; never blocks long, never raises.

        A broker that crosses processes calls its `on_keys` (the Node's `keys_heard`) in
        each of them when the message arrives, and whenever it (re)subscribes.
        """

    async def listen(self, on_records: OnRecords, on_gap: OnGap) -> None:
        """Feeds records from other processes until cancelled.

        Calls `on_gap()` whenever records may have been missed (reconnects).
        """

    @property
    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        """Lets go of connections the broker holds (its listen task is the hub's)."""
