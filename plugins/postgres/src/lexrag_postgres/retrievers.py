"""Retrievers over the PostgreSQL index: dense (pgvector HNSW, cosine), lexical (BM25 over the
postings, scored in this process: :mod:`lexrag_postgres.postings`) and hybrid (the embedded
hybrid's fusion, :func:`lexrag.fuse`).

Every search reads the committed state of the database: a document another process ingests
is found at its commit, a deleted one is gone, with no restart (what a replica keeps is keyed
by the index generation, checked in the search's own statement). The parts rank chunk ids and
articles without reading any chunk text; only the chunks returned are read. Defaults equal
lexrag-retrievers' ``dense``, ``bm25`` and ``hybrid``, so both backends rank alike.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from cachetools import LRUCache
from pydantic import BaseModel, ConfigDict, Field

from lexrag import (
    CHUNKS_PER_ARTICLE,
    AccentRestorer,
    ArticleKey,
    Chunk,
    Embedder,
    FusedRetriever,
    FusionSettings,
    Hit,
    RetrievalContext,
    RetrievalError,
    Retriever,
    typed_without_accents,
)

from .postings import BM25Params, PostingsCache, rank
from .store import PostgresStore, vector_text
from .terms import query_weights

BACKENDS = frozenset({"postgres"})
Candidate = tuple[ArticleKey, int, float]
"""(article key, id of its best chunk, score)."""

#: Chunks (text and citation) one retriever keeps by id, the most recently returned. A chunk id is
#: never reused and its row never changes (a changed document gets new ids), so a kept chunk is
#: what the database holds, and a search that returns it needs no statement to read it.
CHUNKS_HELD = 2048

# hnsw.ef_search last set on each pooled connection (a session setting: set when it differs).
_EF_SEARCH: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def first_per_key(ranked: list[tuple[int, float, ArticleKey]], k: int) -> list[Candidate]:
    """The first chunk of each key in ``ranked`` ((id, score, key), best first), at most ``k``."""
    seen: set[ArticleKey] = set()
    out: list[Candidate] = []
    for rowid, score, key in ranked:
        if key in seen:
            continue
        seen.add(key)
        out.append((key, rowid, score))
        if len(out) == k:
            break
    return out


@dataclass
class Statement:
    """The one statement a part's ranking sends: ``finish`` turns its rows into (chunk id,
    score, key), best first."""

    sql: str
    params: dict[str, Any]
    finish: Callable[[list[tuple[Any, ...]]], list[tuple[int, float, ArticleKey]]]
    ef_search: int | None = None
    """pgvector's ``hnsw.ef_search`` the statement needs on its connection."""

    def prepare(self, conn: Any) -> None:
        """Set what the statement needs on ``conn`` (a session setting, sent when it changes)."""
        if self.ef_search is not None and _EF_SEARCH.get(conn) != self.ef_search:
            conn.execute(f"SET hnsw.ef_search = {int(self.ef_search)}")
            _EF_SEARCH[conn] = self.ef_search


#: pgvector's largest ``hnsw.ef_search``: a graph search gives at most this many chunks (the
#: catalog's over-fetching asks for more on a large index).
EF_SEARCH_MAX = 1000
#: Sets of documents whose chunk count (or chunk ids) one retriever keeps.
WITHIN_HELD = 64


