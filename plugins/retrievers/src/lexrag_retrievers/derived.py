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

from lexrag import CHUNKS_PER_ARTICLE, ArticleKey, Chunk, Hit, Retriever, Store, collapse_articles


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

    def remember_keys(self, generation: int, rows: list[tuple[int, Chunk]]) -> None:
        """Keep the article keys of ``rows`` (all the store's chunks at ``generation``)."""
        keys: dict[int, ArticleKey] = {}
        for rowid, chunk in rows:
            c = chunk.citation
            keys[rowid] = (c.doc, c.article if c.article is not None else chunk.id)
        self._keys = (generation, keys)

    def scored(self, query: str, n: int) -> list[tuple[int, float]]:
        """(rowid, score) of the ``n`` best chunks for ``query``, best first."""
        raise NotImplementedError

    def collapses(self) -> bool:
        """Whether ``search`` returns the best chunk of each article in ``scored`` order, so a
        hybrid may rank articles with :meth:`article_candidates` instead."""
        return bool(getattr(self.settings, "collapse_articles", False))

    def article_candidates(self, query: str, k: int, depth: int) -> list[tuple[ArticleKey, int, float]]:
        """(article key, rowid of its best chunk, score) of the ``k`` best articles among the
        ``depth`` best chunks, best first; no chunk text is read."""
        keys = self.article_keys()
        seen: set[ArticleKey] = set()
        out: list[tuple[ArticleKey, int, float]] = []
        for rowid, score in self.scored(query, depth):
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

    def health(self) -> dict[str, Any]:
        try:
            self.sync()
            return {"status": "ok", "retriever": self.name, "chunks": self.store.count_chunks()}
        except Exception as exc:  # health reports every failure rather than raising it
            return {"status": "down", "retriever": self.name, "error": str(exc)}

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._generation = -1
            self._keys = None


__all__ = [
    "CHUNKS_PER_ARTICLE",
    "ArticleKey",
    "StoreRetriever",
    "collapse_articles",
    "publish",
    "read_pointer",
]
