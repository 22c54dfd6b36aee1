"""The ``openai`` provider: the official SDK (async) against any OpenAI-compatible API.

The SDK's own retries are off (``max_retries=0``): retries, fallback and cool-down belong
to lexrag's router, which needs every failure reported at once with ``retryable`` set.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from lexrag import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkFactory,
    FinishReason,
    Provider,
    ProviderError,
    ProviderRequest,
    ProviderTimeoutError,
    Usage,
    estimate_usage,
    new_id,
    parse_retry_after,
)

from .settings import OpenAISettings

if TYPE_CHECKING:
    import openai

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "stop",
    "function_call": "stop",
}


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
    """Chat completions from OpenAI or any server that speaks its API."""

    Settings = OpenAISettings

    def __init__(self, name: str, settings: BaseModel) -> None:
        super().__init__(name, settings)
        assert isinstance(settings, OpenAISettings)
        self.config = settings
        self.context_window = settings.context_window
        self._client: openai.AsyncOpenAI | None = None
        self._transport_errors = _transport_errors()

    @property
    def default_model(self) -> str:
        return self.config.model

    @property
    def where(self) -> str:
        return f"the {self.name} provider ({self.config.base_url or 'https://api.openai.com/v1'})"

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
        messages: list[dict[str, Any]] = []
        for m in request.messages:
            message: dict[str, Any] = {"role": m.role, "content": m.content or ""}
            if m.name:
                message["name"] = m.name
            messages.append(message)
        args: dict[str, Any] = {"model": request.model or self.config.model, "messages": messages}
        p = request.params
        if p.max_tokens is not None:
            args[self.config.token_param] = p.max_tokens
        if p.temperature is not None:
            args["temperature"] = p.temperature
        if p.top_p is not None:
            args["top_p"] = p.top_p
        if p.seed is not None:
            args["seed"] = p.seed
        if p.stop:
            args["stop"] = list(p.stop)
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
        text = choice.message.content or ""
        usage = (
            Usage.of(response.usage.prompt_tokens, response.usage.completion_tokens)
            if response.usage
            else estimate_usage(request.messages, text)
        )
        return ChatCompletion(
            id=response.id or new_id(),
            created=response.created or int(time.time()),
            model=response.model or args["model"],
            choices=[
                Choice(
                    message=AssistantMessage(content=text, refusal=choice.message.refusal),
                    finish_reason=_FINISH.get(choice.finish_reason or "stop", "stop"),
                )
            ],
            usage=usage,
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
                    usage = Usage.of(event.usage.prompt_tokens, event.usage.completion_tokens)
                for choice in event.choices:
                    if choice.index != 0:
                        continue
                    if choice.delta.content:
                        text.append(choice.delta.content)
                        yield chunks.text(choice.delta.content)
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
        return {"status": "ok", "model": self.config.model, "base_url": self.config.base_url}

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


__all__ = ["OpenAIProvider"]