class PgRetriever(Retriever):
    """A retriever over the configured PostgreSQL index (opened on first use)."""

    backends = BACKENDS

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        self._store: PostgresStore | None = None
        self._lock = threading.Lock()
        self._chunks: LRUCache[int, Chunk] = LRUCache(maxsize=CHUNKS_HELD)
        self._chunks_lock = threading.Lock()
        self._within_lock = threading.Lock()  # what a search within some documents keeps
        self._sizes: LRUCache[frozenset[str], tuple[int, int]] = LRUCache(maxsize=WITHIN_HELD)

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

    def statement(self, query: str, n: int, docs: frozenset[str] | None = None) -> Statement | None:
        """What ranks up to ``n`` chunks for ``query`` (of the documents ``docs`` only, when
        given; None: nothing to rank)."""
        raise NotImplementedError

    def restricts(self, docs: frozenset[str]) -> bool:
        """Whether :meth:`statement` ranks within ``docs``: when they hold at most
        ``restrict_share`` of the chunks."""
        allowed, total = self.sizes(docs)
        settings = self.settings
        share = settings.restrict_share if isinstance(settings, PgRestrictSettings) else 0.0
        return allowed <= share * total

    def sizes(self, docs: frozenset[str]) -> tuple[int, int]:
        """(chunks of ``docs``, chunks of the index), kept: they only choose how to search, and
        a stale count never changes an answer."""
        with self._within_lock:
            sizes = self._sizes.get(docs)
        if sizes is None:
            with self.store.db.connection() as conn:
                row = conn.execute(
                    "SELECT coalesce(sum(n_chunks), 0), (SELECT n_chunks FROM lexrag_stats) "
                    "FROM lexrag_documents WHERE id = ANY(%s)",
                    (list(docs),),
                ).fetchone()
            sizes = (int(row[0]), int(row[1] or 0)) if row else (0, 0)
            with self._within_lock:
                self._sizes[docs] = sizes
        return sizes

    def ranked(
        self, query: str, n: int, docs: frozenset[str] | None = None
    ) -> list[tuple[int, float, ArticleKey]]:
        """(chunk id, score, article key) of up to ``n`` chunks (of ``docs`` only, when given),
        best first, before collapsing."""
        st = self.statement(query, n, docs)
        if st is None:
            return []
        with self.store.db.connection() as conn:
            st.prepare(conn)
            rows = conn.execute(st.sql, st.params).fetchall()
        return st.finish(rows)

    def collapses(self) -> bool:
        return bool(getattr(self.settings, "collapse_articles", False))

    def depth(self, k: int) -> int:
        """Chunks to rank for the ``k`` best articles (or chunks)."""
        depth = int(getattr(self.settings, "candidates", k))
        return max(CHUNKS_PER_ARTICLE * k, depth) if self.collapses() else max(k, depth)

    def pick(self, ranked: list[tuple[int, float, ArticleKey]], k: int) -> list[Candidate]:
        """(key, chunk id, score) of the ``k`` best articles (or chunks, without
        ``collapse_articles``: keyed by chunk id) of ``ranked``, best first."""
        if not self.collapses():
            return [((key[0], rowid), rowid, score) for rowid, score, key in ranked[:k]]
        return first_per_key(ranked, k)

    def candidates(self, query: str, k: int, docs: frozenset[str] | None = None) -> list[Candidate] | None:
        """:meth:`pick` of :meth:`ranked` (within ``docs`` when given; None: this retriever
        cannot restrict its ranking to them): no chunk text is read."""
        if docs is not None and not self.restricts(docs):
            return None
        return self.pick(self.ranked(query, self.depth(k), docs), k)

    def fetch(self, rowids: list[int]) -> dict[int, Chunk]:
        """The chunks of these ids (those still in the index, or kept: :data:`CHUNKS_HELD`)."""
        with self._chunks_lock:  # a lookup marks the chunk recently used
            found = {r: self._chunks[r] for r in rowids if r in self._chunks}
        missing = [r for r in rowids if r not in found]
        if missing:
            read = dict(self.store.chunks(missing))
            found.update(read)
            with self._chunks_lock:
                self._chunks.update(read)
        return found

    def search(self, query: str, k: int) -> list[Hit]:
        found = self.candidates(query, k)
        assert found is not None  # an unrestricted ranking always comes
        return self._hits(found)

    def search_within(self, query: str, k: int, docs: frozenset[str]) -> list[Hit] | None:
        found = self.candidates(query, k, docs)
        return None if found is None else self._hits(found)

    def _hits(self, found: list[Candidate]) -> list[Hit]:
        chunks = self.fetch([rowid for _, rowid, _ in found])
        return [Hit(chunks[rowid], score) for _, rowid, score in found if rowid in chunks]

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
        with self._chunks_lock:
            self._chunks.clear()


