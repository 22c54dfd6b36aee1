"""Hook implementations of lexrag-retrievers (registered through the `lexrag` entry point).

The modules registered here import their heavy libraries (onnxruntime, hnswlib, bm25s,
optimum) inside functions, so loading the plugin keeps ``lexrag --help`` fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lexrag import hookimpl

from .cross_encoder import CrossEncoderReranker
from .dense import DenseRetriever
from .e5_embedder import E5Embedder
from .hybrid import HybridRetriever
from .lexical import BM25Retriever
from .onnx_embedder import OnnxEmbedder
from .phrasings import PhrasingsRetriever


@hookimpl
def register_embedders(register: Callable[[str, type[Any]], None]) -> None:
    register("minilm", OnnxEmbedder)
    register("e5-small", E5Embedder)


@hookimpl
def register_retrievers(register: Callable[[str, type[Any]], None]) -> None:
    register("dense", DenseRetriever)
    register("bm25", BM25Retriever)
    register("hybrid", HybridRetriever)
    register("phrasings", PhrasingsRetriever)


@hookimpl
def register_rerankers(register: Callable[[str, type[Any]], None]) -> None:
    register("cross-encoder", CrossEncoderReranker)
