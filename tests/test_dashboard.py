"""``docs/grafana/lexrag.json``: importable, over a Prometheus data source variable, and every
metric its PromQL queries exists in the ``/metrics`` of a real ``lexrag serve`` (the local
provider's ``lexrag_llm_*`` included) after a retry, a fallback and a stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .fakes import Fail, FakeUpstream, Reply
from .fixtures_local import serving

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "lexrag.json"
#: What the dashboard must show (issue 16): requests and errors, latency, TTFT, tokens,
#: retries, fallbacks, breakers, retrieval time, the local model's batch and queue.
REQUIRED = {
    "lexrag_requests_total",
    "lexrag_request_duration_seconds_bucket",
    "lexrag_time_to_first_token_seconds_bucket",
    "lexrag_tokens_total",
    "lexrag_retries_total",
    "lexrag_fallbacks_total",
    "lexrag_breaker_state",
    "lexrag_retrieval_duration_seconds_bucket",
    "lexrag_llm_sequences",
    "lexrag_llm_batch_size_max",
    "lexrag_llm_tokens_per_second",
    "lexrag_key_requests_total",
    "lexrag_cache_requests_total",
    "lexrag_query_rewrites_total",
}
#: Grafana's variables, as Prometheus would see them once Grafana has put in their values.
_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
_CHILDREN = ("lhs", "rhs", "expr", "args", "vector_selector", "param")


def _metric_names(expr: str) -> set[str]:
    """The metric names an expression selects, from its parse tree."""
    for variable, value in _VARIABLES.items():
        expr = expr.replace(variable, value)
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        for attribute in _CHILDREN:
            child = getattr(node, attribute, None)
            for item in child if isinstance(child, list) else [child]:
                if isinstance(item, promql_parser.Expr):
                    walk(item)

    walk(promql_parser.parse(expr))
    return names


def _queries(dashboard: dict[str, Any]) -> list[str]:
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    queries = [t["expr"] for p in panels for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = variable["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]
            queries.append(inner)
    return queries


def test_the_dashboard_is_importable_over_a_prometheus_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"] == "lexrag" and dashboard["id"] is None
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'instance=~"$instance"' in target["expr"], target["expr"]
    assert "lexrag_histogram_typo_bucket" in _metric_names(
        'histogram_quantile(0.5, sum by (le) (rate(lexrag_histogram_typo_bucket{instance=~"$instance"}[$__rate_interval])))'
    )
    used = set().union(*(_metric_names(q) for q in _queries(dashboard)))
    assert used >= REQUIRED, REQUIRED - used


@pytest.mark.slow
def test_every_metric_the_dashboard_queries_is_in_metrics(
    tiny_onnx_dir: Path, sample_index: Path, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    with FakeUpstream(model="primary-model") as primary:
        primary.default = Reply("Không quá 08 giờ trong 01 ngày [1].")
        primary.script(Fail(500), Fail(500))  # one retry, then the fallback to the local model
        config = (
            '[llm]\nprovider = "openai"\nfallback = ["local"]\nmax_retries = 1\n'
            "retry_backoff_s = 0.01\nretry_backoff_max_s = 0.05\n"
            f'[index]\ndir = "{sample_index}"\n'
            '[retrieval]\nrewrite_provider = "openai"\n'
            '[server.keys.app]\nkey = "sk-dashboard"\nrpm = 100\n[cache]\nenabled = true\n'
            f'[providers.openai]\nbase_url = "{primary.base_url}"\nmodel = "primary-model"\n'
            f'[providers.local]\nmodel_dir = "{tiny_onnx_dir}"\ntemperature = 0.0\n'
        )
        with serving(config, tmp_path, timeout=90, env={"OPENAI_API_KEY": "unused"}) as served:
            auth = {"authorization": "Bearer sk-dashboard"}
            for stream in (True, False):
                response = httpx.post(
                    f"{served.base}/v1/chat/completions",
                    json={
                        "messages": [{"role": "user", "content": "Điều 105"}],
                        "max_tokens": 8,
                        "stream": stream,
                        "rag": False,
                    },
                    headers=auth,
                    timeout=60,
                )
                assert response.status_code == 200, response.text
            assert response.headers["x-lexrag-provider"] == "openai"
            # A follow-up (its rewrite call is counted), asked twice: the second is a cache hit.
            turns = [
                {"role": "user", "content": "Nam bao nhiêu tuổi thì được kết hôn?"},
                {"role": "assistant", "content": "Từ đủ 20 tuổi trở lên [1]."},
                {"role": "user", "content": "Còn nữ thì sao?"},
            ]
            for expected in ("miss", "hit"):
                response = httpx.post(
                    f"{served.base}/v1/chat/completions",
                    json={"messages": turns, "max_tokens": 8, "temperature": 0},
                    headers=auth,
                    timeout=60,
                )
                assert response.status_code == 200, response.text
                assert response.headers["x-lexrag-cache"] == expected
            text = httpx.get(f"{served.base}/metrics", headers=auth, timeout=10).text
    live = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    for name in ("lexrag_fallbacks_total", "lexrag_llm_sequences", "lexrag_query_rewrites_total"):
        assert name in live, sorted(live)
    assert {"lexrag_key_requests_total", "lexrag_cache_requests_total"} <= live, sorted(live)
    missing = {q: sorted(_metric_names(q) - live) for q in _queries(dashboard)}
    assert not {q: m for q, m in missing.items() if m}, sorted(live)
