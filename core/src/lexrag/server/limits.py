"""Request size limit, as plain ASGI middleware (no per-request overhead beyond a header look-up)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLargeError, http_error


async def _reject(send: Send, limit: int) -> None:
    exc = PayloadTooLargeError(
        f"request body is larger than this server's limit of {limit} bytes ([server] max_body_bytes); "
        "send less text or raise the limit",
    )
    status, body, headers = http_error(exc)
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


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


__all__ = ["BodyLimitMiddleware"]
