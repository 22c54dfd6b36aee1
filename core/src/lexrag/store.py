"""The index's source of truth: one SQLite file of documents, chunks and their embeddings.

Each document is written in one transaction (its chunks, their vectors and a bumped
``generation``), so a crash leaves the store as it was before or after that document.
Derived structures (the hnswlib graph, the BM25 index) record the generation they were
built from and are rebuilt or reconciled when it moved on.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import RetrievalError
from .retrieval import Chunk, Citation, DocumentRecord, FloatArray, IndexStore
from .types import DocumentMeta

DB_NAME = "lexrag.sqlite3"
SCHEMA_VERSION = "2"
#: Upgrades of an older schema, in place: (from, statements) — each brings it one version on.
_UPGRADES: dict[str, str] = {
    # 2: documents' legal metadata (JSON of lexrag.types.DocumentMeta; NULL: none known).
    "1": "ALTER TABLE documents ADD COLUMN metadata TEXT",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    n_chunks INTEGER NOT NULL,
    ingested_at REAL NOT NULL,
    metadata TEXT
);
-- AUTOINCREMENT: a deleted chunk's rowid is never reused, so derived indexes can key on it.
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    part TEXT,
    chapter TEXT,
    section TEXT,
    article INTEGER,
    article_title TEXT,
    clauses TEXT NOT NULL,
    text TEXT NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc);
"""

_CHUNK_COLUMNS = "c.rowid, c.id, c.doc, d.title, c.part, c.chapter, c.section, c.article, c.article_title, c.clauses, c.text"


def db_path(index_dir: Path) -> Path:
    return Path(index_dir) / DB_NAME


def _chunk_of(row: sqlite3.Row | tuple[object, ...]) -> tuple[int, Chunk]:
    rowid, cid, doc, title, part, chapter, section, article, article_title, clauses, text = row
    citation = Citation(
        doc=str(doc),
        doc_title=str(title),
        part=part if isinstance(part, str) else None,
        chapter=chapter if isinstance(chapter, str) else None,
        section=section if isinstance(section, str) else None,
        article=article if isinstance(article, int) else None,
        article_title=article_title if isinstance(article_title, str) else None,
        clauses=tuple(json.loads(str(clauses))),
    )
    return int(str(rowid)), Chunk(id=str(cid), citation=citation, text=str(text))


