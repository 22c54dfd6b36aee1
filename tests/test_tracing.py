"""OpenTelemetry traces: the span tree of a request, retries and fallbacks, the caller's
``traceparent`` continued and passed upstream, off by default; spans read with the SDK's
in-memory exporter from the real server (uvicorn in a thread, the real openai SDK as client)."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from lexrag import ConfigError, tracing
from lexrag.registry import Registry, build_retriever

from .fakes import Fail, FakeUpstream
from .fixtures_local import serving
from .fixtures_resilience import QUESTION, ask, chain_config
from .fixtures_retrieval import index_config
from .test_retrieval_conversation import MARRIAGE, RewriterPlugin, _chat, _pipeline

CHAT = "POST /v1/chat/completions"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use(exporter)
    yield exporter
    tracing.shutdown()


def _trace(exporter: InMemorySpanExporter, root: str = CHAT, wait: float = 5.0) -> list[ReadableSpan]:
    """The spans once the request's span has ended (after the whole response was sent)."""
    deadline = time.monotonic() + wait
    while not any(s.name == root for s in exporter.get_finished_spans()):
        assert time.monotonic() < deadline, (
            f"no span {root!r}: {[s.name for s in exporter.get_finished_spans()]}"
        )
        time.sleep(0.01)
    return list(exporter.get_finished_spans())


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


@pytest.mark.parametrize("stream", [False, True])
def test_a_rag_chat_is_one_trace_with_a_span_per_step(start_server, two_upstreams, spans, stream):
    primary, _ = two_upstreams
    served = start_server(chain_config(primary))
    outcome = ask(served.base, stream=stream)
    assert outcome.kind == "answer", outcome
    trace = _trace(spans)
    assert len({s.context.trace_id for s in trace}) == 1
    root = _one(trace, CHAT)
    assert root.parent is None and root.kind == SpanKind.SERVER
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["lexrag.request_id"] == outcome.request_id
    assert root.attributes["lexrag.provider"] == "openai"
    names = [s.name for s in sorted(_children(trace, root), key=lambda s: s.start_time or 0)]
    expected = ["lexrag.validate", "lexrag.retrieve", "lexrag.prompt", "chat primary-model"]
    assert names == [*expected, "lexrag.stream"] if stream else expected
    assert _one(trace, "lexrag.retrieve").attributes["lexrag.retrieval.passages"] > 0

    attempt = _one(trace, "chat primary-model")
    assert attempt.kind == SpanKind.CLIENT and attempt.status.status_code == StatusCode.UNSET
    attrs = attempt.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "primary-model"
    assert attrs["gen_ai.response.model"] == "primary-model"
    assert attrs["lexrag.attempt"] == 1 and attrs["lexrag.fallback"] is False
    # The whole answer's usage and finish reason: on the attempt, or for a stream, on the span
    # of the streaming that follows its first token.
    answer = _one(trace, "lexrag.stream") if stream else attempt
    usage = answer.attributes
    assert usage["gen_ai.response.finish_reasons"] == ("stop",)
    assert usage["gen_ai.usage.input_tokens"] > 0 and usage["gen_ai.usage.output_tokens"] > 0
    if stream:
        assert usage["lexrag.chunks"] > 1
        assert answer.start_time >= attempt.end_time  # streaming starts after the first token


@pytest.mark.parametrize("stream", [False, True])
def test_retries_and_the_fallback_are_spans_of_their_own(start_server, two_upstreams, spans, stream):
    primary, backup = two_upstreams
    served = start_server(chain_config(primary, backup, max_retries=1))
    primary.script(Fail(500), Fail(500))
    assert ask(served.base, stream=stream).provider == "openai-backup"
    trace = _trace(spans)
    root = _one(trace, CHAT)
    attempts = sorted(
        (s for s in _children(trace, root) if s.name.startswith("chat ")), key=lambda s: s.start_time or 0
    )
    assert [(s.name, s.attributes["lexrag.attempt"], s.attributes["lexrag.fallback"]) for s in attempts] == [
        ("chat primary-model", 1, False),
        ("chat primary-model", 2, False),
        ("chat backup-model", 1, True),
    ]
    for failed in attempts[:2]:
        assert failed.status.status_code == StatusCode.ERROR
        assert failed.attributes["error.type"] and "500" in (failed.status.description or "")
    assert attempts[2].status.status_code == StatusCode.UNSET
    assert attempts[2].attributes["gen_ai.provider.name"] == "openai-backup"
    assert attempts[2].attributes["lexrag.chain.position"] == 1
    assert root.attributes["lexrag.provider"] == "openai-backup"


def test_the_callers_traceparent_is_continued_and_passed_upstream(start_server, two_upstreams, spans):
    primary, _ = two_upstreams
    served = start_server(chain_config(primary))
    response = httpx.post(
        f"{served.base}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}]},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    trace = _trace(spans)
    assert {f"{s.context.trace_id:032x}" for s in trace} == {TRACE_ID}
    root = _one(trace, CHAT)
    assert root.parent is not None and root.parent.is_remote and f"{root.parent.span_id:016x}" == PARENT_ID
    # The upstream's parent is the attempt that called it.
    attempt = _one(trace, "chat primary-model")
    assert primary.requests[-1].headers["traceparent"] == f"00-{TRACE_ID}-{attempt.context.span_id:016x}-01"


def test_traces_are_off_by_default(start_server, two_upstreams, monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure() is False
    assert not tracing.enabled()
    assert tracing.span("x") is tracing.OFF and tracing.headers() == {}
    primary, _ = two_upstreams
    served = start_server(chain_config(primary))
    assert ask(served.base, stream=True).kind == "answer"
    assert ask(served.base, stream=False).kind == "answer"
    assert all("traceparent" not in r.headers for r in primary.requests)
    assert not tracing.enabled()


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_the_otel_variables_choose_the_exporters(environ, exporters):
    assert tracing.exporters_from(environ) == exporters


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'",
        ),
    ],
)
def test_an_otel_value_lexrag_cannot_honour_is_a_config_error(environ, named):
    with pytest.raises(ConfigError, match=named):
        tracing.exporters_from(environ)


