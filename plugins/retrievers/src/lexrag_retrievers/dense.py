"""Dense retrieval: the configured embedder + an hnswlib (cosine) graph over the stored vectors.

The graph is a derived file: labels are the chunks' SQLite rowids (never reused), so after a
re-ingest the graph is reconciled incrementally: vectors of new chunks are added, those of
deleted chunks marked deleted (their slots reused), and the result published atomically.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lexrag import AccentRestorer, Embedder, RetrievalContext, bm25_topk, typed_without_accents

from .derived import StoreRetriever, publish, read_pointer

NAME = "dense"
#: Bytes of such chunks' vectors one retriever keeps (the oldest set goes first).
VECTORS_HELD = 64 * 2**20


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
    exact_within: int = Field(default=20_000, ge=0)
    """Most chunks a search within some documents (a filter) scores exactly, one product with
    their vectors; more are searched in the graph with a filter."""


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
        # A filtered search embeds the same query twice (the unfiltered top for the notice, then
        # within the allowed documents): the last (generation, query)'s vector is kept.
        self._query_vector_at = functools.lru_cache(maxsize=1)(self._vector_at)
        self._within_vectors: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

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

        self._within_vectors = {}
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

    def scored(self, query: str, n: int, docs: frozenset[str] | None = None) -> list[tuple[int, float]]:
        """(rowid, cosine similarity) of the ``n`` chunks nearest to ``query`` (of the chunks of
        ``docs`` only, when given), best first."""
        self.sync()
        if not query.strip():
            return []
        vector = self._query_vector_at(self._generation, query)
        with self._lock:
            if docs is None:
                return self.vector_search(vector, n)
            return self.vector_search_within(vector, n, self.rowids_within(docs))

    def _vector_at(self, generation: int, query: str) -> np.ndarray:
        """:meth:`query_vector` (``generation`` is the memo's key: the accents put back on a
        query may change with the index)."""
        return self.query_vector(query)

    def vector_search_within(self, vector: np.ndarray, n: int, rowids: np.ndarray) -> list[tuple[int, float]]:
        """(rowid, cosine similarity) of the ``n`` nearest of the chunks ``rowids`` (ascending):
        up to ``exact_within`` of them scored exactly (:meth:`_vectors_of`; equal
        similarities by rowid), more by the graph searched with a filter."""
        if self._index is None or not self._live or n <= 0 or not len(rowids):
            return []
        query = np.asarray(vector, dtype=np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        if len(rowids) > self.options.exact_within:
            allowed = set(rowids.tolist()) & self._live
            found, distances = self._index.knn_query(
                query[None, :], k=min(n, len(allowed)), filter=lambda label: label in allowed
            )
            return [(int(label), 1.0 - float(d)) for label, d in zip(found[0], distances[0], strict=True)]
        rowids, vectors = self._vectors_of(rowids)
        similarity = vectors @ query
        # Shifted positive (exactly, in float64) for the kernel's tie rule: by position, i.e. rowid.
        top = bm25_topk.top_positions(similarity.astype(np.float64) + 2.0, n)
        return [(int(rowids[i]), float(similarity[i])) for i in top]

    def _vectors_of(self, rowids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rowids the graph holds of ``rowids`` and their vectors as the graph normalised
        them, kept per graph (up to :data:`VECTORS_HELD` bytes): hnswlib's ``get_items`` takes
        about 20 µs a vector."""
        key = rowids.tobytes()
        found = self._within_vectors.get(key)
        if found is None:
            try:
                vectors = self._index.get_items(rowids)
            except RuntimeError:  # a chunk the graph does not hold (the store moved on meanwhile)
                rowids = np.asarray([r for r in rowids.tolist() if r in self._live], dtype=np.int64)
                vectors = self._index.get_items(rowids) if len(rowids) else np.zeros((0, self._index.dim))
            found = (rowids, np.ascontiguousarray(vectors, dtype=np.float32))
            held = sum(v.nbytes for _, v in self._within_vectors.values())
            while self._within_vectors and held + found[1].nbytes > VECTORS_HELD:
                held -= self._within_vectors.pop(next(iter(self._within_vectors)))[1].nbytes
            self._within_vectors[key] = found
        return found

    def health(self) -> dict[str, Any]:
        out = super().health()
        if out["status"] == "ok" and self._embedder is not None:
            out["embedder"] = self._embedder.model_id
        return out


__all__ = ["DenseRetriever", "DenseSettings"]
