"""Retrievers over the PostgreSQL index: dense (pgvector HNSW, cosine), lexical (BM25 computed in
SQL over the postings) and hybrid (the embedded hybrid's fusion).

Every search is one or two SQL statements against the committed state of the database: a
document another process ingests is found at its commit, a deleted one is gone, with no
cache to refresh and no restart. Defaults equal lexrag-retrievers' ``dense``, ``bm25`` and
``hybrid``, so both backends rank alike.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lexrag import (
    AccentRestorer,
    Embedder,
    Hit,
    RetrievalContext,
    RetrievalError,
    Retriever,
    typed_without_accents,
)

from .store import CHUNK_COLUMNS, PostgresStore, chunk_of, vector_text
from .terms import query_weights

BACKENDS = frozenset({"postgres"})
CHUNKS_PER_ARTICLE = 4
"""Chunks ranked per article asked for, before collapsing to one chunk per article (long
articles come in several chunks)."""


def collapse_articles(hits: list[Hit], k: int) -> list[Hit]:
    """The best hit of each (document, article), best first, at most ``k``; chunks outside any
    article are kept as they are."""
    seen: set[tuple[str, int]] = set()
    out: list[Hit] = []
    for hit in hits:
        c = hit.chunk.citation
        if c.article is not None:
            key = (c.doc, c.article)
            if key in seen:
                continue
            seen.add(key)
        out.append(hit)
        if len(out) == k:
            break
    return out


class PgRetriever(Retriever):
    """A retriever over the configured PostgreSQL index (opened on first use)."""

    backends = BACKENDS

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        self._store: PostgresStore | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> PostgresStore:
        with self._lock:
            if self._store is None:
                if self.context.open_store is None:
                    raise RetrievalError(f'the retriever {self.name!r} needs [index] backend = "postgres"')
                store = self.context.open_store()
                if not isinstance(store, PostgresStore):
                    store.close()
                    raise RetrievalError(
                        f'the retriever {self.name!r} reads a PostgreSQL index; set [index] backend = "postgres"'
                    )
                self._store = store
            return self._store

    def sync(self) -> None:
        """After an ingest: refresh the planner's statistics and the visibility map."""
        self.store.optimize()

    def health(self) -> dict[str, Any]:
        try:
            return {"status": "ok", "retriever": self.name, "chunks": self.store.count_chunks()}
        except Exception as exc:  # health reports every failure rather than raising it
            return {"status": "down", "retriever": self.name, "error": str(exc)}

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


class PgDenseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ef_search: int = Field(default=128, ge=10, le=1000)
    """pgvector ``hnsw.ef_search``: breadth of the graph search (at least ``candidates`` is used)."""
    candidates: int = Field(default=50, ge=1)
    """Chunks fetched from the graph before collapsing to distinct articles."""
    collapse_articles: bool = True
    """Return at most one chunk per article (the best)."""
    restore_accents: bool = True
    """Put the accents back on a query typed without any (a syllable bigram model of the indexed
    text, built on the first such query and again after the index changed) before embedding it."""


class PgDenseRetriever(PgRetriever):
    Settings = PgDenseSettings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, PgDenseSettings)
        self.options = settings
        self._embedder: Embedder | None = None
        self._checked = False
        self._restorer: tuple[int, AccentRestorer] | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.context.build_embedder()
        return self._embedder

    def ranked(self, query: str, n: int) -> list[Hit]:
        """Up to ``n`` chunk hits, best first, before collapsing."""
        if not query.strip():
            return []
        store = self.store
        recorded = store.embedder()
        if recorded is None:  # no vectors yet
            return []
        embedder = self.embedder
        if not self._checked:
            store.check_embedder(embedder.model_id, embedder.dim)
            self._checked = True
        elif recorded != (embedder.model_id, embedder.dim):
            store.check_embedder(embedder.model_id, embedder.dim)
        vector = vector_text(embedder.embed_query(self.query_text(query)))
        with store.db.connection() as conn, conn.transaction():
            conn.execute(
                "SELECT set_config('hnsw.ef_search', %s, true)",
                (str(max(self.options.ef_search, n)),),
            )
            rows = conn.execute(
                "WITH nn AS MATERIALIZED (SELECT id, embedding <=> %(q)s::vector AS dist "
                "FROM lexrag_chunks ORDER BY embedding <=> %(q)s::vector LIMIT %(n)s) "
                f"SELECT 1 - nn.dist, {CHUNK_COLUMNS} FROM nn JOIN lexrag_chunks c ON c.id = nn.id "
                "JOIN lexrag_documents d ON d.id = c.doc WHERE nn.dist IS NOT NULL ORDER BY nn.dist, nn.id",
                {"q": vector, "n": n},
            ).fetchall()
        return [Hit(chunk_of(row[1:])[1], float(row[0])) for row in rows]

    def restorer(self) -> AccentRestorer:
        """The accent model of the indexed text, rebuilt when the index changed."""
        store = self.store
        generation = store.generation
        if self._restorer is None or self._restorer[0] != generation:
            self._restorer = (generation, AccentRestorer.from_texts(_chunk_texts(store)))
        return self._restorer[1]

    def query_text(self, query: str) -> str:
        """What is embedded for ``query``: the query, with its accents restored when typed
        without any (and ``restore_accents``)."""
        if self.options.restore_accents and typed_without_accents(query):
            return self.restorer().restore(query)
        return query

    def search(self, query: str, k: int) -> list[Hit]:
        if not self.options.collapse_articles:
            return self.ranked(query, max(k, self.options.candidates))[:k]
        hits = self.ranked(query, max(CHUNKS_PER_ARTICLE * k, self.options.candidates))
        return collapse_articles(hits, k)

    def health(self) -> dict[str, Any]:
        out = super().health()
        if out["status"] == "ok" and self._embedder is not None:
            out["embedder"] = self._embedder.model_id
        return out


