"""What the provider asks of its two backends: in-process ONNX Runtime, or an llm-service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lexrag import ChatMessage, FinishReason, GenerationParams, InvalidRequestError, Usage

from .model_files import GenerationDefaults
from .settings import LocalSettings


@dataclass(frozen=True)
class Outcome:
    """The end of a generation: why it ended and the token counts (None if unknown)."""

    finish_reason: FinishReason
    usage: Usage | None


@dataclass(frozen=True)
class Resolved:
    """The request's sampling parameters with the defaults filled in."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: list[str]


def resolve(params: GenerationParams, settings: LocalSettings, defaults: GenerationDefaults) -> Resolved:
    """Request value, else ``[providers.local]``'s, else the generation config's."""

    def pick(request: Any, configured: Any, card: Any) -> Any:
        return request if request is not None else configured if configured is not None else card

    card_temperature = defaults.temperature if defaults.do_sample else 0.0
    return Resolved(
        max_tokens=pick(params.max_tokens, None, settings.max_tokens),
        temperature=float(pick(params.temperature, settings.temperature, card_temperature)),
        top_p=float(pick(params.top_p, settings.top_p, defaults.top_p)),
        top_k=int(pick(None, settings.top_k, defaults.top_k)),
        seed=params.seed,
        stop=list(params.stop),
    )


def fit(prompt_tokens: int, max_tokens: int, context_window: int) -> int:
    """New tokens the context has room for; a prompt that leaves none is the client's error."""
    room = context_window - prompt_tokens
    if room <= 0:
        raise InvalidRequestError(
            f"the prompt is {prompt_tokens} tokens and the model's context window is {context_window}: "
            "shorten the conversation or retrieve fewer passages (top_k)",
            param="messages",
            code="context_length_exceeded",
        )
    return min(max_tokens, room)


class Backend(Protocol):
    context_window: int
    model_name: str

    def count_tokens(self, text: str) -> int | None: ...

    def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str | Outcome]:
        """Text deltas, then one ``Outcome``."""
        ...

    async def health(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


__all__ = ["Backend", "Outcome", "Resolved", "fit", "resolve"]
