"""The index in PostgreSQL: documents, chunks, vectors (pgvector, HNSW cosine) and BM25 postings,
written in one transaction per document, so every reader sees a document whole or not at all,
at the moment it commits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lexrag import (
    Chunk,
    Citation,
    DocumentMeta,
    DocumentRecord,
    FloatArray,
    IndexStore,
    RetrievalError,
    check_recorded_embedder,
    mask_url,
)

from .db import LOCK_EMBEDDER, Database
from .limits import PostgresLimits
from .terms import TERMS_VERSION, chunk_fields

#: HNSW graph of the vectors: degree and build-time breadth (pgvector's defaults are 16, 64).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
_SMALLINT = 32767

CHUNK_COLUMNS = (
    "c.id, c.chunk_id, c.doc, d.title, c.part, c.chapter, c.section, c.article, c.article_title, "
    "c.clauses, c.text"
)


def chunk_of(row: Sequence[Any]) -> tuple[int, Chunk]:
    """(id, chunk) of a row of :data:`CHUNK_COLUMNS`."""
    rowid, cid, doc, title, part, chapter, section, article, article_title, clauses, text = row[:11]
    citation = Citation(
        doc=doc,
        doc_title=title,
        part=part,
        chapter=chapter,
        section=section,
        article=article,
        article_title=article_title,
        clauses=tuple(clauses or ()),
    )
    return int(rowid), Chunk(id=cid, citation=citation, text=text)


def vector_text(vector: FloatArray) -> str:
    """pgvector's text form; float32 values written so they read back exactly."""
    return "[" + ",".join(repr(float(x)) for x in np.asarray(vector, dtype=np.float32)) + "]"


def parse_vector(text: str) -> FloatArray:
    return np.array(text[1:-1].split(","), dtype=np.float32)


#: What :func:`_record` reads of a document row.
DOCUMENT_COLUMNS = "id, title, path, sha256, n_chunks, metadata::text"


def _record(row: Sequence[Any]) -> DocumentRecord:
    doc_id, title, path, sha256, n_chunks, metadata = row
    meta = DocumentMeta() if metadata is None else DocumentMeta.model_validate_json(metadata)
    return DocumentRecord(doc_id, title, path, sha256, n_chunks, meta)


