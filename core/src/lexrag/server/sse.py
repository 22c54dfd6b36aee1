"""Server-sent events in OpenAI's framing: ``data: {chunk}\n\n`` … ``data: [DONE]\n\n``.

A stream that fails after it started (the provider broke off, the server is shutting down)
ends with an error event, ``data: {"error": {"message", "type", "param", "code"}}`` (the
body OpenAI's SDKs raise as ``APIError``), then ``data: [DONE]``. No chunk carries a finish
reason of its own for it: a client that reads only chunks sees an answer without one, which
OpenAI's clients already read as incomplete."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

from .. import calllog
from ..errors import LexragError, StreamCutShort, error_body
from ..types import ChatCompletionChunk
from .errors import internal_error

log = logging.getLogger("lexrag.server")

DONE = b"data: [DONE]\n\n"


def chunk_event(chunk: ChatCompletionChunk) -> bytes:
    body = chunk.model_dump_json(exclude={"sources"} if chunk.sources is None else None)
    return b"data: " + body.encode() + b"\n\n"


def error_event(exc: LexragError) -> bytes:
    """An error after the stream started: the body OpenAI's SDKs raise as ``APIError``."""
    return b"data: " + json.dumps(error_body(exc), ensure_ascii=False).encode() + b"\n\n"


def _never() -> bool:
    return False


async def chunk_events(
    first: ChatCompletionChunk,
    rest: AsyncIterator[ChatCompletionChunk],
    *,
    stop: Callable[[], bool] = _never,
) -> AsyncIterator[bytes]:
    """The SSE body: every chunk, then ``[DONE]``. A failure mid-stream, or ``stop()``
    turning true (the server shutting down), ends it with an error event and ``[DONE]``:
    the client never hangs or sees a silent truncation. Usage and the answer go to the
    call record."""
    call = calllog.current()
    error: LexragError | None = None
    try:
        yield chunk_event(first)
        _note(call, first)
        async for chunk in rest:
            _note(call, chunk)
            yield chunk_event(chunk)
            if stop():
                raise StreamCutShort("the server is shutting down and ended this answer early; ask again")
    except LexragError as exc:
        log.warning("stream ended by an error: %s", exc.message)
        error = exc
    except Exception as exc:
        log.error("stream failed", exc_info=exc)
        error = internal_error()
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
    if error is not None:
        call.error, call.error_status = error.code, error.status
        yield error_event(error)
    yield DONE


def _note(call: calllog.CallRecord, chunk: ChatCompletionChunk) -> None:
    call.usage(chunk.usage)
    for choice in chunk.choices:
        call.keep_answer(choice.delta.content)


__all__ = ["DONE", "StreamCutShort", "chunk_event", "chunk_events", "error_event"]
