"""lexrag-echo: the example plugin of docs/plugins.md.

The ``echo`` provider answers with the last user message (after an optional prefix). It
follows the provider contract: the same
OpenAI-shaped types from ``complete`` and ``stream``; a stream of a role chunk, text
chunks, one chunk with ``finish_reason``, then one usage chunk with no choices.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lexrag import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkFactory,
    InvalidRequestError,
    Provider,
    ProviderRequest,
    Usage,
    estimate_tokens,
    hookimpl,
)


class EchoSettings(BaseModel):
    """The ``[providers.echo]`` table."""

    model_config = ConfigDict(extra="forbid")  # a typo in the table is a clear error

    prefix: str = ""
    """Text put before every answer."""
    max_words: int = Field(default=200, ge=1)
    """Longest answer, in words; a longer one stops with finish_reason "length"."""


class EchoProvider(Provider):
    Settings = EchoSettings

    def __init__(self, name: str, settings: BaseModel) -> None:
        super().__init__(name, settings)
        assert isinstance(settings, EchoSettings)
        self.options = settings

    def _answer(self, request: ProviderRequest) -> tuple[list[str], str]:
        users = [m for m in request.messages if m.role == "user" and m.content]
        if not users:
            # The request's own fault: not retried, no fallback.
            raise InvalidRequestError("echo needs a user message with text", param="messages")
        words = (self.options.prefix + (users[-1].content or "")).split()
        limit = min(self.options.max_words, request.params.max_tokens or self.options.max_words)
        finish = "length" if len(words) > limit else "stop"
        return words[:limit], finish

    def _usage(self, request: ProviderRequest, words: list[str]) -> Usage:
        prompt = sum(estimate_tokens(m.content or "") for m in request.messages)
        return Usage.of(prompt, len(words))

    async def complete(self, request: ProviderRequest) -> ChatCompletion:
        words, finish = self._answer(request)
        model = request.model or self.default_model
        return ChatCompletion.of_text(model, " ".join(words), finish, self._usage(request, words))

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        words, finish = self._answer(request)
        chunks = ChunkFactory(request.model or self.default_model)
        yield chunks.role()
        for i, word in enumerate(words):
            yield chunks.text(word if i == 0 else " " + word)
        yield chunks.finish(finish)
        yield chunks.usage(self._usage(request, words))

    def count_tokens(self, text: str) -> int | None:
        return len(text.split())

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "kind": "echo"}


@hookimpl
def register_llm_providers(register: Callable[[str, type[Provider]], None]) -> None:
    register("echo", EchoProvider)
