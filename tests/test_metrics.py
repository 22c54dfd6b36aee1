"""``GET /metrics``: the names, labels and values, per app."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lexrag.config import load_config
from lexrag.registry import Registry, check_config
from lexrag.server import create_app

from .fakes import Fail
from .fixtures_resilience import ask, chain_config, metric

NAMES = {
    "lexrag_requests": "counter",
    "lexrag_request_duration_seconds": "histogram",
    "lexrag_time_to_first_token_seconds": "histogram",
    "lexrag_tokens": "counter",
    "lexrag_retries": "counter",
    "lexrag_fallbacks": "counter",
    "lexrag_breaker_state": "gauge",
    "lexrag_retrieval_duration_seconds": "histogram",
    "lexrag_in_flight_requests": "gauge",
    "lexrag_http_requests": "counter",
}


def test_metrics_count_what_happened(start_server, two_upstreams):
    primary, backup = two_upstreams
    served = start_server(chain_config(primary, backup, max_retries=1))
    base = served.base
    primary.script(Fail(503))
    assert ask(base, stream=True).provider == "openai"  # one retry
    primary.script(Fail(500), Fail(500))
    assert ask(base, stream=False).provider == "openai-backup"  # a retry, then fallback
    assert ask(base, stream=False).provider == "openai"

    response = httpx.get(f"{base}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name, kind in NAMES.items():
        assert families[name].type == kind, name
    assert metric(base, "lexrag_requests_total", {"provider": "openai", "status": "200"}) == 2
    assert metric(base, "lexrag_requests_total", {"provider": "openai-backup", "status": "200"}) == 1
    assert metric(base, "lexrag_retries_total", {"provider": "openai"}) == 2
    assert metric(base, "lexrag_fallbacks_total", {"provider": "openai-backup"}) == 1
    assert metric(base, "lexrag_request_duration_seconds_count", {"provider": "openai"}) == 2
    assert metric(base, "lexrag_time_to_first_token_seconds_count") == 1  # one stream
    assert metric(base, "lexrag_retrieval_duration_seconds_count") == 3
    assert metric(base, "lexrag_tokens_total", {"provider": "openai", "kind": "completion"}) > 0
    assert metric(base, "lexrag_tokens_total", {"provider": "openai-backup", "kind": "prompt"}) > 0
    assert metric(base, "lexrag_breaker_state", {"provider": "openai"}) == 0
    assert metric(base, "lexrag_in_flight_requests") == 0
    assert metric(base, "lexrag_http_requests_total", {"route": "/v1/chat/completions", "status": "200"}) == 3


def test_each_app_has_its_own_registry(resilient_pm, two_upstreams, tmp_path):
    primary, _ = two_upstreams
    path = tmp_path / "lexrag.toml"
    path.write_text(chain_config(primary), encoding="utf-8")
    registry = Registry(resilient_pm)
    config = check_config(load_config(path, env={}), registry)
    first, second = create_app(config, registry), create_app(config, registry)
    first.state.lexrag.metrics.requests.labels("openai", "200").inc()
    assert b'lexrag_requests_total{provider="openai",status="200"} 1.0' in first.state.lexrag.metrics.render()
    assert b'provider="openai",status="200"' not in second.state.lexrag.metrics.render()
