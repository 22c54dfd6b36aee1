"""The call log: one JSON line per request on the ``lexrag.calls`` logger."""

from __future__ import annotations

import httpx

from .fakes import Fail
from .fixtures_resilience import QUESTION, ask, call_line, calls_logged, chain_config

CHAT = {"messages": [{"role": "user", "content": QUESTION}]}


def test_one_line_per_request_with_what_happened(start_server, two_upstreams, call_log):
    primary, backup = two_upstreams
    primary.script(Fail(503))
    served = start_server(chain_config(primary, backup))
    got = ask(served.base, stream=True, request_id="client-id-1")
    assert got.kind == "answer" and got.request_id == "client-id-1"
    line = call_line(call_log, "client-id-1")
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert line["status"] == 200 and line["error"] is None and line["stream"] is True
    assert line["requested_model"] == "openai"
    assert line["provider"] == "openai" and line["model"] == "primary-model"
    assert line["retries"] == 1 and line["fallback"] is False and line["tried"] == ["openai"]
    assert [a["outcome"] for a in line["attempts"]] == ["provider_error", "ok"]
    assert line["attempts"][0]["status"] == 503
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] > 0
    assert 0 < line["ttft_s"] <= line["latency_s"]
    assert line["retrieval_s"] is not None and line["retrieval_s"] <= line["latency_s"]
    assert line["sources"][0] == "bo-luat-lao-dong:105"
    assert "messages" not in line and "answer" not in line  # bodies are off by default
    assert QUESTION not in call_log.text
    assert len([c for c in calls_logged(call_log) if c["request_id"] == "client-id-1"]) == 1


def test_the_request_id_is_made_when_missing_or_unsafe(start_server, two_upstreams, call_log):
    primary, _ = two_upstreams
    served = start_server(chain_config(primary))
    made = httpx.post(f"{served.base}/v1/chat/completions", json=CHAT)
    request_id = made.headers["x-request-id"]
    assert len(request_id) == 32 and call_line(call_log, request_id)["status"] == 200
    forged = httpx.post(
        f"{served.base}/v1/chat/completions", json=CHAT, headers={"x-request-id": 'a" \\n{"status": 200}'}
    )
    assert forged.headers["x-request-id"] != 'a" \\n{"status": 200}'
    assert len(forged.headers["x-request-id"]) == 32
    # Errors carry it too, and are logged with their code.
    bad = httpx.post(
        f"{served.base}/v1/chat/completions", json={"messages": []}, headers={"x-request-id": "r-2"}
    )
    assert bad.status_code == 400 and bad.headers["x-request-id"] == "r-2"
    line = call_line(call_log, "r-2")
    assert line["status"] == 400 and line["error"] == "invalid_request" and line["provider"] is None


def test_bodies_only_when_configured(start_server, two_upstreams, call_log):
    primary, _ = two_upstreams
    served = start_server(chain_config(primary, extra="[logging]\nlog_bodies = true\n"))
    for stream in (False, True):
        ask(served.base, stream=stream, request_id=f"bodies-{stream}")
        line = call_line(call_log, f"bodies-{stream}")
        assert line["messages"] == [{"role": "user", "content": QUESTION}]
        assert line["answer"].startswith("Không quá 08 giờ")


def test_failures_and_other_routes_are_logged_but_not_probes(start_server, two_upstreams, call_log):
    primary, _ = two_upstreams
    primary.default = Fail(500)
    served = start_server(chain_config(primary, max_retries=0))
    got = ask(served.base, stream=False, request_id="fails")
    line = call_line(call_log, "fails")
    assert got.status == 502 and line["status"] == 502 and line["error"] == "provider_error"
    assert line["tried"] == ["openai"] and line["provider"] is None
    httpx.get(f"{served.base}/v1/models", headers={"x-request-id": "models-1"})
    assert call_line(call_log, "models-1")["path"] == "/v1/models"
    httpx.get(f"{served.base}/health", headers={"x-request-id": "probe"})
    httpx.get(f"{served.base}/metrics", headers={"x-request-id": "scrape"})
    assert not [c for c in calls_logged(call_log) if c["request_id"] in ("probe", "scrape")]
    failed = [r for r in call_log.records if r.name == "lexrag.calls" and "fails" in r.getMessage()]
    assert failed[0].levelname == "WARNING"  # a 5xx is a warning; the rest INFO
    assert failed[0].call["status"] == 502  # structured, for handlers that want fields
