"""Derived index files (hnswlib graph, BM25 matrices) kept beside the SQLite store.

Each build goes into a fresh directory that is renamed into place, and a small pointer file
``<name>.json`` (replaced atomically) names the current directory and the store generation it
reflects. A reader that finds no pointer, a missing directory or an old generation rebuilds or
reconciles from SQLite, so a crash at any moment costs at most a rebuild, never a wrong answer.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lexrag import CHUNKS_PER_ARTICLE, ArticleKey, Chunk, Hit, Retriever, Store, collapse_articles

#: Sets of documents whose chunk rowids one retriever keeps (:meth:`StoreRetriever.rowids_within`).
WITHIN_HELD = 64


def read_pointer(index_dir: Path, name: str) -> tuple[Path, dict[str, Any]] | None:
    """(directory, metadata) of the current build of ``name``, or None."""
    try:
        meta = json.loads((index_dir / f"{name}.json").read_text())
        path = index_dir / str(meta["dir"])
    except (OSError, ValueError, KeyError):
        return None
    return (path, meta) if path.is_dir() else None


def publish(index_dir: Path, name: str, meta: dict[str, Any], write: Callable[[Path], None]) -> Path:
    """Write a new build of ``name`` with ``write(directory)`` and make it current."""
    build = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=index_dir))
    try:
        write(build)
        pointer = dict(meta, dir=build.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".json", dir=index_dir)
        with os.fdopen(fd, "w") as fh:
            json.dump(pointer, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, index_dir / f"{name}.json")
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    for old in index_dir.glob(f"{name}-*"):
        if old != build and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return build


class StoreRetriever(Retriever):
    """A retriever over the SQLite store of ``context.index_dir`` with a derived structure
    brought up to date (``_refresh``) whenever the store's generation moved on."""

    _store: Store | None = None
    _generation: int = -1
    _keys: tuple[int, dict[int, ArticleKey]] | None = None
    _within: tuple[int, dict[str, np.ndarray], dict[frozenset[str], np.ndarray]] | None = None

    def _setup(self) -> None:
        self._lock = threading.RLock()

    def article_keys(self) -> dict[int, ArticleKey]:
        """Chunk rowid → (document, article), or (document, chunk id) for a chunk outside any
        article; read once per store generation, so collapsing a ranking to one chunk per
        article needs no chunk text."""
        with self._lock:
            generation = self.store.generation
            if self._keys is None or self._keys[0] != generation:
                keys = {
                    rowid: (doc, cid if article is None else article)
                    for rowid, doc, article, cid in self.store.chunk_keys()
                }
                self._keys = (generation, keys)
            assert self._keys is not None
            return self._keys[1]

    def rowids_within(self, docs: frozenset[str]) -> np.ndarray:
        """The rowids of the chunks of ``docs``, ascending; kept per store generation and set of
        documents (a filter asks for the same few sets again and again)."""
        with self._lock:
            keys = self.article_keys()
            generation = self.store.generation
            if self._within is None or self._within[0] != generation:
                by_doc: dict[str, list[int]] = {}
                for rowid, (doc, _) in keys.items():
                    by_doc.setdefault(doc, []).append(rowid)
                arrays = {doc: np.asarray(rowids, dtype=np.int64) for doc, rowids in by_doc.items()}
                self._within = (generation, arrays, {})
            _, arrays, sets = self._within
            found = sets.get(docs)
            if found is None:
                if len(sets) >= WITHIN_HELD:
                    sets.clear()
                parts = [arrays[doc] for doc in docs if doc in arrays]
                found = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
                sets[docs] = found
            return found

    def remember_keys(self, generation: int, rows: list[tuple[int, Chunk]]) -> None:
        """Keep the article keys of ``rows`` (all the store's chunks at ``generation``)."""
        keys: dict[int, ArticleKey] = {}
        for rowid, chunk in rows:
            c = chunk.citation
            keys[rowid] = (c.doc, c.article if c.article is not None else chunk.id)
        self._keys = (generation, keys)

    def scored(self, query: str, n: int, docs: frozenset[str] | None = None) -> list[tuple[int, float]]:
        """(rowid, score) of the ``n`` best chunks for ``query``, best first; with ``docs``, of
        the chunks of those documents only (their order and scores as in the full ranking)."""
        raise NotImplementedError

    def ranked(self, query: str, n: int, docs: frozenset[str] | None = None) -> list[Hit]:
        """Up to ``n`` chunk hits (of ``docs`` only, when given), best first, before collapsing."""
        found = self.scored(query, n, docs)
        with self._lock:
            chunks = dict(self.store.chunks([rowid for rowid, _ in found]))
        return [Hit(chunks[rowid], score) for rowid, score in found if rowid in chunks]

    def search(self, query: str, k: int) -> list[Hit]:
        return self._search(query, k, None)

    def search_within(self, query: str, k: int, docs: frozenset[str]) -> list[Hit]:
        """:meth:`search` over the chunks of ``docs`` alone: the allowed chunks of the same
        ranking, in the same order with the same scores."""
        return self._search(query, k, docs)

    def _search(self, query: str, k: int, docs: frozenset[str] | None) -> list[Hit]:
        candidates = int(getattr(self.settings, "candidates", k))
        if not getattr(self.settings, "collapse_articles", False):
            return self.ranked(query, max(k, candidates), docs)[:k]
        # Articles come in several chunks: rank enough chunks to fill k distinct articles.
        return self.collapsed(self.scored(query, max(CHUNKS_PER_ARTICLE * k, candidates), docs), k)

    def collapses(self) -> bool:
        """Whether ``search`` returns the best chunk of each article in ``scored`` order, so a
        hybrid may rank articles with :meth:`article_candidates` instead."""
        return bool(getattr(self.settings, "collapse_articles", False))

    def article_candidates(
        self, query: str, k: int, depth: int, docs: frozenset[str] | None = None
    ) -> list[tuple[ArticleKey, int, float]]:
        """(article key, rowid of its best chunk, score) of the ``k`` best articles among the
        ``depth`` best chunks (of ``docs`` only, when given), best first; no chunk text is read."""
        keys = self.article_keys()
        seen: set[ArticleKey] = set()
        out: list[tuple[ArticleKey, int, float]] = []
        for rowid, score in self.scored(query, depth, docs):
            key = keys.get(rowid)
            if key is None or key in seen:
                continue
            seen.add(key)
            out.append((key, rowid, score))
            if len(out) == k:
                break
        return out

    def fetch(self, rowids: list[int]) -> dict[int, Chunk]:
        """The chunks of these rowids (those still in the store)."""
        with self._lock:
            return dict(self.store.chunks(rowids))

    def collapsed(self, scored: list[tuple[int, float]], k: int) -> list[Hit]:
        """The best chunk of each of the first ``k`` articles of ``scored`` ((rowid, score),
        best first), fetching only those chunks from the store."""
        keys = self.article_keys()
        seen: set[ArticleKey] = set()
        picked: list[tuple[int, float]] = []
        for rowid, score in scored:
            key = keys.get(rowid)
            if key is None or key in seen:
                continue
            seen.add(key)
            picked.append((rowid, score))
            if len(picked) == k:
                break
        chunks = self.fetch([rowid for rowid, _ in picked])
        return [Hit(chunks[rowid], score) for rowid, score in picked if rowid in chunks]

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.context.index_dir)
        return self._store

    def sync(self) -> None:
        with self._lock:
            generation = self.store.generation
            if generation != self._generation:
                self._refresh(generation)
                self._generation = generation

    def _refresh(self, generation: int) -> None:
        raise NotImplementedError

    def count_chunks(self) -> int:
        """Chunks in the index this retriever reads."""
        return self.store.count_chunks()

    def health(self) -> dict[str, Any]:
        try:
            self.sync()
            return {"status": "ok", "retriever": self.name, "chunks": self.count_chunks()}
        except Exception as exc:  # health reports every failure rather than raising it
            return {"status": "down", "retriever": self.name, "error": str(exc)}

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._generation = -1
            self._keys = None
            self._within = None


__all__ = [
    "CHUNKS_PER_ARTICLE",
    "ArticleKey",
    "StoreRetriever",
    "collapse_articles",
    "publish",
    "read_pointer",
]
