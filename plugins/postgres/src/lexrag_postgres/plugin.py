"""Hook implementations of lexrag-postgres (registered through the ``lexrag`` entry point).

psycopg and its pool are imported when a store is opened, not here, so loading the plugin
keeps ``lexrag --help`` fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lexrag import hookimpl

from .retrievers import PgBM25Retriever, PgDenseRetriever, PgHybridRetriever
from .store import PostgresStore


@hookimpl
def register_stores(register: Callable[[str, type[Any]], None]) -> None:
    register("postgres", PostgresStore)


@hookimpl
def register_retrievers(register: Callable[[str, type[Any]], None]) -> None:
    register("pg-dense", PgDenseRetriever)
    register("pg-bm25", PgBM25Retriever)
    register("pg-hybrid", PgHybridRetriever)
