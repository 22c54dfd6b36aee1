"""Exception handlers: every error leaves as an OpenAI error body, never a traceback.

The status and body of a :class:`~lexrag.errors.LexragError` come from
:func:`lexrag.errors.http_error`, the one place that maps errors to HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from .. import calllog
from ..errors import InvalidRequestError, LexragError, NotFoundError, http_error

log = logging.getLogger("lexrag.server")


def error_response(exc: LexragError) -> JSONResponse:
    calllog.current().error = exc.code
    status, body, headers = http_error(exc)
    return JSONResponse(body, status_code=status, headers=headers)


async def send_error(send: Send, exc: LexragError, headers: Mapping[str, str] | None = None) -> None:
    """Answer with ``exc`` from plain ASGI middleware (no Request/Response objects)."""
    calllog.current().error = exc.code
    status, body, extra = http_error(exc)
    payload = json.dumps(body, ensure_ascii=False).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in {**extra, **(headers or {})}.items()
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def internal_error() -> LexragError:
    return LexragError("internal server error; the server log has the details")


def param_of(loc: Sequence[Any]) -> str | None:
    """``("body", "messages", 0, "role")`` → ``messages[0].role``."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("the request body is invalid")
    err = errors[0]
    if err.get("type") == "json_invalid":
        detail = err.get("ctx", {}).get("error", "")
        return InvalidRequestError(
            f"the request body is not valid JSON ({detail}); send a JSON object", code="invalid_json"
        )
    param = param_of(err.get("loc", ()))
    if param is None:
        return InvalidRequestError("the request body must be a JSON object (Content-Type: application/json)")
    message = err.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    where = param or "body"
    return InvalidRequestError(f"{where}: {message}{more}", param=param)


async def _on_lexrag_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LexragError)
    if exc.status >= 500:
        log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message)
    return error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(validation_error(exc))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error: LexragError
    if exc.status_code == 404:
        error = NotFoundError(f"no route {request.method} {request.url.path}; see /docs for the API")
    else:
        error = InvalidRequestError(str(exc.detail))
        error.status = exc.status_code
    calllog.current().error = error.code
    status, body, headers = http_error(error)
    return JSONResponse(body, status_code=status, headers={**headers, **(exc.headers or {})})


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(internal_error())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LexragError, _on_lexrag_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)


__all__ = [
    "error_response",
    "install_error_handlers",
    "internal_error",
    "param_of",
    "send_error",
    "validation_error",
]