class PgRestrictSettings(BaseModel):
    """When a PostgreSQL retriever restricts its search to the documents a filter allows."""

    model_config = ConfigDict(extra="forbid")

    restrict_share: float = Field(default=0.25, ge=0, le=1)
    """Restrict the search when the allowed documents hold at most this share of the index's
    chunks; above it the catalog asks for a few more passages and drops the others: cheap when
    most chunks are allowed, while a restricted search costs a second statement (the catalog
    still needs the unfiltered top for its notice). Measured with the six codes and two expired
    copies (4,186 chunks, 384-d hash vectors), against the bare search: one code (~700 chunks)
    restricted 1.8-2.0x (pg-bm25 2.2x), asking for more 12x (pg-bm25 6x); six of the eight codes
    asking for more 1.0-1.3x, restricted 1.2-2.3x."""


class PgDenseSettings(PgRestrictSettings):
    ef_search: int = Field(default=128, ge=10, le=1000)
    """pgvector ``hnsw.ef_search``: breadth of the graph search (at least ``candidates`` is used)."""
    candidates: int = Field(default=50, ge=1)
    """Chunks fetched from the graph before collapsing to distinct articles."""
    collapse_articles: bool = True
    """Return at most one chunk per article (the best)."""
    restore_accents: bool = True
    """Put the accents back on a query typed without any (a syllable bigram model of the indexed
    text, built on the first such query and again after the index changed) before embedding it."""
    exact_within: int = Field(default=2_000, ge=0)
    """Most allowed chunks ranked exactly (each one's distance, in SQL: about 1.5 µs a chunk;
    pgvector's graph filters after its search, so it is no way to restrict); pg-dense exactly
    over 3,100 chunks ran 4.7x the bare search."""


# The distance is computed once a row, in the subquery, and its order kept (no sort on top, so
# ties stay in the graph's order): written as ``ORDER BY embedding <=> q`` with ``1 - (embedding
# <=> q)`` selected, PostgreSQL computes it twice, reading the (TOASTed) vector twice a row.
DENSE_SQL = (
    "SELECT id, 1 - d, doc, article, chunk_id FROM (SELECT id, embedding <=> %(q)s::vector AS d, "
    "doc, article, chunk_id FROM lexrag_chunks ORDER BY d LIMIT %(n)s) ranked"
)


# Within some documents: every one of their chunks' distance (the rows found by the index on
# ``doc``), then the n nearest. MATERIALIZED keeps the planner from the HNSW index, which filters
# after its graph search and may return fewer than n.
DENSE_WITHIN_SQL = (
    "WITH allowed AS MATERIALIZED (SELECT id, embedding <=> %(q)s::vector AS d, doc, article, chunk_id "
    "FROM lexrag_chunks WHERE doc = ANY(%(docs)s)) "
    "SELECT id, 1 - d, doc, article, chunk_id FROM allowed ORDER BY d, id LIMIT %(n)s"
)


def _dense_rows(rows: list[tuple[Any, ...]]) -> list[tuple[int, float, ArticleKey]]:
    return [
        (int(r[0]), float(r[1]), (r[2], r[3] if r[3] is not None else r[4])) for r in rows if r[1] is not None
    ]


class PgDenseRetriever(PgRetriever):
    Settings = PgDenseSettings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, PgDenseSettings)
        self.options = settings
        self._embedder: Embedder | None = None
        self._checked = False
        self._restorer: tuple[int, AccentRestorer] | None = None
        # A filtered search embeds the same query twice (the unfiltered top for the notice, then
        # within the allowed documents): the last text's vector is kept. Keyed by the text
        # itself, since the accents put back on a query may change with the index.
        self._embed_query = functools.lru_cache(maxsize=1)(lambda text: self.embedder.embed_query(text))

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.context.build_embedder()
        return self._embedder

    def restricts(self, docs: frozenset[str]) -> bool:
        """At most ``exact_within`` chunks, ranked exactly, and ``restrict_share``."""
        return super().restricts(docs) and self.sizes(docs)[0] <= self.options.exact_within

    def statement(self, query: str, n: int, docs: frozenset[str] | None = None) -> Statement | None:
        if not query.strip():
            return None
        embedder = self.embedder
        if not self._checked:  # once: the vectors' embedder is recorded with the first of them
            store = self.store
            if store.embedder() is None:  # no vectors yet
                return None
            store.check_embedder(embedder.model_id, embedder.dim)
            self._checked = True
        vector = vector_text(self._embed_query(self.query_text(query)))
        if docs is not None:
            return Statement(DENSE_WITHIN_SQL, {"q": vector, "n": n, "docs": list(docs)}, _dense_rows)
        ef_search = min(max(self.options.ef_search, n), EF_SEARCH_MAX)
        return Statement(DENSE_SQL, {"q": vector, "n": n}, _dense_rows, ef_search)

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

    def health(self) -> dict[str, Any]:
        out = super().health()
        if out["status"] == "ok" and self._embedder is not None:
            out["embedder"] = self._embedder.model_id
        return out


