"""The RAG pipeline: validate → retrieve → fit the token budget → prompt → generate.

The server, ``lexrag ask`` and ``lexrag chat`` all answer through :class:`Pipeline`.
Retrieval and token counting are CPU work and run in a worker thread, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import calllog, prompt
from .errors import InvalidRequestError, LexragError, ProviderError
from .providers import GenerationParams, Provider, ProviderRequest
from .registry import Registry, build_retriever
from .retrieval import Retriever
from .router import Route, Router
from .types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    GenerateRequest,
    GenerateResponse,
    Source,
)

if TYPE_CHECKING:
    from .config import Config

#: Completion tokens reserved in the budget when the request sets no ``max_tokens``.
DEFAULT_COMPLETION_RESERVE = 512


@dataclass
class Prepared:
    """A request made ready for a provider: the prompt, where it goes, what it cites."""

    request: ProviderRequest
    route: Route
    sources: list[Source] | None = None
    """The passages in the prompt; None when retrieval was off for this request."""


def _counter(provider: Provider) -> prompt.TokenCounter:
    """The provider's tokenizer where it has one, a safe estimate otherwise."""

    def count(text: str) -> int:
        n = provider.count_tokens(text)
        return prompt.estimate_tokens(text) if n is None else n

    return count


class Pipeline:
    """Answers OpenAI-shaped chat requests with passages retrieved from the index.

    ``retriever`` overrides the one ``[retrieval]`` selects (built lazily on first use,
    so a server without an index still answers ``"rag": false`` requests).
    """

    def __init__(
        self,
        config: Config,
        registry: Registry,
        *,
        retriever: Retriever | None = None,
        router: Router | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.router = router or Router(config, registry)
        self._retriever = retriever
        self._retriever_lock = threading.Lock()

    # --- retrieval ------------------------------------------------------------------

    @property
    def retriever(self) -> Retriever:
        """The retriever, built on first use (in a worker thread: opening an index is I/O)."""
        with self._retriever_lock:
            if self._retriever is None:
                self._retriever = build_retriever(self.config, self.registry)
            return self._retriever

    @property
    def retriever_loaded(self) -> bool:
        return self._retriever is not None

    def rag_enabled(self, request: ChatCompletionRequest) -> bool:
        return self.config.settings.retrieval.enabled if request.rag is None else request.rag

    def retrieve(self, query: str, k: int | None = None) -> list[Source]:
        """The top passages for ``query`` as numbered sources (blocking: call in a thread)."""
        top_k = k or self.config.settings.retrieval.top_k
        return [hit.to_source(i + 1) for i, hit in enumerate(self.retriever.search(query, top_k))]

    # --- preparing a request --------------------------------------------------------

    def validate(self, request: ChatCompletionRequest) -> None:
        """What the request schema cannot say on its own."""
        if request.n != 1:
            raise InvalidRequestError(
                f"n={request.n}: lexrag returns one choice per request; omit n or send n=1",
                param="n",
            )
        limit = self.config.settings.server.max_tokens
        if request.token_limit is not None and request.token_limit > limit:
            param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
            raise InvalidRequestError(
                f"{param}={request.token_limit} is above this server's limit of {limit} "
                "([server] max_tokens); ask for fewer tokens",
                param=param,
            )

    def _augment(
        self, request: ChatCompletionRequest, provider: Provider
    ) -> tuple[list[ChatMessage], list[Source]]:
        query = next((m.content for m in reversed(request.messages) if m.role == "user" and m.content), None)
        if query is None:
            raise InvalidRequestError(
                'retrieval needs a user message with text to search for; add one or send "rag": false',
                param="messages",
            )
        passages = self.retrieve(query, request.top_k)
        reserve = request.token_limit or DEFAULT_COMPLETION_RESERVE
        settings = self.config.settings.prompt
        kept = prompt.fit_passages(
            settings,
            request.messages,
            passages,
            budget=provider.context_window - reserve,
            count=_counter(provider),
        )
        return prompt.build_messages(settings, request.messages, kept), kept

    async def prepare(self, request: ChatCompletionRequest) -> Prepared:
        """Validate, resolve the model, retrieve and build the prompt."""
        self.validate(request)
        route = await self.router.resolve(request.model)
        params = GenerationParams(
            max_tokens=request.token_limit,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=request.stop_list,
        )
        if not self.rag_enabled(request):
            return Prepared(ProviderRequest(messages=list(request.messages), params=params), route)
        provider = self.router.provider(route.provider)
        started = time.perf_counter()
        messages, sources = await asyncio.to_thread(self._augment, request, provider)
        calllog.current().retrieved(sources, time.perf_counter() - started)
        return Prepared(ProviderRequest(messages=messages, params=params, sources=sources), route, sources)

    # --- answering ------------------------------------------------------------------

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        """One whole answer, with ``sources`` and ``usage`` filled."""
        prepared = await self.prepare(request)
        completion = await self.router.complete(
            prepared.request, route=prepared.route, fallback=request.fallback
        )
        if completion.usage is None:
            completion.usage = prompt.estimate_usage(prepared.request.messages, completion.text)
        completion.sources = prepared.sources
        return completion

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """The answer as chunks; ``sources`` ride on the last chunk, which is the usage
        chunk (no choices) when ``stream_options.include_usage`` asks for one."""
        prepared = await self.prepare(request)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        pending: ChatCompletionChunk | None = None
        usage_chunk: ChatCompletionChunk | None = None
        text: list[str] = []
        stream = self.router.stream(prepared.request, route=prepared.route, fallback=request.fallback)
        try:
            async for chunk in stream:
                if not chunk.choices:
                    usage_chunk = chunk
                    continue
                text.extend(c.delta.content or "" for c in chunk.choices)
                if pending is not None:
                    yield pending
                pending = chunk
        except LexragError:
            # The text received before a mid-stream failure still reaches the client,
            # ahead of the error that ends the stream.
            if pending is not None:
                yield pending
            raise
        finally:
            await stream.aclose()
        if pending is None:
            raise ProviderError(
                f"provider {prepared.route.provider!r} ended the stream without an answer",
                retryable=True,
                provider=prepared.route.provider,
            )
        if not include_usage:
            pending.sources = prepared.sources
            yield pending
            return
        yield pending
        if usage_chunk is None or usage_chunk.usage is None:
            usage = prompt.estimate_usage(prepared.request.messages, "".join(text))
            usage_chunk = pending.model_copy(update={"choices": [], "usage": usage})
        usage_chunk.sources = prepared.sources
        yield usage_chunk

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        """The seed llm-service's ``/v1/generate``: the prompt goes to the configured
        provider as it is, with retrieval off."""
        params = GenerationParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature if request.do_sample else 0.0,
            top_p=request.top_p if request.do_sample else None,
        )
        provider_request = ProviderRequest(
            messages=[ChatMessage(role="user", content=request.prompt)], params=params
        )
        route = await self.router.resolve(None)
        completion = await self.router.complete(provider_request, route=route)
        usage = completion.usage or prompt.estimate_usage(provider_request.messages, completion.text)
        return GenerateResponse(
            generated_text=completion.text,
            model=completion.model,
            finish_reason=completion.choices[0].finish_reason or "stop",
            usage=usage,
        )

    async def aclose(self) -> None:
        """Close the providers and the retriever."""
        await self.router.aclose()
        retriever, self._retriever = self._retriever, None
        if retriever is not None:
            await asyncio.to_thread(retriever.close)


__all__ = ["DEFAULT_COMPLETION_RESERVE", "Pipeline", "Prepared"]
