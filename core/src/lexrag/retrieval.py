"""Passages, citations, and the contracts of embedders, retrievers and index stores."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from .errors import RetrievalError
from .types import DocumentMeta, NoSettings, Source


@dataclass(frozen=True)
class Citation:
    """Where a passage stands in the law."""

    doc: str
    doc_title: str
    part: str | None = None
    chapter: str | None = None
    section: str | None = None
    article: int | None = None
    article_title: str | None = None
    clauses: tuple[int, ...] = ()

    def label(self) -> str:
        """Human-readable citation, e.g. ``Bộ luật Lao động, Điều 105. Thời giờ…, khoản 1``."""
        parts = [self.doc_title]
        if self.chapter:
            parts.append(self.chapter)
        if self.article is not None:
            art = f"Điều {self.article}"
            if self.article_title:
                art += f". {self.article_title}"
            parts.append(art)
        if self.clauses:
            parts.append("khoản " + ", ".join(str(c) for c in self.clauses))
        return ", ".join(parts)


@dataclass(frozen=True)
class Chunk:
    """A passage: never more than one article (Điều)."""

    id: str
    citation: Citation
    text: str
    """NFC-normalised text including the article heading, so it stands alone."""


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float

    def to_source(self, index: int) -> Source:
        c = self.chunk.citation
        return Source(
            index=index,
            doc=c.doc,
            title=c.doc_title,
            article=c.article,
            article_title=c.article_title,
            clauses=list(c.clauses),
            citation=c.label(),
            score=float(self.score),
            text=self.chunk.text,
        )


FloatArray = npt.NDArray[np.float32]


class Embedder(ABC):
    """Turns texts into L2-normalised vectors. Built as ``cls(name, settings)``."""

    Settings: ClassVar[type[BaseModel]] = NoSettings

    #: True for a model trained so that its vectors' leading dimensions are an embedding too
    #: (Matryoshka): ``/v1/embeddings`` then honours ``dimensions`` by cutting and
    #: renormalising (up to :attr:`dim`); for others any ``dimensions`` is a 400.
    matryoshka: ClassVar[bool] = False

    def __init__(self, name: str, settings: BaseModel) -> None:
        self.name = name
        self.settings = settings

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Identifies the vectors: two embedders with the same id give the same vectors."""

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Vectors for ``texts``, shape (len(texts), dim), float32, unit length."""

    def embed_query(self, text: str) -> FloatArray:
        return np.asarray(self.embed([text])[0], dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the texts take (for usage); an estimate where no tokenizer is at hand."""
        return sum(len(t.split()) for t in texts)


class SharedEmbedder(Embedder):
    """One embedder shared by a retriever and its parts (a hybrid's dense part and its
    phrasings embed the same query at the same time): ``embed_query`` keeps the last query's
    vector, and a caller asking for it while it is being computed waits for it rather than
    embedding it again. Everything else is the inner embedder's."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner.name, inner.settings)
        self.inner = inner
        self._lock = threading.Lock()
        self._last: tuple[str, FloatArray] | None = None

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> FloatArray:
        return self.inner.embed(texts)

    def embed_query(self, text: str) -> FloatArray:
        with self._lock:
            last = self._last
            if last is not None and last[0] == text:
                return last[1]
            vector = self.inner.embed_query(text)
            self._last = (text, vector)
            return vector

    def count_tokens(self, texts: Sequence[str]) -> int:
        return self.inner.count_tokens(texts)

    def __getattr__(self, name: str) -> Any:
        """The inner embedder's own attributes (its providers, its cache file, …)."""
        if name == "inner":  # not set yet
            raise AttributeError(name)
        return getattr(self.inner, name)


@dataclass(frozen=True)
class RetrievalContext:
    """What a retriever is given besides its own settings: where the index lives, and how
    to build the configured embedder or another retriever (a hybrid builds its parts)."""

    index_dir: Path
    build_embedder: Callable[[], Embedder]
    """The embedder ``[retrieval] embedder`` selects, with its validated settings."""
    build_retriever: Callable[[str], Retriever]
    """The retriever of that name, with its validated settings, over the same index."""
    open_store: Callable[[], IndexStore] | None = None
    """Opens the configured index (``[index] backend``): a retriever of a backend other than
    the embedded one reads through it. Each call opens a new handle; close it."""
    backend: str = "embedded"
    """The configured ``[index] backend``."""


