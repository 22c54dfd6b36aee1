"""Server-sent events in OpenAI's framing: ``data: {chunk}\n\n`` … ``data: [DONE]\n\n``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

from .. import calllog
from ..errors import LexragError, StreamCutShort, error_body
from ..types import ChatCompletionChunk, ChunkChoice, Delta
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


def _error_end(last: ChatCompletionChunk, exc: LexragError) -> list[bytes]:
    """The end of a stream cut by ``exc``: a chunk with ``finish_reason: "error"`` (unless
    the answer had finished already) so that a client reading only chunks knows the answer
    is incomplete, then the error event that OpenAI's SDKs raise."""
    events = []
    if not any(c.finish_reason for c in last.choices):
        finish = ChatCompletionChunk(
            id=last.id,
            created=last.created,
            model=last.model,
            choices=[ChunkChoice(delta=Delta(), finish_reason="error")],
        )
        events.append(chunk_event(finish))
    events.append(error_event(exc))
    return events


async def chunk_events(
    first: ChatCompletionChunk,
    rest: AsyncIterator[ChatCompletionChunk],
    *,
    stop: Callable[[], bool] = _never,
) -> AsyncIterator[bytes]:
    """The SSE body: every chunk, then ``[DONE]``. A failure mid-stream, or ``stop()``
    turning true (the server shutting down), ends it with a chunk whose ``finish_reason``
    is ``"error"``, an error event and ``[DONE]``: the client never hangs or sees a
    silent truncation. Usage and the answer go to the call record."""
    call = calllog.current()
    last = first
    error: LexragError | None = None
    try:
        yield chunk_event(first)
        _note(call, first)
        async for chunk in rest:
            last = chunk
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
        for event in _error_end(last, error):
            yield event
    yield DONE


def _note(call: calllog.CallRecord, chunk: ChatCompletionChunk) -> None:
    call.usage(chunk.usage)
    for choice in chunk.choices:
        call.keep_answer(choice.delta.content)


__all__ = ["DONE", "StreamCutShort", "chunk_event", "chunk_events", "error_event"]
