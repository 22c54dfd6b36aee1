"""The ``phrasings`` retriever over the PostgreSQL index, alone and as ``pg-hybrid``'s third part
(issue 17 × issue 19): it ranks as over the embedded index, a restricted search is the allowed
part of its ranking, and a change of the index is seen at its commit.

The sample corpus in a real PostgreSQL (pgserver) and in the embedded store, both with the
default embedder's vectors, and the phrasings file of :mod:`tests.test_phrasings`."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lexrag import Hit, Retriever, Store
from lexrag.registry import Registry, build_retriever

from .fixtures_retrieval import index_config
from .test_phrasings import LAY_QUERY, PHRASINGS, SEVERANCE, _articles, _files, _ranking, _write

QUERIES = [LAY_QUERY, "ly dị rồi ai nuôi con", "tai nạn xe đền bù", "nghỉ thai sản được mấy tháng"]


@pytest.fixture
def phrasings_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "phrasings.jsonl", PHRASINGS)


@pytest.fixture
def both(
    sample_index: Path,
    pg_sample_url: str,
    pg_config: Callable[..., Any],
    session_registry: Registry,
    phrasings_file: Path,
    tmp_path: Path,
) -> Iterator[Callable[[str, str | None], Retriever]]:
    """``make(name, url)``: the retriever ``name`` with the phrasings file, over a copy of the
    embedded sample index (``url`` None) or over the PostgreSQL database ``url`` (its vectors kept
    in a directory of the test's)."""
    index = Path(shutil.copytree(sample_index, tmp_path / "index"))
    made: list[Retriever] = []

    def make(name: str, url: str | None) -> Retriever:
        if url is None:
            config = index_config(index, session_registry, _files(phrasings_file))
        else:
            config = pg_config(url, {**_files(phrasings_file), "index.dir": str(tmp_path / "pg-index")})
        retriever = build_retriever(config, session_registry, name)
        made.append(retriever)
        return retriever

    yield make
    for retriever in made:
        retriever.close()


def _same(got: list[Hit], want: list[Hit]) -> None:
    assert _articles(got) == _articles(want)
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)


def test_pg_hybrid_with_phrasings_ranks_as_the_embedded_hybrid(
    both: Callable[[str, str | None], Retriever], pg_sample_url: str, tmp_path: Path
) -> None:
    pg_hybrid = both("pg-hybrid", pg_sample_url)
    assert [(r.name, w) for r, w in pg_hybrid.parts] == [  # type: ignore[attr-defined]
        ("pg-dense", 1.2),
        ("pg-bm25", 1.0),
        ("phrasings", 5.0),
    ]
    embedded, pg = both("phrasings", None), both("phrasings", pg_sample_url)
    hybrid = both("hybrid", None)
    for query in QUERIES:
        # The part alone: the same articles' first chunks, the same scores.
        got, want = pg.search(query, 10), embedded.search(query, 10)
        assert [h.chunk.id for h in got] == [h.chunk.id for h in want]
        _same(got, want)
        _same(pg_hybrid.search(query, 5), hybrid.search(query, 5))
    assert _articles(pg_hybrid.search(LAY_QUERY, 3))[0] == SEVERANCE
    # Its vectors are kept in [index] dir under a name of this database's own, and reused.
    pointers = list((tmp_path / "pg-index").glob("phrasings.*.json"))
    assert len(pointers) == 1
    kept = pointers[0].read_text()
    both("phrasings", pg_sample_url).sync()
    assert pointers[0].read_text() == kept
    health = pg_hybrid.health()
    assert health["status"] == "ok" and health["parts"]["phrasings"]["articles with phrasings"] == 5


def test_a_restricted_pg_phrasings_search_is_the_allowed_part_of_the_full_ranking(
    both: Callable[[str, str | None], Retriever], pg_sample_url: str
) -> None:
    retriever = both("phrasings", pg_sample_url)
    checked = 0
    for query in QUERIES[:3]:
        everything = retriever.search(query, 50)
        ranked = list(dict.fromkeys(h.chunk.citation.doc for h in everything))
        assert len(ranked) == 3
        for docs in (frozenset(ranked[:1]), frozenset(ranked[1:]), frozenset(ranked[-1:]), frozenset()):
            for k in (1, 2, 10):
                within = retriever.search_within(query, k, docs)
                assert within is not None
                assert _ranking(within) == _ranking(
                    [h for h in everything if h.chunk.citation.doc in docs][:k]
                )
                checked += len(within)
    assert checked > 20


def test_pg_phrasings_see_a_document_deleted_or_added_at_its_commit(
    both: Callable[[str, str | None], Retriever], pg_url: str, sample_index: Path
) -> None:
    from lexrag_postgres.store import PostgresStore

    source, target = Store.open(sample_index), PostgresStore.open(pg_url, create=True)

    def copy(doc: str) -> None:  # as `lexrag index copy`: the vectors as they are
        record = source.document(doc)
        assert record is not None
        chunks, vectors = source.document_chunks(doc)
        target.put_document(record, chunks, vectors, source.embedder())

    try:
        for doc in ("bo-luat-lao-dong", "luat-hon-nhan-gia-dinh"):
            copy(doc)
        retriever = both("phrasings", pg_url)
        assert _articles(retriever.search(LAY_QUERY, 10))[0] == SEVERANCE
        assert target.delete_document("bo-luat-lao-dong")
        assert {doc for doc, _ in _articles(retriever.search(LAY_QUERY, 10))} == {"luat-hon-nhan-gia-dinh"}
        copy("bo-luat-lao-dong")
        assert _articles(retriever.search(LAY_QUERY, 10))[0] == SEVERANCE
    finally:
        source.close()
        target.close()
