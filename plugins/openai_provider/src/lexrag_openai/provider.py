"""The ``openai`` provider: the official SDK (async) against any OpenAI-compatible API.

The SDK's own retries are off (``max_retries=0``): retries, fallback and cool-down belong
to lexrag's router, which needs every failure reported at once with ``retryable`` set.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from lexrag import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ChunkFactory,
    Delta,
    FinishReason,
    Provider,
    ProviderError,
    ProviderRequest,
    ProviderTimeoutError,
    Usage,
    estimate_usage,
    mask_url,
    new_id,
    parse_retry_after,
    trace_headers,
)

from .settings import OpenAISettings

if TYPE_CHECKING:
    import asyncio

    import openai

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "function_call",
}

#: Arguments of ``chat.completions.create`` that are the SDK's own, not request parameters.
_NOT_PARAMETERS = frozenset(
    {"self", "messages", "model", "stream", "stream_options"}
    | {"extra_headers", "extra_query", "extra_body", "timeout"}
)


@functools.cache
def _sdk_parameters() -> frozenset[str]:
    """The chat parameters the installed SDK types (passed as arguments); others a client
    sends go in ``extra_body``, so an upstream that knows them still gets them."""
    from openai.resources.chat.completions import AsyncCompletions

    return frozenset(inspect.signature(AsyncCompletions.create).parameters) - _NOT_PARAMETERS


def _message(m: ChatMessage) -> dict[str, Any]:
    """A turn as the upstream gets it: every field the client sent (``tool_calls``,
    ``tool_call_id``, ``name``, unknown ones); ``content`` null only beside tool calls."""
    message = m.model_dump(mode="json", exclude_none=True)
    if m.content is None and not m.tool_calls:
        message["content"] = ""
    return message


def _dump(value: Any) -> dict[str, Any] | None:
    """An SDK object as the upstream sent it (unknown fields kept, absent ones left out)."""
    if value is None:
        return None
    dumped: dict[str, Any] = value.model_dump(exclude_none=True)
    return dumped


def _usage(value: Any) -> Usage | None:
    dumped = _dump(value)
    return None if dumped is None else Usage.model_validate(dumped)


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP library's transport errors (httpx for openai 2.x, httpx2 for 3.x): the SDK
    raises them unwrapped when a stream breaks after its response started."""
    import httpx

    errors: list[type[Exception]] = [httpx.TransportError]
    try:
        import httpx2

        errors.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def _upstream_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return exc.message


