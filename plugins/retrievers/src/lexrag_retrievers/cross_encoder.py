"""The ``cross-encoder`` reranker: a cross-encoder on ONNX Runtime, for a model the user has.

No cross-encoder for Vietnamese ships on PyPI, so none is bundled and reranking is off by
default. With a model downloaded (a multilingual one such as ``BAAI/bge-reranker-v2-m3``, or
any Hugging Face sequence-classification model that scores a (query, passage) pair)::

    [retrieval]
    reranker = "cross-encoder"
    rerank_candidates = 20

    [rerankers.cross-encoder]
    model = "/models/bge-reranker-v2-m3"    # a local directory, or a hub id where the hub is reachable

The first use exports it with optimum (``ORTModelForSequenceClassification``) into the cache
(like the embedders); a directory that already holds ``model.onnx`` and ``tokenizer.json`` is
used as it is. A model with one output scores by that logit, one with several by the
log-probability of the last class (the "relevant" one of two-class rerankers).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from lexrag import FloatArray, ModelExportError, Reranker

from .onnx_models import (
    LazySession,
    OnnxModelSettings,
    cache_entry,
    export_hf_model,
    length_batches,
    load_tokenizer,
    open_session,
)

FORMAT_VERSION = 1


class CrossEncoderSettings(OnnxModelSettings):
    model: str = ""
    """A local directory or hub id of a cross-encoder (sequence classification) model."""
    max_length: int = Field(default=512, ge=16, le=8192)
    """Tokens per (query, passage) pair; the passage is cut to fit."""
    batch_size: int = Field(default=8, ge=1, le=1024)


def _export(source: str, target: Path) -> None:
    """Export ``source`` to ``target`` (model.onnx, tokenizer, lexrag.json)."""
    print("exporting the reranker (first run only)…", file=sys.stderr, flush=True)
    meta = {"source": source, "format": FORMAT_VERSION}
    export_hf_model(source, target, "sequence-classification", what="the reranker", meta=meta)


def _positions(path: Path) -> int:
    """The longest input the model's position table takes (RoBERTa-style models keep two
    positions for padding), from its ``config.json``; 8192 when it does not say."""
    config = path / "config.json"
    if not config.is_file():
        return 8192
    data = json.loads(config.read_text())
    positions = int(data.get("max_position_embeddings") or 8192)
    return positions - 2 if data.get("model_type") in ("roberta", "xlm-roberta", "camembert") else positions


class CrossEncoderReranker(LazySession, Reranker):
    """Scores each (query, passage) pair with one forward pass of a cross-encoder."""

    Settings = CrossEncoderSettings

    def __init__(self, name: str, settings: BaseModel) -> None:
        super().__init__(name, settings)
        assert isinstance(settings, CrossEncoderSettings)
        self.options = settings
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        model = self.options.model
        if not model:
            raise ModelExportError(
                "the cross-encoder reranker needs a model: set [rerankers.cross-encoder] model to a "
                "local directory (or hub id) of a cross-encoder, e.g. BAAI/bge-reranker-v2-m3"
            )
        path = Path(model).expanduser()
        return str(path.resolve()) if path.is_dir() else model

    @property
    def model_id(self) -> str:
        return f"{Path(self.source).name} (cross-encoder, max_length={self.options.max_length})"

    @property
    def model_dir(self) -> Path:
        """A directory with ``model.onnx`` and ``tokenizer.json``: the model's own when it has
        them, else its export in the cache."""
        source = Path(self.source)
        if (source / "model.onnx").is_file() and (source / "tokenizer.json").is_file():
            return source
        key = json.dumps({"source": self.source, "format": FORMAT_VERSION})
        return cache_entry(self.options.cache_dir, "rerankers", self.source, key)

    def _open(self) -> None:
        path = self.model_dir
        if not (path / "model.onnx").is_file():
            _export(self.source, path)
        tokenizer = load_tokenizer(path, min(self.options.max_length, _positions(path)), pairs=True)
        session = open_session(path / "model.onnx", device=self.options.device, threads=self.options.threads)
        self._inputs = {i.name for i in session.get_inputs()}
        self._tokenizer = tokenizer
        self._session = session

    def _run(self, query: str, passages: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch([(query, p) for p in passages])
        feed = {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
        logits = np.asarray(self._session.run(None, feed)[0], dtype=np.float64)
        if logits.ndim == 1 or logits.shape[-1] == 1:
            return logits.reshape(len(passages))
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return np.asarray(shifted[:, -1] - np.log(np.exp(shifted).sum(axis=-1)))

    def score(self, query: str, passages: Sequence[str]) -> FloatArray:
        self._load()
        out = np.empty(len(passages), dtype=np.float32)
        for batch in length_batches([len(p) for p in passages], self.options.batch_size):
            out[batch] = self._run(query, [passages[i] for i in batch])
        return out


__all__ = ["CrossEncoderReranker", "CrossEncoderSettings"]
