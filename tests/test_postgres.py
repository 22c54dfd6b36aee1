"""lexrag-postgres against a real PostgreSQL 16 + pgvector (``pgserver``, see fixtures_postgres):
ingest, search, delete, the same retrieval quality as the embedded index, migrations, the
embedder record, one-line errors, and ``lexrag index copy`` both ways."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import psycopg
import pytest

from lexrag import RetrievalError
from lexrag.evaluation import evaluate, load_questions
from lexrag.ingest import ingest
from lexrag.registry import Registry, build_retriever, open_index
from lexrag.store import Store
from lexrag_postgres.db import SCHEMA_VERSION
from lexrag_postgres.store import PostgresStore

from .conftest import CORPUS, DEV_QUESTIONS
from .fixtures_retrieval import index_config


def test_both_backends_use_the_one_lay_term_map_and_accent_restorer() -> None:
    """The lay-term map and the accent restorer live in the core: both backends rank alike
    because they use the same objects, not copies."""
    import lexrag
    from lexrag_postgres import retrievers as pg_retrievers
    from lexrag_postgres import terms as pg_terms
    from lexrag_retrievers import dense, lexical

    assert pg_terms.LAY_TO_LEGAL is lexical.LAY_TO_LEGAL is lexrag.LAY_TO_LEGAL
    assert pg_retrievers.AccentRestorer is dense.AccentRestorer is lexrag.AccentRestorer
    assert pg_retrievers.typed_without_accents is dense.typed_without_accents


def _tables(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        out = {}
        for table in ("lexrag_documents", "lexrag_chunks", "lexrag_postings"):
            out[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return out


def _consistent(url: str) -> None:
    """Every document has the chunks it says, every posting a chunk, and the BM25 statistics
    equal the chunks they summarise."""
    with psycopg.connect(url) as conn:
        bad_docs = conn.execute(
            "SELECT d.id FROM lexrag_documents d LEFT JOIN lexrag_chunks c ON c.doc = d.id "
            "GROUP BY d.id, d.n_chunks HAVING count(c.id) <> d.n_chunks"
        ).fetchall()
        orphans = conn.execute(
            "SELECT count(*) FROM lexrag_postings p LEFT JOIN lexrag_chunks c ON c.id = p.chunk "
            "WHERE c.id IS NULL"
        ).fetchone()[0]
        stats = conn.execute("SELECT n_chunks, sum_body, sum_head FROM lexrag_stats").fetchone()
        actual = conn.execute(
            "SELECT count(*), coalesce(sum(len_body), 0), coalesce(sum(len_head), 0) FROM lexrag_chunks"
        ).fetchone()
    assert bad_docs == [] and orphans == 0
    assert tuple(stats) == tuple(actual)


def test_ingest_search_and_delete(pg_url, pg_config, session_registry, default_embedder) -> None:
    config = pg_config(pg_url)
    store = open_index(config, session_registry, create=True)
    try:
        assert isinstance(store, PostgresStore)
        report = ingest(store, default_embedder, [CORPUS])
        assert len(report.added) == 5 and not report.failed
        assert store.embedder() == (default_embedder.model_id, default_embedder.dim)
        assert store.count_chunks() == report.chunks
        again = ingest(store, default_embedder, [CORPUS])
        assert len(again.skipped) == 5 and not again.added
        _consistent(pg_url)

        retriever = build_retriever(config, session_registry)
        assert retriever.name == "pg-hybrid"  # the backend's default retriever
        try:
            hits = retriever.search("Thời giờ làm việc bình thường không quá bao nhiêu giờ?", 3)
            assert (hits[0].chunk.citation.doc, hits[0].chunk.citation.article) == ("bo-luat-lao-dong", 105)
            assert retriever.health()["status"] == "ok"

            assert store.delete_document("bo-luat-lao-dong") is True
            assert store.delete_document("bo-luat-lao-dong") is False
            hits = retriever.search("Thời giờ làm việc bình thường không quá bao nhiêu giờ?", 10)
            assert all(h.chunk.citation.doc != "bo-luat-lao-dong" for h in hits)
            _consistent(pg_url)
        finally:
            retriever.close()
    finally:
        store.close()


def test_retrieval_quality_equals_the_embedded_index(
    pg_sample_url, pg_config, sample_index, session_registry
) -> None:
    """Same questions, same embedder, both backends' defaults: R@5 and MRR@10 within 0.01 for
    each retriever. pg-dense searches the same query vector as dense (e5-small's query adapter
    belongs to the embedder): the same nearest chunks with the same similarities."""
    questions = load_questions(DEV_QUESTIONS)
    embedded_config = index_config(sample_index, session_registry)
    for embedded_name, pg_name in (("bm25", "pg-bm25"), ("dense", "pg-dense"), ("hybrid", "pg-hybrid")):
        embedded = build_retriever(embedded_config, session_registry, embedded_name)
        postgres = build_retriever(pg_config(pg_sample_url), session_registry, pg_name)
        try:
            # The parts' names differ, and so does when each backend restricts a filtered search.
            shared = postgres.settings.model_dump(
                exclude={"dense", "lexical", "restrict_share", "exact_within"}
            )
            assert shared == embedded.settings.model_dump(include=set(shared)), pg_name  # one default each
            if pg_name == "pg-dense":
                query = "Bỏ nhau thì chia nhà cửa thế nào?"  # the adapter moves it (test_retrieval_e5)
                top = [embedded.search(query, 5), postgres.search(query, 5)]
                assert [h.chunk.id for h in top[0]] == [h.chunk.id for h in top[1]]
                assert [h.score for h in top[0]] == pytest.approx([h.score for h in top[1]], abs=1e-5)
            want, got = evaluate(embedded, questions), evaluate(postgres, questions)
        finally:
            embedded.close()
            postgres.close()
        for metric in ("recall@5", "mrr@10"):
            assert abs(want[metric] - got[metric]) <= 0.01, (pg_name, metric, want, got)


def test_the_schema_is_versioned_and_a_newer_one_refused(pg_url) -> None:
    PostgresStore.open(pg_url, create=True).close()
    PostgresStore.open(pg_url, create=True).close()  # idempotent
    with psycopg.connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM lexrag_schema_version ORDER BY 1")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        conn.execute("INSERT INTO lexrag_schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(RetrievalError, match="newer than this lexrag-postgres"):
        PostgresStore.open(pg_url)


def test_an_empty_database_says_to_ingest_first(pg_url) -> None:
    with pytest.raises(RetrievalError, match=r"no lexrag index in the database .*lexrag ingest"):
        PostgresStore.open(pg_url)


def test_the_embedder_is_recorded_and_checked(pg_url, default_embedder) -> None:
    from lexrag.chunking import chunk_document
    from lexrag.retrieval import DocumentRecord

    parsed = chunk_document("d", "Luật thử\nĐiều 1. Phạm vi\nNội dung điều một.")
    record = DocumentRecord("d", parsed.title, "/x/d.txt", "sha", len(parsed.chunks))
    vectors = default_embedder.embed([c.text for c in parsed.chunks])
    store = PostgresStore.open(pg_url, create=True)
    try:
        store.put_document(record, parsed.chunks, vectors, (default_embedder.model_id, default_embedder.dim))
        with pytest.raises(RetrievalError, match=r"was built with the embedder.*another database"):
            store.put_document(record, parsed.chunks, vectors, ("other-model", default_embedder.dim))
        with pytest.raises(RetrievalError, match=r"was built with the embedder.*another database"):
            store.check_embedder("other-model", 8)
        chunks, stored = store.document_chunks("d")
        assert [c.id for c in chunks] == [c.id for c in parsed.chunks]
        assert stored is not None and np.array_equal(stored, vectors)  # exact round trip
    finally:
        store.close()


def test_an_unreachable_database_is_one_line_without_the_password(cli, tmp_path: Path) -> None:
    (tmp_path / "lexrag.toml").write_text('[index]\nbackend = "postgres"\n', encoding="utf-8")
    url = "postgresql://lexrag:s3cret-pw@127.0.0.1:1/lexrag?connect_timeout=2"
    for args in (("search", "thời giờ làm việc"), ("ingest", str(CORPUS))):
        result = cli(*args, env={"LEXRAG_DATABASE_URL": url}, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: cannot reach the index database"), lines
        assert "postgresql://lexrag:********@127.0.0.1:1/lexrag" in lines[0]
        assert "s3cret" not in result.stderr + result.stdout


def test_no_database_url_and_the_wrong_retriever_are_config_errors(cli, tmp_path: Path, pg_url) -> None:
    (tmp_path / "lexrag.toml").write_text('[index]\nbackend = "postgres"\n', encoding="utf-8")
    result = cli("search", "thời giờ", cwd=tmp_path)
    assert result.returncode == 2 and "LEXRAG_DATABASE_URL" in result.stderr, result.stderr
    result = cli(
        "search", "thời giờ", "--retriever", "bm25", env={"LEXRAG_DATABASE_URL": pg_url}, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "pg-bm25" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_config_show_masks_the_database_password(cli, tmp_path: Path) -> None:
    (tmp_path / "lexrag.toml").write_text(
        '[index]\nbackend = "postgres"\ndatabase_url = "postgresql://lexrag:s3cret-pw@db:5432/lexrag"\n',
        encoding="utf-8",
    )
    result = cli("config", "show", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert "postgresql://lexrag:" in result.stdout  # the URL shows, its password does not


def test_index_copy_to_postgres_and_back_without_re_embedding(
    cli, tmp_path: Path, sample_index: Path, pg_url, session_registry: Registry, pg_config
) -> None:
    source = tmp_path / "source"
    shutil.copytree(sample_index, source)
    result = cli("index", "copy", "--from", str(source), "--to", pg_url, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["copied"] == 5 and summary["skipped"] == 0
    again = json.loads(cli("index", "copy", "--from", str(source), "--to", pg_url, "--json").stdout)
    assert again["copied"] == 0 and again["skipped"] == 5

    original = Store.open(source)
    pg = PostgresStore.open(pg_url)
    try:
        assert pg.embedder() == original.embedder()  # the embedder record travelled
        for record in original.documents():
            assert pg.document(record.id) == record
            want_chunks, want_vectors = original.document_chunks(record.id)
            got_chunks, got_vectors = pg.document_chunks(record.id)
            assert got_chunks == want_chunks
            assert want_vectors is not None and got_vectors is not None
            assert np.array_equal(got_vectors, want_vectors)
    finally:
        pg.close()

    back = tmp_path / "back"
    result = cli("index", "copy", "--from", pg_url, "--to", str(back))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("5 documents copied"), result.stdout
    copied = Store.open(back)
    try:
        assert copied.embedder() == original.embedder()
        for record in original.documents():
            _, want_vectors = original.document_chunks(record.id)
            _, got_vectors = copied.document_chunks(record.id)
            assert want_vectors is not None and got_vectors is not None
            assert np.array_equal(got_vectors, want_vectors)
    finally:
        copied.close()
        original.close()
    search = cli("search", "thời giờ làm việc bình thường", "--index", str(back), "--json")
    assert search.returncode == 0, search.stderr
    assert json.loads(search.stdout)[0]["doc"] == "bo-luat-lao-dong"


def test_copy_refuses_a_target_of_another_embedder(cli, tmp_path: Path, sample_index: Path, pg_url) -> None:
    store = PostgresStore.open(pg_url, create=True)
    try:
        from lexrag.chunking import chunk_document
        from lexrag.retrieval import DocumentRecord

        parsed = chunk_document("x", "Luật thử\nĐiều 1. Phạm vi\nNội dung.")
        record = DocumentRecord("x", parsed.title, "/x.txt", "sha", len(parsed.chunks))
        vectors = np.ones((len(parsed.chunks), 4), dtype=np.float32) / 2
        store.put_document(record, parsed.chunks, vectors, ("tiny", 4))
    finally:
        store.close()
    result = cli("index", "copy", "--from", str(sample_index), "--to", pg_url)
    assert result.returncode == 1
    assert "was built with the embedder 'tiny'" in result.stderr


def test_bm25_keeps_postings_per_generation_and_sees_another_writers_commit(
    tmp_path: Path, pg_url, pg_config, session_registry
) -> None:
    """pg-bm25 keeps the scored postings it read until the index generation moves on: a warm
    search reads nothing new, and a document another store commits (or deletes) is ranked by
    the very next search."""
    from .fixtures_postgres import HashEmbedder

    embedder = HashEmbedder("hash", None)  # type: ignore[arg-type]
    writer = PostgresStore.open(pg_url, create=True)
    retriever = build_retriever(pg_config(pg_url), session_registry, "pg-bm25")
    question = "nuôi ong mật trên sân thượng chung cư"
    try:
        ingest(writer, embedder, [CORPUS])
        assert all(h.chunk.citation.doc != "ong-mat" for h in retriever.search(question, 5))
        cache = retriever.postings
        held = dict(cache._terms)
        generation = cache.generation
        retriever.search(question, 5)
        assert cache.generation == generation
        assert all(cache._terms[t] is held[t] for t in held)  # nothing read again

        (tmp_path / "ong-mat.txt").write_text(
            "Luật Nuôi ong mật\n\nĐiều 1. Tổ ong mật trên sân thượng\n"
            "Người nuôi ong mật trên sân thượng chung cư phải đặt tổ ong cách lối thoát hiểm 15 mét.\n",
            encoding="utf-8",
        )
        ingest(writer, embedder, [tmp_path / "ong-mat.txt"])
        hits = retriever.search(question, 5)
        assert hits[0].chunk.citation.doc == "ong-mat"
        assert cache.generation > generation

        assert writer.delete_document("ong-mat")
        assert all(h.chunk.citation.doc != "ong-mat" for h in retriever.search(question, 5))
    finally:
        retriever.close()
        writer.close()
