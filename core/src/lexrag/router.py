"""The one place where a provider is picked and called.

A request's ``model`` names a configured provider (``"openai"``) or one of the model ids
a configured provider serves (``"gpt-4o-mini"``); none means ``[llm] provider``. The
router builds providers lazily, resolves names, and calls them along the chain (the
chosen provider, then the request's ``fallback`` list or ``[llm] fallback``): transient
failures are retried (:mod:`lexrag.retry`), a provider that keeps failing is skipped for a
cool-down (:mod:`lexrag.breaker`), and what happened goes to the call log
(:mod:`lexrag.calllog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import RetryCallState

from . import calllog, tracing
from .breaker import Breaker, BreakerSettings, BreakerState
from .calllog import Attempt, CallRecord
from .errors import (
    ConfigError,
    CoolingDown,
    LexragError,
    NotFoundError,
    ProviderError,
    ProviderTimeoutError,
)
from .providers import Provider, ProviderRequest
from .redact import redact
from .registry import Registry, build_provider
from .retry import Deadline, RetryPolicy, transient, with_retries
from .types import ChatCompletion, ChatCompletionChunk, ModelCard, Usage

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")


def _worth_retrying(exc: BaseException) -> bool:
    """A transient failure, unless the provider's breaker has opened meanwhile."""
    return transient(exc) and not isinstance(exc, CoolingDown)


@dataclass
class _Opened:
    """A stream read up to its first token: the chunks so far, and the rest to come."""

    held: list[ChatCompletionChunk]
    source: AsyncIterator[ChatCompletionChunk]


