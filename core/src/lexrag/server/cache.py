"""The response cache (``[cache]``, off by default): a repeated deterministic chat request
is answered from memory, without retrieval or a provider call.

The key is a digest of the request as validated (messages, model, sampling parameters,
retrieval settings and filters; not ``stream``, ``stream_options`` or bookkeeping fields
such as ``user`` and ``metadata``), the config that shapes answers (everything but
``[server]``, ``[logging]`` and ``[cache]``), the index's generation (an ingest changes it,
so every cached answer over the old index misses), the UTC day (a law's status depends on
it) and, unless ``shared = true``, the API key's name. Only requests with a temperature at
most ``max_temperature`` and a plain text answer (no tool calls, log probabilities or
refusal) are kept. A cached answer is replayed as a whole ``chat.completion`` or, with
``stream=true``, as chunk events. One cache per process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cachetools import TTLCache

from .. import calllog
from ..errors import LexragError
from ..registry import open_index
from ..types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkFactory,
    FinishReason,
    Source,
    Usage,
)

if TYPE_CHECKING:
    from ..config import CacheSettings, Config
    from ..registry import Registry
    from ..retrieval import IndexStore

log = logging.getLogger("lexrag.server")

#: The value of the ``x-lexrag-cache`` header.
HEADER = "x-lexrag-cache"
#: Request fields that do not change the answer.
_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier"})


@dataclass(frozen=True)
class Entry:
    """A cached answer."""

    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage | None
    sources: list[Source] | None
    notice: str | None = None

    def completion(self) -> ChatCompletion:
        completion = ChatCompletion.of_text(self.model, self.text, self.finish_reason, self.usage)
        completion.sources, completion.notice = self.sources, self.notice
        return completion

    def chunks(self, include_usage: bool) -> list[ChatCompletionChunk]:
        """The answer as a stream: role, text, finish (with the sources), usage when asked."""
        factory = ChunkFactory(self.model)
        out = [factory.role()]
        if self.text:
            out.append(factory.text(self.text))
        finish = factory.finish(self.finish_reason)
        out.append(finish)
        if include_usage and self.usage is not None:
            out.append(factory.usage(self.usage))
        out[-1].sources, out[-1].notice = self.sources, self.notice
        return out


class ResponseCache:
    """Cached answers of this process; ``clock`` is monotonic seconds (a test passes a fake
    one). The settings come with each call, so a reload changes them at once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._entries: TTLCache[str, Entry] | None = None
        self._shape: tuple[int, float] | None = None
        self._fingerprint: tuple[Config, str] | None = None
        self._index: tuple[str, IndexStore] | None = None
        self._lock = threading.Lock()

    # --- the key -----------------------------------------------------------------------

    def cacheable(self, settings: CacheSettings, body: ChatCompletionRequest) -> bool:
        return (
            settings.enabled
            and body.n == 1
            and body.temperature is not None
            and body.temperature <= settings.max_temperature
        )

    async def key(
        self,
        body: ChatCompletionRequest,
        *,
        config: Config,
        registry: Registry,
        key_name: str | None,
        rag: bool,
    ) -> str | None:
        """The cache key of ``body``, or None when it is not to be cached (the cache is off,
        the request is not deterministic, or the index cannot be read now)."""
        settings = config.settings.cache
        if not self.cacheable(settings, body):
            return None
        generation = None
        if rag:
            try:
                generation = await asyncio.to_thread(self._generation, config, registry)
            except LexragError:
                return None  # the pipeline reports what is wrong with the index
        parts = {
            "request": body.model_dump(mode="json", exclude=set(_IGNORED), exclude_none=True),
            "config": self._config_fingerprint(config),
            "index": generation,
            "day": time.strftime("%Y-%m-%d", time.gmtime()),
            "key": None if settings.shared else key_name,
        }
        text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def _config_fingerprint(self, config: Config) -> str:
        if self._fingerprint is None or self._fingerprint[0] is not config:
            shaping = config.settings.model_dump(mode="json", exclude={"server", "logging", "cache"})
            text = json.dumps(shaping, sort_keys=True, default=str)
            self._fingerprint = (config, hashlib.sha256(text.encode()).hexdigest())
        return self._fingerprint[1]

    def _generation(self, config: Config, registry: Registry) -> int:
        """The configured index's generation, through a handle kept open (blocking)."""
        from ..registry import index_location

        location = str(index_location(config, registry))
        with self._lock:
            if self._index is None or self._index[0] != location:
                if self._index is not None:
                    self._index[1].close()
                    self._index = None
                self._index = (location, open_index(config, registry))
            return self._index[1].generation

    # --- entries -----------------------------------------------------------------------

    def _store(self, settings: CacheSettings) -> TTLCache[str, Entry]:
        shape = (settings.max_entries, settings.ttl_s)
        if self._entries is None or self._shape != shape:
            self._entries = TTLCache(
                maxsize=settings.max_entries, ttl=settings.ttl_s, timer=lambda: self.clock()
            )
            self._shape = shape
        return self._entries

    def get(self, settings: CacheSettings, key: str) -> Entry | None:
        return self._store(settings).get(key)

    def put(self, settings: CacheSettings, key: str, completion: ChatCompletion) -> None:
        """Keep ``completion`` when it is a plain text answer."""
        choice = completion.choices[0] if len(completion.choices) == 1 else None
        if (
            choice is None
            or choice.message.tool_calls
            or choice.message.refusal
            or choice.logprobs is not None
            or choice.finish_reason is None
        ):
            return
        entry = Entry(
            completion.model,
            completion.text,
            choice.finish_reason,
            completion.usage,
            completion.sources,
            completion.notice,
        )
        self._store(settings)[key] = entry

    async def recording(
        self, settings: CacheSettings, key: str, stream: AsyncIterator[ChatCompletionChunk]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """``stream`` passed through; a stream that ends whole (not cut, no error) is kept."""
        text: list[str] = []
        model = ""
        finish: FinishReason | None = None
        sources: list[Source] | None = None
        notice: str | None = None
        plain = True
        try:
            async for chunk in stream:
                model = chunk.model
                if chunk.sources is not None:
                    sources = chunk.sources
                notice = chunk.notice or notice
                for choice in chunk.choices:
                    delta = choice.delta
                    plain = plain and not (delta.tool_calls or delta.refusal or choice.logprobs)
                    text.append(delta.content or "")
                    finish = choice.finish_reason or finish
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if plain and finish is not None:
            call = calllog.current()
            usage = None
            if call.prompt_tokens is not None and call.completion_tokens is not None:
                usage = Usage.of(call.prompt_tokens, call.completion_tokens)
            self._store(settings)[key] = Entry(model, "".join(text), finish, usage, sources, notice)

    def close(self) -> None:
        with self._lock:
            index, self._index = self._index, None
        if index is not None:
            index[1].close()


__all__ = ["HEADER", "Entry", "ResponseCache"]
