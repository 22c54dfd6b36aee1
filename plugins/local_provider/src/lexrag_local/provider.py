"""The ``local`` provider: the Frog model in-process on ONNX Runtime, or a running llm-service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from lexrag import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessage,
    ChunkFactory,
    Provider,
    ProviderRequest,
    Usage,
)

from .backend import Backend, Outcome
from .chat_template import RawPrompt
from .settings import LocalSettings


def make_backend(settings: LocalSettings) -> Backend:
    """HTTP when a URL is configured (``LOCAL_LLM_API_URL``), as in the seed; in-process otherwise."""
    if settings.url:
        from .http_client import HttpBackend

        return HttpBackend(settings)
    from .inprocess import InProcessBackend

    return InProcessBackend(settings)


class LocalProvider(Provider):
    """The Frog model. It takes the sampling parameters (``max_tokens``, ``temperature``,
    ``top_p``, ``seed``, ``stop``) and ignores OpenAI's others; it cannot call tools, follow
    a ``response_format`` or return log probabilities, so ``supports`` is empty and such a
    request is a 400 naming the parameter (unless its chain has a provider that can).

    Its RAG prompt has the Frog model card's layout (``prompt_template = "frog"``; another
    with ``[prompt.provider_templates] local = "..."``). A raw prompt
    (``ProviderRequest.prompt``) reaches the model as it is, without the chat template."""

    Settings = LocalSettings
    prompt_template = "frog"

    def __init__(self, name: str, settings: BaseModel) -> None:
        super().__init__(name, settings)
        assert isinstance(settings, LocalSettings)
        self.backend = make_backend(settings)
        self.context_window = self.backend.context_window

    @property
    def default_model(self) -> str:
        return self.backend.model_name

    def count_tokens(self, text: str) -> int | None:
        return self.backend.count_tokens(text)

    @staticmethod
    def _messages(request: ProviderRequest) -> list[ChatMessage]:
        """The request's messages, or its raw prompt marked as one (:class:`RawPrompt`)."""
        return RawPrompt(request.prompt) if request.prompt is not None else request.messages

    async def complete(self, request: ProviderRequest) -> ChatCompletion:
        self.check_options(request)
        parts: list[str] = []
        outcome = Outcome("stop", None)
        async for item in self.backend.generate(self._messages(request), request.params):
            if isinstance(item, Outcome):
                outcome = item
            else:
                parts.append(item)
        return ChatCompletion.of_text(
            request.model or self.default_model, "".join(parts), outcome.finish_reason, outcome.usage
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        self.check_options(request)
        chunks = ChunkFactory(request.model or self.default_model)
        generation = self.backend.generate(self._messages(request), request.params)
        usage: Usage | None = None
        try:
            first = True
            async for item in generation:
                if first:
                    yield chunks.role()
                    first = False
                if isinstance(item, Outcome):
                    yield chunks.finish(item.finish_reason)
                    usage = item.usage
                elif item:
                    yield chunks.text(item)
        finally:
            # Closing this stream (client gone) closes the generation, which cancels it.
            await generation.aclose()  # type: ignore[attr-defined]
        if usage is not None:
            yield chunks.usage(usage)

    async def health(self) -> dict[str, Any]:
        return await self.backend.health()

    def load(self) -> dict[str, float]:
        """The in-process batch's numbers for ``/metrics`` (running / waiting sequences, KV
        cache, tokens per second); HTTP mode reports none."""
        load = getattr(self.backend, "load", None)
        return dict(load()) if load is not None else {}

    async def aclose(self) -> None:
        await self.backend.aclose()


__all__ = ["LocalProvider"]