class PgBM25Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k1: float = Field(default=1.2, gt=0)
    b: float = Field(default=0.75, ge=0, le=1)
    title_weight: int = Field(default=3, ge=0, le=10)
    """Times the article heading's terms count in the chunk (0: not at all, 1: like body text)."""
    lay_terms: bool = True
    """Expand queries with the lay-to-legal term map."""
    lay_weight: float = Field(default=0.5, ge=0)
    """Weight of the expansion terms relative to the query's own."""
    extra_terms: dict[str, str] = Field(default_factory=dict)
    """More lay → legal entries, added to the built-in map."""
    title_field: float = Field(default=0.3, ge=0)
    """Weight of BM25 over the headings alone (own length normalisation), relative to the
    chunk's; each score scaled by its best before they are added. 0: off."""
    candidates: int = Field(default=50, ge=1)
    collapse_articles: bool = True


# BM25 (Lucene's idf and saturation, as bm25s computes it) of two fields in one statement:
# the chunk (body + title_weight × heading) and the heading alone. Collection statistics come
# from lexrag_stats and document frequencies from the postings read, so the whole ranking is
# one snapshot of the committed index.
BM25_SQL = f"""
WITH q AS (
    SELECT t.term, t.w FROM unnest(%(terms)s::text[], %(weights)s::float8[]) AS t(term, w)
),
st AS (
    SELECT greatest(n_chunks, 1)::float8 AS n,
           greatest((sum_body + %(tw)s * sum_head)::float8 / greatest(n_chunks, 1), 1e-9) AS avg_chunk,
           greatest(sum_head::float8 / greatest(n_chunks, 1), 1e-9) AS avg_head
    FROM lexrag_stats
),
p AS (
    SELECT p.term, p.chunk, q.w,
           (p.tf_body + %(tw)s * p.tf_head)::float8 AS tf, p.tf_head::float8 AS tfh,
           (p.len_body + %(tw)s * p.len_head)::float8 AS dl, p.len_head::float8 AS dlh
    FROM q JOIN lexrag_postings p ON p.term = q.term
),
df AS (
    SELECT term, count(*) FILTER (WHERE tf > 0) AS df, count(*) FILTER (WHERE tfh > 0) AS dfh
    FROM p GROUP BY term
),
s AS (
    SELECT p.chunk,
        sum(CASE WHEN p.tf > 0 THEN p.w * ln(1 + (st.n - df.df + 0.5) / (df.df + 0.5))
                 * p.tf / (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.dl / st.avg_chunk)) ELSE 0 END) AS body,
        sum(CASE WHEN p.tfh > 0 AND %(tf_field)s > 0 THEN p.w * ln(1 + (st.n - df.dfh + 0.5) / (df.dfh + 0.5))
                 * p.tfh / (p.tfh + %(k1)s * (1 - %(b)s + %(b)s * p.dlh / st.avg_head)) ELSE 0 END) AS head
    FROM p JOIN df USING (term) CROSS JOIN st
    GROUP BY p.chunk
),
m AS (SELECT max(body) AS top, max(head) AS top_head FROM s),
f AS (
    SELECT s.chunk, s.body + CASE WHEN m.top > 0 AND m.top_head > 0
        THEN %(tf_field)s * m.top / m.top_head * s.head ELSE 0 END AS score
    FROM s CROSS JOIN m
),
top AS MATERIALIZED (SELECT chunk, score FROM f WHERE score > 0 ORDER BY score DESC, chunk LIMIT %(n)s)
SELECT top.score, {CHUNK_COLUMNS}
FROM top JOIN lexrag_chunks c ON c.id = top.chunk JOIN lexrag_documents d ON d.id = c.doc
ORDER BY top.score DESC, top.chunk
"""


