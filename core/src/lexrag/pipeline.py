"""The RAG pipeline: validate → retrieve → fit the token budget → prompt → generate.

The server, ``lexrag ask`` and ``lexrag chat`` all answer through :class:`Pipeline`.
Retrieval and token counting are CPU work and run in a worker thread, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import calllog, prompt, tracing, vntext
from .errors import InvalidRequestError, LexragError, ProviderError
from .filtering import Catalog
from .providers import GenerationParams, Provider, ProviderRequest, demanded, unsupported_error
from .registry import Registry, build_retriever, default_filters, open_index
from .retrieval import Retriever
from .router import Route, Router
from .types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    Delta,
    GenerateRequest,
    GenerateResponse,
    RetrievalFilters,
    Source,
)

if TYPE_CHECKING:
    from .config import Config

#: Completion tokens reserved in the budget when the request sets no ``max_tokens``.
DEFAULT_COMPLETION_RESERVE = 512
#: Longest rewritten question asked of ``[retrieval] rewrite_provider``.
REWRITE_MAX_TOKENS = 96


def _first_line(text: str | None) -> str | None:
    """The first non-empty line of a model's rewrite, without the quotes or label a model
    may wrap it in; None when there is none or it is implausibly long."""
    for line in (text or "").splitlines():
        line = line.strip().strip('"“”').strip()
        if line.lower().startswith(("câu nói:", "câu hỏi:")):
            line = line.partition(":")[2].strip().strip('"“”').strip()
        if line:
            return line if len(line) <= 1000 else None
    return None


@dataclass
class Prepared:
    """A request made ready for a provider: the prompt, where it goes, what it cites."""

    request: ProviderRequest
    route: Route
    sources: list[Source] | None = None
    """The passages in the prompt; None when retrieval was off for this request."""
    fallback: Sequence[str] | None = None
    """The fallback providers to try after ``route`` (None: ``[llm] fallback``); those that
    cannot honour the request's options are left out (see :meth:`Pipeline.capable_chain`)."""
    notice: str | None = None
    """What retrieval could not use (only documents no longer in force matched)."""


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
        self.catalog = Catalog(lambda: open_index(config, registry))
        self.default_filters = default_filters(config)

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

    def retrieve(
        self, query: str, k: int | None = None, filters: RetrievalFilters | None = None
    ) -> list[Source]:
        """The top passages for ``query`` as numbered sources (blocking: call in a thread)."""
        return self.search(query, k, filters)[0]

    def search(
        self, query: str, k: int | None = None, filters: RetrievalFilters | None = None
    ) -> tuple[list[Source], str | None]:
        """The top passages for ``query`` from the documents the filters allow (``filters``
        over ``[retrieval] filters``), with their documents' metadata; and a notice when
        only documents left out for their status matched (blocking: call in a thread)."""
        top_k = k or self.config.settings.retrieval.top_k
        found = self.catalog.search(
            self.retriever, vntext.normalize(query), top_k, self.default_filters.merged(filters)
        )
        return self.catalog.sources(found.hits, found.day), found.notice

    # --- preparing a request --------------------------------------------------------

    def validate(self, request: ChatCompletionRequest) -> None:
        """What the request model does not check itself (the served schema says it all the
        same: ``n`` at most 1, ``max_tokens`` at most ``[server] max_tokens``, ``messages``
        containing a user message with text)."""
        if request.n != 1:
            raise InvalidRequestError(
                f"n={request.n}: lexrag returns one choice per request; omit n or send n=1",
                param="n",
            )
        if not any(m.role == "user" and m.has_text for m in request.messages):
            raise InvalidRequestError(
                "messages: no user message with text; lexrag answers the question in the last "
                "user message, so send one (empty or white-space-only content is no question)",
                param="messages",
            )
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        self.check_token_limit(param, request.token_limit)

    def check_token_limit(self, param: str, value: int | None) -> None:
        """A 400 for a completion length above ``[server] max_tokens``."""
        limit = self.config.settings.server.max_tokens
        if value is not None and value > limit:
            raise InvalidRequestError(
                f"{param}={value} is above this server's limit of {limit} "
                "([server] max_tokens); ask for fewer tokens",
                param=param,
            )

    def capable_chain(
        self, route: Route, fallback: Sequence[str] | None, options: Mapping[str, Any]
    ) -> tuple[Route, Sequence[str] | None]:
        """``route`` and ``fallback`` with the providers that cannot honour ``options`` (their
        class's :attr:`Provider.supports` lacks a capability the options need) left out; the
        first capable one leads. Unchanged when the options need nothing. A 400 naming the
        parameter and the providers when no provider of the chain can honour it."""
        needs = demanded(options)
        if not needs:
            return route, fallback
        chain = self.router.chain(route, fallback)
        classes = self.registry.providers.classes

        def can(name: str, need: str) -> bool:
            cls = classes.get(name)
            return cls is None or need in cls.supports  # not installed: the router says so

        capable = [step for step in chain if all(can(step.provider, need) for need in needs)]
        if not capable:
            names = [step.provider for step in chain]
            need = next(
                (n for n in needs if not any(can(p, n) for p in names)),
                next(n for n in needs if not can(names[0], n)),
            )
            raise unsupported_error(need, [p for p in names if not can(p, need)])
        return capable[0], [step.provider for step in capable[1:]]

    async def retrieval_query(self, messages: Sequence[ChatMessage]) -> str:
        """What to search for: the last user turn, read in the light of the one before it in
        a conversation (``[retrieval] conversation``). A follow-up turn ("Còn nữ thì sao?") is
        first rewritten into a standalone question by ``[retrieval] rewrite_provider`` when
        one is set; otherwise, or when that fails, the turns are combined
        (:func:`lexrag.vntext.combine_turns`)."""
        turns = [m.content for m in messages if m.role == "user" and m.has_text and m.content]
        if not turns:
            raise InvalidRequestError(
                'retrieval needs a user message with text to search for; add one or send "rag": false',
                param="messages",
            )
        settings = self.config.settings.retrieval
        if len(turns) == 1 or settings.conversation == "last":
            return turns[-1]
        if settings.rewrite_provider and vntext.follows_up(turns[-1]):
            rewritten = await self._rewrite(settings.rewrite_provider, messages, turns[-1])
            if rewritten:
                return rewritten
        return vntext.combine_turns(turns)

    async def _rewrite(self, name: str, messages: Sequence[ChatMessage], question: str) -> str | None:
        """``question`` rewritten by provider ``name`` to stand on its own, or None when the
        provider fails, answers nothing usable or takes longer than ``rewrite_timeout_s``."""
        last = max(i for i, m in enumerate(messages) if m.role == "user" and m.has_text)
        request = ProviderRequest(
            messages=prompt.rewrite_messages(messages[:last], question),
            params=GenerationParams(max_tokens=REWRITE_MAX_TOKENS, temperature=0.0),
        )
        started = time.perf_counter()
        outcome, text = "ok", None
        attributes = tracing.genai_request("chat", name, None, max_tokens=REWRITE_MAX_TOKENS, temperature=0.0)
        with tracing.span("lexrag.rewrite", attributes, kind=tracing.SpanKind.CLIENT) as span:
            try:
                completion = await asyncio.wait_for(
                    self.router.provider(name).complete(request),
                    self.config.settings.retrieval.rewrite_timeout_s,
                )
                text = _first_line(completion.text)
                if not text:
                    outcome = "empty"
            except TimeoutError:
                outcome = "timeout"
            except LexragError as exc:
                outcome = exc.code or type(exc).__name__
            if outcome != "ok":
                tracing.failed(span, outcome)
        calllog.current().rewrote(name, outcome, time.perf_counter() - started)
        return text if outcome == "ok" else None

    def _augment(
        self, request: ChatCompletionRequest, provider: Provider, query: str
    ) -> tuple[list[ChatMessage], list[Source], str | None]:
        with tracing.span("lexrag.retrieve") as span:
            passages, notice = self.search(query, request.top_k, request.filters)
            span.set_attribute("lexrag.retrieval.passages", len(passages))
        with tracing.span("lexrag.prompt") as span:
            reserve = request.token_limit or DEFAULT_COMPLETION_RESERVE
            # The provider's own layout (the Frog card's for `local`), or [prompt.provider_templates]'.
            template = self.config.settings.prompt.template_for(provider.name, provider.prompt_template)
            kept = prompt.fit_passages(
                template,
                request.messages,
                passages,
                budget=provider.context_window - reserve,
                count=_counter(provider),
            )
            span.set_attribute("lexrag.prompt.passages", len(kept))
            messages = prompt.build_messages(template, request.messages, kept)
            if notice and messages and messages[0].role == "system":
                # The model is told too, so that its answer says so.
                note = f"{messages[0].content or ''}\n\nLưu ý: {notice}".strip()
                messages[0] = messages[0].model_copy(update={"content": note})
            return messages, kept, notice

    async def prepare(self, request: ChatCompletionRequest) -> Prepared:
        """Validate, resolve the model, retrieve and build the prompt."""
        with tracing.span("lexrag.validate"):
            self.validate(request)
            options = request.options
            route, fallback = self.capable_chain(
                await self.router.resolve(request.model), request.fallback, options
            )
        params = GenerationParams(
            max_tokens=request.token_limit,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=request.stop_list,
            options=options,
        )
        if not self.rag_enabled(request):
            return Prepared(
                ProviderRequest(messages=list(request.messages), params=params), route, fallback=fallback
            )
        provider = self.router.first_available(route, fallback)
        query = await self.retrieval_query(request.messages)
        started = time.perf_counter()
        messages, sources, notice = await asyncio.to_thread(self._augment, request, provider, query)
        calllog.current().retrieved(sources, time.perf_counter() - started)
        return Prepared(
            ProviderRequest(messages=messages, params=params, sources=sources, notice=notice),
            route,
            sources,
            fallback,
            notice,
        )

    # --- answering ------------------------------------------------------------------

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        """One whole answer, with ``sources`` and ``usage`` filled."""
        prepared = await self.prepare(request)
        completion = await self.router.complete(
            prepared.request, route=prepared.route, fallback=prepared.fallback
        )
        if completion.usage is None:
            completion.usage = prompt.estimate_usage(prepared.request.messages, completion.text)
        completion.sources = prepared.sources
        completion.notice = prepared.notice
        return completion

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """The answer as chunks; ``sources`` ride on the last chunk, which is the usage
        chunk (no choices) when ``stream_options.include_usage`` asks for one.

        Text goes out as it arrives: only the chunk with the finish reason is held until
        the provider's stream ends (the usage chunk may still follow it)."""
        prepared = await self.prepare(request)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        pending: ChatCompletionChunk | None = None
        last: ChatCompletionChunk | None = None
        usage_chunk: ChatCompletionChunk | None = None
        text: list[str] = []
        stream = self.router.stream(prepared.request, route=prepared.route, fallback=prepared.fallback)
        try:
            async for chunk in stream:
                if not chunk.choices:
                    usage_chunk = chunk
                    continue
                text.extend(c.delta.content or "" for c in chunk.choices)
                last = chunk
                if pending is not None:
                    yield pending
                    pending = None
                if any(c.finish_reason for c in chunk.choices):
                    pending = chunk
                else:
                    yield chunk
        except LexragError:
            # The text received before a mid-stream failure still reaches the client,
            # ahead of the error that ends the stream.
            if pending is not None:
                yield pending
            raise
        finally:
            await stream.aclose()
        if last is None:
            raise ProviderError(
                f"provider {prepared.route.provider!r} ended the stream without an answer",
                retryable=True,
                provider=prepared.route.provider,
            )
        if pending is None:
            # No finish chunk to carry the sources (a provider outside the contract): an
            # empty delta carries them.
            pending = last.model_copy(update={"choices": [ChunkChoice(delta=Delta())], "usage": None})
        if usage_chunk is None or usage_chunk.usage is None:
            usage = prompt.estimate_usage(prepared.request.messages, "".join(text))
            usage_chunk = pending.model_copy(update={"choices": [], "usage": usage, "sources": None})
        # The usage reaches the call record (and the key's token budget) even when the
        # client did not ask for a usage chunk.
        calllog.current().usage(usage_chunk.usage)
        if not include_usage:
            pending.sources, pending.notice = prepared.sources, prepared.notice
            yield pending
            return
        yield pending
        usage_chunk.sources, usage_chunk.notice = prepared.sources, prepared.notice
        yield usage_chunk

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        """The seed llm-service's ``/v1/generate``: the prompt goes to the configured
        provider as it is, with retrieval off, within the same ``[server] max_tokens`` as
        chat (an unset ``max_tokens`` defaults to 256 or that limit, whichever is lower)."""
        limit = self.config.settings.server.max_tokens
        if "max_tokens" in request.model_fields_set:
            self.check_token_limit("max_tokens", request.max_tokens)
            max_tokens = request.max_tokens
        else:
            max_tokens = min(request.max_tokens, limit)
        params = GenerationParams(
            max_tokens=max_tokens,
            temperature=request.temperature if request.do_sample else 0.0,
            top_p=request.top_p if request.do_sample else None,
        )
        provider_request = ProviderRequest(
            messages=[ChatMessage(role="user", content=request.prompt)],
            params=params,
            prompt=request.prompt if request.raw else None,
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
        await asyncio.to_thread(self.catalog.close)


__all__ = ["DEFAULT_COMPLETION_RESERVE", "REWRITE_MAX_TOKENS", "Pipeline", "Prepared"]
