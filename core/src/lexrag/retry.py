"""Retries of transient provider failures, with tenacity, inside a per-request deadline.

tenacity rather than stamina: the backoff here is AWS's "full jitter" (a random wait in an
exponentially widening window, ``wait_random_exponential``), a provider's ``Retry-After``
sets the least wait, and the stop rule sees the wait it is about to sleep
(``upcoming_sleep``), so a retry that would sleep past the deadline is not made. stamina
wraps tenacity with a fixed additive jitter and a time limit checked after the attempt,
and reports to a process-global Prometheus registry; the server keeps one registry per app.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from .errors import ProviderError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt, waiting a random time in
    ``[0, min(backoff_max_s, backoff_s * 2**n)]`` before retry ``n + 1``."""

    max_retries: int = 2
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0


class Deadline:
    """A point in time a request must be done by."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


def parse_retry_after(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds an upstream asks us to wait: ``retry-after-ms`` (OpenAI's), else ``Retry-After``
    as seconds or as an HTTP date; None when it says nothing usable. ``headers`` must look
    names up case-insensitively (httpx's ``Headers`` do)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def transient(exc: BaseException) -> bool:
    """A failure another try may get past (the provider said so)."""
    return isinstance(exc, ProviderError) and exc.retryable


class _BackoffOrRetryAfter(wait_base):
    """Full-jitter backoff, but never less than the provider's ``Retry-After``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._jitter = wait_random_exponential(multiplier=policy.backoff_s, max=policy.backoff_max_s)

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = float(self._jitter(retry_state))
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        hint = getattr(error, "retry_after", None)
        return max(wait, float(hint)) if isinstance(hint, (int, float)) else wait


class _StopBeforeDeadline(stop_base):
    """Stop when the coming wait would reach the deadline: no attempt could follow it."""

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.upcoming_sleep >= self._deadline.remaining()


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    deadline: Deadline,
    before_sleep: Callable[[RetryCallState], None] | None = None,
    retry_if: Callable[[BaseException], bool] = transient,
) -> T:
    """``attempt()`` until it succeeds, fails in a way ``retry_if`` refuses, runs out of
    retries, or the next wait would pass ``deadline``; then its last error is raised as it was."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(retry_if),
        stop=stop_after_attempt(policy.max_retries + 1) | _StopBeforeDeadline(deadline),
        wait=_BackoffOrRetryAfter(policy),
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retrying(attempt)


__all__ = ["Deadline", "RetryPolicy", "parse_retry_after", "transient", "with_retries"]
