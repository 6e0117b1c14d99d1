"""A dict with a most number of entries, for memos of what never changes once made.

The engine's compiled flow versions and conditions, and an environment's
rules, are memos keyed by immutable ids: right for the whole process, so
kept at module level like `functools.lru_cache`, but never unbounded. Past
`most` entries the oldest goes (insertion order; a hit does not refresh it,
which keeps a lookup free of any write).
"""

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class BoundedMemo(Generic[V]):
    def __init__(self, most: int):
        self.most = most
        self._items: dict[Hashable, V] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        return self._items.get(key)

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._items.pop(key, None)
            while len(self._items) >= self.most:
                self._items.pop(next(iter(self._items)))
            self._items[key] = value

    def pop(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        """Everything goes (a test's simulated restart: the process starts with none)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
