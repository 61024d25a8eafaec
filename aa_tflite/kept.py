"""A thread-safe store of the last few results, oldest dropped first, by count or by size. No
import beyond the standard library.

Planning asks for the same work again: the same file measured (``search.bench``), the same
flatbuffer unpacked (``tflite.flatbuffer``), the same values' quantiles read for every precision
(``lowering.relu``). Each keeps its last results here, keyed by a digest of the input.

Example:
    >>> kept = Kept()
    >>> kept.put("a", 1, limit=2)
    >>> kept.put("b", 2, limit=2)
    >>> kept.put("c", 3, limit=2)  # "a" is the oldest: it goes
    >>> kept.get("a") is None, kept.get("c")
    (True, 3)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["Kept"]


class Kept:
    """The last results put, each with a size (1 by default, so that a limit counts them)."""

    def __init__(self) -> None:
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        """The value kept under ``key`` (now the most recent), or None."""
        with self._lock:
            got = self._items.get(key)
            if got is not None:
                self._items.move_to_end(key)
        return None if got is None else got[0]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key: Hashable, value: Any, *, size: int = 1, limit: int) -> None:
        """Keeps ``value``, then drops the oldest values while the sizes add up to more than
        ``limit`` (the newest is always kept)."""
        with self._lock:
            self._items[key] = (value, size)
            self._items.move_to_end(key)
            while len(self._items) > 1 and sum(s for _, s in self._items.values()) > limit:
                self._items.popitem(last=False)
