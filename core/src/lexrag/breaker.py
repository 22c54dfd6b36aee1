"""A circuit breaker per provider: cool-down after repeated failures, then one probe.

``closed``: calls go through; transient failures are counted over a sliding window.
``open``: ``failures`` of them within ``window_s`` — the provider is skipped for
``cooldown_s``. ``half_open``: the cool-down is over; one request may probe the provider,
others still skip it. The probe's success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> int:
        """The value exported as ``lexrag_breaker_state``: 0 closed, 1 open, 2 half-open."""
        return {"closed": 0, "open": 1, "half_open": 2}[self.value]


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0


class Breaker:
    """The breaker of one provider. Not thread-safe: used from the server's event loop."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._failures: collections.deque[float] = collections.deque()
        self._opened_at: float | None = None
        self._probing = False
        self.trips = 0
        """Times the breaker opened (for /health)."""

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probing or self._clock() - self._opened_at >= self.settings.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def retry_in(self) -> float:
        """Seconds until the provider may be probed again (0 when it may be called now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.settings.cooldown_s - self._clock())

    def allow(self) -> bool:
        """May a call go to the provider now? In half-open state the first caller is let
        through as the probe, and every other caller is turned away until it reports."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures.clear()
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        """A transient failure of a call that :meth:`allow` let through."""
        now = self._clock()
        if self._opened_at is not None:  # the probe failed (or a call let in before the trip)
            self._opened_at = now
            self._probing = False
            return
        self._failures.append(now)
        self._forget_old(now)
        if len(self._failures) >= self.settings.failures:
            self._failures.clear()
            self._opened_at = now
            self.trips += 1

    def _forget_old(self, now: float) -> None:
        while self._failures and now - self._failures[0] > self.settings.window_s:
            self._failures.popleft()

    def release(self) -> None:
        """The probe ended without a verdict (cancelled, or failed the client's own way):
        let the next caller probe."""
        self._probing = False

    def snapshot(self) -> dict[str, Any]:
        """The state for ``/health``."""
        self._forget_old(self._clock())
        out: dict[str, Any] = {"state": self.state.value, "recent_failures": len(self._failures)}
        if self._opened_at is not None:
            out["retry_in_s"] = round(self.retry_in(), 3)
        out["trips"] = self.trips
        return out


__all__ = ["Breaker", "BreakerSettings", "BreakerState"]