class PgBM25Settings(PgRestrictSettings):
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


#: Article keys of chunk ids one BM25 retriever keeps (then it starts again).
KEYS_HELD = 2_000_000
#: An index of at most this many chunks has every chunk's article key read at the first search
#: that lacks one (one statement), so the searches after it need no second round trip.
KEYS_PRELOAD = 500_000


class PgBM25Retriever(PgRetriever):
    Settings = PgBM25Settings

    def __init__(self, name: str, settings: BaseModel, context: RetrievalContext) -> None:
        super().__init__(name, settings, context)
        assert isinstance(settings, PgBM25Settings)
        self.options = settings
        self.postings = PostingsCache(
            BM25Params(settings.k1, settings.b, settings.title_weight, settings.title_field)
        )
        self._keys: dict[int, ArticleKey] = {}
        self._keys_lock = threading.Lock()
        self._preloaded = False
        self._within: LRUCache[tuple[int, frozenset[str]], np.ndarray] = LRUCache(maxsize=WITHIN_HELD)

    def statement(self, query: str, n: int, docs: frozenset[str] | None = None) -> Statement | None:
        """Chunks with a positive score, best first (ties: the older chunk first); within
        ``docs``, scored alike and picked among their chunks."""
        o = self.options
        weights = query_weights(query, lay_terms=o.lay_terms, lay_weight=o.lay_weight, extra=o.extra_terms)
        if not weights:
            return None
        terms = list(weights)
        sql, params = self.postings.request(terms)

        def finish(rows: list[tuple[Any, ...]]) -> list[tuple[int, float, ArticleKey]]:
            found = self.postings.absorb(rows, terms, params)
            if found is None:  # the cache moved on meanwhile: read this search's terms again
                found = self.postings.lookup(self.store.db, terms)
            within = None if docs is None else self.chunk_ids_within(found[0], docs)
            top = rank(found[1], list(weights.values()), o.title_field, n, within)
            keys = self.article_keys([rowid for rowid, _ in top])
            return [(rowid, score, keys[rowid]) for rowid, score in top if rowid in keys]

        return Statement(sql, params, finish)

    def chunk_ids_within(self, generation: int, docs: frozenset[str]) -> np.ndarray:
        """The ids of the chunks of ``docs`` (ascending), kept for the index ``generation``."""
        key = (generation, docs)
        with self._within_lock:
            found = self._within.get(key)
        if found is None:
            with self.store.db.connection() as conn:
                rows = conn.execute(
                    "SELECT id FROM lexrag_chunks WHERE doc = ANY(%s) ORDER BY id", (list(docs),)
                ).fetchall()
            found = np.asarray([r[0] for r in rows], dtype=np.int64)
            with self._within_lock:
                self._within[key] = found
        return found

    def article_keys(self, rowids: list[int]) -> dict[int, ArticleKey]:
        """Chunk id → (document, article or chunk id). A chunk id is never reused (a changed
        document gets new ones), so what was read once stays true. The first search that lacks
        a key reads every chunk's (an index of up to :data:`KEYS_PRELOAD` chunks), the others
        only the keys they lack: without it nearly every search of a large index would wait on
        a second statement after its postings."""
        with self._keys_lock:
            keys = self._keys
            missing = [r for r in rowids if r not in keys]
            preload = not self._preloaded
            self._preloaded = True
        if not missing:
            return keys
        sql = "SELECT id, doc, article, chunk_id FROM lexrag_chunks"
        with self.store.db.connection() as conn:
            if preload:
                row = conn.execute("SELECT n_chunks FROM lexrag_stats").fetchone()
                preload = row is not None and int(row[0]) <= min(KEYS_PRELOAD, KEYS_HELD)
            if preload:
                rows = conn.execute(sql).fetchall()
            else:
                rows = conn.execute(sql + " WHERE id = ANY(%s)", (missing,)).fetchall()
        docs: dict[str, str] = {}  # one string per document, not one per chunk
        with self._keys_lock:
            if len(self._keys) + len(rows) > KEYS_HELD:
                self._keys = {}
            self._keys.update(
                (int(r[0]), (docs.setdefault(r[1], r[1]), r[2] if r[2] is not None else r[3])) for r in rows
            )
            return self._keys

    def close(self) -> None:
        super().close()
        self.postings.clear()


