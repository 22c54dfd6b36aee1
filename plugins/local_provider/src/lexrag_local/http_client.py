"""The HTTP backend: a running llm-service (the seed's ``POST /v1/generate``, ``GET /health``),
e.g. another ``lexrag serve``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx

from lexrag import (
    ChatMessage,
    GenerationParams,
    ProviderError,
    ProviderTimeoutError,
    Usage,
    mask_url,
    parse_retry_after,
)

from .backend import Outcome, resolve
from .chat_template import render
from .model_files import GenerationDefaults, load_tokenizer, read_json
from .settings import LocalSettings
from .tokens import StopText

#: The Frog card's defaults, used when no tokenizer directory says otherwise.
FROG_DEFAULTS = GenerationDefaults(
    eos_token_ids=[128001, 128008, 128009], bos_token_id=128000, temperature=0.6, top_p=0.9
)

#: Keys other llm-services put the text under, besides lexrag's own ``generated_text``.
TEXT_KEYS = ("generated_text", "text", "response")

#: Upstream 4xx that mean "this request is wrong", answered to the client as 400.
_REQUEST_ERRORS = {400, 413, 422}


class HttpBackend:
    def __init__(self, settings: LocalSettings) -> None:
        assert settings.url is not None
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self.shown_url = mask_url(self.url)
        """The URL as it may be shown (responses, logs): a password or token in it masked."""
        self.tokenizer_dir: Path | None = settings.tokenizer_dir or settings.model_dir
        self.context_window = settings.context_window
        self.defaults = FROG_DEFAULTS
        if self.tokenizer_dir is not None and (self.tokenizer_dir / "config.json").is_file():
            self.defaults = GenerationDefaults.read(
                self.tokenizer_dir, read_json(self.tokenizer_dir / "config.json")
            )
        self.model_name = settings.model_name or "local"
        self._timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop (a CLI may run several loops in turn)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=self._timeout)
            self._client_loop = loop
        return self._client

    @cached_property
    def tokenizer(self) -> Any | None:
        return load_tokenizer(self.tokenizer_dir) if self.tokenizer_dir is not None else None

    def count_tokens(self, text: str) -> int | None:
        if self.tokenizer is None:
            return None
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _fail(self, what: str, *, retryable: bool, status: int | None = None, **kw: Any) -> ProviderError:
        return ProviderError(
            f"llm-service at {self.shown_url} {what} (LOCAL_LLM_API_URL / [providers.local] url)",
            retryable=retryable,
            status=status,
            provider="local",
            **kw,
        )

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = await self._http().request(method, self.url + path, json=body)
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(
                f"llm-service at {self.shown_url} did not answer {path} in time ({type(exc).__name__}); "
                "it may be overloaded, or raise [providers.local] read_timeout_s",
                provider="local",
            ) from None
        except httpx.TransportError as exc:
            raise self._fail(
                f"cannot be reached: {exc or type(exc).__name__}; is it running?", retryable=True
            ) from None
        if response.status_code >= 400:
            detail = response.text[:300]
            if response.status_code == 429 or response.status_code >= 500:
                retry_after = parse_retry_after(response.headers)
                raise self._fail(
                    f"answered {response.status_code}: {detail}", retryable=True, retry_after=retry_after
                )
            status = 400 if response.status_code in _REQUEST_ERRORS else None
            raise self._fail(
                f"refused the request ({response.status_code}): {detail}", retryable=False, status=status
            )
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise self._fail(
                f"answered {path} with malformed JSON ({response.text[:120]!r}); is the URL an llm-service?",
                retryable=False,
            )
        return data

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str | Outcome]:
        r = resolve(params, self.settings, self.defaults)
        prompt = render(messages, self.tokenizer)
        body = {
            "prompt": prompt,
            "max_tokens": r.max_tokens,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "do_sample": r.temperature > 0,
        }
        data = await self._request("POST", "/v1/generate", body)
        text = next((data[k] for k in TEXT_KEYS if isinstance(data.get(k), str)), None)
        if text is None:
            raise self._fail(
                f"answered without any of {', '.join(TEXT_KEYS)}: keys {sorted(data)}", retryable=False
            )
        reason = data.get("finish_reason")
        finish = reason if reason in ("stop", "length") else "stop"
        # The service takes no stop strings: they are applied to its answer here.
        stops = StopText(r.stop)
        text = stops.feed(text) + stops.flush()
        if stops.stopped:
            finish = "stop"
        yield text
        yield Outcome(finish, self._usage(data, prompt, text))

    def _usage(self, data: dict[str, Any], prompt: str, text: str) -> Usage | None:
        try:
            return Usage.model_validate(data["usage"])
        except (KeyError, ValueError):
            pass
        prompt_tokens = self.count_tokens(prompt)
        completion_tokens = self.count_tokens(text)
        if prompt_tokens is None or completion_tokens is None:
            return None
        return Usage.of(prompt_tokens, completion_tokens)

    async def health(self) -> dict[str, Any]:
        try:
            upstream = await self._request("GET", "/health")
        except ProviderError as exc:
            return {"status": "down", "mode": "http", "url": self.shown_url, "error": exc.message}
        status = upstream.get("status", "ok")
        return {
            "status": "ok" if status in ("ok", "healthy") else "degraded",
            "mode": "http",
            "url": self.shown_url,
            "upstream": upstream,
        }

    async def aclose(self) -> None:
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


__all__ = ["FROG_DEFAULTS", "TEXT_KEYS", "HttpBackend"]
