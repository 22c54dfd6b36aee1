"""lexrag: retrieval-augmented chat over Vietnamese legal documents."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import ConfigError, LexragError, PluginError, ProviderError, RetrievalError
from .hookspecs import hookimpl
from .providers import GenerationParams, NoSettings, Provider, ProviderRequest
from .retrieval import Chunk, Citation, Embedder, Hit, RetrievalContext, Retriever

try:
    __version__ = version("lexrag")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = [
    "Chunk",
    "Citation",
    "ConfigError",
    "Embedder",
    "GenerationParams",
    "Hit",
    "LexragError",
    "NoSettings",
    "PluginError",
    "Provider",
    "ProviderError",
    "ProviderRequest",
    "RetrievalContext",
    "RetrievalError",
    "Retriever",
    "__version__",
    "hookimpl",
]
