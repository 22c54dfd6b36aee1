"""OpenTelemetry traces: one trace per request, off unless the ``OTEL_*`` variables ask.

:func:`configure` reads the standard environment variables once, when ``lexrag serve``
starts: traces are on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp`` or
``console``) or an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and ``OTEL_SDK_DISABLED`` is not ``true``. The
SDK itself reads the rest (``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_HEADERS``…). OTLP goes over HTTP (protobuf).

The rest of lexrag calls :func:`span`, :func:`start_span` and :func:`headers`. While traces
are off each is a check of one module variable: no span object, no context switch, no
exporter. Plugins reach them as ``lexrag.trace_span`` and ``lexrag.trace_headers``.

Spans follow the OpenTelemetry GenAI semantic conventions for provider calls
(``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.*``, ``gen_ai.response.finish_reasons``) and the
HTTP ones for the server span; lexrag's own attributes are ``lexrag.*``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from .errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

#: Exporters ``OTEL_TRACES_EXPORTER`` may name (others need packages lexrag does not ship).
EXPORTERS = ("otlp", "console")
#: The OTLP protocol lexrag installs an exporter for.
PROTOCOL = "http/protobuf"

Attributes = Mapping[str, str | bool | int | float | Sequence[str]]

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


class _Off(AbstractContextManager[Span]):
    """What :func:`span` returns while traces are off: enters as the invalid span, whose
    methods do nothing."""

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


OFF: AbstractContextManager[Span] = _Off()
"""A span context that does nothing (what :func:`span` returns while traces are off)."""


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def exporters_from(environ: Mapping[str, str]) -> list[str]:
    """The exporters the environment asks for; empty means traces stay off. A
    :class:`ConfigError` names the variable and value lexrag cannot honour."""
    if _true(environ.get("OTEL_SDK_DISABLED")):
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not named:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    names = [n.strip().lower() for n in named.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={named!r}: lexrag exports traces with "
            f"{' or '.join(EXPORTERS)} (or none); {', '.join(unknown)} is not installed"
        )
    if "otlp" in names:
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", PROTOCOL
        )
        if protocol != PROTOCOL:
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: lexrag's OTLP exporter speaks "
                f"{PROTOCOL} only; set {PROTOCOL} (a collector listens for it on port 4318)"
            )
    return names


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Turn traces on as the ``OTEL_*`` variables of ``environ`` (default: the process's)
    say, with a batching exporter each; returns whether they are on."""
    names = exporters_from(os.environ if environ is None else environ)
    if not names:
        return False
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        else:
            exporters.append(ConsoleSpanExporter())
    _install([BatchSpanProcessor(e) for e in exporters])
    return True


def use(exporter: SpanExporter) -> None:
    """Send every span to ``exporter`` as it ends (tests: the SDK's ``InMemorySpanExporter``)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    _install([SimpleSpanProcessor(exporter)])


def _install(processors: Iterable[Any]) -> None:
    global _provider, _tracer
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    shutdown()
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "lexrag"}))
    provider = TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("lexrag")


def shutdown() -> None:
    """Export what is pending and turn traces off."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


# --- spans ------------------------------------------------------------------------------


def span(
    name: str, attributes: Attributes | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> AbstractContextManager[Span]:
    """A child of the current span, current within the ``with`` block (which must not
    straddle a ``yield``: use :func:`start_span` there). Off: a no-op."""
    if _tracer is None:
        return OFF
    return _tracer.start_as_current_span(name, attributes=attributes, kind=kind, record_exception=False)


def start_span(name: str, attributes: Attributes | None = None) -> Span:
    """A child of the current span that is not made current: for a span that outlives one
    step of a generator (a stream). The caller ends it. Off: the invalid span."""
    if _tracer is None:
        return INVALID_SPAN
    return _tracer.start_span(name, attributes=attributes)


@contextmanager
def _server(name: str, carrier: dict[str, str], attributes: Attributes) -> Iterator[Span]:
    from opentelemetry import propagate

    assert _tracer is not None
    parent = propagate.extract(carrier)
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
    ) as current:
        yield current


def server_span(
    method: str, path: str, route: str | None, raw_headers: Iterable[tuple[bytes, bytes]]
) -> AbstractContextManager[Span]:
    """The span of one HTTP request, continuing the caller's trace when its headers carry a
    W3C ``traceparent``; named by ``route`` (None: a path that is not one of lexrag's, named
    by the method alone so random URLs do not multiply span names). Off: a no-op."""
    if _tracer is None:
        return OFF
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
    attributes: dict[str, str] = {"http.request.method": method, "url.path": path}
    if route is not None:
        attributes["http.route"] = route
    return _server(f"{method} {route}" if route else method, carrier, attributes)


def headers() -> dict[str, str]:
    """The headers that carry the current trace to an upstream (W3C ``traceparent``, and
    ``tracestate`` when there is one); empty while traces are off."""
    if _tracer is None:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def failed(current: Span, error_type: str, message: str = "") -> None:
    """Mark ``current`` as failed: status ERROR and ``error.type``."""
    if current.is_recording():
        current.set_attribute("error.type", error_type)
        current.set_status(Status(StatusCode.ERROR, message or None))


# --- GenAI semantic conventions --------------------------------------------------------


def genai_request(
    operation: str,
    provider: str,
    model: str | None,
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
) -> dict[str, Any]:
    """The request attributes of a provider call (``gen_ai.*``)."""
    return {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        **_given(
            ("gen_ai.request.model", model),
            ("gen_ai.request.max_tokens", max_tokens),
            ("gen_ai.request.temperature", temperature),
            ("gen_ai.request.top_p", top_p),
        ),
    }


def genai_response(
    current: Span,
    *,
    model: str | None = None,
    response_id: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    finish_reasons: Sequence[str] = (),
) -> None:
    """Set the response attributes of a provider call (``gen_ai.response.*``, ``gen_ai.usage.*``)."""
    if not current.is_recording():
        return
    current.set_attributes(
        _given(
            ("gen_ai.response.model", model),
            ("gen_ai.response.id", response_id),
            ("gen_ai.usage.input_tokens", input_tokens),
            ("gen_ai.usage.output_tokens", output_tokens),
            ("gen_ai.response.finish_reasons", list(finish_reasons) or None),
        )
    )


def _given(*pairs: tuple[str, Any]) -> dict[str, Any]:
    """The attributes whose value is known (None: left out)."""
    return {key: value for key, value in pairs if value is not None}


__all__ = [
    "EXPORTERS",
    "OFF",
    "PROTOCOL",
    "Span",
    "SpanKind",
    "configure",
    "enabled",
    "exporters_from",
    "failed",
    "genai_request",
    "genai_response",
    "headers",
    "server_span",
    "shutdown",
    "span",
    "start_span",
    "use",
]
