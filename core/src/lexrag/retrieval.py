"""Passages, citations, and the contracts of embedders and retrievers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from .types import NoSettings, Source


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


@dataclass(frozen=True)
class RetrievalContext:
    """What a retriever is given besides its own settings: where the index lives, and how
    to build the configured embedder or another retriever (a hybrid builds its parts)."""

    index_dir: Path
    build_embedder: Callable[[], Embedder]
    """The embedder ``[retrieval] embedder`` selects, with its validated settings."""
    build_retriever: Callable[[str], Retriever]
    """The retriever of that name, with its validated settings, over the same index."""


class Retriever(ABC):
    """Finds passages for a query. Built as ``cls(name, settings, context)``.

    ``search`` is synchronous CPU work; the server runs it in a thread pool.
    """

    Settings: ClassVar[type[BaseModel]] = NoSettings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context

    @abstractmethod
    def search(self, query: str, k: int) -> list[Hit]:
        """The ``k`` best passages for ``query``, best first."""

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def sync(self) -> None:
        """Bring derived structures (vector graph, lexical index) up to date with the index
        directory. ``lexrag ingest`` calls it at the end so the first search is fast; a
        retriever that has none keeps this no-op."""
        return None

    def close(self) -> None:
        return None


__all__ = [
    "Chunk",
    "Citation",
    "Embedder",
    "FloatArray",
    "Hit",
    "RetrievalContext",
    "Retriever",
]
