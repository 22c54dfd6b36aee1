"""The HTTP API: OpenAI's chat, completions, embeddings and models; health; the seed's
``/v1/generate``."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from .. import calllog
from ..errors import InvalidRequestError, LexragError, NotFoundError
from ..prompt import estimate_usage
from ..providers import GenerationParams, ProviderRequest
from ..types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    ModelCard,
    ModelList,
)
from .cache import Entry
from .disconnect import unless_disconnected
from .sse import check_stop, chunk_events, ended_stream
from .state import state_of

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 500, 502, 503, 504)
}
_SERVER_ERRORS: dict[int | str, dict[str, Any]] = {500: {"model": ErrorResponse}}
#: One server-sent event of a streamed answer (OpenAPI before 3.2: the schema of each event).
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "data": {
            "type": "string",
            "description": "A chat.completion.chunk as JSON, then [DONE] last. A stream that fails "
            "after it started (the provider broke off mid-answer, the server is shutting down) "
            'ends with an error event instead of a finish chunk: {"error": {"message", "type", '
            '"param", "code"}} (what OpenAI\'s SDKs raise as APIError), then [DONE]',
        },
        "event": {"type": "string"},
    },
    "required": ["data"],
}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _json_or_events(model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """The responses of an endpoint that answers ``model`` as JSON, or with stream=true as
    server-sent events, or an error."""
    return {
        200: {
            "model": model,
            "description": description,
            "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        },
        **_ERRORS,
    }


def _json(model: Any, exclude_sources: bool = False) -> Response:
    body = model.model_dump_json(exclude={"sources"} if exclude_sources else None)
    return Response(body, media_type="application/json")


@router.post(
    "/v1/chat/completions",
    responses=_json_or_events(
        ChatCompletion, "A chat.completion, or with stream=true, chat.completion.chunk events (SSE)"
    ),
)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    """OpenAI chat completions with retrieval; the cited passages come back as ``sources``.

    The response's ``model`` and the ``x-lexrag-provider`` header name who answered;
    ``fallback`` (a list of provider names) overrides ``[llm] fallback`` for this request.
    """
    state = state_of(request)
    pipeline = state.pipeline
    call = calllog.current()
    call.stream, call.requested_model = body.stream, body.model
    if state.config.settings.logging.log_bodies:
        call.keep_messages(body.messages)
    cache, cache_settings = state.server.cache, state.config.settings.cache
    key = await cache.key(
        body, config=state.config, registry=state.registry, key_name=call.key, rag=pipeline.rag_enabled(body)
    )
    if key is not None:
        cached = cache.get(cache_settings, key)
        call.cache = "miss" if cached is None else "hit"
        if cached is not None:
            return _from_cache(cached, body, state.server.streams_must_end)
    if body.stream:
        stream = pipeline.chat_stream(body)
        if key is not None:
            stream = cache.recording(cache_settings, key, stream)
        try:
            # The first chunk is awaited here so that a failure before any output is an
            # ordinary HTTP error with its status, not a 200 with an error event.
            first = await anext(stream)
        except BaseException:
            await stream.aclose()  # type: ignore[attr-defined]
            raise
        return StreamingResponse(
            chunk_events(first, stream, stop=state.server.streams_must_end),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )
    completion = await unless_disconnected(request, pipeline.chat(body))
    call.usage(completion.usage)
    call.keep_answer(completion.text)
    if key is not None:
        cache.put(cache_settings, key, completion)
    return _json(completion, exclude_sources=completion.sources is None)


def _from_cache(entry: Entry, body: ChatCompletionRequest, stop: Callable[[], bool]) -> Response:
    """A cached answer, whole or as chunk events; ``cache`` is who answered."""
    call = calllog.current()
    call.provider, call.model = "cache", entry.model
    call.keep_answer(entry.text)
    if not body.stream:
        completion = entry.completion()
        return _json(completion, exclude_sources=completion.sources is None)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    first, *rest = entry.chunks(include_usage)

    async def replay() -> AsyncIterator[ChatCompletionChunk]:
        for chunk in rest:
            yield chunk

    return StreamingResponse(
        chunk_events(first, replay(), stop=stop), media_type="text/event-stream", headers=_SSE_HEADERS
    )


@router.post("/v1/embeddings", responses={200: {"model": EmbeddingResponse}, **_ERRORS})
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """Vectors from lexrag's configured embedder, in OpenAI's shape."""
    state = state_of(request)
    embedder = await asyncio.to_thread(state.embedder)
    if body.model and body.model not in (embedder.name, embedder.model_id):
        raise NotFoundError(
            f"embedding model {body.model!r} is not served here; use {embedder.name!r} or omit model",
            param="model",
            code="model_not_found",
        )
    texts = body.texts
    dimensions = body.dimensions
    if dimensions is not None:
        if not embedder.matryoshka:
            raise InvalidRequestError(
                f"dimensions: the embedder {embedder.name!r} gives {embedder.dim}-dimensional vectors "
                "and was not trained to give shorter ones (as Matryoshka models are); omit dimensions",
                param="dimensions",
            )
        if dimensions > embedder.dim:
            raise InvalidRequestError(
                f"dimensions={dimensions} is more than the {embedder.dim} of the embedder "
                f"{embedder.name!r}; ask for {embedder.dim} or fewer",
                param="dimensions",
            )

    def run() -> tuple[Any, int]:
        vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
        if dimensions is not None and dimensions < vectors.shape[1]:
            # A Matryoshka embedder's leading dimensions are a coarser embedding: cut, then
            # back to unit length.
            vectors = vectors[:, :dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return vectors, embedder.count_tokens(texts)

    vectors, tokens = await asyncio.to_thread(run)
    data = []
    for i, vector in enumerate(vectors):
        array = np.asarray(vector, dtype="<f4")
        value: list[float] | str = (
            base64.b64encode(array.tobytes()).decode() if body.encoding_format == "base64" else array.tolist()
        )
        data.append(Embedding(index=i, embedding=value))
    response = EmbeddingResponse(
        data=data, model=embedder.name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )
    return _json(response)


@router.get("/v1/models", responses={200: {"model": ModelList}, **_SERVER_ERRORS})
async def models(request: Request) -> Response:
    """Every configured provider, and the model ids each serves; ``state`` is the serving
    provider's circuit breaker (``open``: cooling down after failures, skipped)."""
    return _json(ModelList(data=await state_of(request).pipeline.router.model_cards()))