class PostgresStore(IndexStore, PostgresLimits):
    """A lexrag index in a PostgreSQL database with pgvector (``[index] backend = "postgres"``);
    it also keeps the counters of the per-key rate limits of the servers that use it."""

    schemes = ("postgres", "postgresql")
    default_retriever = "pg-hybrid"
    other_index_advice = "ingest into another database"

    def __init__(self, db: Database) -> None:
        self.db = db
        self.url = db.url
        self._closed = False

    @classmethod
    def open(cls, location: str | Path, *, create: bool = False) -> PostgresStore:
        url = str(location)
        db = Database.acquire(url, create=create)
        store = cls(db)
        try:
            store._check_terms()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.db.release()

    def describe(self) -> str:
        return mask_url(self.url)

    def _check_terms(self) -> None:
        recorded = self.meta("terms")
        if recorded is not None and recorded != TERMS_VERSION:
            raise RetrievalError(
                f"the index in {self.describe()} has BM25 postings of kind {recorded!r}, this "
                f"lexrag-postgres writes {TERMS_VERSION!r}: run `lexrag ingest --force` on the corpus"
            )

    # --- meta -------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self.db.connection() as conn:
            row = conn.execute("SELECT value FROM lexrag_meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def generation(self) -> int:
        with self.db.connection() as conn:
            row = conn.execute("SELECT generation FROM lexrag_stats").fetchone()
        return int(row[0]) if row else 0

    def embedder(self) -> tuple[str, int] | None:
        with self.db.connection() as conn:
            return _recorded_embedder(conn)

    # --- documents --------------------------------------------------------------------

    def document(self, doc_id: str) -> DocumentRecord | None:
        with self.db.connection() as conn:
            row = conn.execute(
                f"SELECT {DOCUMENT_COLUMNS} FROM lexrag_documents WHERE id = %s", (doc_id,)
            ).fetchone()
        return None if row is None else _record(row)

    def documents(self) -> list[DocumentRecord]:
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT {DOCUMENT_COLUMNS} FROM lexrag_documents ORDER BY id").fetchall()
        return [_record(row) for row in rows]

    def document_chunks(self, doc_id: str) -> tuple[list[Chunk], FloatArray | None]:
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT {CHUNK_COLUMNS}, c.embedding::text FROM lexrag_chunks c "
                "JOIN lexrag_documents d ON d.id = c.doc WHERE c.doc = %s ORDER BY c.seq",
                (doc_id,),
            ).fetchall()
        chunks = [chunk_of(row)[1] for row in rows]
        if not rows or any(row[-1] is None for row in rows):
            return chunks, None
        return chunks, np.stack([parse_vector(row[-1]) for row in rows])

    def put_document(
        self,
        record: DocumentRecord,
        chunks: Sequence[Chunk],
        vectors: FloatArray | None,
        embedder: tuple[str, int] | None,
    ) -> None:
        """Replace the document ``record.id`` with ``chunks`` (their vectors and postings) in one
        transaction; the statistics BM25 reads move with it."""
        if vectors is not None and len(vectors) != len(chunks):
            raise ValueError("one vector per chunk")
        fields = [chunk_fields(chunk.text) for chunk in chunks]
        texts = None if vectors is None else [vector_text(v) for v in vectors]
        add_body = sum(f[1] for f in fields)
        add_head = sum(f[3] for f in fields)
        with self.db.connection() as conn, conn.transaction():
            # One writer per document id at a time (two ingests of one file do not collide).
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (record.id,))
            conn.execute(
                "INSERT INTO lexrag_meta VALUES ('terms', %s) ON CONFLICT (key) DO NOTHING", (TERMS_VERSION,)
            )
            if embedder is not None:
                self._record_embedder(conn, *embedder)
            removed = self._remove(conn, record.id)
            conn.execute(
                "INSERT INTO lexrag_documents (id, title, path, sha256, n_chunks, metadata) "
                "VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
                (
                    record.id,
                    record.title,
                    record.path,
                    record.sha256,
                    len(chunks),
                    None if record.metadata.empty else record.metadata.model_dump_json(),
                ),
            )
            ids = [
                int(r[0])
                for r in conn.execute(
                    "SELECT nextval('lexrag_chunk_ids') FROM generate_series(1, %s)", (len(chunks),)
                ).fetchall()
            ]
            cur = conn.cursor()
            with cur.copy(
                "COPY lexrag_chunks (id, chunk_id, doc, seq, part, chapter, section, article, "
                "article_title, clauses, text, len_body, len_head, embedding) FROM STDIN"
            ) as copy:
                for seq, (rowid, chunk, f) in enumerate(zip(ids, chunks, fields, strict=True)):
                    c = chunk.citation
                    copy.write_row(
                        (
                            rowid,
                            chunk.id,
                            record.id,
                            seq,
                            c.part,
                            c.chapter,
                            c.section,
                            c.article,
                            c.article_title,
                            list(c.clauses),
                            chunk.text,
                            f[1],
                            f[3],
                            None if texts is None else texts[seq],
                        )
                    )
            with cur.copy(
                "COPY lexrag_postings (term, chunk, tf_body, tf_head, len_body, len_head) FROM STDIN"
            ) as copy:
                for rowid, (body, len_body, head, len_head) in zip(ids, fields, strict=True):
                    short_head = min(len_head, _SMALLINT)
                    for term in body.keys() | head.keys():
                        copy.write_row(
                            (
                                term,
                                rowid,
                                min(body.get(term, 0), _SMALLINT),
                                min(head.get(term, 0), _SMALLINT),
                                len_body,
                                short_head,
                            )
                        )
            # Last, so concurrent writers wait on this one row only for the commit.
            conn.execute(
                "UPDATE lexrag_stats SET generation = generation + 1, n_chunks = n_chunks + %s, "
                "sum_body = sum_body + %s, sum_head = sum_head + %s",
                (len(chunks) - removed[0], add_body - removed[1], add_head - removed[2]),
            )

    def delete_document(self, doc_id: str) -> bool:
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (doc_id,))
            exists = conn.execute("SELECT 1 FROM lexrag_documents WHERE id = %s", (doc_id,)).fetchone()
            if exists is None:
                return False
            removed = self._remove(conn, doc_id)
            conn.execute(
                "UPDATE lexrag_stats SET generation = generation + 1, n_chunks = n_chunks - %s, "
                "sum_body = sum_body - %s, sum_head = sum_head - %s",
                removed,
            )
        return True

    def _remove(self, conn: Any, doc_id: str) -> tuple[int, int, int]:
        """Delete a document's postings, chunks and row (inside the caller's transaction);
        (chunks, body length, heading length) it had."""
        row = conn.execute(
            "SELECT count(*), coalesce(sum(len_body), 0), coalesce(sum(len_head), 0) "
            "FROM lexrag_chunks WHERE doc = %s",
            (doc_id,),
        ).fetchone()
        conn.execute(
            "DELETE FROM lexrag_postings WHERE chunk IN (SELECT id FROM lexrag_chunks WHERE doc = %s)",
            (doc_id,),
        )
        conn.execute("DELETE FROM lexrag_documents WHERE id = %s", (doc_id,))
        return int(row[0]), int(row[1]), int(row[2])

    def _record_embedder(self, conn: Any, model_id: str, dim: int) -> None:
        """Record the embedder with the first vectors (typing the vector column and building its
        HNSW index), or check that it is the recorded one."""
        recorded = _recorded_embedder(conn)
        if recorded is None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_EMBEDDER,))
            recorded = _recorded_embedder(conn)
        if recorded is not None:
            check_recorded_embedder(
                recorded, model_id, dim, where=self.describe(), advice=self.other_index_advice
            )
            return
        conn.execute(
            "INSERT INTO lexrag_meta VALUES ('embedder', %s), ('dim', %s)", (model_id, str(int(dim)))
        )
        conn.execute(f"ALTER TABLE lexrag_chunks ALTER COLUMN embedding TYPE vector({int(dim)})")
        conn.execute(
            "CREATE INDEX IF NOT EXISTS lexrag_chunks_embedding ON lexrag_chunks "
            f"USING hnsw (embedding vector_cosine_ops) WITH (m = {HNSW_M}, "
            f"ef_construction = {HNSW_EF_CONSTRUCTION})"
        )

    # --- chunks -----------------------------------------------------------------------

    def count_chunks(self) -> int:
        with self.db.connection() as conn:
            row = conn.execute("SELECT n_chunks FROM lexrag_stats").fetchone()
        return int(row[0]) if row else 0

    def chunks(self, rowids: Sequence[int]) -> list[tuple[int, Chunk]]:
        """(id, chunk) for ``rowids`` in that order (missing ones left out)."""
        if not rowids:
            return []
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT {CHUNK_COLUMNS} FROM lexrag_chunks c JOIN lexrag_documents d ON d.id = c.doc "
                "WHERE c.id = ANY(%s)",
                (list(rowids),),
            ).fetchall()
        found = dict(chunk_of(row) for row in rows)
        return [(r, found[r]) for r in rowids if r in found]

    def optimize(self) -> None:
        """Refresh the planner's statistics and the visibility map (index-only scans of the
        postings) after a large ingest."""
        with self.db.connection() as conn:
            conn.execute("VACUUM (ANALYZE) lexrag_postings")
            conn.execute("VACUUM (ANALYZE) lexrag_chunks")


def _recorded_embedder(conn: Any) -> tuple[str, int] | None:
    rows = dict(
        conn.execute("SELECT key, value FROM lexrag_meta WHERE key IN ('embedder', 'dim')").fetchall()
    )
    if "embedder" not in rows or "dim" not in rows:
        return None
    return str(rows["embedder"]), int(rows["dim"])


__all__ = ["PostgresStore", "chunk_of", "parse_vector", "vector_text"]
