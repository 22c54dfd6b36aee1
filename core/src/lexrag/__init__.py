"""lexrag: retrieval-augmented chat over Vietnamese legal documents.

This module is the plugin API: everything a provider, embedder or retriever plugin may
import is exported here, and nothing else of the core is promised to stay put. The guide
is ``docs/plugins.md``; the hooks are in :mod:`lexrag.hookspecs`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .accents import AccentRestorer, typed_without_accents
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
from .onnxrt import cuda_usable, execution_providers
from .prompt import estimate_tokens, estimate_usage
from .providers import GenerationParams, Provider, ProviderRequest
from .redact import mask_url, redact
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

try:
    __version__ = version("lexrag")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

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
    "check_recorded_embedder",
    "collapse_articles",
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
    "redact",
    "syllables",
    "terms",
    "trace_headers",
    "trace_span",
    "typed_without_accents",
    "without_question_words",
]