@router.get(
    "/v1/models/{model_id:path}",
    responses={200: {"model": ModelCard}, 404: {"model": ErrorResponse}, **_SERVER_ERRORS},
)
async def retrieve_model(model_id: str, request: Request) -> Response:
    """One model of ``GET /v1/models`` (the SDK's ``models.retrieve``); 404 for an id not
    served here."""
    router_ = state_of(request).pipeline.router
    for card in await router_.model_cards():
        if card.id == model_id:
            return _json(card)
    raise NotFoundError(
        f"model {model_id!r} is not served here; GET /v1/models lists the valid ids",
        param="model",
        code="model_not_found",
    )


@router.post("/v1/generate", responses={200: {"model": GenerateResponse}, **_ERRORS})
async def generate(body: GenerateRequest, request: Request) -> Response:
    """The seed's llm-service API: the prompt goes to the configured provider, as the
    user's message (rendered with the model's chat template), or, with ``"raw": true``,
    as a prompt already rendered, to continue as it is. Never streamed: the ``local``
    provider's HTTP mode streams over ``/v1/chat/completions`` or ``/v1/completions``."""
    call = calllog.current()
    call.stream = False
    if state_of(request).config.settings.logging.log_bodies:
        call.messages = [{"role": "user", "content": body.prompt}]
    response = await unless_disconnected(request, state_of(request).pipeline.generate(body))
    call.usage(response.usage)
    call.keep_answer(response.generated_text)
    return _json(response)


@router.post(
    "/v1/completions",
    responses=_json_or_events(
        Completion, "A text_completion, or with stream=true, text_completion events (SSE)"
    ),
)
async def completions(body: CompletionRequest, request: Request) -> Response:
    """OpenAI's completions: the prompt is continued as it is (no chat template, no
    retrieval) by the provider ``model`` names, else the configured one. What the ``local``
    provider asks an llm-service with ``api = "completions"`` (vLLM and llama.cpp serve the
    same); a provider without a chat template of its own gets the prompt as a user message."""
    state = state_of(request)
    pipeline = state.pipeline
    call = calllog.current()
    call.stream, call.requested_model = body.stream, body.model
    if state.config.settings.logging.log_bodies:
        call.messages = [{"role": "user", "content": body.text}]
    for param in ("n", "best_of"):
        value = getattr(body, param)
        if value not in (None, 1):
            raise InvalidRequestError(
                f"{param}={value}: lexrag returns one completion per request; omit {param} or send 1",
                param=param,
            )
    pipeline.check_token_limit("max_tokens", body.max_tokens)
    params = GenerationParams(
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list,
    )
    provider_request = ProviderRequest(
        messages=[ChatMessage(role="user", content=body.text)], params=params, prompt=body.text
    )
    route = await pipeline.router.resolve(body.model)
    if body.stream:
        stream = pipeline.router.stream(provider_request, route=route)
        try:
            first = await anext(stream)
        except BaseException:
            await stream.aclose()
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _completion_events(
                first,
                stream,
                provider_request,
                include_usage=include_usage,
                stop=state.server.streams_must_end,
            ),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )
    completion = await unless_disconnected(request, pipeline.router.complete(provider_request, route=route))
    usage = completion.usage or estimate_usage(provider_request.messages, completion.text)
    call.usage(usage)
    call.keep_answer(completion.text)
    choice = CompletionChoice(
        text=completion.text, finish_reason=completion.choices[0].finish_reason or "stop"
    )
    return _json(
        Completion(id=_completion_id(completion.id), model=completion.model, choices=[choice], usage=usage)
    )


