"""``/metrics`` (Prometheus), in a registry per app.

Every HTTP request is counted by route and status (``lexrag_http_…``). Each answered
LLM request (chat completions, ``/v1/generate``) is counted from its call record: by the
provider that answered and the outcome, with its latency, time to first token (streams),
tokens, retries, fallbacks, retrieval time and the rewrite of a follow-up question
(``[retrieval] rewrite_provider``). The breakers' states, and the load of
providers that run their own model (sequences running and waiting, KV cache, tokens per
second: :class:`ReportsLoad`), are read when scraped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..breaker import BreakerState
    from ..calllog import CallRecord
    from ..router import Router

log = logging.getLogger("lexrag.server")

#: Routes labelled by their path; anything else is counted as ``other`` so a scan of
#: random URLs cannot blow up the label set.
ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/generate",
        "/health",
        "/metrics",
        "/",
    }
)
#: Routes whose requests go to an LLM provider.
LLM_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/generate"})

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _BreakerCollector(Collector):
    """``lexrag_breaker_state{provider}``, read from the live router at scrape time."""

    def __init__(self, states: Callable[[], Mapping[str, BreakerState]]) -> None:
        self._states = states

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "lexrag_breaker_state",
            "Circuit breaker of each provider: 0 closed, 1 open (cooling down, skipped), 2 half-open.",
            labels=["provider"],
        )
        for provider, state in self._states().items():
            family.add_metric([provider], state.gauge)
        yield family


@runtime_checkable
class ReportsLoad(Protocol):
    """A provider that runs a model itself (``local``) and says how loaded it is."""

    def load(self) -> Mapping[str, float]:
        """Numbers for ``/metrics`` under the keys of ``LOAD_GAUGES`` (others are ignored);
        empty while the model is not loaded. Called on the event loop: it must not block."""
        ...


#: ``load()`` key → (metric, help, labels beside ``provider``).
LOAD_GAUGES: dict[str, tuple[str, str, dict[str, str]]] = {
    "running": (
        "lexrag_llm_sequences",
        "Sequences of a provider's own model, by state: running (in the batch), prefilling, waiting.",
        {"state": "running"},
    ),
    "prefilling": ("lexrag_llm_sequences", "", {"state": "prefilling"}),
    "waiting": ("lexrag_llm_sequences", "", {"state": "waiting"}),
    "max_batch": ("lexrag_llm_batch_size_max", "Sequences the provider's model runs together at most.", {}),
    "kv_used_tokens": (
        "lexrag_llm_kv_cache_tokens",
        "KV cache of the provider's model in tokens: used, and capacity (batch slots × context).",
        {"kind": "used"},
    ),
    "kv_capacity_tokens": ("lexrag_llm_kv_cache_tokens", "", {"kind": "capacity"}),
    "kv_bytes": ("lexrag_llm_kv_cache_bytes", "Memory planned for the KV cache of the provider's model.", {}),
    "tokens_per_second": (
        "lexrag_llm_tokens_per_second",
        "Tokens the provider's model generated per second, all sequences together (recent window).",
        {},
    ),
}


class _LoadCollector(Collector):
    """The ``LOAD_GAUGES`` of every built provider that reports its load, at scrape time."""

    def __init__(self, router: Callable[[], Router]) -> None:
        self._router = router

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        router = self._router()
        for name, provider in router.built().items():
            if not isinstance(provider, ReportsLoad):
                continue
            try:
                load = dict(provider.load())
            except Exception:  # a scrape must not fail for one provider
                log.debug("provider %s could not report its load", name, exc_info=True)
                continue
            for key, value in load.items():
                if key not in LOAD_GAUGES:
                    continue
                metric, _, labels = LOAD_GAUGES[key]
                if metric not in families:
                    first = next(v for v in LOAD_GAUGES.values() if v[0] == metric)
                    families[metric] = GaugeMetricFamily(metric, first[1], labels=["provider", *first[2]])
                families[metric].add_metric([name, *labels.values()], float(value))
        yield from families.values()


class Metrics:
    """The server's collectors, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "lexrag_http_requests_total",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "lexrag_http_request_duration_seconds",
            "Time from request to the end of the response (whole stream included).",
            ["route"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.in_flight = Gauge("lexrag_in_flight_requests", "API requests being served.", registry=r)
        self.requests = Counter(
            "lexrag_requests_total",
            "LLM requests (chat completions, /v1/generate) by the provider that answered (or was "
            "tried last; 'none' before one was chosen) and status: the HTTP status, or for a stream "
            "cut after it started, the status of the error that cut it.",
            ["provider", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "lexrag_request_duration_seconds",
            "LLM request latency, retries, fallbacks and the whole stream included.",
            ["provider"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.ttft = Histogram(
            "lexrag_time_to_first_token_seconds",
            "Time from request to the first token of a streamed answer.",
            ["provider"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.tokens = Counter(
            "lexrag_tokens_total",
            "Tokens by provider and kind (prompt, completion).",
            ["provider", "kind"],
            registry=r,
        )
        self.retries = Counter(
            "lexrag_retries_total",
            "Retries of a provider after a transient failure.",
            ["provider"],
            registry=r,
        )
        self.fallbacks = Counter(
            "lexrag_fallbacks_total",
            "Requests answered by a provider later in the chain than the one asked for.",
            ["provider"],
            registry=r,
        )
        self.retrieval = Histogram(
            "lexrag_retrieval_duration_seconds",
            "Time to retrieve passages and fit them into the prompt.",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.rewrites = Counter(
            "lexrag_query_rewrites_total",
            "Follow-up questions sent to [retrieval] rewrite_provider to be rewritten, by provider "
            "and outcome: ok, empty, timeout, or the error's code (all but ok fall back to the "
            "combined turns).",
            ["provider", "outcome"],
            registry=r,
        )
        self.rewrite_duration = Histogram(
            "lexrag_query_rewrite_duration_seconds",
            "Time the rewrite call of a follow-up question took (bounded by rewrite_timeout_s).",
            ["provider"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )

        self.key_requests = Counter(
            "lexrag_key_requests_total",
            "LLM requests by the name of the API key (api_keys[i] or [server.keys.NAME]) and status.",
            ["key", "status"],
            registry=r,
        )
        self.key_tokens = Counter(
            "lexrag_key_tokens_total",
            "Tokens by the name of the API key and kind (prompt, completion); cache hits not counted.",
            ["key", "kind"],
            registry=r,
        )
        self.cache = Counter(
            "lexrag_cache_requests_total",
            "Chat requests the response cache was asked about, by result (hit, miss).",
            ["result"],
            registry=r,
        )

    def watch_breakers(self, states: Callable[[], Mapping[str, BreakerState]]) -> None:
        self.registry.register(_BreakerCollector(states))

    def watch_load(self, router: Callable[[], Router]) -> None:
        """Report the load of ``router()``'s providers that run their own model."""
        self.registry.register(_LoadCollector(router))

    def observe_http(self, method: str, path: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else "other"
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_latency.labels(route).observe(seconds)

    def observe_call(self, call: CallRecord) -> None:
        """Count an LLM request from its record."""
        tried = call.tried
        provider = call.provider or (tried[-1] if tried else "none")
        status = call.error_status or call.status or 500
        self.requests.labels(provider, str(status)).inc()
        if call.latency_s is not None:
            self.duration.labels(provider).observe(call.latency_s)
        if call.ttft_s is not None:
            self.ttft.labels(provider).observe(call.ttft_s)
        if call.prompt_tokens:
            self.tokens.labels(provider, "prompt").inc(call.prompt_tokens)
        if call.completion_tokens:
            self.tokens.labels(provider, "completion").inc(call.completion_tokens)
        for name in tried:
            retries = sum(1 for a in call.attempts if a.provider == name) - 1
            if retries:
                self.retries.labels(name).inc(retries)
        if call.fallback and call.provider:
            self.fallbacks.labels(call.provider).inc()
        if call.retrieval_s is not None:
            self.retrieval.observe(call.retrieval_s)
        if call.cache is not None:
            self.cache.labels(call.cache).inc()
        if call.key is not None:
            self.key_requests.labels(call.key, str(status)).inc()
            if call.cache != "hit":
                if call.prompt_tokens:
                    self.key_tokens.labels(call.key, "prompt").inc(call.prompt_tokens)
                if call.completion_tokens:
                    self.key_tokens.labels(call.key, "completion").inc(call.completion_tokens)
        if call.rewrite is not None:
            self.rewrites.labels(call.rewrite["provider"], call.rewrite["outcome"]).inc()
            self.rewrite_duration.labels(call.rewrite["provider"]).observe(call.rewrite["s"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["LLM_ROUTES", "LOAD_GAUGES", "ROUTES", "Metrics", "ReportsLoad"]
