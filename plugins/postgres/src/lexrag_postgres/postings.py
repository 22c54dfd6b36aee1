"""BM25 over the PostgreSQL postings, scored in this process.

A search sends one statement: it reads the index's generation and collection statistics and,
in the same snapshot, the packed postings (one ``bytea`` per term) of the query terms this
replica does not hold yet for that generation. Each term's postings are scored once per
generation (numpy) and kept; a search whose terms are all held costs one short round trip and
a few array sums. When the generation moved on (another process committed a document or
deleted one) everything held is dropped and the terms are read again in that statement, so a
change is seen at its commit, with no restart.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from lexrag import bm25_topk

from .db import Database

#: Bytes of scored postings one retriever keeps (the least recently used terms go first).
CACHE_BYTES = 256 * 2**20

# One posting, as the statement below packs it: int8send(chunk) || int2send(tf_body) ||
# int2send(tf_head) || int4send(len_body) || int2send(len_head) (network byte order).
_PACKED = np.dtype(
    [("chunk", ">i8"), ("tf_body", ">i2"), ("tf_head", ">i2"), ("len_body", ">i4"), ("len_head", ">i2")]
)

FETCH_SQL = """
SELECT s.generation, s.n_chunks, s.sum_body, s.sum_head, p.term, p.packed
FROM lexrag_stats s
LEFT JOIN LATERAL (
    SELECT term, string_agg(
        int8send(chunk) || int2send(tf_body) || int2send(tf_head) || int4send(len_body) || int2send(len_head),
        ''::bytea) AS packed
    FROM lexrag_postings
    WHERE term = ANY(CASE WHEN s.generation = %(generation)s THEN %(missing)s::text[] ELSE %(terms)s::text[] END)
    GROUP BY term
) p ON true
"""


@dataclass(frozen=True)
class BM25Params:
    k1: float
    b: float
    title_weight: int
    title_field: float


@dataclass
class _Scored:
    """One term's postings scored for one generation: chunk ids, and the BM25 terms of the
    chunk field and of the heading field (query weight 1)."""

    chunks: np.ndarray
    body: np.ndarray
    head: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.chunks.nbytes + self.body.nbytes + self.head.nbytes) + 200


_EMPTY = _Scored(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))


def _score(packed: bytes, stats: tuple[int, int, int], p: BM25Params) -> _Scored:
    """BM25 (Lucene's idf and saturation, as bm25s computes it) of one term in two fields: the
    chunk (body + title_weight × heading) and the heading alone."""
    rec = np.frombuffer(packed, dtype=_PACKED)
    if not len(rec):
        return _EMPTY
    n_chunks, sum_body, sum_head = stats
    n = float(max(n_chunks, 1))
    avg_chunk = max((sum_body + p.title_weight * sum_head) / n, 1e-9)
    avg_head = max(sum_head / n, 1e-9)
    tfh = rec["tf_head"].astype(np.float64)
    tf = rec["tf_body"].astype(np.float64) + p.title_weight * tfh
    dl = rec["len_body"].astype(np.float64) + p.title_weight * rec["len_head"]
    dlh = rec["len_head"].astype(np.float64)
    df, dfh = np.count_nonzero(tf > 0), np.count_nonzero(tfh > 0)
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    body = np.where(tf > 0, idf * tf / (tf + p.k1 * (1 - p.b + p.b * dl / avg_chunk)), 0.0)
    if p.title_field > 0 and dfh:
        idfh = np.log1p((n - dfh + 0.5) / (dfh + 0.5))
        head = np.where(tfh > 0, idfh * tfh / (tfh + p.k1 * (1 - p.b + p.b * dlh / avg_head)), 0.0)
    else:
        head = np.zeros(len(rec))
    return _Scored(rec["chunk"].astype(np.int64), body, head)


class PostingsCache:
    """The scored postings of the terms one BM25 retriever was asked about, for the index's
    current generation."""

    def __init__(self, params: BM25Params, max_bytes: int = CACHE_BYTES) -> None:
        self.params = params
        self.max_bytes = max_bytes
        self.generation = -1
        self._terms: OrderedDict[str, _Scored] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def _put(self, term: str, scored: _Scored) -> None:
        old = self._terms.pop(term, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._terms[term] = scored
        self._bytes += scored.nbytes
        while self._bytes > self.max_bytes and len(self._terms) > 1:
            _, dropped = self._terms.popitem(last=False)
            self._bytes -= dropped.nbytes

    def request(self, terms: list[str]) -> tuple[str, dict[str, Any]]:
        """The statement (and its parameters) that reads what a search for ``terms`` needs:
        the generation, the statistics and the postings of the terms not held for it."""
        with self._lock:
            missing = [t for t in terms if t not in self._terms]
            return FETCH_SQL, {"generation": self.generation, "missing": missing, "terms": terms}

    def absorb(
        self, rows: list[tuple[Any, ...]], terms: list[str], params: dict[str, Any]
    ) -> tuple[int, list[_Scored]] | None:
        """(generation, each term's scored postings) from the rows of :meth:`request`'s
        statement; None when they cannot make one consistent snapshot (another search moved
        the cache on in between: read again with :meth:`lookup`)."""
        generation = int(rows[0][0])
        stats = (int(rows[0][1]), int(rows[0][2]), int(rows[0][3]))
        got = {row[4]: _score(bytes(row[5]), stats, self.params) for row in rows if row[4] is not None}
        with self._lock:
            if generation != params["generation"]:  # the rows hold every term
                if generation > self.generation:
                    self._terms.clear()
                    self._bytes = 0
                    self.generation = generation
                out = [got.get(term, _EMPTY) for term in terms]
                if generation == self.generation:
                    for term, scored in zip(terms, out, strict=True):
                        self._put(term, scored)
                return generation, out
            if generation != self.generation:
                return None
            for term in params["missing"]:
                self._put(term, got.get(term, _EMPTY))
            if any(term not in self._terms for term in terms):
                return None
            out = []
            for term in terms:
                self._terms.move_to_end(term)
                out.append(self._terms[term])
            return generation, out

    def lookup(self, db: Database, terms: list[str]) -> tuple[int, list[_Scored]]:
        """(generation, each term's scored postings) as of one snapshot of the committed index."""
        while True:
            sql, params = self.request(terms)
            with db.connection() as conn:
                rows = conn.execute(sql, params).fetchall()
            found = self.absorb(rows, terms, params)
            if found is not None:
                return found
            with self._lock:
                self.generation = -1  # read every term again, with the next statement

    def clear(self) -> None:
        with self._lock:
            self._terms.clear()
            self._bytes = 0
            self.generation = -1


def rank(
    scored: list[_Scored], weights: list[float], title_field: float, n: int, within: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """(chunk id, score) of the ``n`` best chunks with a positive score, best first (ties: the
    lower id first); of the chunk ids ``within`` (ascending) only, when given, scored alike.
    The heading field's sum is scaled so its best equals the chunk field's best, times
    ``title_field``."""
    parts = [(w, s) for w, s in zip(weights, scored, strict=True) if len(s.chunks)]
    if not parts:
        return []
    ids = np.concatenate([s.chunks for _, s in parts])
    high = int(ids.max()) + 1
    if high <= 8 * len(ids) + 65536:  # ids dense enough: sum by id directly, no sort
        chunks, size = np.arange(high), high
        where = [s.chunks for _, s in parts]
    else:
        chunks, inverse = np.unique(ids, return_inverse=True)
        size = len(chunks)
        where = np.split(inverse, np.cumsum([len(s.chunks) for _, s in parts])[:-1])
    body = bm25_topk.sum_postings(size, ((at, s.body, w) for at, (w, s) in zip(where, parts, strict=True)))
    score = body
    if title_field > 0:
        head = bm25_topk.sum_postings(
            size, ((at, s.head, w) for at, (w, s) in zip(where, parts, strict=True))
        )
        top, top_head = body.max(), head.max()
        if top > 0 and top_head > 0:
            score = body + title_field * top / top_head * head
    # Positions are in id order, so equal scores come lower id first.
    if within is None:
        top = bm25_topk.top_positions(score, n)
    else:
        at = bm25_topk.positions_of(chunks, within)
        top = at[bm25_topk.top_positions(score[at], n)]
    return [(int(chunks[i]), float(score[i])) for i in top]


__all__ = ["CACHE_BYTES", "BM25Params", "PostingsCache", "rank"]