class OpenAIProvider(Provider):
    """Chat completions from OpenAI or any server that speaks its API: every OpenAI parameter
    and message field is passed on, every answer field returned, as the upstream sent it."""

    Settings = OpenAISettings
    supports = frozenset({"tools", "response_format", "logprobs"})

    def __init__(self, name: str, settings: BaseModel) -> None:
        super().__init__(name, settings)
        assert isinstance(settings, OpenAISettings)
        self.config = settings
        self.context_window = settings.context_window
        self._client: openai.AsyncOpenAI | None = None
        self._transport_errors = _transport_errors()
        self._health: tuple[float, dict[str, Any]] | None = None
        self._probe: asyncio.Task[dict[str, Any]] | None = None

    @property
    def default_model(self) -> str:
        return self.config.model

    @property
    def base_url(self) -> str:
        """The API root as it may be shown: a password or token in it masked."""
        return mask_url(self.config.base_url or "https://api.openai.com/v1")

    @property
    def where(self) -> str:
        return f"the {self.name} provider ({self.base_url})"

    async def models(self) -> list[str]:
        return list(dict.fromkeys([self.config.model, *self.config.models]))

    def client(self) -> openai.AsyncOpenAI:
        """The SDK client, made on first use."""
        if self._client is None:
            import openai

            key = self.config.api_key.get_secret_value() if self.config.api_key else ""
            if not key:
                if self.config.base_url is None:
                    raise ProviderError(
                        f"{self.where} has no API key: set OPENAI_API_KEY or [providers.{self.name}] api_key, "
                        "or set base_url to a server that needs none",
                        retryable=False,
                        provider=self.name,
                    )
                key = "no-key"  # the SDK insists on one; servers such as vLLM ignore it
            self._client = openai.AsyncOpenAI(
                api_key=key,
                base_url=self.config.base_url,
                organization=self.config.organization,
                project=self.config.project,
                timeout=openai.Timeout(self.config.timeout, connect=self.config.connect_timeout),
                max_retries=0,
            )
        return self._client

    # --- requests -------------------------------------------------------------------

    def _arguments(self, request: ProviderRequest) -> dict[str, Any]:
        """The SDK call for ``request``: the messages and every OpenAI parameter the client
        sent, unchanged; those the SDK does not type travel in ``extra_body``."""
        args: dict[str, Any] = {
            "model": request.model or self.config.model,
            "messages": [_message(m) for m in request.messages],
        }
        p = request.params
        options = request.options
        if p.max_tokens is not None and "max_completion_tokens" not in options:
            args[self.config.token_param] = p.max_tokens
        if p.temperature is not None:
            args["temperature"] = p.temperature
        if p.top_p is not None:
            args["top_p"] = p.top_p
        if p.seed is not None:
            args["seed"] = p.seed
        if p.stop:
            args["stop"] = list(p.stop)
        typed = _sdk_parameters()
        extra: dict[str, Any] = {}
        for name, value in options.items():
            if name in typed:
                args[name] = value
            else:
                extra[name] = value
        if extra:
            args["extra_body"] = extra
        # The caller's trace goes on upstream (W3C traceparent) while traces are on.
        trace = trace_headers()
        if trace:
            args["extra_headers"] = {**(args.get("extra_headers") or {}), **trace}
        return args

    def _error(self, exc: Exception, *, midway: bool = False) -> ProviderError:
        """The SDK's (or the transport's) failure as a ProviderError with ``retryable`` set;
        ``midway``: the answer had started streaming."""
        import openai

        where, name = self.where, self.name
        if midway and isinstance(exc, (openai.APIConnectionError, *self._transport_errors)):
            if isinstance(exc, openai.APITimeoutError):
                return ProviderTimeoutError(f"{where} stopped sending mid-answer; try again", provider=name)
            return ProviderError(
                f"the connection to {where} broke mid-answer ({exc}); try again",
                retryable=True,
                status=502,
                provider=name,
            )
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeoutError(
                f"{where} did not answer within {self.config.timeout:g} s; try again or raise "
                f"[providers.{name}] timeout",
                provider=name,
            )
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError(
                f"cannot reach {where}: {exc}; check base_url and that the server is running",
                retryable=True,
                status=502,
                provider=name,
            )
        if isinstance(exc, openai.APIStatusError):
            status, message = exc.status_code, _upstream_message(exc)
            wait = parse_retry_after(exc.response.headers)
            if status == 429:
                return ProviderError(
                    f"{where} is rate limiting requests (429: {message}); try again later",
                    retryable=True,
                    status=503,
                    retry_after=wait,
                    provider=name,
                )
            if status in (408, 409) or status >= 500:
                return ProviderError(
                    f"{where} failed ({status}: {message}); try again",
                    retryable=True,
                    status=503 if status == 503 else 502,
                    retry_after=wait,
                    provider=name,
                )
            if status in (401, 403):
                return ProviderError(
                    f"{where} rejected lexrag's credentials ({status}: {message}); check OPENAI_API_KEY "
                    f"or [providers.{name}] api_key",
                    retryable=False,
                    status=502,
                    provider=name,
                )
            if status == 404:
                return ProviderError(
                    f"{where} does not serve what was asked ({status}: {message}); check "
                    f"[providers.{name}] model and base_url",
                    retryable=False,
                    status=502,
                    provider=name,
                )
            return ProviderError(
                f"{where} refused the request ({status}: {message})",
                retryable=False,
                status=400 if status in (400, 413, 422) else 502,
                provider=name,
            )
        if isinstance(exc, openai.APIError):  # an error event inside a stream, an unparsable body
            return ProviderError(
                f"{where} failed: {exc}; try again", retryable=True, status=502, provider=name
            )
        if isinstance(exc, self._transport_errors):
            return ProviderError(
                f"the connection to {where} broke mid-answer ({type(exc).__name__}: {exc}); try again",
                retryable=True,
                status=502,
                provider=name,
            )
        return ProviderError(
            f"{where} sent a malformed response ({type(exc).__name__}: {exc}); try again",
            retryable=True,
            status=502,
            provider=name,
        )

    def _caught(self) -> tuple[type[Exception], ...]:
        import openai

        return (openai.OpenAIError, ValueError, *self._transport_errors)

    # --- answers --------------------------------------------------------------------

    async def complete(self, request: ProviderRequest) -> ChatCompletion:
        args = self._arguments(request)
        client = self.client()
        try:
            response = await client.chat.completions.create(**args)
        except self._caught() as exc:
            raise self._error(exc) from exc
        if not getattr(response, "choices", None):
            raise ProviderError(
                f"{self.where} answered with no choices; try again", retryable=True, status=502
            )
        choice = response.choices[0]
        message = AssistantMessage.model_validate(_dump(choice.message) or {})
        if message.content is None and not message.tool_calls and message.refusal is None:
            message.content = ""
        logprobs = _dump(choice.logprobs)
        return ChatCompletion(
            id=response.id or new_id(),
            created=response.created or int(time.time()),
            model=response.model or args["model"],
            choices=[
                Choice(
                    message=message,
                    finish_reason=_FINISH.get(choice.finish_reason or "stop", "stop"),
                    logprobs=None if logprobs is None else ChoiceLogprobs.model_validate(logprobs),
                )
            ],
            usage=_usage(response.usage) or estimate_usage(request.messages, message.content or ""),
            system_fingerprint=response.system_fingerprint,
            service_tier=response.service_tier,
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        args = self._arguments(request)
        args["stream"] = True
        if self.config.stream_usage:
            args["stream_options"] = {"include_usage": True}
        client = self.client()
        caught = self._caught()
        try:
            upstream = await client.chat.completions.create(**args)
        except caught as exc:
            raise self._error(exc) from exc
        chunks: ChunkFactory | None = None
        finish: FinishReason | None = None
        usage: Usage | None = None
        text: list[str] = []
        try:
            async for event in upstream:
                if chunks is None:
                    chunks = ChunkFactory(event.model or args["model"], id=event.id or None)
                    yield chunks.role()
                if event.usage is not None:
                    usage = _usage(event.usage)
                for choice in event.choices:
                    if choice.index != 0:
                        continue
                    # Text, tool-call pieces, a refusal, log probabilities: each as sent.
                    delta = _dump(choice.delta) or {}
                    delta.pop("role", None)
                    if not delta.get("content"):
                        delta.pop("content", None)
                    logprobs = _dump(choice.logprobs)
                    if delta or logprobs:
                        text.append(delta.get("content") or "")
                        yield chunks.delta(
                            Delta.model_validate(delta),
                            None if logprobs is None else ChoiceLogprobs.model_validate(logprobs),
                        )
                    if choice.finish_reason:
                        finish = _FINISH.get(choice.finish_reason, "stop")
        except caught as exc:
            raise self._error(exc, midway=True) from exc
        finally:
            await upstream.close()
        if chunks is None or finish is None:
            raise ProviderError(
                f"the stream from {self.where} ended before the answer finished; try again",
                retryable=True,
                status=502,
                provider=self.name,
            )
        yield chunks.finish(finish)
        yield chunks.usage(usage or estimate_usage(request.messages, "".join(text)))

    async def health(self) -> dict[str, Any]:
        """The upstream as a cheap ``GET /models`` finds it: ``ok``, ``unauthorized`` (key
        missing or refused) or ``down``. The answer is kept for ``health_cache_s`` and one
        probe serves every caller meanwhile, so ``/health`` stays cheap under load."""
        now = time.monotonic()
        if self._health is not None and now - self._health[0] < self.config.health_cache_s:
            return self._health[1]
        import asyncio  # here, not at the top: loading the plugin stays cheap for every command

        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_upstream())
        state = await asyncio.shield(self._probe)
        self._health = (time.monotonic(), state)
        return state

    async def _probe_upstream(self) -> dict[str, Any]:
        import openai

        base = {"model": self.config.model, "base_url": self.base_url}
        try:
            client = self.client()
        except ProviderError as exc:
            return {**base, "status": "unauthorized", "error": exc.message}
        try:
            await client.with_options(timeout=self.config.health_timeout_s, max_retries=0).models.list()
        except openai.AuthenticationError as exc:
            return {**base, "status": "unauthorized", "error": self._error(exc).message}
        except openai.PermissionDeniedError as exc:
            return {**base, "status": "unauthorized", "error": self._error(exc).message}
        except openai.NotFoundError:
            # A compatible server without /models (some proxies): it answered, so it is up.
            return {**base, "status": "ok"}
        except (openai.OpenAIError, *self._transport_errors) as exc:
            return {**base, "status": "down", "error": self._error(exc).message}
        return {**base, "status": "ok"}

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


__all__ = ["OpenAIProvider"]