class Retriever(ABC):
    """Finds passages for a query. Built as ``cls(name, settings, context)``.

    ``search`` is synchronous CPU work; the server runs it in a thread pool.
    """

    Settings: ClassVar[type[BaseModel]] = NoSettings

    #: The index backends (``[index] backend``) this retriever reads; building it over
    #: another is a config error. None: it reads no index and works with any.
    backends: ClassVar[frozenset[str] | None] = frozenset({"embedded"})

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context

    @abstractmethod
    def search(self, query: str, k: int) -> list[Hit]:
        """The ``k`` best passages for ``query``, best first."""

    def search_within(self, query: str, k: int, docs: frozenset[str]) -> list[Hit] | None:
        """The ``k`` best passages for ``query`` whose ``chunk.citation.doc`` is in ``docs``,
        best first: what :meth:`search` ranks, as if the other documents were not indexed.
        None when this retriever cannot restrict its search (this default): the caller then
        asks :meth:`search` for more passages and drops the others
        (:meth:`lexrag.filtering.Catalog.search`)."""
        return None

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def sync(self) -> None:
        """Bring derived structures (vector graph, lexical index) up to date with the index
        directory. ``lexrag ingest`` calls it at the end so the first search is fast; a
        retriever that has none keeps this no-op."""
        return None

    def close(self) -> None:
        return None


class Reranker(ABC):
    """Scores (query, passage) pairs together (a cross-encoder) to reorder a retriever's best
    candidates. Built as ``cls(name, settings)``; ``[retrieval] reranker`` turns it on."""

    Settings: ClassVar[type[BaseModel]] = NoSettings

    def __init__(self, name: str, settings: BaseModel) -> None:
        self.name = name
        self.settings = settings

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Identifies the model (for ``health`` and the logs)."""

    @abstractmethod
    def score(self, query: str, passages: Sequence[str]) -> FloatArray:
        """Relevance of each passage to ``query``, shape (len(passages),), higher is better
        (any scale). CPU work is fine: callers run it in a thread."""

    def close(self) -> None:
        return None


class RerankedRetriever(Retriever):
    """A retriever's best ``candidates`` hits reordered by a :class:`Reranker` (each hit's
    score becomes the reranker's); what :func:`lexrag.registry.build_retriever` returns when
    ``[retrieval] reranker`` is set."""

    backends = None

    def __init__(self, base: Retriever, reranker: Reranker, candidates: int) -> None:
        super().__init__(base.name, base.settings, base.context)
        self.base, self.reranker, self.candidates = base, reranker, candidates

    def search(self, query: str, k: int) -> list[Hit]:
        return self._rerank(query, self.base.search(query, max(k, self.candidates)), k)

    def search_within(self, query: str, k: int, docs: frozenset[str]) -> list[Hit] | None:
        """The base's best ``candidates`` within ``docs``, reranked."""
        hits = self.base.search_within(query, max(k, self.candidates), docs)
        return None if hits is None else self._rerank(query, hits, k)

    def _rerank(self, query: str, hits: list[Hit], k: int) -> list[Hit]:
        if len(hits) < 2:
            return hits[:k]
        scores = np.asarray(self.reranker.score(query, [h.chunk.text for h in hits]), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(hits[i].chunk, float(scores[i])) for i in order]

    def sync(self) -> None:
        self.base.sync()

    def health(self) -> dict[str, Any]:
        return dict(self.base.health(), reranker=self.reranker.model_id)

    def close(self) -> None:
        self.base.close()
        self.reranker.close()


@dataclass(frozen=True)
class DocumentRecord:
    id: str
    title: str
    path: str
    sha256: str
    n_chunks: int
    metadata: DocumentMeta = field(default_factory=DocumentMeta)
    """The document's legal metadata (số hiệu, dates, status, amendments); every store
    keeps it (``metadata.model_dump_json()``)."""


