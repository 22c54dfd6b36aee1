"""What the routes share: the config and pipeline of the moment, the embedder, the metrics.

A config reload (SIGHUP) builds a new :class:`Generation` — config, pipeline, keys —
and makes it current; every request holds the generation it started with until its
response (whole stream included) is sent, and the old pipeline is closed once the last
of its requests is done. So a reload never drops or changes a request in flight.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, cast

from fastapi import Request
from starlette.types import Scope

from ..pipeline import Pipeline
from ..registry import build_embedder
from ..retrieval import Embedder
from .auth import digest
from .cache import ResponseCache
from .metrics import Metrics
from .ratelimit import RateLimiter

if TYPE_CHECKING:
    from ..config import Config
    from ..registry import Registry

log = logging.getLogger("lexrag.server")

#: The key under ``scope["state"]`` that holds a request's generation.
SCOPE_KEY = "lexrag_generation"


class Generation:
    """One config and what is built from it."""

    def __init__(self, server: ServerState, config: Config, pipeline: Pipeline) -> None:
        self.server = server
        self.config = config
        self.registry = server.registry
        self.pipeline = pipeline
        self.metrics = server.metrics
        settings = config.settings.server
        keys = [(f"api_keys[{i}]", k) for i, k in enumerate(settings.api_keys)]
        keys += [(name, named.key) for name, named in settings.keys.items()]
        self.key_digests = [digest(k.get_secret_value()) for _, k in keys]
        #: The name of each key of ``key_digests``, for the limits, the cache and the log.
        self.key_names = [name for name, _ in keys]
        self.active = 0
        self.retired = False
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()

    def embedder(self) -> Embedder:
        """The ``[retrieval] embedder``, built on first use (blocking: call in a thread)."""
        with self._lock:
            if self._embedder is None:
                self._embedder = build_embedder(self.config, self.registry)
            return self._embedder

    async def aclose(self) -> None:
        await self.pipeline.aclose()


class ServerState:
    """The server's state across reloads."""

    def __init__(self, config: Config, registry: Registry, pipeline: Pipeline) -> None:
        self.registry = registry
        self.metrics = Metrics()
        self.limiter = RateLimiter()
        self.cache = ResponseCache()
        # Providers are built now, not on the first request: one that cannot be built is
        # reported at start (log, /health, /v1/models) and the chain skips it.
        pipeline.router.build_all()
        self.current = Generation(self, config, pipeline)
        self.reloads = 0
        self._streams_end_at: float | None = None

    # --- the generation of the moment ---------------------------------------------

    @property
    def config(self) -> Config:
        return self.current.config

    @property
    def pipeline(self) -> Pipeline:
        return self.current.pipeline

    def lease(self) -> Generation:
        """The current generation, held until :meth:`release`."""
        generation = self.current
        generation.active += 1
        return generation

    async def release(self, generation: Generation) -> None:
        generation.active -= 1
        if generation.retired and generation.active == 0:
            await generation.aclose()

    async def reload(self, config: Config) -> None:
        """Serve new requests with ``config``; requests in flight finish with the old one."""
        old = self.current
        pipeline = Pipeline(config, self.registry)
        await asyncio.to_thread(pipeline.router.build_all)
        self.current = Generation(self, config, pipeline)
        self.reloads += 1
        old.retired = True
        log.info(
            "config reloaded: provider chain %s; %d request(s) in flight finish on the previous config",
            " -> ".join(self.current.pipeline.router.chain_names()),
            old.active,
        )
        if old.active == 0:
            await old.aclose()

    # --- shutting down ------------------------------------------------------------

    def end_streams_in(self, seconds: float) -> None:
        """Streams still open ``seconds`` from now end cleanly (error event, ``[DONE]``)."""
        self._streams_end_at = time.monotonic() + max(0.0, seconds)

    def streams_must_end(self) -> bool:
        return self._streams_end_at is not None and time.monotonic() >= self._streams_end_at

    async def aclose(self) -> None:
        await self.current.aclose()
        await asyncio.to_thread(self.limiter.close)
        await asyncio.to_thread(self.cache.close)


def generation_of(scope: Scope) -> Generation:
    """The generation leased for the request of ``scope`` (by the request middleware)."""
    return cast(Generation, scope["state"][SCOPE_KEY])


def state_of(request: Request) -> Generation:
    """The generation that serves ``request`` (leased by the request middleware)."""
    generation = request.scope.get("state", {}).get(SCOPE_KEY)
    if generation is None:
        return cast(ServerState, request.app.state.lexrag).current
    return cast(Generation, generation)


__all__ = ["SCOPE_KEY", "Generation", "ServerState", "generation_of", "state_of"]