class PgBM25Retriever(PgRetriever):
    Settings = PgBM25Settings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, PgBM25Settings)
        self.options = settings

    def ranked(self, query: str, n: int) -> list[Hit]:
        """Up to ``n`` chunk hits with a positive score, best first, before collapsing."""
        o = self.options
        weights = query_weights(query, lay_terms=o.lay_terms, lay_weight=o.lay_weight, extra=o.extra_terms)
        if not weights:
            return []
        params = {
            "terms": list(weights),
            "weights": list(weights.values()),
            "tw": o.title_weight,
            "k1": o.k1,
            "b": o.b,
            "tf_field": o.title_field,
            "n": n,
        }
        with self.store.db.connection() as conn:
            rows = conn.execute(BM25_SQL, params).fetchall()
        return [Hit(chunk_of(row[1:])[1], float(row[0])) for row in rows]

    def search(self, query: str, k: int) -> list[Hit]:
        if not self.options.collapse_articles:
            return self.ranked(query, max(k, self.options.candidates))[:k]
        hits = self.ranked(query, max(CHUNKS_PER_ARTICLE * k, self.options.candidates))
        return collapse_articles(hits, k)


def _chunk_texts(store: PostgresStore) -> Iterator[str]:
    """Every chunk's text, streamed (a server-side cursor)."""
    with store.db.connection() as conn, conn.transaction(), conn.cursor(name="lexrag_texts") as cur:
        cur.itersize = 2000
        cur.execute("SELECT text FROM lexrag_chunks ORDER BY id")
        for (text,) in cur:
            yield text


class PgHybridSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dense: str = "pg-dense"
    """The retriever that gives the dense ranking (its settings: [retrievers.<name>])."""
    lexical: str = "pg-bm25"
    """The retriever that gives the lexical ranking."""
    fusion: Literal["rrf", "score"] = "score"
    """"score": Σ weight × score scaled to [0, 1] within each ranking's candidates (min–max);
    "rrf": reciprocal rank fusion, Σ weight / (k + rank). As lexrag-retrievers' hybrid."""
    rrf_k: float = Field(default=3.0, gt=0)
    dense_weight: float = Field(default=1.5, ge=0)
    """Weight of the dense ranking's scaled scores; 1.5 suits the default multilingual
    e5-small, an English-only embedder (MiniLM) wants about 0.3."""
    lexical_weight: float = Field(default=1.0, ge=0)
    candidates: int = Field(default=50, ge=1)
    """Hits taken from each ranking (after collapsing to one per article) before fusing."""
    collapse_articles: bool = True


class PgHybridRetriever(Retriever):
    """The fusion of lexrag-retrievers' ``hybrid``, over the PostgreSQL retrievers."""

    Settings = PgHybridSettings
    backends = BACKENDS

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, PgHybridSettings)
        self.options = settings
        self.parts: list[tuple[Retriever, float]] = []
        for part, weight in (
            (settings.dense, settings.dense_weight),
            (settings.lexical, settings.lexical_weight),
        ):
            if weight > 0:
                self.parts.append((context.build_retriever(part), weight))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _rankings(self, query: str, n: int) -> list[list[Hit]]:
        """Each part's hits, the parts searching at once (the embedder runs here while the
        database scores BM25)."""
        if len(self.parts) < 2:
            return [retriever.search(query, n) for retriever, _ in self.parts]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(self.parts), thread_name_prefix="pg-hybrid")
            pool = self._pool
        futures = [pool.submit(retriever.search, query, n) for retriever, _ in self.parts]
        return [future.result() for future in futures]

    def search(self, query: str, k: int) -> list[Hit]:
        n = max(k, self.options.candidates)
        fused: dict[tuple[str, int | str], float] = {}
        best: dict[tuple[str, int | str], Hit] = {}
        for (_, weight), hits in zip(self.parts, self._rankings(query, n), strict=True):
            if not hits:
                continue
            top, low = max(h.score for h in hits), min(h.score for h in hits)
            for rank, hit in enumerate(hits):
                c = hit.chunk.citation
                key: tuple[str, int | str] = (
                    (c.doc, c.article)
                    if self.options.collapse_articles and c.article is not None
                    else (c.doc, hit.chunk.id)
                )
                if self.options.fusion == "rrf":
                    share = weight / (self.options.rrf_k + rank + 1)
                else:
                    share = weight * ((hit.score - low) / (top - low) if top > low else 1.0)
                fused[key] = fused.get(key, 0.0) + share
                best.setdefault(key, hit)
        order = sorted(fused, key=lambda key: -fused[key])
        hits = [Hit(best[key].chunk, fused[key]) for key in order]
        return collapse_articles(hits, k) if self.options.collapse_articles else hits[:k]

    def sync(self) -> None:
        for retriever, _ in self.parts[-1:]:  # one store: optimising it once is enough
            retriever.sync()

    def health(self) -> dict[str, Any]:
        parts = {retriever.name: retriever.health() for retriever, _ in self.parts}
        statuses = {p.get("status") for p in parts.values()}
        status = "ok" if statuses == {"ok"} else ("down" if "ok" not in statuses else "degraded")
        return {"status": status, "retriever": self.name, "parts": parts}

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        for retriever, _ in self.parts:
            retriever.close()


__all__ = [
    "PgBM25Retriever",
    "PgBM25Settings",
    "PgDenseRetriever",
    "PgDenseSettings",
    "PgHybridRetriever",
    "PgHybridSettings",
]
