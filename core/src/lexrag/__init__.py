"""lexrag: retrieval-augmented chat over Vietnamese legal documents.

This module is the plugin API: everything a provider, embedder or retriever plugin may
import is exported here, and nothing else of the core is promised to stay put. The guide
is ``docs/plugins.md``; the hooks are in :mod:`lexrag.hookspecs`.

The exports are imported on first use (PEP 562 ``__getattr__``): ``import lexrag`` itself
loads only the error hierarchy, so a command or a plugin pays for pydantic, numpy and the
modules behind the names it takes, not for every name here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    CoolingDown,
    DocumentStructureError,
    InvalidRequestError,
    LexragError,
    ModelExportError,
    NotFoundError,
    PluginError,
    ProviderError,
    ProviderTimeoutError,
    RetrievalError,
)
from .redact import mask_url, redact

if TYPE_CHECKING:
    from . import bm25_topk
    from .accents import AccentRestorer, typed_without_accents
    from .fusion import (
        CHUNKS_PER_ARTICLE,
        ArticleKey,
        Candidate,
        FusedRetriever,
        FusionSettings,
        article_key,
        collapse_articles,
        fuse,
    )
    from .hookspecs import hookimpl
    from .lay_terms import LAY_TO_LEGAL
    from .limitstore import Increment, LimitStore
    from .loaders import Loader
    from .onnxrt import cpu_threads, cuda_usable, execution_providers
    from .phrasings import read_phrasings
    from .prompt import estimate_tokens, estimate_usage
    from .providers import GenerationParams, Provider, ProviderRequest
    from .retrieval import (
        Chunk,
        Citation,
        Embedder,
        FloatArray,
        Hit,
        IndexStore,
        Reranker,
        RetrievalContext,
        Retriever,
        check_recorded_embedder,
    )
    from .retry import parse_retry_after
    from .store import DocumentRecord, Store
    from .tracing import headers as trace_headers
    from .tracing import span as trace_span
    from .types import (
        AssistantMessage,
        ChatCompletion,
        ChatCompletionChunk,
        ChatMessage,
        Choice,
        ChoiceLogprobs,
        ChunkFactory,
        Delta,
        DocumentMeta,
        FinishReason,
        NoSettings,
        Source,
        Usage,
        new_id,
    )
    from .vntext import (
        PHRASE_BREAK,
        STOPWORDS,
        fold,
        fold_text,
        normalize,
        syllables,
        terms,
        without_question_words,
    )

__version__: str

#: Each lazily imported export → (its submodule, its name there; None: the submodule itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    "bm25_topk": ("bm25_topk", None),
    "AccentRestorer": ("accents", "AccentRestorer"),
    "typed_without_accents": ("accents", "typed_without_accents"),
    "CHUNKS_PER_ARTICLE": ("fusion", "CHUNKS_PER_ARTICLE"),
    "ArticleKey": ("fusion", "ArticleKey"),
    "Candidate": ("fusion", "Candidate"),
    "FusedRetriever": ("fusion", "FusedRetriever"),
    "FusionSettings": ("fusion", "FusionSettings"),
    "article_key": ("fusion", "article_key"),
    "collapse_articles": ("fusion", "collapse_articles"),
    "fuse": ("fusion", "fuse"),
    "hookimpl": ("hookspecs", "hookimpl"),
    "LAY_TO_LEGAL": ("lay_terms", "LAY_TO_LEGAL"),
    "Increment": ("limitstore", "Increment"),
    "LimitStore": ("limitstore", "LimitStore"),
    "Loader": ("loaders", "Loader"),
    "cpu_threads": ("onnxrt", "cpu_threads"),
    "read_phrasings": ("phrasings", "read_phrasings"),
    "cuda_usable": ("onnxrt", "cuda_usable"),
    "execution_providers": ("onnxrt", "execution_providers"),
    "estimate_tokens": ("prompt", "estimate_tokens"),
    "estimate_usage": ("prompt", "estimate_usage"),
    "GenerationParams": ("providers", "GenerationParams"),
    "Provider": ("providers", "Provider"),
    "ProviderRequest": ("providers", "ProviderRequest"),
    "Chunk": ("retrieval", "Chunk"),
    "Citation": ("retrieval", "Citation"),
    "Embedder": ("retrieval", "Embedder"),
    "FloatArray": ("retrieval", "FloatArray"),
    "Hit": ("retrieval", "Hit"),
    "IndexStore": ("retrieval", "IndexStore"),
    "Reranker": ("retrieval", "Reranker"),
    "RetrievalContext": ("retrieval", "RetrievalContext"),
    "Retriever": ("retrieval", "Retriever"),
    "check_recorded_embedder": ("retrieval", "check_recorded_embedder"),
    "parse_retry_after": ("retry", "parse_retry_after"),
    "DocumentRecord": ("store", "DocumentRecord"),
    "Store": ("store", "Store"),
    "trace_headers": ("tracing", "headers"),
    "trace_span": ("tracing", "span"),
    "AssistantMessage": ("types", "AssistantMessage"),
    "ChatCompletion": ("types", "ChatCompletion"),
    "ChatCompletionChunk": ("types", "ChatCompletionChunk"),
    "ChatMessage": ("types", "ChatMessage"),
    "Choice": ("types", "Choice"),
    "ChoiceLogprobs": ("types", "ChoiceLogprobs"),
    "ChunkFactory": ("types", "ChunkFactory"),
    "Delta": ("types", "Delta"),
    "DocumentMeta": ("types", "DocumentMeta"),
    "FinishReason": ("types", "FinishReason"),
    "NoSettings": ("types", "NoSettings"),
    "Source": ("types", "Source"),
    "Usage": ("types", "Usage"),
    "new_id": ("types", "new_id"),
    "PHRASE_BREAK": ("vntext", "PHRASE_BREAK"),
    "STOPWORDS": ("vntext", "STOPWORDS"),
    "fold": ("vntext", "fold"),
    "fold_text": ("vntext", "fold_text"),
    "normalize": ("vntext", "normalize"),
    "syllables": ("vntext", "syllables"),
    "terms": ("vntext", "terms"),
    "without_question_words": ("vntext", "without_question_words"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lexrag")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0"


def __getattr__(name: str) -> Any:
    """Import an export on first use and keep it (later lookups do not come here)."""
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        module, attribute = _LAZY[name]
        value = importlib.import_module(f".{module}", __name__)
        if attribute is not None:
            value = getattr(value, attribute)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "CHUNKS_PER_ARTICLE",
    "LAY_TO_LEGAL",
    "PHRASE_BREAK",
    "STOPWORDS",
    "AccentRestorer",
    "ArticleKey",
    "AssistantMessage",
    "Candidate",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatMessage",
    "Choice",
    "ChoiceLogprobs",
    "Chunk",
    "ChunkFactory",
    "Citation",
    "ConfigError",
    "CoolingDown",
    "Delta",
    "DocumentMeta",
    "DocumentRecord",
    "DocumentStructureError",
    "Embedder",
    "FinishReason",
    "FloatArray",
    "FusedRetriever",
    "FusionSettings",
    "GenerationParams",
    "Hit",
    "Increment",
    "IndexStore",
    "InvalidRequestError",
    "LexragError",
    "LimitStore",
    "Loader",
    "ModelExportError",
    "NoSettings",
    "NotFoundError",
    "PluginError",
    "Provider",
    "ProviderError",
    "ProviderRequest",
    "ProviderTimeoutError",
    "Reranker",
    "RetrievalContext",
    "RetrievalError",
    "Retriever",
    "Source",
    "Store",
    "Usage",
    "__version__",
    "article_key",
    "bm25_topk",
    "check_recorded_embedder",
    "collapse_articles",
    "cpu_threads",
    "cuda_usable",
    "estimate_tokens",
    "estimate_usage",
    "execution_providers",
    "fold",
    "fold_text",
    "fuse",
    "hookimpl",
    "mask_url",
    "new_id",
    "normalize",
    "parse_retry_after",
    "read_phrasings",
    "redact",
    "syllables",
    "terms",
    "trace_headers",
    "trace_span",
    "typed_without_accents",
    "without_question_words",
]