async def _aclose(source: AsyncIterator[ChatCompletionChunk]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


def _exhausted(errors: list[ProviderError], deadline: Deadline) -> ProviderError:
    """The error for a chain in which no provider answered."""
    if not errors:
        return ProviderTimeoutError(
            f"no provider answered within the request deadline ({deadline.seconds:g} s, [llm] deadline_s)"
        )
    if len(errors) == 1:
        return errors[0]
    last = errors[-1]
    hints = [e.retry_after for e in errors if e.retry_after is not None]
    message = "no provider could answer: " + "; ".join(f"{e.provider}: {e.message}" for e in errors)
    combined = ProviderError(
        message, retryable=True, status=last.status, retry_after=min(hints) if hints else None
    )
    combined.code = last.code
    return combined


def _answered_span(span: tracing.Span, result: object) -> None:
    """What a provider's answer tells its attempt's span: the model, and for a whole answer
    the usage and finish reason (a stream's go on its ``lexrag.stream`` span)."""
    if not span.is_recording():
        return
    if isinstance(result, ChatCompletion):
        usage = result.usage
        tracing.genai_response(
            span,
            model=result.model,
            response_id=result.id,
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            finish_reasons=[c.finish_reason for c in result.choices if c.finish_reason],
        )
    elif isinstance(result, _Opened) and result.held:
        tracing.genai_response(span, model=result.held[0].model, response_id=result.held[0].id)


@dataclass
class _Seen:
    """What a stream's span reports when it ends: chunks, usage, finish reasons."""

    chunks: int = 0
    model: str | None = None
    usage: Usage | None = None
    finish: list[str] = dataclasses.field(default_factory=list)

    def add(self, chunk: ChatCompletionChunk) -> None:
        self.chunks += 1
        self.model = chunk.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        self.finish += [c.finish_reason for c in chunk.choices if c.finish_reason]

    def close(self, span: tracing.Span) -> None:
        if span.is_recording():
            span.set_attribute("lexrag.chunks", self.chunks)
            tracing.genai_response(
                span,
                model=self.model,
                input_tokens=self.usage.prompt_tokens if self.usage else None,
                output_tokens=self.usage.completion_tokens if self.usage else None,
                finish_reasons=self.finish,
            )
        span.end()


@dataclass(frozen=True)
class Route:
    """A resolved ``model``: the provider that serves it, and the model id to ask it
    for (None: the provider's default)."""

    provider: str
    model: str | None = None


class Router:
    """Resolves model names to providers and calls them: retries, fallback along the
    chain and cool-down of failing providers."""

    def __init__(
        self, config: Config, registry: Registry, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.registry = registry
        self._providers: dict[str, Provider] = {}
        self._unavailable: dict[str, str] = {}
        self._models: dict[str, list[str]] = {}
        self._breakers: dict[str, Breaker] = {}
        self._clock = clock

    # --- names ----------------------------------------------------------------------

    @property
    def default_provider(self) -> str:
        return self.config.settings.llm.provider

    def configured(self) -> list[str]:
        """Providers this server offers: the chosen one, the fallback chain, and every
        installed provider with a ``[providers.<name>]`` table, in that order."""
        names = self.config.settings.llm.chain
        names += [n for n in self.config.settings.providers if n in self.registry.providers]
        return list(dict.fromkeys(names))

    def provider(self, name: str) -> Provider:
        """The provider ``name``, built on first use with its validated settings. One that
        cannot be built is remembered as unavailable (with the reason) until the next
        config; asking for it raises a :class:`ProviderError` the chain moves past."""
        if name in self._unavailable:
            raise self._unavailable_error(name)
        if name not in self._providers:
            try:
                self._providers[name] = build_provider(self.config, self.registry, name)
            except Exception as exc:  # any failure to build: the provider's, not the request's
                reason = redact(" ".join(str(exc).split()) or type(exc).__name__)
                if not isinstance(exc, LexragError):
                    reason = f"{type(exc).__name__}: {reason}"
                self._unavailable[name] = reason
                log.error("provider %s is unavailable: %s", name, reason)
                raise self._unavailable_error(name) from exc
        return self._providers[name]

    def _unavailable_error(self, name: str) -> ProviderError:
        error = ProviderError(
            f"provider {name!r} is unavailable: {self._unavailable[name]}",
            retryable=False,
            status=503,
            provider=name,
        )
        error.code = "provider_unavailable"
        return error

    def build_all(self) -> dict[str, str]:
        """Build every configured provider now (the server does at start and on reload), so
        a broken one is reported at once; returns name → why, for those that cannot be built."""
        for name in self.configured():
            with contextlib.suppress(ProviderError):
                self.provider(name)
        return dict(self._unavailable)

    def built(self) -> dict[str, Provider]:
        """The providers built so far (none is built by asking)."""
        return dict(self._providers)

    @property
    def unavailable(self) -> dict[str, str]:
        """Providers that could not be built, and why."""
        return dict(self._unavailable)

    def check_chain(self) -> None:
        """Raise a :class:`ConfigError` when no provider of the chain can be built."""
        self.build_all()
        chain = self.chain_names()
        if all(name in self._unavailable for name in chain):
            reasons = "; ".join(f"{name}: {self._unavailable[name]}" for name in chain)
            raise ConfigError(f"no provider of the chain ({' -> '.join(chain)}) can be built: {reasons}")

    async def models_of(self, name: str) -> list[str]:
        """The model ids provider ``name`` serves; none for an unavailable provider."""
        if name not in self._models:
            try:
                provider = self.provider(name)
            except ProviderError:
                return []
            self._models[name] = await provider.models()
        return self._models[name]

    async def resolve(self, model: str | None) -> Route:
        """The route for a request's ``model``, or a 404 listing the valid names."""
        if model is None or model == "":
            return Route(self.default_provider)
        names = self.configured()
        if model in names:
            return Route(model)
        for name in names:
            if model in await self.models_of(name):
                return Route(name, model)
        valid = ", ".join(await self.model_ids())
        raise NotFoundError(
            f"model {model!r} is not served here; valid names: {valid} (GET /v1/models lists them)",
            param="model",
            code="model_not_found",
        )

    async def model_ids(self) -> list[str]:
        ids: list[str] = []
        for name in self.configured():
            ids += [name, *await self.models_of(name)]
        return list(dict.fromkeys(ids))

    async def model_cards(self) -> list[ModelCard]:
        """A card per provider and per model id it serves; an unavailable provider is listed
        with ``state: "unavailable"`` and the reason, never an error."""
        cards: dict[str, ModelCard] = {}
        for name in self.configured():
            ids = await self.models_of(name)
            reason = self._unavailable.get(name)
            state = "unavailable" if reason is not None else self.breaker(name).state.value
            for model_id in [name, *ids]:
                cards.setdefault(model_id, ModelCard(id=model_id, owned_by=name, state=state, reason=reason))
        return list(cards.values())

    def chain(self, route: Route, fallback: Sequence[str] | None) -> list[Route]:
        """``route`` then the fallback providers (the request's list, else ``[llm] fallback``)."""
        names = self.config.settings.llm.fallback if fallback is None else list(fallback)
        for name in names:
            if name not in self.registry.providers:
                raise NotFoundError(
                    f"fallback provider {name!r} is not installed "
                    f"(installed: {', '.join(self.registry.providers.names())})",
                    param="fallback",
                    code="model_not_found",
                )
        rest = [Route(n) for n in names if n != route.provider]
        return [route, *rest]

    def first_available(self, route: Route, fallback: Sequence[str] | None) -> Provider:
        """The first provider of the chain that could be built: the one whose tokenizer and
        context window the prompt is fitted to. None can: the first one's error."""
        chain = self.chain(route, fallback)
        for step in chain:
            with contextlib.suppress(ProviderError):
                return self.provider(step.provider)
        return self.provider(chain[0].provider)

    # --- calls ----------------------------------------------------------------------

    def breaker(self, name: str) -> Breaker:
        """The circuit breaker of provider ``name``."""
        if name not in self._breakers:
            llm = self.config.settings.llm
            settings = BreakerSettings(llm.breaker_failures, llm.breaker_window_s, llm.breaker_cooldown_s)
            self._breakers[name] = Breaker(settings, self._clock)
        return self._breakers[name]

    @property
    def policy(self) -> RetryPolicy:
        llm = self.config.settings.llm
        return RetryPolicy(llm.max_retries, llm.retry_backoff_s, llm.retry_backoff_max_s)

    def _for(self, route: Route, request: ProviderRequest) -> ProviderRequest:
        """``request`` as ``route``'s provider gets it: every field kept, the model id its own."""
        return dataclasses.replace(request, model=route.model)

    def _span_of(self, step: Route, request: ProviderRequest, position: int) -> tuple[str, dict[str, Any]]:
        """The name and attributes of the trace span of one attempt at ``step`` (GenAI
        conventions); nothing is worked out while traces are off."""
        if not tracing.enabled():
            return "", {}
        model = step.model
        if model is None:
            with contextlib.suppress(ProviderError):
                model = self.provider(step.provider).default_model
        operation = "chat" if request.prompt is None else "text_completion"
        p = request.params
        attributes = tracing.genai_request(
            operation, step.provider, model, max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p
        )
        attributes.update({"lexrag.chain.position": position, "lexrag.fallback": position > 0})
        return (f"{operation} {model}" if model else operation), attributes

    async def _attempt(
        self,
        step: Route,
        call: CallRecord,
        deadline: Deadline,
        fn: Callable[[], Awaitable[T]],
        first: bool,
        span_of: tuple[str, dict[str, Any]] = ("", {}),
    ) -> T:
        """One call of ``step``'s provider within what is left of the deadline; the
        outcome goes to its breaker, to the call record and to a trace span of its own."""
        breaker = self.breaker(step.provider)
        if not first and not breaker.allow():
            raise CoolingDown(step.provider, breaker.retry_in())
        started = time.perf_counter()
        name, attributes = span_of
        attempt = 1 + sum(1 for a in call.attempts if a.provider == step.provider)
        with tracing.span(
            name, {**attributes, "lexrag.attempt": attempt}, kind=tracing.SpanKind.CLIENT
        ) as span:

            def note(outcome: str, status: int | None) -> None:
                call.attempts.append(Attempt(step.provider, outcome, status, time.perf_counter() - started))
                if outcome != "ok":
                    tracing.failed(span, outcome, f"HTTP {status}" if status else "")

            try:
                async with asyncio.timeout(deadline.remaining()):
                    result = await fn()
            except TimeoutError:
                breaker.failure()
                exc = ProviderTimeoutError(
                    f"the {step.provider} provider did not answer within the request deadline "
                    f"({deadline.seconds:g} s, [llm] deadline_s); try again later",
                    provider=step.provider,
                )
                note(exc.code or "timeout", exc.status)
                raise exc from None
            except ProviderError as exc:
                if exc.retryable:
                    breaker.failure()
                else:
                    breaker.release()
                note(exc.code or "provider_error", exc.status)
                raise
            except BaseException:
                breaker.release()
                raise
            breaker.success()
            note("ok", 200)
            _answered_span(span, result)
            return result

    async def _retried(
        self,
        step: Route,
        call: CallRecord,
        deadline: Deadline,
        open_: Callable[[Route], Awaitable[T]],
        span_of: tuple[str, dict[str, Any]] = ("", {}),
    ) -> T:
        """``step``'s provider, its transient failures retried within the deadline."""
        attempts = 0
        failure: ProviderError | None = None

        async def attempt() -> T:
            nonlocal attempts, failure
            attempts += 1
            try:
                return await self._attempt(step, call, deadline, lambda: open_(step), attempts == 1, span_of)
            except CoolingDown:
                raise
            except ProviderError as exc:
                failure = exc
                raise

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "provider %s failed (%s); retry %d in %.2f s",
                step.provider,
                error,
                state.attempt_number,
                state.upcoming_sleep,
            )

        try:
            return await with_retries(
                attempt,
                policy=self.policy,
                deadline=deadline,
                before_sleep=before_sleep,
                retry_if=_worth_retrying,
            )
        except CoolingDown:
            # The breaker opened on this request's own failures: the client hears about
            # those, not about the cool-down they caused.
            if failure is not None:
                raise failure from None
            raise

    async def _first_answer(
        self,
        chain: list[Route],
        open_: Callable[[Route], Awaitable[T]],
        call: CallRecord,
        request: ProviderRequest,
    ) -> tuple[int, Route, T]:
        """Walk the chain: each provider gets its retries, a cooling one is skipped, a
        permanent failure ends the request at once."""
        deadline = Deadline(self.config.settings.llm.deadline_s, self._clock)
        errors: list[ProviderError] = []
        for i, step in enumerate(chain):
            if deadline.expired:
                break
            breaker = self.breaker(step.provider)
            if not breaker.allow():
                call.skipped.append(step.provider)
                errors.append(CoolingDown(step.provider, breaker.retry_in()))
                continue
            try:
                result = await self._retried(step, call, deadline, open_, self._span_of(step, request, i))
            except ProviderError as exc:
                if exc.blames_request:
                    raise
                errors.append(exc)
                if i + 1 < len(chain):
                    log.warning(
                        "provider %s failed (%s); falling back to %s", step.provider, exc, chain[i + 1]
                    )
                continue
            return i, step, result
        raise _exhausted(errors, deadline)

    async def complete(
        self, request: ProviderRequest, *, route: Route, fallback: Sequence[str] | None = None
    ) -> ChatCompletion:
        """A whole answer from the first provider in the chain that gives one, each
        transient failure retried, all within ``[llm] deadline_s``."""
        call = calllog.current()

        async def open_(step: Route) -> ChatCompletion:
            return await self.provider(step.provider).complete(self._for(step, request))

        i, step, completion = await self._first_answer(self.chain(route, fallback), open_, call, request)
        call.answered(step.provider, completion.model, fallback=i > 0)
        call.usage(completion.usage)
        return completion

    async def stream(
        self, request: ProviderRequest, *, route: Route, fallback: Sequence[str] | None = None
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Chunks from the first provider in the chain that starts answering.

        Until a provider's first token, its chunks are held back, so a failure (retried,
        then falling back) is invisible to the client; the deadline covers that wait.
        After it a failure propagates, since the client already holds part of an answer;
        a provider silent for ``deadline_s`` between two chunks is a failure too.
        """
        call = calllog.current()

        async def open_(step: Route) -> _Opened:
            return await self._open_stream(step, request)

        i, step, opened = await self._first_answer(self.chain(route, fallback), open_, call, request)
        call.answered(step.provider, opened.held[0].model, fallback=i > 0)
        call.first_token()
        source, idle = opened.source, self.config.settings.llm.deadline_s
        # Not made current: the span outlives this step of the generator.
        span = tracing.start_span("lexrag.stream", {"gen_ai.provider.name": step.provider})
        seen = _Seen()
        try:
            for chunk in opened.held:
                seen.add(chunk)
                yield chunk
            while True:
                try:
                    async with asyncio.timeout(idle):
                        chunk = await anext(source)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    self.breaker(step.provider).failure()
                    tracing.failed(span, "timeout")
                    raise ProviderTimeoutError(
                        f"the {step.provider} provider stopped sending mid-answer for {idle:g} s "
                        "([llm] deadline_s); try again",
                        provider=step.provider,
                    ) from None
                except ProviderError as exc:
                    if exc.retryable:
                        self.breaker(step.provider).failure()
                    tracing.failed(span, exc.code or "provider_error", exc.message)
                    raise
                call.usage(chunk.usage)
                seen.add(chunk)
                yield chunk
        finally:
            seen.close(span)
            await _aclose(source)

    async def _open_stream(self, step: Route, request: ProviderRequest) -> _Opened:
        """Start ``step``'s stream and read it up to its first token."""
        source = self.provider(step.provider).stream(self._for(step, request))
        held: list[ChatCompletionChunk] = []
        try:
            while True:
                try:
                    chunk = await anext(source)
                except StopAsyncIteration:
                    break
                held.append(chunk)
                if any(c.delta.content or c.finish_reason for c in chunk.choices):
                    return _Opened(held, source)
        except BaseException:
            await _aclose(source)
            raise
        await _aclose(source)
        raise ProviderError(
            f"the {step.provider} provider ended the stream before any answer text; try again",
            retryable=True,
            status=502,
            provider=step.provider,
        )

    # --- state ----------------------------------------------------------------------

    def chain_names(self) -> list[str]:
        """The configured chain: ``[llm] provider`` then ``[llm] fallback``."""
        return self.config.settings.llm.chain

    def breaker_states(self) -> dict[str, BreakerState]:
        return {name: self.breaker(name).state for name in self.configured()}

    async def health(self) -> dict[str, dict[str, Any]]:
        """Each configured provider's state and breaker; a provider that cannot be built
        is ``unavailable`` (with the reason), one whose breaker is not closed at best
        ``degraded``."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.configured():
            try:
                state = dict(await self.provider(name).health())
            except ProviderError:
                state = {"status": "unavailable", "error": self._unavailable.get(name, "")}
            except LexragError as exc:
                state = {"status": "down", "error": redact(exc.message)}
            breaker = self.breaker(name).snapshot()
            if breaker["state"] != BreakerState.CLOSED.value and state.get("status") == "ok":
                state["status"] = "degraded"
            state["breaker"] = breaker
            out[name] = state
        return out

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.aclose()


__all__ = ["CoolingDown", "Route", "Router"]
