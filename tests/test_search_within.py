"""Retrieval restricted to some documents (``Retriever.search_within``, issue 19): each
retriever's restricted ranking is the allowed part of its unrestricted one (same chunks, order
and scores), a hybrid fuses its parts' restricted rankings, and the catalog's filtered search
answers as the over-fetching fallback does, without asking for more than ``k``.

Real indexes of the sample corpus (the embedded store and a real PostgreSQL), vectors from the
hash embedder of :mod:`tests.fixtures_postgres` (cheap, deterministic)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lexrag import Chunk, FloatArray, Hit, NoSettings, Reranker, Retriever, article_key, fuse
from lexrag.config import Config
from lexrag.filtering import RESTRICT_BELOW, Catalog
from lexrag.ingest import ingest
from lexrag.plugins import make_plugin_manager
from lexrag.registry import Registry, build_retriever, open_index
from lexrag.retrieval import RerankedRetriever
from lexrag.store import Store
from lexrag.types import RetrievalFilters

from . import test_filters
from .fixtures_postgres import _CORPUS, HashEmbedder, HashPlugin, PgServer
from .fixtures_retrieval import index_config

QUERIES = [
    "thời giờ làm việc bình thường",
    "tuổi kết hôn của nam và nữ",
    "quyền sở hữu tài sản",
    "vượt đèn đỏ bị phạt",
    "thành lập doanh nghiệp",
    "nghỉ hằng năm",
]
K = 3
versions_index = test_filters.versions_index  # the two Labour Codes and the amending law
#: Passages asked for as "every one" (pg-dense ranks up to 4 × 250 chunks, pgvector's most).
ALL = 250


@pytest.fixture(scope="module")
def hash_registry() -> Registry:
    pm = make_plugin_manager()
    pm.register(HashPlugin(), name="test-hash")
    return Registry(pm)


@pytest.fixture(scope="module")
def hash_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample corpus with hash-embedder vectors (embedded store)."""
    index = tmp_path_factory.mktemp("within") / "index"
    store = Store.open(index, create=True)
    try:
        assert not ingest(store, HashEmbedder("hash", None), [_CORPUS]).failed  # type: ignore[arg-type]
    finally:
        store.close()
    return index


@pytest.fixture(scope="module")
def pg_hash_url(pg_server: PgServer) -> str:
    """The sample corpus with hash-embedder vectors (PostgreSQL)."""
    from lexrag_postgres.store import PostgresStore

    url = pg_server.create_database("within")
    store = PostgresStore.open(url, create=True)
    try:
        assert not ingest(store, HashEmbedder("hash", None), [_CORPUS]).failed  # type: ignore[arg-type]
        store.optimize()
    finally:
        store.close()
    return url


