"""Server-sent events in OpenAI's framing: ``data: {chunk}\n\n`` … ``data: [DONE]\n\n``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from ..errors import LexragError, error_body
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


async def chunk_events(
    first: ChatCompletionChunk, rest: AsyncIterator[ChatCompletionChunk]
) -> AsyncIterator[bytes]:
    """The SSE body: every chunk, then ``[DONE]``; a failure mid-stream becomes an error
    event followed by ``[DONE]``, so the client never hangs or sees a silent truncation."""
    try:
        yield chunk_event(first)
        async for chunk in rest:
            yield chunk_event(chunk)
    except LexragError as exc:
        log.warning("stream ended by an error: %s", exc.message)
        yield error_event(exc)
    except Exception as exc:
        log.error("stream failed", exc_info=exc)
        yield error_event(internal_error())
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
    yield DONE


__all__ = ["DONE", "chunk_event", "chunk_events", "error_event"]
