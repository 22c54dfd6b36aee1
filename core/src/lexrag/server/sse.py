"""Server-sent events in OpenAI's framing: ``data: {chunk}\n\n`` … ``data: [DONE]\n\n``.

A stream that fails after it started (the provider broke off, the server is shutting down)
ends with an error event, ``data: {"error": {"message", "type", "param", "code"}}`` (the
body OpenAI's SDKs raise as ``APIError``), then ``data: [DONE]``. No chunk carries a finish
reason of its own for it: a client that reads only chunks sees an answer without one, which
OpenAI's clients already read as incomplete."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable

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


def chunk_events(
    first: ChatCompletionChunk,
    rest: AsyncIterator[ChatCompletionChunk],
    *,
    stop: Callable[[], bool] = _never,
) -> AsyncIterator[bytes]:
    """The SSE body: every chunk, then ``[DONE]``, ended as :func:`ended_stream` says. Usage
    and the answer go to the call record."""

    async def body() -> AsyncGenerator[bytes, None]:
        call = calllog.current()
        yield chunk_event(first)
        _note(call, first)
        async for chunk in rest:
            _note(call, chunk)
            yield chunk_event(chunk)
            check_stop(stop)

    return ended_stream(body(), rest)


def check_stop(stop: Callable[[], bool]) -> None:
    """Raise :class:`StreamCutShort` once ``stop()`` is true (the server is shutting down)."""
    if stop():
        raise StreamCutShort("the server is shutting down and ended this answer early; ask again")


async def ended_stream(
    body: AsyncGenerator[bytes, None],
    rest: AsyncIterator[object],
    tail: Callable[[], list[bytes]] | None = None,
) -> AsyncIterator[bytes]:
    """The events of ``body`` (made from the provider's stream ``rest``), then ``tail()``'s,
    then ``[DONE]``. A failure in ``body`` (the provider broke off, :func:`check_stop` found
    the server shutting down) ends it with an error event, kept in the call record, and
    ``[DONE]`` instead: the client never hangs or sees a silent truncation. ``rest`` is
    closed however the stream ends, a client that went away included."""
    call = calllog.current()
    error: LexragError | None = None
    try:
        async for event in body:
            yield event
    except LexragError as exc:
        log.warning("stream ended by an error: %s", exc.message)
        error = exc
    except Exception as exc:
        log.error("stream failed", exc_info=exc)
        error = internal_error()
    finally:
        await body.aclose()
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
    if error is not None:
        call.error, call.error_status = error.code, error.status
        yield error_event(error)
    elif tail is not None:
        for event in tail():
            yield event
    yield DONE


def _note(call: calllog.CallRecord, chunk: ChatCompletionChunk) -> None:
    call.usage(chunk.usage)
    for choice in chunk.choices:
        call.keep_answer(choice.delta.content)


__all__ = [
    "DONE",
    "StreamCutShort",
    "check_stop",
    "chunk_event",
    "chunk_events",
    "ended_stream",
    "error_event",
]