@pytest.fixture(scope="module")
def hash_phrasings(hash_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phrasings file for every article of the sample corpus (its heading and first words):
    the builtin phrasings are of other codes."""
    store = Store.open(hash_index)
    try:
        phrases: dict[tuple[str, int], list[str]] = {}
        for _, chunk in store.chunks():
            c = chunk.citation
            if c.article is not None and (c.doc, c.article) not in phrases:
                phrases[(c.doc, c.article)] = [c.article_title or "", " ".join(chunk.text.split()[:12])]
    finally:
        store.close()
    path = tmp_path_factory.mktemp("phrasings") / "sample.jsonl"
    path.write_text(
        "".join(
            json.dumps({"doc": doc, "article": article, "phrases": p}, ensure_ascii=False) + "\n"
            for (doc, article), p in phrases.items()
        ),
        encoding="utf-8",
    )
    return path


#: The PostgreSQL retrievers restricting whatever share of the index a filter allows (the
#: sample corpus has five documents: one is already over the default quarter).
PG_ALWAYS = {"retrievers.pg-dense.restrict_share": 1.0, "retrievers.pg-bm25.restrict_share": 1.0}


def _embedded_config(index: Path, registry: Registry, extra: dict[str, Any] | None = None) -> Config:
    return index_config(index, registry, {"retrieval.embedder": "hash", **(extra or {})})


def _pg_config(url: str, registry: Registry, tmp_path: Path, extra: dict[str, Any] | None = None) -> Config:
    return index_config(
        tmp_path / "unused",
        registry,
        {
            "retrieval.embedder": "hash",
            "index.backend": "postgres",
            "index.database_url": url,
            **(extra or {}),
        },
    )


@pytest.fixture
def make_retriever(
    hash_registry: Registry, hash_index: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Retriever]]:
    """``make(name, extra)``: the retriever ``name`` over the embedded index, or over PostgreSQL
    for a ``pg-`` one, with the config overrides ``extra``."""
    made: list[Retriever] = []

    def make(name: str, extra: dict[str, Any] | None = None) -> Retriever:
        if name.startswith("pg-"):
            config = _pg_config(request.getfixturevalue("pg_hash_url"), hash_registry, tmp_path, extra)
        else:
            config = _embedded_config(hash_index, hash_registry, extra)
        retriever = build_retriever(config, hash_registry, name)
        made.append(retriever)
        return retriever

    yield make
    for retriever in made:
        retriever.close()


def _docs(retriever: Retriever, query: str) -> list[str]:
    """The documents of the unrestricted top, first the best one's."""
    out: list[str] = []
    for hit in retriever.search(query, 50):
        if hit.chunk.citation.doc not in out:
            out.append(hit.chunk.citation.doc)
    return out


def _key(hits: list[Hit]) -> list[tuple[str, str]]:
    return [(h.chunk.citation.doc, h.chunk.id) for h in hits]


def _same_ranking(got: list[tuple[Any, float]], expected: list[tuple[Any, float]], exact: bool) -> bool:
    """(id, score) lists equal: exactly for BM25 (same sums, same tie rule); for a dense
    retriever scores within float32 rounding, and equal similarities in any order (hnswlib
    keeps no tie rule; the hash embedder's orthogonal vectors tie at 0)."""
    if exact:
        return got == expected
    if len(got) != len(expected) or [s for _, s in got] != pytest.approx([s for _, s in expected], abs=1e-6):
        return False
    scores = dict(expected)
    if {key for key, _ in got} != set(scores) or len(scores) != len(expected):
        return False
    # Ordered by the expected scores, but for equal ones.
    return all(scores[a] >= scores[b] - 1e-6 for (a, _), (b, _) in itertools.pairwise(got))


def _allowed_part(retriever: Retriever, query: str, k: int, docs: frozenset[str]) -> list[Hit]:
    everything = retriever.search(query, ALL)
    return [h for h in everything if h.chunk.citation.doc in docs][:k]


@pytest.mark.parametrize("name", ["bm25", "dense", "pg-bm25", "pg-dense", "phrasings"])
def test_a_restricted_search_is_the_allowed_part_of_the_full_ranking(
    name: str, make_retriever: Callable[..., Retriever], request: pytest.FixtureRequest
) -> None:
    extra: dict[str, Any] | None = PG_ALWAYS if name.startswith("pg-") else None
    if name == "phrasings":
        extra = {"retrievers.phrasings.files": [str(request.getfixturevalue("hash_phrasings"))]}
    retriever = make_retriever(name, extra)
    checked = 0
    for query in QUERIES:
        ranked = _docs(retriever, query)
        # The best document's rival alone, the best one's rivals, one and two documents away.
        for docs in (frozenset(ranked[1:2]), frozenset(ranked[1:]), frozenset(ranked[-1:]), frozenset()):
            for k in (1, K, 10):
                within = retriever.search_within(query, k, docs)
                assert within is not None, name
                expected = _allowed_part(retriever, query, k, docs)
                assert _same_ranking(
                    [(h.chunk.id, h.score) for h in within],
                    [(h.chunk.id, h.score) for h in expected],
                    exact="bm25" in name,
                ), (name, query, sorted(docs), k)
                checked += len(within)
    assert checked > 50


@pytest.mark.parametrize("name", ["bm25", "dense"])
def test_the_chunk_ranking_within_keeps_order_scores_and_ties(
    name: str, make_retriever: Callable[..., Retriever]
) -> None:
    """Below collapsing to articles: every allowed chunk, in the full ranking's order."""
    retriever: Any = make_retriever(name)
    keys = retriever.article_keys()
    for query in QUERIES:
        full = retriever.scored(query, len(keys))
        docs = frozenset(_docs(retriever, query)[1:3])
        allowed = [(rowid, score) for rowid, score in full if keys[rowid][0] in docs]
        within = retriever.scored(query, len(keys), docs)
        assert len(within) == len(allowed) > 5
        assert _same_ranking(within, allowed, exact=name == "bm25"), (name, query)


def _fused_expectation(hybrid: Any, query: str, k: int, docs: frozenset[str]) -> list[tuple[str, str]]:
    """What "restrict both parts, fuse as usual" gives, from each part's unrestricted ranking."""
    options = hybrid.options
    rankings: list[tuple[float, list[tuple[Any, Chunk, float]]]] = []
    for part, weight in hybrid.parts:
        hits = [h for h in part.search(query, ALL) if h.chunk.citation.doc in docs][: options.candidates]
        rankings.append(
            (weight, [(article_key(h.chunk.citation, h.chunk.id), h.chunk, h.score) for h in hits])
        )
    fused = fuse(rankings, fusion=options.fusion, rrf_k=options.rrf_k)[:k]
    return [(chunk.citation.doc, chunk.id) for _, _, _, chunk in fused]


@pytest.mark.parametrize("name", ["hybrid", "pg-hybrid"])
def test_a_hybrid_fuses_its_parts_restricted_rankings(
    name: str, make_retriever: Callable[..., Retriever]
) -> None:
    hybrid = make_retriever(name, PG_ALWAYS if name.startswith("pg-") else None)
    for query in QUERIES:
        docs = frozenset(_docs(hybrid, query)[1:3])
        within = hybrid.search_within(query, K, docs)
        assert within is not None and within, (name, query)
        assert {h.chunk.citation.doc for h in within} <= docs
        assert _key(within) == _fused_expectation(hybrid, query, K, docs), (name, query)


class Unrestricted(Retriever):
    """Another's search, without ``search_within`` (a third-party retriever's case): records
    every ``k`` asked."""

    backends = None

    def __init__(self, base: Retriever) -> None:
        super().__init__(base.name, base.settings, base.context)
        self.base = base
        self.asked: list[int] = []

    def search(self, query: str, k: int) -> list[Hit]:
        self.asked.append(k)
        return self.base.search(query, k)


class Counted(Unrestricted):
    """Another's search and ``search_within``, recording what each is asked."""

    def __init__(self, base: Retriever) -> None:
        super().__init__(base)
        self.within: list[int] = []

    def search_within(self, query: str, k: int, docs: frozenset[str]) -> list[Hit] | None:
        self.within.append(k)
        return self.base.search_within(query, k, docs)


@pytest.mark.parametrize("name", ["bm25", "dense", "hybrid", "pg-bm25"])
def test_the_catalog_answers_a_one_document_filter_as_the_fallback_does(
    name: str,
    make_retriever: Callable[..., Retriever],
    hash_registry: Registry,
    hash_index: Path,
) -> None:
    retriever = make_retriever(name, PG_ALWAYS if name.startswith("pg-") else None)
    if name.startswith("pg-"):
        open_store = retriever.context.open_store  # the index the retriever reads
        assert open_store is not None
        catalog = Catalog(open_store)
    else:
        config = _embedded_config(hash_index, hash_registry)
        catalog = Catalog(lambda: open_index(config, hash_registry))
    try:
        used = 0
        for query in QUERIES:
            for doc in _docs(retriever, query)[1:3]:
                filters = RetrievalFilters(doc=[doc])
                counted, fallback = Counted(retriever), Unrestricted(retriever)
                fast = catalog.search(counted, query, K, filters)
                slow = catalog.search(fallback, query, K, filters)
                if name == "hybrid":  # fusion scales scores within the allowed part (see above)
                    restricted = retriever.search_within(query, K, frozenset([doc]))
                    assert restricted is not None and _key(fast.hits) == _key(restricted)
                else:
                    assert _key(fast.hits) == _key(slow.hits), (name, query, doc)
                    assert [h.score for h in fast.hits] == pytest.approx([h.score for h in slow.hits])
                assert fast.notice == slow.notice
                assert fast.hits and {h.chunk.citation.doc for h in fast.hits} == {doc}
                assert max(counted.asked) == K, counted.asked  # no over-fetch
                used += len(counted.within)
                assert max(fallback.asked) > K  # the fallback had to ask for more
        assert used
    finally:
        catalog.close()


@pytest.mark.parametrize(
    ("name", "memo"), [("bm25", "_scores_at"), ("dense", "_query_vector_at"), ("pg-dense", "_embed_query")]
)
def test_a_filtered_search_embeds_or_scores_its_query_once(
    name: str, memo: str, make_retriever: Callable[..., Retriever], hash_registry: Registry, hash_index: Path
) -> None:
    """A one-document filter asks the retriever twice for one query (the unfiltered top for the
    notice, then the allowed document's): the query is embedded (dense) or scored (BM25) once,
    and the next query is not served from the memo."""
    retriever = make_retriever(name, PG_ALWAYS if name.startswith("pg-") else None)
    if name.startswith("pg-"):
        open_store = retriever.context.open_store
        assert open_store is not None
        catalog = Catalog(open_store)
    else:
        catalog = Catalog(lambda: open_index(_embedded_config(hash_index, hash_registry), hash_registry))
    try:
        kept = getattr(retriever, memo)
        docs = {query: _docs(retriever, query)[1] for query in QUERIES[:2]}  # the memo: QUERIES[1]
        for query, doc in docs.items():
            before = kept.cache_info()
            counted = Counted(retriever)
            assert catalog.search(counted, query, K, RetrievalFilters(doc=[doc])).hits
            after = kept.cache_info()
            assert counted.within == [K]
            assert (after.misses - before.misses, after.hits - before.hits) == (1, 1), (query, after)
    finally:
        catalog.close()


def test_with_most_documents_allowed_the_catalog_asks_a_little_more_instead(
    make_retriever: Callable[..., Retriever], hash_registry: Registry, hash_index: Path
) -> None:
    """At or over RESTRICT_BELOW of the chunks allowed (the default filters' case), one longer
    search beats a restricted one plus the unfiltered one for the notice."""
    retriever = make_retriever("bm25")
    catalog = Catalog(lambda: open_index(_embedded_config(hash_index, hash_registry), hash_registry))
    try:
        snap = catalog.snapshot()
        by_size = sorted(snap.records, key=lambda d: snap.records[d].n_chunks)
        most = by_size[1:]  # all but the smallest document
        assert sum(snap.records[d].n_chunks for d in most) >= RESTRICT_BELOW * snap.n_chunks
        counted = Counted(retriever)
        found = catalog.search(counted, QUERIES[0], K, RetrievalFilters(doc=most))
        assert counted.within == [] and len(counted.asked) == 1 and counted.asked[0] > K
        assert found.hits and {h.chunk.citation.doc for h in found.hits} <= set(most)
        few = RetrievalFilters(doc=by_size[:1])
        catalog.search(counted, QUERIES[0], K, few)
        assert counted.within == [K]
    finally:
        catalog.close()


def test_the_notice_is_the_same_on_both_paths(versions_index: Path, registry: Registry) -> None:
    """The two versions of the Labour Code (tests/test_filters.py): whichever the filters leave
    out, the restricted search answers as the fallback did and gives the same notice (the
    expired code's, when only it matches)."""
    config = index_config(versions_index, registry, {"retrieval.retriever": "bm25"})
    retriever = build_retriever(config, registry)
    catalog = Catalog(lambda: open_index(config, registry))
    try:
        query = "nam đủ 60 tuổi, nữ đủ 55 tuổi hưởng lương hưu"
        notices = 0
        for filters in (
            RetrievalFilters(),
            RetrievalFilters(doc=["10/2012/QH13"]),
            RetrievalFilters(doc=["45/2019/QH14"]),
            RetrievalFilters(as_of="2019-01-01"),
        ):
            counted, fallback = Counted(retriever), Unrestricted(retriever)
            fast = catalog.search(counted, query, 2, filters)
            slow = catalog.search(fallback, query, 2, filters)
            assert _key(fast.hits) == _key(slow.hits), filters
            assert fast.notice == slow.notice, filters
            notices += fast.notice is not None
        assert notices
    finally:
        catalog.close()
        retriever.close()


def test_pg_over_many_chunks_leaves_restriction_to_the_catalog(
    make_retriever: Callable[..., Retriever],
) -> None:
    """Above ``restrict_share`` of the index the PostgreSQL retrievers leave restriction to the
    catalog (asking for a few more is cheaper than a second statement), and above
    ``exact_within`` allowed chunks pg-dense does (pgvector's graph filters after its search):
    None, and so does a hybrid over it."""
    dense, bm25, hybrid = make_retriever("pg-dense"), make_retriever("pg-bm25"), make_retriever("pg-hybrid")
    ranked = _docs(dense, QUERIES[0])
    few, most = frozenset(ranked[-1:]), frozenset(ranked[1:])
    assert dense.search_within(QUERIES[0], K, few) is not None
    for retriever in (dense, bm25, hybrid):  # 4 of the 5 sample documents: over the quarter
        assert retriever.search_within(QUERIES[0], K, most) is None, retriever.name
    none_exactly = {"retrievers.pg-dense.exact_within": 0}
    assert make_retriever("pg-dense", none_exactly).search_within(QUERIES[0], K, few) is None
    assert make_retriever("pg-hybrid", none_exactly).search_within(QUERIES[0], K, few) is None


class ShortFirst(Reranker):
    """Scores a passage by its shortness (a reranker that needs no model)."""

    @property
    def model_id(self) -> str:
        return "short-first"

    def score(self, query: str, passages: Sequence[str]) -> FloatArray:
        return np.asarray([-len(p) for p in passages], dtype=np.float32)


def test_a_reranker_reranks_the_restricted_candidates(make_retriever: Callable[..., Retriever]) -> None:
    base = make_retriever("bm25")
    reranked = RerankedRetriever(base, ShortFirst("short-first", NoSettings()), candidates=8)
    for query in QUERIES:
        docs = frozenset(_docs(base, query)[1:3])
        candidates = base.search_within(query, 8, docs)
        assert candidates is not None
        hits = reranked.search_within(query, K, docs)
        assert hits is not None
        assert _key(hits) == _key(sorted(candidates, key=lambda h: len(h.chunk.text))[:K]), query
    assert (
        RerankedRetriever(Unrestricted(base), ShortFirst("s", NoSettings()), 8).search_within(
            QUERIES[0], K, frozenset(["bo-luat-dan-su"])
        )
        is None
    )


def test_dense_over_many_chunks_searches_the_graph_with_a_filter(
    make_retriever: Callable[..., Retriever],
) -> None:
    """Above ``exact_within`` allowed chunks the embedded dense retriever asks hnswlib for the
    nearest allowed ones (a filter on the graph search): on a small graph, all of them."""
    retriever = make_retriever("dense", {"retrievers.dense.exact_within": 0})
    for query in QUERIES:
        docs = frozenset(_docs(retriever, query)[1:3])
        within = retriever.search_within(query, K, docs)
        assert within is not None
        expected = _allowed_part(retriever, query, K, docs)
        got = [(h.chunk.id, h.score) for h in within]
        assert _same_ranking(got, [(h.chunk.id, h.score) for h in expected], exact=False), query


def test_pg_dense_asked_for_more_than_pgvector_searches_gives_what_it_has(
    make_retriever: Callable[..., Retriever],
) -> None:
    """The catalog's over-fetching asks for thousands of passages on a large index: pg-dense
    caps ``hnsw.ef_search`` at pgvector's 1000 instead of failing."""
    dense = make_retriever("pg-dense")
    hits = dense.search(QUERIES[0], 2000)
    assert hits and len(hits) == len({h.chunk.id for h in hits})