def _completion_id(chat_id: str) -> str:
    return "cmpl-" + chat_id.split("-", 1)[-1]


def _as_completion(chunk: ChatCompletionChunk, **fields: Any) -> Completion:
    return Completion(id=_completion_id(chunk.id), created=chunk.created, model=chunk.model, **fields)


def _completion_events(
    first: ChatCompletionChunk,
    rest: AsyncIterator[ChatCompletionChunk],
    provider_request: ProviderRequest,
    *,
    include_usage: bool,
    stop: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """The chat chunks of a raw prompt's answer as ``text_completion`` events: each text
    piece as it comes, the finish reason on the last, usage when asked for, then ``[DONE]``;
    a failure mid-stream ends it as a chat stream's does (an error event, then ``[DONE]``)."""
    text: list[str] = []
    last = first
    usage_sent = False

    async def chunks() -> AsyncIterator[ChatCompletionChunk]:
        yield first
        async for chunk in rest:
            yield chunk

    async def body() -> AsyncGenerator[bytes, None]:
        nonlocal last, usage_sent
        call = calllog.current()
        async for chunk in chunks():
            last = chunk
            call.usage(chunk.usage)
            if not chunk.choices:
                if include_usage and chunk.usage is not None:
                    usage_sent = True
                    yield _event(_as_completion(chunk, choices=[], usage=chunk.usage))
                continue
            choice = chunk.choices[0]
            piece = choice.delta.content or ""
            if piece or choice.finish_reason is not None:
                text.append(piece)
                call.keep_answer(piece)
                out = CompletionChoice(text=piece, finish_reason=choice.finish_reason)
                yield _event(_as_completion(chunk, choices=[out]))
            check_stop(stop)

    def usage_event() -> list[bytes]:
        if not include_usage or usage_sent:
            return []
        usage = estimate_usage(provider_request.messages, "".join(text))
        return [_event(_as_completion(last, choices=[], usage=usage))]

    return ended_stream(body(), rest, usage_event)


def _event(completion: Completion) -> bytes:
    return b"data: " + completion.model_dump_json().encode() + b"\n\n"


_HEALTH = {
    "description": "The server's state: overall status, the provider chain, each provider "
    "(with its circuit breaker) and the index",
    "content": {"application/json": {"schema": {"type": "object"}}},
}


@router.get(
    "/health",
    responses={200: _HEALTH, 503: {**_HEALTH, "description": "No provider of the chain can answer"}},
)
async def health(request: Request) -> JSONResponse:
    """Each provider's and the index's state and the provider chain; 503 when no provider of
    the chain can answer (each is down or unavailable)."""
    state = state_of(request)
    pipeline = state.pipeline
    providers = await pipeline.router.health()
    index: dict[str, Any]
    if not state.config.settings.retrieval.enabled and not pipeline.retriever_loaded:
        index = {"status": "disabled"}
    else:
        try:
            retriever = await asyncio.to_thread(lambda: pipeline.retriever)
            index = await asyncio.to_thread(retriever.health)
        except LexragError as exc:
            index = {"status": "down", "error": exc.message}
    default = pipeline.router.default_provider
    chain = pipeline.router.chain_names()
    states = [p.get("status") for p in providers.values()] + [index.get("status")]
    overall = "ok" if all(s in ("ok", "disabled") for s in states) else "degraded"
    # Down only when no provider of the chain can answer: a broken default with a working
    # fallback still serves.
    if all(providers.get(name, {}).get("status") in ("down", "unavailable") for name in chain):
        overall = "down"
    body = {
        "status": overall,
        "provider": default,
        "chain": chain,
        "providers": providers,
        "index": index,
        "reloads": state.server.reloads,
    }
    return JSONResponse(body, status_code=503 if overall == "down" else 200)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(state_of(request).metrics.render(), media_type="text/plain; version=0.0.4")


__all__ = ["router"]