class IndexStore(ABC):
    """Where an index keeps its documents, chunks and vectors: what ingest, ``lexrag index
    copy`` and the retrievers of its backend read and write.

    A backend registers its class through the ``register_stores`` hook under the name that
    ``[index] backend`` selects. The core opens it as ``cls.open(location, create=...)``:
    ``location`` is the ``[index] dir`` directory for a backend without :attr:`schemes`
    (the embedded one), the ``[index] database_url`` (or a ``--to`` URL) otherwise.
    Every write is atomic per document: a crash leaves the index as it was before or after
    that document.
    """

    Settings: ClassVar[type[BaseModel]] = NoSettings

    #: URL schemes this backend opens (``("postgres", "postgresql")``); empty: it lives in a
    #: directory.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: The retriever ``[retrieval] retriever`` defaults to over this backend.
    default_retriever: ClassVar[str] = "hybrid"
    #: What the user can do, besides setting the embedder back, when the index was built
    #: with another embedder (the end of :meth:`check_embedder`'s message).
    other_index_advice: ClassVar[str] = "ingest into a new index"

    @classmethod
    @abstractmethod
    def open(cls, location: str | Path, *, create: bool = False) -> Self:
        """Open the index at ``location``; with ``create`` make it (schema included) if it is
        not there, else raise :class:`lexrag.RetrievalError` telling the user what to do."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def generation(self) -> int:
        """Bumped by every committed change."""

    @abstractmethod
    def embedder(self) -> tuple[str, int] | None:
        """(model id, dimension) of the embedder the stored vectors came from, if any."""

    def check_embedder(self, model_id: str, dim: int) -> None:
        """Raise :class:`lexrag.RetrievalError` unless the stored vectors came from this embedder."""
        check_recorded_embedder(
            self.embedder(), model_id, dim, where=self.describe(), advice=self.other_index_advice
        )

    @abstractmethod
    def document(self, doc_id: str) -> DocumentRecord | None: ...

    @abstractmethod
    def documents(self) -> list[DocumentRecord]:
        """Every document, by id."""

    @abstractmethod
    def document_chunks(self, doc_id: str) -> tuple[list[Chunk], FloatArray | None]:
        """The chunks of one document in order, and their vectors (None when it has none)."""

    @abstractmethod
    def put_document(
        self,
        record: DocumentRecord,
        chunks: Sequence[Chunk],
        vectors: FloatArray | None,
        embedder: tuple[str, int] | None,
    ) -> None:
        """Replace the document ``record.id`` with ``chunks`` (and their ``vectors``, from
        ``embedder``), atomically; the first vectors record the embedder. ``record.metadata``
        is kept with it: :meth:`document` and :meth:`documents` return it."""

    def set_metadata(self, doc_id: str, metadata: DocumentMeta) -> bool:
        """Replace the metadata of the document ``doc_id``, its chunks and vectors as they
        are (what ingest does when only a sidecar changed); False when there is no such
        document. This default writes the document again through :meth:`put_document`
        (nothing is embedded again); a backend may do it in place, bumping ``generation``."""
        record = self.document(doc_id)
        if record is None:
            return False
        chunks, vectors = self.document_chunks(doc_id)
        embedder = self.embedder() if vectors is not None else None
        self.put_document(replace(record, metadata=metadata), chunks, vectors, embedder)
        return True

    @abstractmethod
    def delete_document(self, doc_id: str) -> bool:
        """Delete a document and its chunks; False when there was none."""

    @abstractmethod
    def count_chunks(self) -> int: ...

    def describe(self) -> str:
        """Where the index is, for messages (a password never shows)."""
        return type(self).__name__


def check_recorded_embedder(
    recorded: tuple[str, int] | None, model_id: str, dim: int, *, where: str, advice: str
) -> None:
    """Raise :class:`lexrag.RetrievalError` unless ``recorded`` (the (model id, dimension) an
    index recorded with its first vectors; None: it has none yet) is this embedder's. The
    message names the index (``where``), both embedders and, after setting the embedder back,
    ``advice`` (a store's :attr:`IndexStore.other_index_advice`)."""
    if recorded is not None and recorded != (model_id, dim):
        raise RetrievalError(
            f"the index in {where} was built with the embedder {recorded[0]!r} "
            f"({recorded[1]}-d) but the configured one is {model_id!r} ({dim}-d); set "
            f"[retrieval] embedder / [embedders.*] back, or {advice}"
        )


__all__ = [
    "Chunk",
    "Citation",
    "DocumentRecord",
    "Embedder",
    "FloatArray",
    "Hit",
    "IndexStore",
    "RerankedRetriever",
    "Reranker",
    "RetrievalContext",
    "Retriever",
    "check_recorded_embedder",
]
