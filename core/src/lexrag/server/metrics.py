"""A basic ``/metrics`` (Prometheus): request counts and latencies by route and status."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Routes labelled by their path; anything else is counted as ``other`` so a scan of
#: random URLs cannot blow up the label set.
ROUTES = frozenset(
    {"/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/generate", "/health", "/metrics", "/"}
)


class Metrics:
    """The server's collectors, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lexrag_http_requests_total",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lexrag_http_request_duration_seconds",
            "Time from request to the end of the response (whole stream included).",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request and times it, as plain ASGI middleware."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        route = scope["path"] if scope["path"] in ROUTES else "other"
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


__all__ = ["ROUTES", "Metrics", "MetricsMiddleware"]
