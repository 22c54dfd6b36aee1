"""What a PostgreSQL retriever keeps between searches, and the statements it spares: pg-bm25's
article keys (chunk id → document and article, what collapsing to articles needs) are read once
for the whole index at the first search that lacks one, so a later search sends no second
statement after its postings; a chunk committed later by another writer still gets its key
when it first ranks. A chunk returned once is not read again, and a deleted document's kept
chunks are not returned. Against a real PostgreSQL (fixtures_postgres)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lexrag.evaluation import load_questions
from lexrag.ingest import ingest
from lexrag.registry import build_retriever, open_index

from .conftest import CORPUS, DEV_QUESTIONS

KEYS_SQL = "SELECT id, doc, article, chunk_id FROM lexrag_chunks"
CHUNKS_SQL = "WHERE c.id = ANY"


def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement psycopg sends from now on (the real connection runs it)."""
    sent: list[str] = []
    real = psycopg.Connection.execute

    def spy(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", spy)
    return sent


@pytest.fixture
def bm25(pg_url: str, pg_config: Any, session_registry: Any) -> Iterator[tuple[Any, Any, Any]]:
    """(config, store, pg-bm25 retriever) over a fresh database holding the sample corpus."""
    config = pg_config(pg_url)
    store = open_index(config, session_registry, create=True)
    retriever = build_retriever(config, session_registry, "pg-bm25")
    try:
        assert not ingest(store, None, [CORPUS]).failed
        yield config, store, retriever
    finally:
        retriever.close()
        store.close()


def test_article_keys_are_read_once_and_new_chunks_found(
    bm25: Any, session_registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _, retriever = bm25
    sent = statements(monkeypatch)
    questions = [q.question for q in load_questions(DEV_QUESTIONS)][:8]
    assert retriever.search(questions[0], 5)
    assert sum(KEYS_SQL in s for s in sent) == 1  # every key, at once
    sent.clear()
    for question in questions[1:]:
        hits = retriever.search(question, 5)
        assert hits
        keys = [(h.chunk.citation.doc, h.chunk.citation.article) for h in hits]
        assert len(set(keys)) == len(keys)  # collapsed to articles by the keys read
    assert not [s for s in sent if KEYS_SQL in s]

    # Another writer commits a document: its chunks are new ids, their keys read on demand.
    extra = tmp_path / "luat-thu-nghiem.txt"
    extra.write_text(
        "LUẬT THỬ NGHIỆM\n\nĐiều 1. Phạm vi điều chỉnh\nLuật này quy định về quả xoài dẻo.\n\n"
        "Điều 2. Đối tượng áp dụng\nLuật này áp dụng đối với người trồng quả xoài dẻo.\n",
        encoding="utf-8",
    )
    other = open_index(config, session_registry)
    try:
        assert not ingest(other, None, [extra]).failed
    finally:
        other.close()
    sent.clear()
    hits = retriever.search("quả xoài dẻo", 5)
    found = {(h.chunk.citation.doc, h.chunk.citation.article) for h in hits[:2]}
    assert found == {("luat-thu-nghiem", 1), ("luat-thu-nghiem", 2)}
    assert [s for s in sent if KEYS_SQL + " WHERE id = ANY" in s]  # only the missing ones


def test_chunks_returned_once_are_not_read_again(bm25: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, store, retriever = bm25
    sent = statements(monkeypatch)
    question = load_questions(DEV_QUESTIONS)[0].question
    first = retriever.search(question, 5)
    assert first and [s for s in sent if CHUNKS_SQL in s]
    sent.clear()
    again = retriever.search(question, 5)
    assert [(h.chunk, h.score) for h in again] == [(h.chunk, h.score) for h in first]
    assert not [s for s in sent if CHUNKS_SQL in s]

    doc = first[0].chunk.citation.doc
    assert store.delete_document(doc)
    after = retriever.search(question, 5)
    assert after and all(h.chunk.citation.doc != doc for h in after)
