"""Rankings to articles and rankings fused: what every hybrid retriever shares, whatever index
it reads (lexrag-retrievers' embedded ``hybrid``, lexrag-postgres' ``pg-hybrid``), so both
backends rank alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

from .retrieval import Citation, Hit

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


__all__ = ["CHUNKS_PER_ARTICLE", "ArticleKey", "article_key", "collapse_articles", "fuse"]
