"""The app factory: the pipeline, the routes, the middleware and the error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .. import __version__
from ..pipeline import Pipeline
from .auth import AuthMiddleware
from .errors import install_error_handlers
from .limits import BodyLimitMiddleware, ConcurrencyLimitMiddleware
from .openapi import honest_openapi
from .ratelimit import RATE_LIMIT_HEADERS, RateLimitMiddleware
from .requests import RequestMiddleware
from .routes import router
from .state import ServerState, generation_of
from .web import router as web_router

if TYPE_CHECKING:
    from ..config import Config
    from ..registry import Registry


def create_app(config: Config, registry: Registry, *, pipeline: Pipeline | None = None) -> FastAPI:
    """The lexrag server for ``config``, with the web chat page at ``/``.

    ``app.state.lexrag`` is the :class:`~lexrag.server.state.ServerState`; its ``reload``
    swaps in a new config without disturbing requests in flight.
    """
    state = ServerState(config, registry, pipeline or Pipeline(config, registry))
    state.metrics.watch_breakers(lambda: state.pipeline.router.breaker_states())
    state.metrics.watch_load(lambda: state.pipeline.router)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.aclose()

    app = FastAPI(
        title="lexrag",
        version=__version__,
        description="Retrieval-augmented chat over Vietnamese legal documents (OpenAI-compatible).",
        lifespan=lifespan,
    )
    app.state.lexrag = state
    app.include_router(router)
    app.include_router(web_router)
    install_error_handlers(app)
    app.openapi = honest_openapi(app, lambda: bool(state.current.key_digests))  # type: ignore[method-assign]
    server = config.settings.server
    # Added innermost first: a request passes the request middleware (id, call log,
    # metrics), CORS, the key check, the key's rate limits, the concurrency limit, then
    # the body limit.
    app.add_middleware(BodyLimitMiddleware, max_bytes=server.max_body_bytes)
    app.add_middleware(
        ConcurrencyLimitMiddleware, limit=lambda: state.current.config.settings.server.max_concurrency
    )
    app.add_middleware(
        RateLimitMiddleware,
        limiter=state.limiter,
        settings=lambda scope: (generation_of(scope).config, state.registry),
    )
    app.add_middleware(
        AuthMiddleware,
        digests=lambda: state.current.key_digests,
        names=lambda: state.current.key_names,
    )
    if server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[
                "x-request-id",
                "x-lexrag-provider",
                "x-lexrag-cache",
                "retry-after",
                *RATE_LIMIT_HEADERS,
            ],
        )
    app.add_middleware(RequestMiddleware, state=state)
    return app


__all__ = ["create_app"]
