"""The ``extractive`` provider: answers by quoting the retrieved passages, no LLM.

It is the fallback of last resort and what lexrag answers with offline before any
model is exported.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..hookspecs import hookimpl
from ..providers import Provider, ProviderRequest
from ..types import ChatCompletion, ChatCompletionChunk, ChunkFactory, Source, Usage

NO_SOURCES = (
    "Không tìm thấy quy định phù hợp trong các văn bản đã nạp. "
    "Hãy thử diễn đạt câu hỏi khác hoặc nạp thêm văn bản (lexrag ingest)."
)


class ExtractiveSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_passages: int = Field(default=2, ge=1, le=10)
    """How many of the best passages to quote."""


def _words(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


class ExtractiveProvider(Provider):
    Settings = ExtractiveSettings
    context_window = 1_000_000

    def _answer(self, sources: list[Source]) -> str:
        if not sources:
            return NO_SOURCES
        settings = self.settings
        assert isinstance(settings, ExtractiveSettings)
        lines = ["Theo các quy định tìm được:"]
        for source in sources[: settings.max_passages]:
            lines.append(f"\n[{source.index}] {source.citation}:\n> " + source.text.replace("\n", "\n> "))
        return "\n".join(lines)

    def _usage(self, request: ProviderRequest, text: str) -> Usage:
        prompt = sum(_words(m.content or "") for m in request.messages)
        return Usage.of(prompt, _words(text))

    async def complete(self, request: ProviderRequest) -> ChatCompletion:
        text = self._answer(list(request.sources))
        return ChatCompletion.of_text(
            request.model or self.default_model, text, "stop", self._usage(request, text)
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        text = self._answer(list(request.sources))
        chunks = ChunkFactory(request.model or self.default_model)
        yield chunks.role()
        for piece in re.findall(r"\S+\s*|\s+", text):
            yield chunks.text(piece)
        yield chunks.finish("stop")
        yield chunks.usage(self._usage(request, text))

    def count_tokens(self, text: str) -> int | None:
        return _words(text)

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "kind": "extractive"}


@hookimpl
def register_llm_providers(register: Callable[[str, type[Any]], None]) -> None:
    register("extractive", ExtractiveProvider)
