"""The breaker and the retry policy on their own, with a clock the test moves."""

from __future__ import annotations

import asyncio
import random

import pytest

from lexrag.breaker import Breaker, BreakerSettings, BreakerState
from lexrag.errors import ProviderError
from lexrag.retry import Deadline, RetryPolicy, with_retries


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_trips_on_failures_within_the_window_only():
    clock = Clock()
    breaker = Breaker(BreakerSettings(failures=3, window_s=10, cooldown_s=5), clock)
    for _ in range(2):
        breaker.failure()
        clock.now += 6
    assert breaker.state is BreakerState.CLOSED  # the first failure left the window
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_in() == 5 and breaker.trips == 1


def test_breaker_lets_one_probe_through_after_the_cooldown():
    clock = Clock()
    breaker = Breaker(BreakerSettings(failures=1, window_s=10, cooldown_s=5), clock)
    breaker.failure()
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for its verdict
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and breaker.retry_in() == 5
    clock.now += 5
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.allow()
    assert breaker.snapshot() == {"state": "closed", "recent_failures": 0, "trips": 1}


def test_a_probe_without_verdict_frees_the_slot():
    clock = Clock()
    breaker = Breaker(BreakerSettings(failures=1, window_s=10, cooldown_s=1), clock)
    breaker.failure()
    clock.now += 1
    assert breaker.allow() and not breaker.allow()
    breaker.release()
    assert breaker.allow()


def _run(coro):
    return asyncio.run(coro)


def test_retries_then_succeeds_with_full_jitter_waits(monkeypatch):
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    random.seed(3)
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ProviderError("flaky", retryable=True)
        return "ok"

    policy = RetryPolicy(max_retries=3, backoff_s=1.0, backoff_max_s=3.0)
    assert _run(with_retries(attempt, policy=policy, deadline=Deadline(100))) == "ok"
    assert calls == 4 and len(waits) == 3
    # Full jitter: a random wait in [0, min(max, base * 2**n)].
    for n, wait in enumerate(waits):
        assert 0 <= wait <= min(3.0, 1.0 * 2**n)
    assert len(set(waits)) == 3


def test_permanent_failures_and_exhausted_retries_raise_the_last_error():
    calls = 0

    async def permanent() -> None:
        nonlocal calls
        calls += 1
        raise ProviderError("bad request", retryable=False)

    with pytest.raises(ProviderError, match="bad request"):
        _run(with_retries(permanent, policy=RetryPolicy(max_retries=5), deadline=Deadline(100)))
    assert calls == 1

    calls = 0

    async def always() -> None:
        nonlocal calls
        calls += 1
        raise ProviderError(f"down {calls}", retryable=True)

    with pytest.raises(ProviderError, match="down 3"):
        _run(with_retries(always, policy=RetryPolicy(2, 0.001, 0.002), deadline=Deadline(100)))


def test_retry_after_sets_the_least_wait_and_the_deadline_the_most(monkeypatch):
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    hints = [2.5, 50.0]

    async def limited() -> None:
        raise ProviderError("429", retryable=True, retry_after=hints.pop(0))

    with pytest.raises(ProviderError) as err:
        _run(with_retries(limited, policy=RetryPolicy(5, 0.01, 0.02), deadline=Deadline(10)))
    # Waited the 2.5 s asked for; the next 50 s would pass the deadline: no sleep, no retry.
    assert waits == [2.5] and err.value.retry_after == 50.0
