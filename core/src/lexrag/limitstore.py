"""Where the per-key rate limits keep their counters: in the process, or in a store that
several server processes share.

An index backend whose store class also subclasses :class:`LimitStore` (lexrag-postgres)
holds the counters of every server that opens the same index, so a key's limits hold across
them; otherwise each process counts on its own (:class:`MemoryLimitStore`).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Increment:
    """Add ``amount`` to the counter ``counter`` of the window that starts at ``window``
    (seconds since the epoch), unless that takes it past ``ceiling``."""

    counter: str
    window: int
    amount: int
    expires: int
    """Seconds since the epoch after which the counter may be dropped (its window is over)."""
    ceiling: int | None = None


class LimitStore(ABC):
    """Counters of fixed time windows, changed all or nothing."""

    @abstractmethod
    def increment(self, items: Sequence[Increment]) -> tuple[bool, list[int]]:
        """Atomically: when every item's count plus its amount stays within its ceiling,
        add them all and return ``(True, the new counts)``; otherwise change nothing and
        return ``(False, the counts as they are)``. An amount of 0 reads a counter; a count
        never seen is 0. Counters whose ``expires`` has passed may be dropped meanwhile."""


class MemoryLimitStore(LimitStore):
    """The counters of one process."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], tuple[int, int]] = {}
        self._lock = threading.Lock()

    def increment(self, items: Sequence[Increment]) -> tuple[bool, list[int]]:
        with self._lock:
            current = [self._counts.get((i.counter, i.window), (0, i.expires))[0] for i in items]
            ok = all(
                i.ceiling is None or n + i.amount <= i.ceiling for i, n in zip(items, current, strict=True)
            )
            if not ok:
                return False, current
            out = []
            for item, n in zip(items, current, strict=True):
                out.append(n + item.amount)
                if item.amount:
                    self._counts[(item.counter, item.window)] = (n + item.amount, item.expires)
            self._drop_expired(min((i.window for i in items), default=0))
            return True, out

    def _drop_expired(self, now: int) -> None:
        if len(self._counts) > 1024:
            self._counts = {k: v for k, v in self._counts.items() if v[1] >= now}


__all__ = ["Increment", "LimitStore", "MemoryLimitStore"]
