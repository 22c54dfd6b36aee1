"""The app factory: the pipeline, the routes, the limits and the error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .. import __version__
from ..pipeline import Pipeline
from .errors import install_error_handlers
from .limits import BodyLimitMiddleware
from .metrics import MetricsMiddleware
from .routes import router
from .state import ServerState
from .web import router as web_router

if TYPE_CHECKING:
    from ..config import Config
    from ..plugins import Registry


def create_app(config: Config, registry: Registry, *, pipeline: Pipeline | None = None) -> FastAPI:
    """The lexrag server for ``config``, with the web chat page at ``/``."""
    pipeline = pipeline or Pipeline(config, registry)
    state = ServerState(config, registry, pipeline)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await pipeline.aclose()

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
    server = config.settings.server
    if server.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=server.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=server.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


__all__ = ["create_app"]