def _chunk_texts(store: PostgresStore) -> Iterator[str]:
    """Every chunk's text, streamed (a server-side cursor)."""
    with store.db.connection() as conn, conn.transaction(), conn.cursor(name="lexrag_texts") as cur:
        cur.itersize = 2000
        cur.execute("SELECT text FROM lexrag_chunks ORDER BY id")
        for (text,) in cur:
            yield text


class PgHybridSettings(FusionSettings):
    dense: str = "pg-dense"
    """The retriever that gives the dense ranking (its settings: [retrievers.<name>])."""
    lexical: str = "pg-bm25"
    """The retriever that gives the lexical ranking."""
    fusion: Literal["rrf", "score"] = "score"
    """"score": Σ weight × score scaled to [0, 1] within each ranking's candidates (min–max);
    "rrf": reciprocal rank fusion, Σ weight / (k + rank). As lexrag-retrievers' hybrid."""
    rrf_k: float = Field(default=3.0, gt=0)
    dense_weight: float = Field(default=FusionSettings.model_fields["dense_weight"].default, ge=0)
    """Weight of the dense ranking's scaled scores: the core's one default (1.2), as
    lexrag-retrievers' hybrid. It was chosen with e5-small's query adapter (``[embedders.e5-small]
    query_adapter``), which pg-dense gets too since the adapter belongs to the embedder, so both
    backends rank alike; without the adapter 1.5 was best, and an English-only embedder (MiniLM)
    wants about 0.3."""
    lexical_weight: float = Field(default=1.0, ge=0)
    candidates: int = Field(default=50, ge=1)
    """Hits taken from each ranking (after collapsing to one per article) before fusing."""
    collapse_articles: bool = True


class PgHybridRetriever(FusedRetriever):
    """The fusion of lexrag-retrievers' ``hybrid``, over the PostgreSQL retrievers and
    lexrag-retrievers' ``phrasings`` (which reads this index through :class:`lexrag.IndexStore`);
    the parts search at once (the embedder runs here while the other parts wait on the database)."""

    Settings = PgHybridSettings
    backends = BACKENDS
    thread_prefix = "pg-hybrid"

    def store_ranking(
        self, part: Retriever, query: str, n: int, docs: frozenset[str] | None = None
    ) -> list[tuple[ArticleKey, int | Hit, float]] | None:
        """A PostgreSQL part ranks chunk ids and reads no text."""
        if isinstance(part, PgRetriever) and part.collapses() == self.options.collapse_articles:
            found = part.candidates(query, n, docs)
            return None if found is None else list(found)
        return None

    def fetch(self, wanted: dict[int, list[int]]) -> dict[tuple[int, int], Chunk]:
        """One statement reads the fused top's chunks (every PostgreSQL part reads one index)."""
        stores = [r for r, _ in self.parts if isinstance(r, PgRetriever)]
        if not stores:
            return {}
        chunks = stores[0].fetch([rowid for rowids in wanted.values() for rowid in rowids])
        return {
            (i, rowid): chunks[rowid] for i, rowids in wanted.items() for rowid in rowids if rowid in chunks
        }

    def sync(self) -> None:
        """One PostgreSQL part optimises the store (every one reads the same); the others (the
        phrasings) bring their own structures up to date."""
        pg = [r for r, _ in self.parts if isinstance(r, PgRetriever)]
        for retriever in [*pg[-1:], *(r for r, _ in self.parts if not isinstance(r, PgRetriever))]:
            retriever.sync()


__all__ = [
    "PgBM25Retriever",
    "PgBM25Settings",
    "PgDenseRetriever",
    "PgDenseSettings",
    "PgHybridRetriever",
    "PgHybridSettings",
]