def _part_spans(retriever: Any, exporter: InMemorySpanExporter) -> list[str]:
    """The retrievers named by the part spans of one search under a span of the test's own."""
    try:
        with tracing.span("request"):
            assert retriever.search("thời giờ làm việc bình thường", 5)
    finally:
        retriever.close()
    trace = _trace(exporter, "request")
    parts = [s for s in _children(trace, _one(trace, "request")) if s.name == "lexrag.retrieve.part"]
    # Parts that run as one (the PostgreSQL hybrid pipelines its parts' statements) share a span.
    return sorted(name for s in parts for name in str(s.attributes["lexrag.retriever"]).split(","))


def test_each_part_of_the_hybrid_retriever_has_a_span(sample_index: Path, session_registry: Registry, spans):
    retriever = build_retriever(index_config(sample_index, session_registry), session_registry, "hybrid")
    assert _part_spans(retriever, spans) == ["bm25", "dense", "phrasings"]


def test_each_part_of_the_postgres_hybrid_retriever_has_a_span(
    pg_sample_url, pg_config, session_registry, spans
):
    retriever = build_retriever(pg_config(pg_sample_url), session_registry, "pg-hybrid")
    assert _part_spans(retriever, spans) == ["pg-bm25", "pg-dense", "phrasings"]


class _Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP collector on loopback that keeps the spans it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []  # (service.name, span)

        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
                for resource_spans in request.resource_spans:
                    service = next(
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    )
                    for scope_spans in resource_spans.scope_spans:
                        collector.spans += [(service, s) for s in scope_spans.spans]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_lexrag_serve_exports_to_an_otlp_collector_when_the_otel_variables_say_so(tmp_path):
    collector = _Collector()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_SERVICE_NAME": "lexrag-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OPENAI_API_KEY": "unused",
    }
    try:
        with FakeUpstream(model="primary-model") as primary:
            config = (
                '[llm]\nprovider = "openai"\n[retrieval]\nenabled = false\n'
                f'[providers.openai]\nbase_url = "{primary.base_url}"\nmodel = "primary-model"\n'
            )
            with serving(config, tmp_path, timeout=60, env=env) as served:
                response = httpx.post(
                    f"{served.base}/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": QUESTION}], "stream": True},
                    headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
                    timeout=20,
                )
                assert response.status_code == 200 and "[DONE]" in response.text
                deadline = time.monotonic() + 10
                while not any(s.name == CHAT for _, s in collector.spans):
                    assert time.monotonic() < deadline, f"nothing exported: {served.output_so_far()}"
                    time.sleep(0.05)
            assert primary.requests[-1].headers["traceparent"].startswith(f"00-{TRACE_ID}-")
        assert "traces: on" in served.output
    finally:
        collector.shutdown()
    names = {s.name for _, s in collector.spans}
    assert {CHAT, "lexrag.validate", "chat primary-model", "lexrag.stream"} <= names
    assert {service for service, _ in collector.spans} == {"lexrag-test"}
    assert {s.trace_id.hex() for _, s in collector.spans} == {TRACE_ID}


@pytest.mark.parametrize("api", ["chat", "generate"])
def test_the_local_providers_http_mode_passes_the_trace_on(fake_upstream, spans, api):
    from lexrag import ChatMessage, ProviderRequest
    from lexrag_local.provider import LocalProvider
    from lexrag_local.settings import LocalSettings

    provider = LocalProvider("local", LocalSettings(url=fake_upstream.url, api=api))
    request = ProviderRequest(messages=[ChatMessage(role="user", content=QUESTION)])

    async def go() -> None:
        try:
            with tracing.span("attempt"):
                await provider.complete(request)
        finally:
            await provider.aclose()

    asyncio.run(go())
    attempt = _one(_trace(spans, "attempt"), "attempt")
    context = attempt.context
    _version, trace_id, parent_id, flags = fake_upstream.requests[-1].headers["traceparent"].split("-")
    assert (trace_id, parent_id) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled


def test_the_rewrite_of_a_follow_up_is_a_span(sample_index, pm, tmp_path, spans):
    pm.register(RewriterPlugin(), name="lexrag-test-rewriter")
    pipeline = _pipeline(sample_index, Registry(pm), tmp_path, {"retrieval.rewrite_provider": "rewriter"})
    with tracing.span("request"):
        assert (
            asyncio.run(pipeline.retrieval_query(_chat(MARRIAGE).messages))
            == "Nữ bao nhiêu tuổi thì được kết hôn?"
        )
    trace = _trace(spans, "request")
    rewrite = _one(trace, "lexrag.rewrite")
    assert rewrite.parent is not None and rewrite.parent.span_id == _one(trace, "request").context.span_id
    assert rewrite.attributes["gen_ai.provider.name"] == "rewriter"
    assert rewrite.status.status_code == StatusCode.UNSET
