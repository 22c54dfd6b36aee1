"""Lexical retrieval: BM25 (bm25s) over Vietnamese-aware terms of the stored chunks.

Terms are accent-folded syllables and syllable bigrams (see :mod:`.vntext`); the article title
counts ``title_weight`` times; queries are expanded with the lay-to-legal term map
(:mod:`.lay_terms`). bm25s has no incremental update, so the matrix is rebuilt from SQLite
when the store's generation moved on (about a second for the six codes) and published
atomically beside it.
"""

from __future__ import annotations

import contextlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lexrag.retrieval import Chunk, Hit, RetrievalContext

from . import vntext
from .derived import StoreRetriever, collapse_articles, publish, read_pointer
from .lay_terms import LAY_TO_LEGAL

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
    doc_title: bool = False
    """Index the document title (e.g. "Bộ luật Lao động") in every chunk."""
    lay_terms: bool = True
    """Expand queries with the lay-to-legal term map."""
    lay_weight: float = Field(default=0.5, ge=0)
    """Weight of the expansion terms relative to the query's own."""
    extra_terms: dict[str, str] = Field(default_factory=dict)
    """More lay → legal entries, added to the built-in map."""
    candidates: int = Field(default=50, ge=1)
    collapse_articles: bool = True


def _tokenizer_key(o: BM25Settings) -> str:
    return json.dumps(
        {"v": 2, "bigrams": o.bigrams, "accents": o.accents, "title": o.title_weight, "doc": o.doc_title}
    )


class BM25Retriever(StoreRetriever):
    Settings = BM25Settings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, BM25Settings)
        self.options = settings
        self._setup()
        self._bm25: Any = None
        self._rowids: np.ndarray = np.zeros(0, dtype=np.int64)

    # --- terms ------------------------------------------------------------------------

    def _terms(self, text: str) -> list[str]:
        return vntext.tokens(text, bigrams=self.options.bigrams, accents=self.options.accents)

    def document_terms(self, chunk: Chunk) -> list[str]:
        """The terms one chunk is indexed under."""
        c = chunk.citation
        heading, _, body = chunk.text.partition("\n")
        terms = self._terms(body) + self._terms(heading) * self.options.title_weight
        if self.options.doc_title:
            terms += self._terms(c.doc_title)
        return terms

    @cached_property
    def _lay_patterns(self) -> list[tuple[re.Pattern[str], str]]:
        table = dict(LAY_TO_LEGAL, **self.options.extra_terms)
        out = []
        for lay, legal in sorted(table.items(), key=lambda kv: -len(kv[0])):
            out.append((re.compile(rf"(?<!\w){re.escape(vntext.fold_text(lay))}(?!\w)"), legal))
        return out

    def expansions(self, query: str) -> list[str]:
        """Legal phrases the lay-term map adds to ``query``."""
        if not self.options.lay_terms:
            return []
        folded = vntext.fold_text(query)
        found = []
        for pattern, legal in self._lay_patterns:
            if pattern.search(folded):
                found.append(legal)
                folded = pattern.sub(" ", folded)  # a longer key wins over the keys inside it
        return found

    # --- index ------------------------------------------------------------------------

    def _refresh(self, generation: int) -> None:
        import bm25s

        index_dir = Path(self.context.index_dir)
        key = _tokenizer_key(self.options)
        params = {"k1": self.options.k1, "b": self.options.b}
        current = read_pointer(index_dir, NAME)
        if current is not None:
            path, meta = current
            if (
                meta.get("generation") == generation
                and meta.get("terms") == key
                and meta.get("params") == params
            ):
                try:
                    self._bm25 = bm25s.BM25.load(str(path), mmap=False, show_progress=False, verbosity=0)
                    self._rowids = np.load(path / "rowids.npy")
                    return
                except (OSError, ValueError, KeyError):
                    pass
        rows = self.store.chunks()
        rowids = np.asarray([r for r, _ in rows], dtype=np.int64)
        bm25 = bm25s.BM25(k1=self.options.k1, b=self.options.b)
        if rows:
            bm25.index([self.document_terms(chunk) for _, chunk in rows], show_progress=False)

        def write(directory: Path) -> None:
            if rows:
                bm25.save(str(directory), show_progress=False)
            np.save(directory / "rowids.npy", rowids)

        # A read-only index directory: the in-memory index still serves.
        with contextlib.suppress(OSError):
            publish(index_dir, NAME, {"generation": generation, "terms": key, "params": params}, write)
        self._bm25, self._rowids = (bm25 if rows else None), rowids

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every indexed chunk (in ``self._rowids`` order) for ``query``."""
        bm25 = self._bm25
        if bm25 is None:
            return np.zeros(0, dtype=np.float32)
        own = bm25.get_tokens_ids(self._terms(query))
        scores = bm25.get_scores_from_ids(own) if own else np.zeros(len(self._rowids), dtype=np.float32)
        extra = [t for phrase in self.expansions(query) for t in self._terms(phrase)]
        extra_ids = bm25.get_tokens_ids(extra)
        if extra_ids and self.options.lay_weight > 0:
            scores = scores + self.options.lay_weight * bm25.get_scores_from_ids(extra_ids)
        return np.asarray(scores)

    def ranked(self, query: str, n: int) -> list[Hit]:
        """Up to ``n`` chunk hits with a positive score, best first, before collapsing."""
        self.sync()
        with self._lock:
            scores = self.scores(query)
            if scores.size == 0:
                return []
            n = min(n, scores.size)
            top = np.argpartition(-scores, n - 1)[:n]
            top = top[np.argsort(-scores[top], kind="stable")]
            top = top[scores[top] > 0]
            found = self.store.chunks(self._rowids[top].tolist())
        by_rowid = dict(zip(self._rowids[top].tolist(), scores[top].tolist(), strict=True))
        return [Hit(chunk, float(by_rowid[rowid])) for rowid, chunk in found]

    def search(self, query: str, k: int) -> list[Hit]:
        hits = self.ranked(query, max(k, self.options.candidates))
        return collapse_articles(hits, k) if self.options.collapse_articles else hits[:k]


__all__ = ["BM25Retriever", "BM25Settings"]
