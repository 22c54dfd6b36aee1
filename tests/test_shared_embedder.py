"""A hybrid's parts share one embedder (``lexrag.registry.build_retriever``): its dense part and
its phrasings embed the same query at the same time, and it is embedded once per search."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from lexrag import FloatArray, Store
from lexrag.ingest import ingest
from lexrag.plugins import make_plugin_manager
from lexrag.registry import Registry, build_retriever

from .fixtures_postgres import _CORPUS, HashEmbedder, HashPlugin
from .fixtures_retrieval import index_config


class CountingHash(HashEmbedder):
    """The hash embedder, counting the queries it embeds (every instance together)."""

    queries: ClassVar[list[str]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def embed_query(self, text: str) -> FloatArray:
        with self.lock:
            self.queries.append(text)
        return super().embed_query(text)


@pytest.fixture(scope="module")
def counting() -> tuple[Registry, Path]:
    pm = make_plugin_manager()
    pm.register(HashPlugin(CountingHash), name="test-counting-hash")
    registry = Registry(pm)
    return registry, _CORPUS


def test_the_parts_of_a_hybrid_embed_one_query_once(counting: tuple[Registry, Path], tmp_path: Path) -> None:
    registry, corpus = counting
    index = tmp_path / "index"
    store = Store.open(index, create=True)
    try:
        assert not ingest(store, CountingHash("hash", None), [corpus]).failed  # type: ignore[arg-type]
        doc, article = next(
            (c.citation.doc, c.citation.article) for _, c in store.chunks() if c.citation.article is not None
        )
    finally:
        store.close()
    phrasings = tmp_path / "phrasings.jsonl"
    phrasings.write_text(
        json.dumps({"doc": doc, "article": article, "phrases": ["bị đuổi việc", "nghỉ ngang"]})
    )
    config = index_config(
        index,
        registry,
        {"retrieval.embedder": "hash", "retrievers.phrasings.files": [str(phrasings)]},
    )
    hybrid = build_retriever(config, registry, "hybrid")
    other = build_retriever(config, registry, "hybrid")
    try:
        embedders = [getattr(part, "embedder", None) for part, _ in hybrid.parts]  # type: ignore[attr-defined]
        dense, phrasing = embedders[0], embedders[2]
        assert dense is not None and dense is phrasing
        assert getattr(other.parts[0][0], "embedder", None) is not dense  # type: ignore[attr-defined]
        hybrid.sync()
        CountingHash.queries.clear()
        for query in (
            "bị công ty đuổi việc thì sao",
            "nghỉ ngang có sao không",
            "bị công ty đuổi việc thì sao",
        ):
            assert hybrid.search(query, 3)
        # Each query once (both parts ask; the repeated query is asked anew: another came between).
        assert CountingHash.queries == [
            "bị công ty đuổi việc thì sao",
            "nghỉ ngang có sao không",
            "bị công ty đuổi việc thì sao",
        ]
    finally:
        hybrid.close()
        other.close()
