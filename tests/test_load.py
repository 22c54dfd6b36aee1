"""Load with failures: 200 requests from 32 concurrent clients, 30 % of upstream answers
failing in every way, a fallback configured → no hung request, no 5xx without an error
body, every success a complete answer; the figures are printed."""

from __future__ import annotations

import asyncio

from .fixtures_resilience import calls_logged, chain_config, chaos, metric, run_load

REQUESTS, CLIENTS, FAILURE_RATE = 200, 32, 0.3


def test_load_with_injected_failures(start_server, two_upstreams, call_log, capsys):
    primary, backup = two_upstreams
    primary.script(*chaos(REQUESTS, FAILURE_RATE))
    llm = "breaker_failures = 10\nbreaker_window_s = 1\nbreaker_cooldown_s = 0.5\n"
    served = start_server(chain_config(primary, backup, deadline=5.0, llm=llm))

    result = asyncio.run(run_load(served.base, requests=REQUESTS, concurrency=CLIENTS))

    with capsys.disabled():
        print(
            f"\nload ({REQUESTS} requests, {CLIENTS} clients, {FAILURE_RATE:.0%} injected failures): {result.summary()}"
        )
    assert result.hung == 0
    assert result.bad == []
    assert result.answers + result.errors == REQUESTS
    assert result.fallbacks > 0 and result.answers > REQUESTS * 0.8
    # Only streams cut after their first token can fail: everything else has a fallback.
    assert result.errors == result.cut
    # The server saw and recorded every request.
    assert (
        sum(metric(served.base, "lexrag_requests_total", {"status": s}) for s in ("200", "502", "503", "504"))
        == REQUESTS
    )
    assert len([c for c in calls_logged(call_log) if c["path"] == "/v1/chat/completions"]) == REQUESTS
    assert metric(served.base, "lexrag_retries_total") > 0
    assert metric(served.base, "lexrag_in_flight_requests") == 0
