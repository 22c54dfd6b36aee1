"""The contract every LLM provider meets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from .types import ChatCompletion, ChatCompletionChunk, ChatMessage, NoSettings, Source


@dataclass
class GenerationParams:
    """Sampling parameters; ``None`` means the provider's own default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class ProviderRequest:
    """What the pipeline hands a provider.

    ``messages`` already hold the RAG prompt; ``sources`` are the passages it was
    built from (an LLM provider can ignore them, the extractive one answers from them).
    ``model`` is the model the client asked for, or None for the provider's default.
    """

    messages: list[ChatMessage]
    params: GenerationParams = field(default_factory=GenerationParams)
    model: str | None = None
    sources: Sequence[Source] = ()


class Provider(ABC):
    """An LLM backend.

    Subclasses set ``Settings`` to the pydantic model of their ``[providers.<name>]``
    table and are built as ``cls(name, settings)``. Both ``complete`` and ``stream``
    return lexrag's OpenAI-shaped types so that a client cannot tell providers apart
    except by ``model``. Failures raise :class:`lexrag.errors.ProviderError` with
    ``retryable`` set.
    """

    Settings: ClassVar[type[BaseModel]] = NoSettings

    #: Maximum prompt + completion tokens; the pipeline fits passages into it.
    context_window: int = 8192

    def __init__(self, name: str, settings: BaseModel) -> None:
        self.name = name
        self.settings = settings

    @property
    def default_model(self) -> str:
        """The model id reported when the request names none."""
        return self.name

    async def models(self) -> list[str]:
        """Model ids this provider serves (shown in ``/v1/models``)."""
        return [self.default_model]

    @abstractmethod
    async def complete(self, request: ProviderRequest) -> ChatCompletion:
        """Generate one whole answer."""

    @abstractmethod
    def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Generate an answer as chunks: a role chunk, text chunks, then a chunk with
        ``finish_reason`` and, last, one with ``usage`` and no choices."""

    def count_tokens(self, text: str) -> int | None:
        """Tokens ``text`` takes with this provider's tokenizer, or None if it has none."""
        return None

    async def health(self) -> dict[str, Any]:
        """State for ``/health``: at least ``{"status": "ok" | "degraded" | "down"}``."""
        return {"status": "ok"}

    async def aclose(self) -> None:
        """Release connections, sessions and threads."""
        return None


__all__ = ["GenerationParams", "NoSettings", "Provider", "ProviderRequest"]
