"""The outermost middleware: request id, the config generation, the call record.

For every HTTP request it takes (or makes) the request id and echoes it as
``x-request-id``, leases the current config generation (see :mod:`.state`), makes a
:class:`~lexrag.calllog.CallRecord` current, adds ``x-lexrag-provider`` (who answered)
to the response head, and when the response has been sent — the whole stream — writes
the call log line and the metrics. ``GET /health`` and ``GET /metrics`` are counted but
not logged, so probes and scrapes do not flood the call log.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import calllog, tracing
from ..calllog import CallRecord
from .errors import internal_error, send_error
from .metrics import LLM_ROUTES, ROUTES
from .state import SCOPE_KEY, ServerState

log = logging.getLogger("lexrag.server")

#: A client's request id is kept when it looks like one (no spaces or control
#: characters that could forge log lines); otherwise a new one is made.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_UNLOGGED = frozenset({"/health", "/metrics"})


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


class RequestMiddleware:
    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        call = CallRecord(request_id=_request_id(scope), method=scope["method"], path=path)
        generation = self.state.lease()
        scope.setdefault("state", {})[SCOPE_KEY] = generation
        if generation.config.settings.logging.log_bodies:
            call.answer = []
        metrics = self.state.metrics
        api = path.startswith("/v1/")
        status = 500
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = MutableHeaders(scope=message)
                headers.append("x-request-id", call.request_id)
                if call.provider is not None:
                    headers.append("x-lexrag-provider", call.provider)
                if call.cache is not None:
                    headers.append("x-lexrag-cache", call.cache)
            await send(message)

        if api:
            metrics.in_flight.inc()
        try:
            # Probes and scrapes are not traced, as they are not logged.
            traced = (
                tracing.server_span(scope["method"], path, path if path in ROUTES else None, scope["headers"])
                if path not in _UNLOGGED
                else tracing.OFF
            )
            with calllog.recording(call), traced as span:
                span.set_attribute("lexrag.request_id", call.request_id)
                try:
                    await self.app(scope, receive, send_with_headers)
                except Exception as exc:
                    # Handled here rather than by Starlette's outermost handler, so the
                    # answer still carries the request id and the call is logged.
                    if started:
                        raise
                    log.error(
                        "%s %s failed (request %s)", scope["method"], path, call.request_id, exc_info=exc
                    )
                    await send_error(send_with_headers, internal_error())
                _traced(span, call, status)
        finally:
            if api:
                metrics.in_flight.dec()
            call.status = status
            call.latency_s = call.elapsed()
            metrics.observe_http(scope["method"], path, status, time.perf_counter() - call.started)
            if path in LLM_ROUTES:
                metrics.observe_call(call)
            if path not in _UNLOGGED:
                call.write()
            await self.state.release(generation)


def _traced(span: tracing.Span, call: CallRecord, status: int) -> None:
    """The request span's outcome: the status, who answered, why it failed."""
    if not span.is_recording():
        return
    span.set_attribute("http.response.status_code", status)
    if call.provider is not None:
        span.set_attribute("lexrag.provider", call.provider)
    # A 4xx is the client's doing, not a failure of the server (HTTP conventions); a stream
    # cut after its 200 is.
    if status >= 500 or (status < 400 and call.error is not None):
        tracing.failed(span, call.error or str(status))


__all__ = ["RequestMiddleware"]
