"""Fixtures for the PostgreSQL backend tests (loaded by conftest.py): a real PostgreSQL 16 with
pgvector, started by ``pgserver`` as a local process, never a mock.

- ``pg_server`` (session): the server, started under a temporary directory and stopped (its
  data deleted) at the end of the session.
- ``pg_url``: a fresh, empty database on it for one test, as a ``postgresql://`` URL.
- ``pg_sample_url`` (session): a database holding the sample corpus, ingested with the default
  embedder. Read it, never write to it.
- ``pg_config``: ``pg_config(url, overrides)`` is the built-in defaults with ``[index] backend =
  "postgres"`` and that database, checked against the session's registry.

:class:`HashEmbedder` is a cheap deterministic embedder (hashed terms), for tests whose point is
not the vectors; :func:`hash_cli` runs the real ``lexrag`` command line in a subprocess with it
registered as ``hash``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from lexrag import Embedder, FloatArray, hookimpl, terms
from lexrag.config import Config, load_config
from lexrag.registry import Registry, check_config

_ROOT = Path(__file__).resolve().parents[1]
_CORPUS = _ROOT.parent / "shared" / "data" / "vn-legal" / "docs"
_names = itertools.count()


class PgServer:
    """The running server: its admin URL and a way to make databases on it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.admin_url: str = server.get_uri()
        parts = urlsplit(self.admin_url)
        self.socket_dir = parse_qs(parts.query).get("host", [""])[0]
        self.user = parts.username or "postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@/{database}?host={self.socket_dir}"

    def create_database(self, prefix: str = "t") -> str:
        import psycopg

        name = f"{prefix}_{next(_names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    data = tmp_path_factory.mktemp("pgdata")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        import pgserver

        server = pgserver.get_server(data, cleanup_mode="delete")
    try:
        yield PgServer(server)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    return pg_server.create_database()


@pytest.fixture
def pg_config(tmp_path: Path, session_registry: Registry) -> Callable[..., Config]:
    def make(url: str, overrides: dict[str, object] | None = None) -> Config:
        empty = tmp_path / "lexrag-defaults.toml"
        empty.write_text("")
        values = {"index.backend": "postgres", "index.database_url": url, **(overrides or {})}
        return check_config(load_config(empty, env={}, overrides=values), session_registry)

    return make


@pytest.fixture(scope="session")
def pg_sample_url(pg_server: PgServer, default_embedder: Embedder, session_registry: Registry) -> str:
    from lexrag.ingest import ingest
    from lexrag_postgres.store import PostgresStore

    url = pg_server.create_database("sample")
    store = PostgresStore.open(url, create=True)
    try:
        report = ingest(store, default_embedder, [_CORPUS])
        store.optimize()
    finally:
        store.close()
    assert report.added and not report.failed, report.as_dict()
    return url


class HashEmbedder(Embedder):
    """Vectors of hashed terms (``DIM``-d, signed buckets, unit length): deterministic and fast.
    A subclass with another ``DIM`` is another embedder (bench/bench_scale.py uses 384, e5-small's)."""

    DIM = 64

    @property
    def model_id(self) -> str:
        return f"test-hash-{self.DIM}"

    @property
    def dim(self) -> int:
        return self.DIM

    def embed(self, texts: Sequence[str]) -> FloatArray:
        out = np.zeros((len(texts), self.DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for term in terms(text):
                h = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")
                out[row, h % self.DIM] += 1.0 if h & 0x80000000 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


class HashPlugin:
    """Registers ``embedder`` as the embedder ``hash``."""

    def __init__(self, embedder: type[HashEmbedder] = HashEmbedder) -> None:
        self.embedder = embedder

    @hookimpl
    def register_embedders(self, register: Callable[[str, type[Any]], None]) -> None:
        register("hash", self.embedder)


def main_with_hash_embedder(argv: list[str], embedder: type[HashEmbedder] = HashEmbedder) -> None:
    """``lexrag ARGV`` with ``embedder`` registered as ``hash`` (run in a child process)."""
    import lexrag.cli

    real = lexrag.cli.make_plugin_manager

    def make(**kwargs: Any) -> Any:
        pm = real(**kwargs)
        pm.register(HashPlugin(embedder), name="test-hash")
        return pm

    lexrag.cli.make_plugin_manager = make  # type: ignore[assignment]
    lexrag.cli.main(argv)


def hash_cli(*args: str, env: dict[str, str], cwd: Path, wait: bool = True) -> Any:
    """The real ``lexrag`` CLI in a subprocess, with ``[retrieval] embedder = "hash"`` available;
    returns the CompletedProcess (or the Popen when not ``wait``)."""
    code = (
        f"import sys; sys.path.insert(0, {str(_ROOT)!r}); "
        "from tests.fixtures_postgres import main_with_hash_embedder as m; m(sys.argv[1:])"
    )
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LEXRAG_", "LLM_", "OPENAI_"))}
    full_env.update({"LEXRAG_CACHE_DIR": os.environ.get("LEXRAG_CACHE_DIR", ""), **env})
    command = [sys.executable, "-c", code, *args]
    if not wait:
        return subprocess.Popen(
            command, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(command, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=600)


__all__ = ["HashEmbedder", "HashPlugin", "PgServer", "hash_cli", "main_with_hash_embedder"]
