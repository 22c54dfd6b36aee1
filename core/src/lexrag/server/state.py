"""What the routes share: the pipeline, the embedder (built on first use) and the metrics."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, cast

from fastapi import Request

from ..retrieval import Embedder, build_embedder
from .metrics import Metrics

if TYPE_CHECKING:
    from ..config import Config
    from ..pipeline import Pipeline
    from ..plugins import Registry


class ServerState:
    def __init__(self, config: Config, registry: Registry, pipeline: Pipeline) -> None:
        self.config = config
        self.registry = registry
        self.pipeline = pipeline
        self.metrics = Metrics()
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()

    def embedder(self) -> Embedder:
        """The ``[retrieval] embedder``, built on first use (blocking: call in a thread)."""
        with self._lock:
            if self._embedder is None:
                self._embedder = build_embedder(self.config, self.registry)
            return self._embedder


def state_of(request: Request) -> ServerState:
    return cast(ServerState, request.app.state.lexrag)


__all__ = ["ServerState", "state_of"]
