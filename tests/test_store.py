"""The SQLite store: one transaction per document, generations, embedder identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lexrag.chunking import chunk_document
from lexrag.errors import RetrievalError
from lexrag.store import DocumentRecord, Store

TEXT = "Điều 1. Một\nNội dung một.\nĐiều 2. Hai\n1. Khoản một.\n2. Khoản hai."


def _put(store: Store, doc_id: str, text: str, embedder: tuple[str, int] = ("m", 3)) -> None:
    parsed = chunk_document(doc_id, text)
    vectors = np.ones((len(parsed.chunks), embedder[1]), dtype=np.float32)
    record = DocumentRecord(doc_id, parsed.title, f"/x/{doc_id}.txt", f"sha-{text}", len(parsed.chunks))
    store.put_document(record, parsed.chunks, vectors, embedder)


def test_missing_index_tells_the_user_to_ingest(tmp_path: Path) -> None:
    with pytest.raises(RetrievalError, match="lexrag ingest"):
        Store.open(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_put_replace_delete_and_generation(tmp_path: Path) -> None:
    store = Store.open(tmp_path, create=True)
    assert store.generation == 0
    _put(store, "a", TEXT)
    _put(store, "b", TEXT)
    assert store.generation == 2
    assert [d.id for d in store.documents()] == ["a", "b"]
    first_rowids = store.chunk_rowids()
    assert len(first_rowids) == 4
    chunks = dict(store.chunks())
    assert chunks[first_rowids[1]].citation.article == 2
    assert chunks[first_rowids[1]].citation.doc_title == "a"

    _put(store, "a", TEXT + "\nĐiều 3. Ba\nMới.")
    assert store.generation == 3
    assert store.document("a") is not None and store.document("a").n_chunks == 3  # type: ignore[union-attr]
    rowids = store.chunk_rowids()
    assert len(rowids) == 5
    assert min(set(rowids) - set(first_rowids)) > max(first_rowids), "rowids are never reused"

    assert store.delete_document("b")
    assert not store.delete_document("b")
    assert store.generation == 4
    assert {c.citation.doc for _, c in store.chunks()} == {"a"}
    ids, vectors = next(store.iter_vectors())
    assert len(ids) == 3 and vectors.shape == (3, 3)
    store.close()


def test_other_embedder_is_a_clear_error(tmp_path: Path) -> None:
    store = Store.open(tmp_path, create=True)
    _put(store, "a", TEXT, ("minilm-v1", 3))
    with pytest.raises(RetrievalError, match=r"minilm-v1.*other-model.*new --index directory"):
        store.check_embedder("other-model", 3)
    with pytest.raises(RetrievalError):
        _put(store, "b", TEXT, ("other-model", 3))
    assert [d.id for d in store.documents()] == ["a"], "the failed document left nothing behind"
    store.close()


def test_unreadable_file_is_a_retrieval_error(tmp_path: Path) -> None:
    (tmp_path / "lexrag.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(RetrievalError, match="lexrag ingest"):
        Store.open(tmp_path)
