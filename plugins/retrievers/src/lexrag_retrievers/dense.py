"""Dense retrieval: the configured embedder + an hnswlib (cosine) graph over the stored vectors.

The graph is a derived file: labels are the chunks' SQLite rowids (never reused), so after a
re-ingest the graph is reconciled incrementally: vectors of new chunks are added, those of
deleted chunks marked deleted (their slots reused), and the result published atomically.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lexrag import AccentRestorer, Embedder, Hit, RetrievalContext, typed_without_accents

from .derived import CHUNKS_PER_ARTICLE, StoreRetriever, publish, read_pointer

NAME = "dense"


class DenseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    m: int = Field(default=16, ge=4, le=128)
    """hnswlib M: graph degree."""
    ef_construction: int = Field(default=200, ge=10)
    ef_search: int = Field(default=128, ge=10)
    candidates: int = Field(default=50, ge=1)
    """Chunks fetched from the graph before collapsing to distinct articles."""
    collapse_articles: bool = True
    """Return at most one chunk per article (the best)."""
    restore_accents: bool = True
    """Put the accents back on a query typed without any (a syllable bigram model of the indexed
    text, built on the first such query) before embedding it: multilingual embedders read
    unaccented Vietnamese as noise."""


class DenseRetriever(StoreRetriever):
    Settings = DenseSettings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, DenseSettings)
        self.options = settings
        self._setup()
        self._embedder: Embedder | None = None
        self._index: Any = None
        self._live: set[int] = set()
        self._restorer: tuple[int, AccentRestorer] | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.context.build_embedder()
        return self._embedder

    def query_vector(self, query: str) -> np.ndarray:
        """The vector searched for ``query``: the embedder's query vector of :meth:`query_text`
        (e5-small's moved by its query adapter: ``[embedders.e5-small] query_adapter``)."""
        return np.asarray(self.embedder.embed_query(self.query_text(query)), dtype=np.float32)

    def _new_index(self, dim: int, capacity: int) -> Any:
        import hnswlib

        index = hnswlib.Index(space="cosine", dim=dim)
        index.init_index(
            max_elements=max(capacity, 16),
            M=self.options.m,
            ef_construction=self.options.ef_construction,
            allow_replace_deleted=True,
        )
        return index

    def _refresh(self, generation: int) -> None:
        import hnswlib

        store = self.store
        recorded = store.embedder()
        if recorded is None:  # an index of zero documents
            self._index, self._live = None, set()
            return
        embedder = self.embedder
        store.check_embedder(embedder.model_id, embedder.dim)
        model_id, dim = recorded
        index_dir = Path(self.context.index_dir)
        wanted = set(store.chunk_rowids())
        index, live = self._index, self._live
        if index is None:
            current = read_pointer(index_dir, NAME)
            if (
                current is not None
                and current[1].get("model") == model_id
                and current[1].get("m") == self.options.m
            ):
                path, _ = current
                try:
                    index = hnswlib.Index(space="cosine", dim=dim)
                    index.load_index(str(path / "index.bin"), allow_replace_deleted=True)
                    live = set(np.load(path / "labels.npy").tolist())
                except (OSError, RuntimeError, ValueError):
                    index, live = None, set()
        removed, added = live - wanted, sorted(wanted - live)
        rebuild = index is None or len(removed) > max(len(wanted), 1)
        if rebuild:
            index, live, removed, added = self._new_index(dim, len(wanted)), set(), set(), sorted(wanted)
        for label in removed:
            index.mark_deleted(label)
        live -= removed
        if added:
            needed = index.get_current_count() - len(removed) + len(added)
            if needed > index.get_max_elements():
                index.resize_index(max(needed, int(index.get_max_elements() * 1.5)))
            for ids, vectors in store.iter_vectors(added):
                index.add_items(vectors, np.asarray(ids, dtype=np.int64), replace_deleted=True)
                live.update(ids)
        index.set_ef(max(self.options.ef_search, self.options.candidates))
        if removed or added or rebuild:
            labels = np.asarray(sorted(live), dtype=np.int64)

            def write(directory: Path) -> None:
                index.save_index(str(directory / "index.bin"))
                np.save(directory / "labels.npy", labels)

            # A read-only index directory: the in-memory graph still serves.
            with contextlib.suppress(OSError):
                publish(
                    index_dir, NAME, {"generation": generation, "model": model_id, "m": self.options.m}, write
                )
        self._index, self._live = index, live

    def vector_search(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """(rowid, cosine similarity) of the ``n`` nearest chunks."""
        if self._index is None or not self._live:
            return []
        n = min(n, len(self._live))
        labels, distances = self._index.knn_query(np.asarray(vector, dtype=np.float32)[None, :], k=n)
        return [(int(label), 1.0 - float(d)) for label, d in zip(labels[0], distances[0], strict=True)]

    def restorer(self) -> AccentRestorer:
        """The accent model of the indexed text, rebuilt when the store changed."""
        with self._lock:
            generation = self.store.generation
            if self._restorer is None or self._restorer[0] != generation:
                texts = (chunk.text for _, chunk in self.store.chunks())
                self._restorer = (generation, AccentRestorer.from_texts(texts))
            return self._restorer[1]

    def query_text(self, query: str) -> str:
        """What is embedded for ``query``: the query, with its accents restored when typed
        without any (and ``restore_accents``)."""
        if self.options.restore_accents and typed_without_accents(query):
            return self.restorer().restore(query)
        return query

    def scored(self, query: str, n: int) -> list[tuple[int, float]]:
        """(rowid, cosine similarity) of the ``n`` chunks nearest to ``query``, best first."""
        self.sync()
        if not query.strip():
            return []
        vector = self.query_vector(query)
        with self._lock:
            return self.vector_search(vector, n)

    def ranked(self, query: str, n: int) -> list[Hit]:
        """Up to ``n`` chunk hits, best first, before collapsing."""
        found = self.scored(query, n)
        with self._lock:
            chunks = dict(self.store.chunks([rowid for rowid, _ in found]))
        return [Hit(chunks[rowid], score) for rowid, score in found if rowid in chunks]

    def search(self, query: str, k: int) -> list[Hit]:
        if not self.options.collapse_articles:
            return self.ranked(query, max(k, self.options.candidates))[:k]
        # Articles come in several chunks: rank enough chunks to fill k distinct articles.
        return self.collapsed(self.scored(query, max(CHUNKS_PER_ARTICLE * k, self.options.candidates)), k)

    def health(self) -> dict[str, Any]:
        out = super().health()
        if out["status"] == "ok" and self._embedder is not None:
            out["embedder"] = self._embedder.model_id
        return out


__all__ = ["DenseRetriever", "DenseSettings"]