class Store(IndexStore):
    """The SQLite file of one index directory (the ``embedded`` backend).

    ``Store.open(dir, create=False)`` raises :class:`RetrievalError` when there is no index
    there yet, telling the user to run ``lexrag ingest``.
    """

    other_index_advice = "ingest into a new --index directory"

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, index_dir: str | Path, *, create: bool = False) -> Store:
        index_dir = Path(index_dir)
        path = db_path(index_dir)
        if not path.is_file():
            if not create:
                raise RetrievalError(
                    f"no index in {index_dir}: run `lexrag ingest PATH...` first "
                    "(or point --index / LEXRAG_INDEX_DIR at an existing one)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            if create:
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            schema = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if schema is not None and schema[0] in _UPGRADES:
                schema = _upgrade(conn)
        except sqlite3.DatabaseError as exc:
            raise RetrievalError(
                f"the index {path} is unreadable ({exc}); delete {index_dir} and run `lexrag ingest` again"
            ) from None
        if schema is None or schema[0] != SCHEMA_VERSION:
            raise RetrievalError(
                f"the index {path} has schema {schema[0] if schema else 'none'}, this lexrag "
                f"needs {SCHEMA_VERSION}; delete {index_dir} and run `lexrag ingest` again"
            )
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    def describe(self) -> str:
        return str(self.path.parent)

    # --- meta -------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def generation(self) -> int:
        """Bumped by every committed change; derived indexes compare theirs to it."""
        return int(self.meta("generation") or 0)

    def embedder(self) -> tuple[str, int] | None:
        """(model id, dimension) of the embedder the stored vectors came from, if any."""
        model, dim = self.meta("embedder"), self.meta("dim")
        return None if model is None or dim is None else (model, int(dim))

    # --- documents --------------------------------------------------------------------

    def document(self, doc_id: str) -> DocumentRecord | None:
        row = self.conn.execute(
            "SELECT id, title, path, sha256, n_chunks, metadata FROM documents WHERE id=?", (doc_id,)
        ).fetchone()
        return None if row is None else _record(row)

    def documents(self) -> list[DocumentRecord]:
        rows = self.conn.execute(
            "SELECT id, title, path, sha256, n_chunks, metadata FROM documents ORDER BY id"
        )
        return [_record(row) for row in rows]

    def document_chunks(self, doc_id: str) -> tuple[list[Chunk], FloatArray | None]:
        rows = self.conn.execute(
            f"SELECT {_CHUNK_COLUMNS}, c.embedding FROM chunks c JOIN documents d ON d.id = c.doc "
            "WHERE c.doc = ? ORDER BY c.seq",
            (doc_id,),
        ).fetchall()
        chunks = [_chunk_of(row[:-1])[1] for row in rows]
        blobs = [row[-1] for row in rows]
        if not blobs or any(b is None for b in blobs):
            return chunks, None
        data = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
        return chunks, data.copy()

    def put_document(
        self,
        record: DocumentRecord,
        chunks: Sequence[Chunk],
        vectors: FloatArray | None,
        embedder: tuple[str, int] | None,
    ) -> None:
        """Replace the document ``record.id`` with ``chunks`` (and their ``vectors``), atomically."""
        if vectors is not None and len(vectors) != len(chunks):
            raise ValueError("one vector per chunk")
        with self._transaction():
            if embedder is not None:
                self.check_embedder(*embedder)
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('embedder', ?)", (embedder[0],))
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('dim', ?)", (str(embedder[1]),))
            self.conn.execute("DELETE FROM documents WHERE id=?", (record.id,))
            self.conn.execute(
                "INSERT INTO documents (id, title, path, sha256, n_chunks, ingested_at, metadata) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.title,
                    record.path,
                    record.sha256,
                    len(chunks),
                    time.time(),
                    None if record.metadata.empty else record.metadata.model_dump_json(),
                ),
            )
            rows = []
            for seq, chunk in enumerate(chunks):
                c = chunk.citation
                blob = (
                    None
                    if vectors is None
                    else np.ascontiguousarray(vectors[seq], dtype=np.float32).tobytes()
                )
                rows.append(
                    (
                        chunk.id,
                        record.id,
                        seq,
                        c.part,
                        c.chapter,
                        c.section,
                        c.article,
                        c.article_title,
                        json.dumps(list(c.clauses)),
                        chunk.text,
                        blob,
                    )
                )
            self.conn.executemany(
                "INSERT INTO chunks (id, doc, seq, part, chapter, section, article, article_title, "
                "clauses, text, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._bump()

    def set_metadata(self, doc_id: str, metadata: DocumentMeta) -> bool:
        """Replace a document's metadata in place (its chunks and vectors stay)."""
        with self._transaction():
            updated = self.conn.execute(
                "UPDATE documents SET metadata=? WHERE id=?",
                (None if metadata.empty else metadata.model_dump_json(), doc_id),
            ).rowcount
            if updated:
                self._bump()
        return updated > 0

    def delete_document(self, doc_id: str) -> bool:
        with self._transaction():
            deleted = self.conn.execute("DELETE FROM documents WHERE id=?", (doc_id,)).rowcount > 0
            if deleted:
                self._bump()
        return deleted

    def _bump(self) -> None:
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    # --- chunks -----------------------------------------------------------------------

    def count_chunks(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def chunk_rowids(self) -> list[int]:
        return [int(r[0]) for r in self.conn.execute("SELECT rowid FROM chunks ORDER BY rowid")]

    def chunk_keys(self) -> list[tuple[int, str, int | None, str]]:
        """(rowid, document, article, chunk id) of every chunk, in rowid order: what ranking
        by article needs, without reading any text (reading every chunk's text to collapse a
        ranking cost a server ~4 KB of memory per chunk)."""
        rows = self.conn.execute("SELECT rowid, doc, article, id FROM chunks ORDER BY rowid")
        return [(int(r[0]), str(r[1]), r[2], str(r[3])) for r in rows]

    def chunks(self, rowids: Sequence[int] | None = None) -> list[tuple[int, Chunk]]:
        """(rowid, chunk) for ``rowids`` in that order (missing ones left out), or all of them."""
        sql = f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.doc"
        if rowids is None:
            return [_chunk_of(r) for r in self.conn.execute(sql + " ORDER BY c.rowid")]
        found: dict[int, Chunk] = {}
        ids = list(rowids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self.conn.execute(f"{sql} WHERE c.rowid IN ({marks})", part):
                rowid, chunk = _chunk_of(row)
                found[rowid] = chunk
        return [(r, found[r]) for r in ids if r in found]

    def iter_vectors(
        self, rowids: Sequence[int] | None = None, batch: int = 2048
    ) -> Iterator[tuple[list[int], FloatArray]]:
        """Batches of (rowids, vectors) of the stored embeddings."""
        dim = self.embedder()
        if dim is None:
            return
        width = dim[1]
        if rowids is None:
            cursor = self.conn.execute("SELECT rowid, embedding FROM chunks WHERE embedding IS NOT NULL")
            rows = cursor.fetchmany(batch)
            while rows:
                yield _vectors(rows, width)
                rows = cursor.fetchmany(batch)
            return
        ids = list(rowids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.conn.execute(
                f"SELECT rowid, embedding FROM chunks WHERE embedding IS NOT NULL AND rowid IN ({marks})",
                part,
            ).fetchall()
            if rows:
                yield _vectors(rows, width)


def _record(row: sqlite3.Row | tuple[object, ...]) -> DocumentRecord:
    doc_id, title, path, sha256, n_chunks, metadata = row
    return DocumentRecord(
        str(doc_id),
        str(title),
        str(path),
        str(sha256),
        int(str(n_chunks)),
        DocumentMeta() if metadata is None else DocumentMeta.model_validate_json(str(metadata)),
    )


def _upgrade(conn: sqlite3.Connection) -> tuple[str]:
    """Bring an index of an older schema to :data:`SCHEMA_VERSION` in place (one transaction,
    so two processes opening it at once upgrade it once); the schema it has now."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = str(conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0])
        while version in _UPGRADES:
            conn.execute(_UPGRADES[version])
            version = str(int(version) + 1)
        conn.execute("UPDATE meta SET value=? WHERE key='schema'", (version,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return (version,)


def _vectors(rows: list[tuple[int, bytes]], width: int) -> tuple[list[int], FloatArray]:
    data = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), width)
    return [int(r[0]) for r in rows], data


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


__all__ = ["DB_NAME", "DocumentRecord", "Store", "db_path"]
