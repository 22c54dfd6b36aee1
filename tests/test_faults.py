"""Fault injection: each upstream failure × (stream, non-stream) × how long it lasts.

The real server on loopback, the real openai provider talking to fake upstreams, the real
openai SDK as client. Scenarios:

- ``once``: the primary fails once, then answers → a retry gets a complete answer.
- ``always+fallback``: the primary keeps failing → the backup answers (fallback).
- ``always``: the primary keeps failing, no fallback → a clean OpenAI error.

Whatever happens, the client gets a complete answer or a clean error within the deadline,
and the call log and the metrics say what happened. The matrix is printed at the end.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from .fakes import Drop, Fail, Hang, Malformed, Reply, Reset
from .fixtures_resilience import (
    BACKUP_ANSWER,
    PRIMARY_ANSWER,
    QUESTION,
    ask,
    call_line,
    chain_config,
    metric,
)

DEADLINE = 4.0
#: The fault cases: a name, the behaviour, and the HTTP status (code) a client gets when it
#: persists with no fallback (None: it is no failure).
CASES: dict[str, tuple[Any, int | None]] = {
    "answer": (Reply(PRIMARY_ANSWER), None),
    "429+Retry-After": (Fail(429, retry_after=0.2), 503),
    "500": (Fail(500), 502),
    "502": (Fail(502), 502),
    "503": (Fail(503), 503),
    "hang": (Hang(), 504),
    "reset": (Reset(), 502),
    "drop": (Drop(PRIMARY_ANSWER, after=1), 502),
    "drop mid-answer": (Drop(PRIMARY_ANSWER, after=3), 502),
    "malformed JSON": (Malformed(), 502),
    "slow": (Reply(PRIMARY_ANSWER, delay=0.2, chunk_delay=0.02), None),
}
SCENARIOS = ["once", "always+fallback", "always"]
MATRIX: dict[tuple[str, str, str], str] = {}


def expected(case: str, stream: bool, scenario: str) -> tuple[str, str | None]:
    """(kind, provider that answers) the client should see."""
    fails_status = CASES[case][1]
    if fails_status is None:
        return "answer", "openai"
    if case == "drop mid-answer" and stream:
        return "cut", None  # a token was sent: no retry, no fallback, a clean end
    if scenario == "once":
        return "answer", "openai"
    if scenario == "always+fallback":
        return "answer", "openai-backup"
    return "error", None


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", list(CASES))
def test_fault(start_server, two_upstreams, call_log, case, stream, scenario):
    primary, backup = two_upstreams
    behaviour, error_status = CASES[case]
    # A breaker that does not trip here: it has its own tests.
    config = chain_config(
        primary,
        backup if scenario == "always+fallback" else None,
        deadline=DEADLINE,
        llm="breaker_failures = 100\n",
    )
    served = start_server(config)
    if scenario == "once":
        primary.script(behaviour)
    else:
        primary.default = behaviour
    request_id = f"fault-{uuid.uuid4().hex[:8]}"

    got = ask(served.base, stream=stream, request_id=request_id)

    kind, provider = expected(case, stream, scenario)
    MATRIX[(case, "stream" if stream else "json", scenario)] = got.label()
    assert got.kind == kind, got
    assert got.seconds < DEADLINE + 2, "the answer took longer than the deadline"
    assert got.request_id == request_id
    line = call_line(call_log, request_id)
    assert line["stream"] is stream and line["path"] == "/v1/chat/completions"
    if kind == "answer":
        answer = BACKUP_ANSWER if provider == "openai-backup" else PRIMARY_ANSWER
        assert got.text == answer and got.finish == ["stop"]
        assert got.provider == provider
        assert got.model == ("backup-model" if provider == "openai-backup" else "primary-model")
        assert line["status"] == 200 and line["error"] is None
        assert line["provider"] == provider and line["fallback"] is (provider == "openai-backup")
        assert metric(served.base, "lexrag_requests_total", {"provider": provider, "status": "200"}) == 1
        if stream:
            assert line["ttft_s"] is not None and line["ttft_s"] <= line["latency_s"]
        assert line["completion_tokens"] and line["prompt_tokens"]
        assert line["sources"][0] == "bo-luat-lao-dong:105"
    if scenario == "once" and error_status is not None and kind == "answer":
        assert line["retries"] == 1 and line["tried"] == ["openai"]
        assert line["attempts"][0]["outcome"] != "ok" and line["attempts"][1]["outcome"] == "ok"
        assert metric(served.base, "lexrag_retries_total", {"provider": "openai"}) == 1
    if scenario == "always+fallback" and kind == "answer" and error_status is not None:
        assert line["tried"] == ["openai", "openai-backup"]
        assert line["retries"] == 1  # the primary's one retry; the backup answered at once
        assert metric(served.base, "lexrag_fallbacks_total", {"provider": "openai-backup"}) == 1
        assert backup.requests and len([r for r in primary.requests if r.method == "POST"]) == 2
    if kind == "error":
        assert got.status == error_status
        assert got.error["type"] == "provider_error" and got.error["message"]
        if case == "429+Retry-After":
            assert got.retry_after == "1"  # 0.2 s, rounded up to HTTP's whole seconds
        assert line["status"] == error_status and line["error"] == got.error["code"]
        assert line["provider"] is None and line["tried"] == ["openai"] and line["retries"] == 1
        assert (
            metric(served.base, "lexrag_requests_total", {"provider": "openai", "status": str(error_status)})
            == 1
        )
    if kind == "cut":
        assert got.text and PRIMARY_ANSWER.startswith(got.text)
        assert got.finish == [] and got.error["type"] == "provider_error"
        assert line["status"] == 200 and line["error_status"] == 502 and line["error"] == got.error["code"]
        assert metric(served.base, "lexrag_requests_total", {"provider": "openai", "status": "502"}) == 1


def test_print_the_fault_matrix(capsys):
    """The matrix of the tests above (run them first: pytest keeps file order)."""
    if not MATRIX:
        pytest.skip("no fault test ran in this session")
    width = max(len(c) for c in CASES) + 2
    lines = ["", "fault matrix (client: openai SDK; cell: what it got)"]
    for scenario in SCENARIOS:
        lines.append(f"\n[{scenario}]")
        lines.append(f"{'case':<{width}}| {'non-stream':<40}| stream")
        for case in CASES:
            cells = [MATRIX.get((case, mode, scenario), "-") for mode in ("json", "stream")]
            lines.append(f"{case:<{width}}| {cells[0]:<40}| {cells[1]}")
    with capsys.disabled():
        print("\n".join(lines))
    assert all("BROKEN" not in v for v in MATRIX.values())


# --- the deadline, Retry-After, permanent failures ----------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_deadline_bounds_a_hang_the_provider_would_wait_out(
    start_server, two_upstreams, call_log, stream
):
    primary, _ = two_upstreams
    primary.default = Hang()
    # The provider would wait 30 s; the request's deadline is 1 s.
    served = start_server(chain_config(primary, timeout=30, deadline=1.0))
    got = ask(served.base, stream=stream, request_id="hang-1")
    assert got.kind == "error" and got.status == 504 and got.error["code"] == "timeout"
    assert "deadline" in got.error["message"]
    assert got.seconds < 3
    line = call_line(call_log, "hang-1")
    assert line["status"] == 504 and line["attempts"][0]["outcome"] == "timeout"


def test_a_retry_after_beyond_the_deadline_falls_back_at_once(start_server, two_upstreams, call_log):
    primary, backup = two_upstreams
    primary.default = Fail(429, retry_after=30)
    served = start_server(chain_config(primary, backup, deadline=2.0, max_retries=3))
    got = ask(served.base, stream=False, request_id="ra-1")
    assert got.kind == "answer" and got.provider == "openai-backup"
    assert got.seconds < 2  # it did not sleep 30 s, nor up to the deadline
    assert len([r for r in primary.requests if r.method == "POST"]) == 1


def test_a_retry_after_beyond_the_deadline_reaches_the_client(start_server, two_upstreams):
    primary, _ = two_upstreams
    primary.default = Fail(429, retry_after=30)
    served = start_server(chain_config(primary, deadline=2.0, max_retries=3))
    got = ask(served.base, stream=False)
    assert got.kind == "error" and got.status == 503 and got.retry_after == "30"


def test_retry_after_is_honoured(start_server, two_upstreams, call_log):
    primary, _ = two_upstreams
    primary.script(Fail(503, retry_after=0.6))
    served = start_server(chain_config(primary, deadline=4.0))
    got = ask(served.base, stream=False, request_id="ra-2")
    assert got.kind == "answer"
    line = call_line(call_log, "ra-2")
    first, second = line["attempts"]
    # The retry waited at least the 0.6 s asked for (backoff alone is at most 0.05 s here).
    assert line["latency_s"] >= 0.6 + first["s"] + second["s"] - 0.05


@pytest.mark.parametrize("status", [400, 401, 403, 404])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_permanent_failures_are_not_retried(start_server, two_upstreams, call_log, status, stream):
    """A permanent failure is never retried. A 400 blames the request and fails at once; a
    401/403/404 blames the provider (its key, its model) and the chain moves on (issue 13)."""
    primary, backup = two_upstreams
    primary.default = Fail(status, type="invalid_request_error")
    served = start_server(chain_config(primary, backup, max_retries=3))
    got = ask(served.base, stream=stream, request_id=f"perm-{status}")
    assert len([r for r in primary.requests if r.method == "POST"]) == 1  # no retry
    line = call_line(call_log, f"perm-{status}")
    assert line["retries"] == 0
    if status == 400:
        assert got.kind == "error" and got.status == 400
        assert not backup.requests  # no fallback
        assert line["fallback"] is False
    else:
        assert got.kind == "answer" and got.provider == "openai-backup", got
        assert line["fallback"] is True


# --- per-request fallback, the model that answered ----------------------------------


def test_the_request_chooses_its_fallback(start_server, two_upstreams):
    primary, backup = two_upstreams
    primary.default = Fail(503)
    served = start_server(
        chain_config(primary, max_retries=0) + "[providers.openai-backup]\n"
        f'base_url = "{backup.base_url}"\nmodel = "backup-model"\n'
    )
    # None configured: the request's own list is used.
    got = ask(served.base, stream=True, extra_body={"fallback": ["openai-backup"]})
    assert got.kind == "answer" and got.model == "backup-model" and got.provider == "openai-backup"
    assert ask(served.base, stream=False).kind == "error"
    unknown = httpx.post(
        f"{served.base}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "fallback": ["nope"]},
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "fallback"


def test_an_empty_fallback_list_turns_the_configured_one_off(start_server, two_upstreams):
    primary, backup = two_upstreams
    primary.default = Fail(503)
    served = start_server(chain_config(primary, backup, max_retries=0))
    assert ask(served.base, stream=False).provider == "openai-backup"
    got = ask(served.base, stream=False, extra_body={"fallback": []})
    assert got.kind == "error" and got.status == 503
    assert len(backup.requests) == 1


def test_naming_the_backup_model_routes_to_it(start_server, two_upstreams):
    primary, backup = two_upstreams
    served = start_server(chain_config(primary, backup))
    got = ask(served.base, stream=False, model="openai-backup")
    assert got.kind == "answer" and got.provider == "openai-backup" and got.model == "backup-model"
    assert not [r for r in primary.requests if r.method == "POST"]


def test_a_stream_cut_after_the_first_token_ends_cleanly_on_the_wire(start_server, two_upstreams):
    primary, backup = two_upstreams
    primary.default = Drop("một hai ba bốn năm sáu", after=3)
    served = start_server(chain_config(primary, backup))
    body = {"messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with httpx.stream("POST", f"{served.base}/v1/chat/completions", json=body, timeout=20) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_bytes())
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    error = json.loads(events[-3][6:])["error"]
    assert error["type"] == "provider_error" and "mid-answer" in error["message"]
    chunks = [json.loads(e[6:]) for e in events[:-3]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(ch["finish_reason"] is None for c in chunks for ch in c["choices"])  # no invented reason
    texts = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert "".join(t or "" for t in texts) == "một hai "  # both tokens sent, none lost
    assert not backup.requests  # no fallback once the client holds part of an answer


# --- the circuit breaker ------------------------------------------------------------


def test_the_breaker_opens_skips_the_provider_then_probes_it(start_server, two_upstreams, call_log):
    primary, backup = two_upstreams
    primary.default = Fail(503)
    llm = "breaker_failures = 2\nbreaker_window_s = 60\nbreaker_cooldown_s = 0.5\n"
    served = start_server(chain_config(primary, backup, max_retries=0, llm=llm))
    posts = lambda: len([r for r in primary.requests if r.method == "POST"])  # noqa: E731

    for _ in range(2):  # two failures: the breaker opens
        assert ask(served.base, stream=False).provider == "openai-backup"
    assert posts() == 2
    got = ask(served.base, stream=True, request_id="skipped")
    assert got.kind == "answer" and got.provider == "openai-backup"
    assert posts() == 2  # skipped: not even tried
    line = call_line(call_log, "skipped")
    assert line["skipped"] == ["openai"] and line["fallback"] is True and line["tried"] == ["openai-backup"]

    health = httpx.get(f"{served.base}/health").json()
    assert health["chain"] == ["openai", "openai-backup"]
    assert health["providers"]["openai"]["breaker"]["state"] == "open"
    assert health["providers"]["openai"]["status"] == "degraded" and health["status"] == "degraded"
    assert health["providers"]["openai-backup"]["breaker"]["state"] == "closed"
    cards = {m["id"]: m for m in httpx.get(f"{served.base}/v1/models").json()["data"]}
    assert cards["openai"]["state"] == "open" and cards["primary-model"]["state"] == "open"
    assert cards["openai-backup"]["state"] == "closed"
    assert metric(served.base, "lexrag_breaker_state", {"provider": "openai"}) == 1
    assert metric(served.base, "lexrag_breaker_state", {"provider": "openai-backup"}) == 0

    primary.default = Reply(PRIMARY_ANSWER)  # the primary recovers
    deadline = time.monotonic() + 5
    while httpx.get(f"{served.base}/health").json()["providers"]["openai"]["breaker"]["state"] == "open":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert metric(served.base, "lexrag_breaker_state", {"provider": "openai"}) == 2  # half-open
    probe = ask(served.base, stream=False)
    assert probe.provider == "openai"  # the probe went through and succeeded
    assert httpx.get(f"{served.base}/health").json()["providers"]["openai"]["breaker"]["state"] == "closed"


def test_a_failed_probe_opens_the_breaker_again(start_server, two_upstreams):
    primary, backup = two_upstreams
    primary.default = Fail(502)
    llm = "breaker_failures = 1\nbreaker_cooldown_s = 0.3\n"
    served = start_server(chain_config(primary, backup, max_retries=0, llm=llm))
    assert ask(served.base, stream=False).provider == "openai-backup"
    time.sleep(0.35)
    assert ask(served.base, stream=False).provider == "openai-backup"  # probe failed
    assert len([r for r in primary.requests if r.method == "POST"]) == 2
    assert httpx.get(f"{served.base}/health").json()["providers"]["openai"]["breaker"]["state"] == "open"
    assert ask(served.base, stream=False).provider == "openai-backup"
    assert len([r for r in primary.requests if r.method == "POST"]) == 2  # skipped again


def test_a_cooling_provider_without_fallback_is_a_clean_503(start_server, two_upstreams):
    primary, _ = two_upstreams
    primary.default = Fail(500)
    served = start_server(
        chain_config(primary, max_retries=0, llm="breaker_failures = 1\nbreaker_cooldown_s = 30\n")
    )
    assert ask(served.base, stream=False).status == 502
    for stream in (False, True):
        got = ask(served.base, stream=stream)
        assert got.kind == "error" and got.status == 503 and got.error["code"] == "provider_cooling_down"
        assert got.retry_after is not None and 1 <= int(got.retry_after) <= 30
    assert len([r for r in primary.requests if r.method == "POST"]) == 1
    health = httpx.get(f"{served.base}/health")
    assert health.status_code == 200 and health.json()["status"] == "degraded"
