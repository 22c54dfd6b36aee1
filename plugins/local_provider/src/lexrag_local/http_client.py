"""The HTTP backend: a running llm-service spoken to over HTTP (``LOCAL_LLM_API_URL``).

The answer streams token by token in OpenAI's wire format (server-sent
``chat.completion.chunk`` / ``text_completion`` events), so the service may be another
``lexrag serve``, vLLM or llama.cpp's server hosting the model:

- ``api = "chat"`` (the default): ``POST /v1/chat/completions`` with the messages; the
  service applies the model's chat template;
- ``api = "completions"``: ``POST /v1/completions`` with the prompt rendered here;
- ``api = "generate"``: the seed's ``POST /v1/generate``, one whole answer (not streamed).

A raw prompt (:class:`~lexrag_local.chat_template.RawPrompt`) goes to ``/v1/completions``
(or ``/v1/generate`` with ``"raw": true``). Stop strings are sent along and applied here as
the text arrives too; closing the stream (the client went away, a stop string matched)
closes the connection, which ends the generation on a service that notices (lexrag, vLLM
and llama.cpp do).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx

from lexrag import (
    ChatMessage,
    FinishReason,
    GenerationParams,
    ProviderError,
    ProviderTimeoutError,
    Usage,
    mask_url,
    parse_retry_after,
    trace_headers,
)

from .backend import Outcome, Resolved, resolve
from .chat_template import RawPrompt, as_dicts, render, without_bos
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

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
GENERATE_PATH = "/v1/generate"


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

    def _timed_out(self, path: str, exc: Exception) -> ProviderTimeoutError:
        return ProviderTimeoutError(
            f"llm-service at {self.shown_url} did not answer {path} in time ({type(exc).__name__}); "
            "it may be overloaded, or raise [providers.local] read_timeout_s",
            provider="local",
        )

    def _refused(self, response: httpx.Response) -> ProviderError:
        """The error for an answer with an HTTP error status (its body already read)."""
        detail = response.text[:300]
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = parse_retry_after(response.headers)
            return self._fail(
                f"answered {response.status_code}: {detail}", retryable=True, retry_after=retry_after
            )
        status = 400 if response.status_code in _REQUEST_ERRORS else None
        return self._fail(
            f"refused the request ({response.status_code}): {detail}", retryable=False, status=status
        )

    def _json(self, response: httpx.Response, path: str, *, empty: bool = False) -> dict[str, Any]:
        if empty and not response.content.strip():
            return {}  # vLLM's /health: 200 and no body
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

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, empty: bool = False
    ) -> dict[str, Any]:
        try:
            response = await self._http().request(method, self.url + path, json=body, headers=trace_headers())
        except httpx.TimeoutException as exc:
            raise self._timed_out(path, exc) from None
        except httpx.TransportError as exc:
            raise self._fail(
                f"cannot be reached: {exc or type(exc).__name__}; is it running?", retryable=True
            ) from None
        if response.status_code >= 400:
            raise self._refused(response)
        return self._json(response, path, empty=empty)

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str | Outcome]:
        r = resolve(params, self.settings, self.defaults)
        if self.settings.api == "generate":
            async for item in self._generate_whole(messages, r):
                yield item
            return
        path, body = self._streaming_request(messages, r)
        # Closed with this generator (the client went away): that closes the connection.
        async with contextlib.aclosing(self._stream(path, body, messages, r)) as items:
            async for item in items:
                yield item

    def _streaming_request(self, messages: Sequence[ChatMessage], r: Resolved) -> tuple[str, dict[str, Any]]:
        """The path and body of an OpenAI-style streamed request for ``messages``."""
        body: dict[str, Any] = {}
        if self.settings.upstream_model:
            body["model"] = self.settings.upstream_model
        if self.settings.api == "chat" and not isinstance(messages, RawPrompt):
            path = CHAT_PATH
            body["messages"] = as_dicts(messages)
        else:
            # A completions server puts the BOS in front itself.
            path = COMPLETIONS_PATH
            body["prompt"] = without_bos(render(messages, self.tokenizer), self.tokenizer)
        body.update(
            max_tokens=r.max_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            stream=True,
            stream_options={"include_usage": True},
        )
        if r.seed is not None:
            body["seed"] = r.seed
        if r.stop:
            body["stop"] = r.stop
        return path, body

    async def _stream(
        self, path: str, body: dict[str, Any], messages: Sequence[ChatMessage], r: Resolved
    ) -> AsyncGenerator[str | Outcome, None]:
        """Text as the service streams it, stop strings applied, then one ``Outcome``.
        Leaving early (a stop string, the consumer closing this generator) closes the
        response and with it the connection: the service stops generating."""
        stops = StopText(r.stop)
        parts: list[str] = []
        finish: FinishReason | None = None
        usage: Usage | None = None
        started = done = False
        try:
            async with self._http().stream(
                "POST", self.url + path, json=body, headers=trace_headers()
            ) as response:
                started = True
                if response.status_code >= 400:
                    await response.aread()
                    raise self._refused(response)
                async with contextlib.aclosing(self._events(response, path)) as events:
                    async for data in events:
                        if data is None:  # [DONE]
                            done = True
                            break
                        error = data.get("error")
                        if error is not None:
                            message = error.get("message") if isinstance(error, dict) else error
                            raise self._fail(f"broke off the answer: {message}", retryable=True)
                        usage = _usage_of(data) or usage
                        for choice in data.get("choices") or []:
                            if not isinstance(choice, dict):
                                continue
                            piece = _piece(choice)
                            if piece:
                                out = stops.feed(piece)
                                if out:
                                    parts.append(out)
                                    yield out
                                if stops.stopped:
                                    break
                            reason = choice.get("finish_reason")
                            if reason:
                                finish = "length" if reason == "length" else "stop"
                        if stops.stopped:
                            break  # leaving the block closes the connection: generation ends there
        except httpx.TimeoutException as exc:
            raise self._timed_out(path, exc) from None
        except httpx.TransportError as exc:
            reason = exc or type(exc).__name__
            what = (
                f"broke off the answer: {reason}"
                if started
                else f"cannot be reached: {reason}; is it running?"
            )
            raise self._fail(what, retryable=True) from None
        tail = stops.flush()
        if tail:
            parts.append(tail)
            yield tail
        if stops.stopped:
            finish, usage = "stop", None  # the service's counts, if any came, include the cut text
        elif finish is None:
            if not done:
                raise self._fail(f"ended the {path} stream without finishing the answer", retryable=True)
            finish = "stop"
        yield Outcome(finish, usage or self._count(messages, "".join(parts)))

    async def _events(
        self, response: httpx.Response, path: str
    ) -> AsyncGenerator[dict[str, Any] | None, None]:
        """The JSON of each server-sent event, ``None`` for ``[DONE]``; a service that
        answered with one JSON body instead (it does not stream) gives that body."""
        if "text/event-stream" not in response.headers.get("content-type", ""):
            await response.aread()
            yield self._json(response, path)
            yield None
            return
        data: list[str] = []
        async for line in response.aiter_lines():
            if line:
                field, _, value = line.partition(":")
                if field == "data":
                    data.append(value[1:] if value.startswith(" ") else value)
                continue
            if not data:
                continue
            text, data = "\n".join(data), []
            if text.strip() == "[DONE]":
                yield None
                return
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                raise self._fail(f"sent a malformed {path} event ({text[:120]!r})", retryable=False)
            yield event

    async def _generate_whole(
        self, messages: Sequence[ChatMessage], r: Resolved
    ) -> AsyncIterator[str | Outcome]:
        """The seed's ``/v1/generate``: the prompt rendered here, marked raw; one whole answer."""
        prompt = render(messages, self.tokenizer)
        body = {
            "prompt": prompt,
            "max_tokens": r.max_tokens,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "do_sample": r.temperature > 0,
            "raw": True,
        }
        data = await self._request("POST", GENERATE_PATH, body)
        text = next((data[k] for k in TEXT_KEYS if isinstance(data.get(k), str)), None)
        if text is None:
            raise self._fail(
                f"answered without any of {', '.join(TEXT_KEYS)}: keys {sorted(data)}", retryable=False
            )
        reason = data.get("finish_reason")
        finish: FinishReason = "length" if reason == "length" else "stop"
        # The seed's API takes no stop strings: they are applied to its answer here.
        stops = StopText(r.stop)
        text = stops.feed(text) + stops.flush()
        if stops.stopped:
            finish = "stop"
        yield text
        yield Outcome(finish, _usage_of(data) or self._count(messages, text))

    def _count(self, messages: Sequence[ChatMessage], text: str) -> Usage | None:
        """Usage counted with the tokenizer (None without one)."""
        if self.tokenizer is None:
            return None
        prompt_tokens = self.count_tokens(render(messages, self.tokenizer))
        completion_tokens = self.count_tokens(text)
        if prompt_tokens is None or completion_tokens is None:
            return None
        return Usage.of(prompt_tokens, completion_tokens)

    async def health(self) -> dict[str, Any]:
        try:
            upstream = await self._request("GET", "/health", empty=True)
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


def _piece(choice: dict[str, Any]) -> str | None:
    """A choice's text: a chat chunk's ``delta.content``, a completion's ``text``, or a
    whole chat answer's ``message.content``."""
    for holder in (choice.get("delta"), choice.get("message")):
        if isinstance(holder, dict):
            content = holder.get("content")
            return content if isinstance(content, str) else None
    text = choice.get("text")
    return text if isinstance(text, str) else None


def _usage_of(data: dict[str, Any]) -> Usage | None:
    try:
        return Usage.model_validate(data["usage"])
    except (KeyError, ValueError):
        return None


__all__ = ["CHAT_PATH", "COMPLETIONS_PATH", "FROG_DEFAULTS", "GENERATE_PATH", "TEXT_KEYS", "HttpBackend"]
