"""The one place where a provider is picked and called.

A request's ``model`` names a configured provider (``"openai"``) or one of the model ids
a configured provider serves (``"gpt-4o-mini"``); none means ``[llm] provider``. The
router builds providers lazily, resolves names, and calls them in the fallback chain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import LexragError, NotFoundError, ProviderError
from .providers import Provider, ProviderRequest, build_provider
from .types import ChatCompletion, ChatCompletionChunk, ModelCard

if TYPE_CHECKING:
    from .config import Config
    from .plugins import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """A resolved ``model``: the provider that serves it, and the model id to ask it
    for (None: the provider's default)."""

    provider: str
    model: str | None = None


class Router:
    """Resolves model names to providers and calls them, falling back along the chain
    on transient failures."""

    def __init__(self, config: Config, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self._providers: dict[str, Provider] = {}
        self._models: dict[str, list[str]] = {}
        self._lock = asyncio.Lock()

    # --- names ----------------------------------------------------------------------

    @property
    def default_provider(self) -> str:
        return self.config.settings.llm.provider

    def configured(self) -> list[str]:
        """Providers this server offers: the chosen one, the fallback chain, and every
        installed provider with a ``[providers.<name>]`` table, in that order."""
        llm = self.config.settings.llm
        names = [llm.provider, *llm.fallback]
        names += [n for n in self.config.settings.providers if n in self.registry.providers]
        return list(dict.fromkeys(names))

    def provider(self, name: str) -> Provider:
        """The provider ``name``, built on first use with its validated settings."""
        if name not in self._providers:
            self._providers[name] = build_provider(self.config, self.registry, name)
        return self._providers[name]

    async def models_of(self, name: str) -> list[str]:
        if name not in self._models:
            self._models[name] = await self.provider(name).models()
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
        cards: dict[str, ModelCard] = {}
        for name in self.configured():
            for model_id in [name, *await self.models_of(name)]:
                cards.setdefault(model_id, ModelCard(id=model_id, owned_by=name))
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

    # --- calls ----------------------------------------------------------------------

    def _for(self, route: Route, request: ProviderRequest) -> ProviderRequest:
        return ProviderRequest(
            messages=request.messages, params=request.params, model=route.model, sources=request.sources
        )

    async def complete(
        self, request: ProviderRequest, *, route: Route, fallback: Sequence[str] | None = None
    ) -> ChatCompletion:
        """A whole answer from the first provider in the chain that gives one."""
        chain = self.chain(route, fallback)
        for i, step in enumerate(chain):
            try:
                return await self.provider(step.provider).complete(self._for(step, request))
            except ProviderError as exc:
                if not exc.retryable or i == len(chain) - 1:
                    raise
                log.warning("provider %s failed (%s); falling back to %s", step.provider, exc, chain[i + 1])
        raise AssertionError("unreachable: the chain is never empty")

    async def stream(
        self, request: ProviderRequest, *, route: Route, fallback: Sequence[str] | None = None
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Chunks from the first provider in the chain that starts answering. A failure
        before any chunk was yielded falls back; after that it propagates, since the
        client already holds part of an answer."""
        chain = self.chain(route, fallback)
        for i, step in enumerate(chain):
            started = False
            source = self.provider(step.provider).stream(self._for(step, request))
            try:
                async for chunk in source:
                    started = True
                    yield chunk
                return
            except ProviderError as exc:
                if started or not exc.retryable or i == len(chain) - 1:
                    raise
                log.warning("provider %s failed (%s); falling back to %s", step.provider, exc, chain[i + 1])
            finally:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()

    # --- state ----------------------------------------------------------------------

    async def health(self) -> dict[str, dict[str, Any]]:
        """Each configured provider's state; a provider that cannot be built is ``down``."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.configured():
            try:
                out[name] = await self.provider(name).health()
            except LexragError as exc:
                out[name] = {"status": "down", "error": exc.message}
        return out

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.aclose()


__all__ = ["Route", "Router"]
