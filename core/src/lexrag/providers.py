"""The contract every LLM provider meets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from .errors import InvalidRequestError
from .types import ChatCompletion, ChatCompletionChunk, ChatMessage, NoSettings, Source

#: What a provider may declare in :attr:`Provider.supports`: the OpenAI parameters that change
#: what an answer is (tool calls, JSON output, log probabilities) rather than how it is sampled.
CAPABILITIES = frozenset({"tools", "response_format", "logprobs"})


def demanded(options: Mapping[str, Any]) -> list[str]:
    """The capabilities (see :data:`CAPABILITIES`) that the OpenAI ``options`` of a request
    need: a provider without one of them cannot honour the request. ``tool_choice: "none"``,
    ``response_format: {"type": "text"}`` and ``logprobs: false`` need nothing."""
    needs: list[str] = []
    if options.get("tools") or options.get("tool_choice") not in (None, "none"):
        needs.append("tools")
    response_format = options.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type", "text") != "text":
        needs.append("response_format")
    if options.get("logprobs") or options.get("top_logprobs"):
        needs.append("logprobs")
    return needs


@dataclass
class GenerationParams:
    """Sampling parameters; ``None`` means the provider's own default.

    ``options`` holds every other OpenAI chat parameter the client sent (``tools``,
    ``tool_choice``, ``response_format``, ``logprobs``, ``presence_penalty``, ``user``,
    ``max_completion_tokens`` when the client named it so, unknown ones too), as it sent them:
    an OpenAI-compatible provider passes them on unchanged; another ignores those it cannot
    use, once the pipeline has checked it declares the :attr:`Provider.supports` they need.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


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
    notice: str | None = None
    """What retrieval could not use (only documents no longer in force matched the
    question): the answer should say so. The prompt's system message already holds it."""
    prompt: str | None = None
    """A raw prompt (``POST /v1/completions``, ``/v1/generate`` with ``"raw": true``): text
    the model continues as it is, with no chat template applied. ``messages`` then hold it as
    one user message, for providers that take only messages (a chat API has no way to send
    a raw prompt); one that applies a chat template itself (``local``) uses ``prompt``."""

    @property
    def options(self) -> dict[str, Any]:
        """The request's other OpenAI parameters, as the client sent them (``params.options``)."""
        return self.params.options


class Provider(ABC):
    """An LLM backend.

    Subclasses set ``Settings`` to the pydantic model of their ``[providers.<name>]``
    table and are built as ``cls(name, settings)``. Both ``complete`` and ``stream``
    return lexrag's OpenAI-shaped types so that a client cannot tell providers apart
    except by ``model``. Failures raise :class:`lexrag.errors.ProviderError` with
    ``retryable`` set.
    """

    Settings: ClassVar[type[BaseModel]] = NoSettings

    #: The capabilities (:data:`CAPABILITIES`) this provider honours besides the sampling
    #: parameters: a request that needs one it lacks is a 400 naming it, unless its chain
    #: has a provider that declares it (the pipeline skips the others).
    supports: ClassVar[frozenset[str]] = frozenset()

    #: Maximum prompt + completion tokens; the pipeline fits passages into it.
    context_window: int = 8192

    #: The layout of the RAG prompt this provider gets: a template of :mod:`lexrag.prompt`
    #: (``default``: lexrag's own; ``frog``: the Frog model card's). ``[prompt.provider_templates]``
    #: overrides it per provider.
    prompt_template: str = "default"

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

    def check_options(self, request: ProviderRequest) -> None:
        """Raise :class:`InvalidRequestError` (400, ``param`` set) when ``request`` needs a
        capability this provider does not declare in :attr:`supports`."""
        for need in demanded(request.options):
            if need not in self.supports:
                raise unsupported_error(need, [self.name])

    async def health(self) -> dict[str, Any]:
        """State for ``/health``: at least ``{"status": "ok" | "degraded" | "down"}``."""
        return {"status": "ok"}

    async def aclose(self) -> None:
        """Release connections, sessions and threads."""
        return None


def unsupported_error(param: str, providers: Sequence[str]) -> InvalidRequestError:
    """The 400 for a request that needs ``param`` from providers that cannot honour it."""
    who = " or ".join(repr(p) for p in providers)
    what = {
        "tools": "call tools",
        "response_format": "follow a response_format",
        "logprobs": "return log probabilities",
    }.get(param, f"honour {param}")
    return InvalidRequestError(
        f"{param}: the {who} provider cannot {what}; send the request to one that can (an "
        f"OpenAI-compatible provider such as openai), name one in its fallback, or drop {param}",
        param=param,
        code="unsupported_parameter",
    )


__all__ = [
    "CAPABILITIES",
    "GenerationParams",
    "NoSettings",
    "Provider",
    "ProviderRequest",
    "demanded",
    "unsupported_error",
]
