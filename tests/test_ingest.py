"""The ingest pipeline: bad files, hash skips, updates, prune, and kill -9 atomicity."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from lexrag.chunking import chunk_document
from lexrag.ingest import ingest
from lexrag.registry import Registry, build_retriever
from lexrag.retrieval import Embedder
from lexrag.store import Store

from .conftest import CORPUS, ROOT
from .fixtures_retrieval import index_config


def _docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    shutil.copytree(CORPUS, docs)
    return docs


def test_bad_files_are_reported_by_name_and_the_rest_ingests(
    tmp_path: Path, exported_minilm: Embedder
) -> None:
    docs = _docs(tmp_path)
    (docs / "latin1.txt").write_bytes("Điều 1. Tên\nnội dung".encode("utf-16"))
    (docs / "empty.md").write_text("  \n")
    (docs / "notes.txt").write_text("Chỉ là ghi chú, không có Điều nào.")
    (docs / "image.png").write_bytes(b"\x89PNG")
    store = Store.open(tmp_path / "index", create=True)
    report = ingest(store, exported_minilm, [docs, tmp_path / "missing.txt"])
    assert sorted(report.added) == sorted(p.stem for p in CORPUS.iterdir())
    failed = {Path(p).name: why for p, why in report.failed.items()}
    assert set(failed) == {"latin1.txt", "empty.md", "notes.txt", "missing.txt"}
    assert "UTF-8" in failed["latin1.txt"] and "empty" in failed["empty.md"]
    assert "no article headings" in failed["notes.txt"] and "no such file" in failed["missing.txt"]
    assert report.ok
    assert report.chunks == store.count_chunks()

    again = ingest(store, exported_minilm, [docs / "bo-luat-lao-dong.txt", docs / "notes.txt"])
    assert again.skipped == ["bo-luat-lao-dong"] and not again.added and again.ok

    nothing = ingest(store, exported_minilm, [docs / "notes.txt", docs / "empty.md"])
    assert not nothing.ok
    store.close()


def test_changed_file_replaces_its_chunks_and_prune_deletes(
    tmp_path: Path, exported_minilm: Embedder
) -> None:
    docs = _docs(tmp_path)
    store = Store.open(tmp_path / "index", create=True)
    ingest(store, exported_minilm, [docs])
    path = docs / "bo-luat-lao-dong.txt"
    path.write_text(path.read_text().replace("không quá 08 giờ", "không quá 07 giờ"))
    (docs / "luat-doanh-nghiep.md").unlink()
    report = ingest(store, exported_minilm, [docs], prune=True)
    assert report.updated == ["bo-luat-lao-dong"]
    assert report.deleted == ["luat-doanh-nghiep"]
    assert len(report.skipped) == 3
    texts = [c.text for _, c in store.chunks() if c.citation.doc == "bo-luat-lao-dong"]
    assert any("không quá 07 giờ" in t for t in texts) and not any("không quá 08 giờ" in t for t in texts)
    assert store.document("luat-doanh-nghiep") is None
    store.close()


def _consistent(index_dir: Path, docs: Path) -> set[str]:
    """Assert every stored document is complete (all its chunks and vectors); its ids."""
    conn = sqlite3.connect(index_dir / "lexrag.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    orphans = conn.execute(
        "SELECT COUNT(*) FROM chunks WHERE doc NOT IN (SELECT id FROM documents)"
    ).fetchone()
    assert orphans[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM chunks WHERE embedding IS NULL").fetchone()[0] == 0
    ids = set()
    for doc_id, n_chunks in conn.execute("SELECT id, n_chunks FROM documents"):
        stored = conn.execute("SELECT COUNT(*) FROM chunks WHERE doc=?", (doc_id,)).fetchone()[0]
        expected = len(chunk_document(doc_id, (docs / f"{doc_id}.txt").read_text()).chunks)
        assert stored == n_chunks == expected, doc_id
        ids.add(doc_id)
    conn.close()
    return ids


def test_kill_9_mid_ingest_leaves_a_document_boundary(
    tmp_path: Path, exported_minilm: Embedder, session_registry: Registry
) -> None:
    docs = tmp_path / "many"
    docs.mkdir()
    sources = sorted(p for p in CORPUS.iterdir() if p.suffix == ".txt")
    total = 40
    for i in range(total):
        src = sources[i % len(sources)]
        (docs / f"{src.stem}-{i:02d}.txt").write_text(
            src.read_text() + f"\nĐiều 900. Bản {i}\nBản sao số {i}."
        )
    index_dir = tmp_path / "index"
    env = {k: v for k, v in os.environ.items() if k != "LEXRAG_INDEX_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lexrag", "ingest", str(docs), "--index", str(index_dir)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    db = index_dir / "lexrag.sqlite3"
    deadline = time.monotonic() + 120
    count = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                conn = sqlite3.connect(db, timeout=0.05)
                count = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
                conn.close()
            except sqlite3.OperationalError:
                count = 0
            if count >= 3:
                break
        time.sleep(0.01)
    assert proc.poll() is None, f"ingest ended before it could be killed: {proc.stderr.read()!r}"  # type: ignore[union-attr]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    ingested = _consistent(index_dir, docs)
    assert 3 <= len(ingested) < total

    # Still usable: the derived indexes are rebuilt from SQLite, and only whole documents answer.
    config = index_config(index_dir, session_registry)
    retriever = build_retriever(config, session_registry, "hybrid")
    hits = retriever.search("thời giờ làm việc bình thường", 5)
    retriever.close()
    assert hits and {h.chunk.citation.doc for h in hits} <= ingested

    # A second run finishes the job: what was committed is skipped, the rest added.
    store = Store.open(index_dir)
    report = ingest(store, exported_minilm, [docs])
    store.close()
    assert sorted(report.skipped) == sorted(ingested)
    assert len(report.added) == total - len(ingested)
    assert _consistent(index_dir, docs) == {p.stem for p in docs.iterdir()}
