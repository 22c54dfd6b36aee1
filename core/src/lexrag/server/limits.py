"""Request size and concurrency limits, as plain ASGI middleware (no per-request overhead
beyond a header look-up and a counter)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLargeError, RateLimitError
from .errors import send_error

#: Seconds a client is told to wait when the server is at its concurrency limit.
BUSY_RETRY_AFTER_S = 1.0


async def _reject(send: Send, limit: int) -> None:
    exc = PayloadTooLargeError(
        f"request body is larger than this server's limit of {limit} bytes ([server] max_body_bytes); "
        "send less text or raise the limit",
    )
    await send_error(send, exc)


class ConcurrencyLimitMiddleware:
    """Answers 429 with ``Retry-After`` when ``limit()`` API requests (``/v1/…``) are being
    served already, rather than queueing them without end. A stream counts until it ends."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        if self.in_flight >= limit:
            exc = RateLimitError(
                f"the server is busy: it answers at most {limit} requests at once ([server] "
                f"max_concurrency); retry after {BUSY_RETRY_AFTER_S:g} s",
                retry_after=BUSY_RETRY_AFTER_S,
            )
            await send_error(send, exc)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class BodyLimitMiddleware:
    """Answers 413 to a body over ``max_bytes``: at once from ``Content-Length``, or after
    reading at most ``max_bytes`` of a chunked body (which is then replayed to the app)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = int(value) if value.isdigit() else None
                break
        if length is not None:
            # The HTTP server enforces Content-Length, so the header alone decides.
            if length > self.max_bytes:
                await _reject(send, self.max_bytes)
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await _reject(send, self.max_bytes)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


__all__ = ["BUSY_RETRY_AFTER_S", "BodyLimitMiddleware", "ConcurrencyLimitMiddleware"]
