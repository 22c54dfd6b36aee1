"""ONNX Runtime plumbing shared by the plugin's models (the ONNX embedder, e5-small, the
cross-encoder reranker): their common settings, the cache directory and an export's entry in
it, a model directory written via a temporary one renamed into place, the optimum export of a
Hugging Face model, the tokenizer, the session (opened once, on first use), and batches of
similar length.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lexrag import ModelExportError, cpu_threads, execution_providers


class OnnxModelSettings(BaseModel):
    """The settings every ONNX model of the plugin takes; a model's own subclass sets the
    defaults (and bounds) of ``model``, ``max_length`` and ``batch_size`` that suit it."""

    model_config = ConfigDict(extra="forbid")

    model: str = ""
    """A local directory or hub id of the model."""
    cache_dir: Path | None = None
    """Where exported models are kept (default: $LEXRAG_CACHE_DIR, else ~/.cache/lexrag)."""
    max_length: int = Field(default=512, ge=8, le=8192)
    """Tokens per input; a longer one is truncated."""
    batch_size: int = Field(default=8, ge=1, le=4096)
    device: Literal["cpu", "cuda"] = "cpu"
    """"cuda" uses ONNX Runtime's CUDA provider when it is available, else falls back to CPU."""
    threads: int = Field(default=0, ge=0)
    """Intra-op threads; 0: one per CPU this process may use."""


def default_cache_dir() -> Path:
    """Where exported models are kept: ``$LEXRAG_CACHE_DIR``, else ``~/.cache/lexrag``."""
    env = os.environ.get("LEXRAG_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "lexrag"


def cache_entry(cache_dir: Path | None, kind: str, source: str, key: str) -> Path:
    """Where the export of the model ``source`` is kept: ``<cache>/<kind>/<name>-<hash>``,
    the name from ``source``'s last part, the hash of ``key`` (what makes two exports differ);
    ``cache`` is ``cache_dir``, else :func:`default_cache_dir`."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() else "-" for c in Path(source).name)[:40]
    return (cache_dir or default_cache_dir()) / kind / f"{slug}-{digest}"


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence what torch, transformers, optimum and the quantiser print while exporting
    (deprecation notices, TracerWarnings, advice on pre-processing): the user can do nothing
    about them, and one line saying what is happening serves them better."""
    names = ("transformers", "optimum", "torch", "onnxruntime", "")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    # onnxruntime's quantisation modules call logging.basicConfig() on import: undo that too.
    root_handlers = list(logging.getLogger().handlers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            from transformers.utils import logging as hf_logging

            hf_level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
        except ImportError:
            hf_logging = None
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            root = logging.getLogger()
            for handler in root.handlers[:]:
                if handler not in root_handlers:
                    root.removeHandler(handler)
            if hf_logging is not None:
                hf_logging.set_verbosity(hf_level)


def write_model_dir(target: Path, write: Callable[[Path], None], *, marker: str = "lexrag.json") -> None:
    """Fill ``target`` with ``write(directory)`` in a temporary directory renamed into place,
    so a crash never leaves a half-written cache entry; when another process got there first
    (``target/marker`` exists) its copy is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def quantize_int8(directory: Path, **options: Any) -> None:
    """Dynamic int8 quantisation of ``directory/model.onnx`` in place, one scale per output
    channel (per tensor loses cosine 0.99 → 0.94 on the embedders, at the same speed)."""
    with quiet_export():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            directory / "model.onnx",
            directory / "model.int8.onnx",
            weight_type=QuantType.QInt8,
            per_channel=True,
            **options,
        )
    (directory / "model.int8.onnx").replace(directory / "model.onnx")


def export_hf_model(
    source: str,
    target: Path,
    kind: Literal["feature-extraction", "sequence-classification"],
    *,
    what: str,
    meta: dict[str, Any],
    quantize: bool = False,
) -> None:
    """Export the Hugging Face model ``source`` with optimum into ``target``: ``model.onnx``,
    its fast tokenizer (``tokenizer.json``) and ``lexrag.json`` holding ``meta``. ``what``
    names the model in errors ("the embedding model", "the reranker")."""

    def write(directory: Path) -> None:
        with quiet_export():
            try:
                from optimum.onnxruntime import (
                    ORTModelForFeatureExtraction,
                    ORTModelForSequenceClassification,
                )
                from transformers import AutoTokenizer
            except ImportError as exc:
                raise ModelExportError(
                    f"exporting {what} needs optimum-onnx and transformers ({exc})"
                ) from None
            model_class = (
                ORTModelForFeatureExtraction
                if kind == "feature-extraction"
                else ORTModelForSequenceClassification
            )
            try:
                model = model_class.from_pretrained(source, export=True, provider="CPUExecutionProvider")
                model.save_pretrained(directory)
                AutoTokenizer.from_pretrained(source).save_pretrained(directory)
            except OSError as exc:
                raise ModelExportError(
                    f"cannot export {what} {source!r}: {exc}. Give a local directory of the model, "
                    "or a hub id on a machine that can reach the Hugging Face hub"
                ) from None
        if not (directory / "tokenizer.json").is_file():
            raise ModelExportError(f"{what} {source!r} has no fast tokenizer (tokenizer.json)")
        if quantize:
            quantize_int8(directory)
        (directory / "lexrag.json").write_text(json.dumps(meta))

    write_model_dir(target, write)


def load_tokenizer(path: Path, max_length: int, *, pairs: bool = False) -> Any:
    """The fast tokenizer of ``path/tokenizer.json``, truncating to ``max_length`` tokens (for
    (query, passage) ``pairs``: the passage only) and padding a batch to its longest text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_truncation(max_length, strategy="only_second" if pairs else "longest_first")
    pad_id = tokenizer.token_to_id("[PAD]") or tokenizer.token_to_id("<pad>") or 0
    tokenizer.enable_padding(pad_id=pad_id)
    return tokenizer


def open_session(
    model: Path, *, device: str, threads: int = 0, spin: bool = False, redo: Path | None = None
) -> Any:
    """An ONNX Runtime session for ``model`` on ``device`` (CPU when CUDA cannot run), with
    ``threads`` intra-op threads (0: one per physical core this process may use) that sleep when idle unless ``spin``.
    A model that will not load is a :class:`ModelExportError` that says to delete ``redo``
    (the cache entry) when it is given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    if not spin:
        # Spinning idle threads steal the cores the rest of the process (BM25, the server) needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model), options, providers=execution_providers(device))
    except Exception as exc:  # onnxruntime raises its own untyped errors
        hint = f"; delete {redo} to redo it" if redo is not None else ""
        raise ModelExportError(f"cannot load the model {model} ({exc}){hint}") from None


class LazySession(ABC):
    """A model whose ONNX Runtime session opens on its first use, once however many threads
    ask at the same time. The subclass's ``__init__`` makes ``self._lock`` (a
    ``threading.Lock``); its :meth:`_open` exports the model if needed, opens the session and
    sets ``self._session`` last."""

    _session: Any = None
    _lock: threading.Lock

    @abstractmethod
    def _open(self) -> None: ...

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is None:
                self._open()

    @property
    def providers(self) -> list[str]:
        """The execution providers the ONNX Runtime session actually uses."""
        self._load()
        return list(self._session.get_providers())


def length_batches(lengths: Sequence[int], size: int) -> Iterator[list[int]]:
    """Indexes of the items in batches of ``size``, items of similar length together (less
    work wasted on padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), size):
        yield order[start : start + size]


__all__ = [
    "LazySession",
    "OnnxModelSettings",
    "cache_entry",
    "default_cache_dir",
    "export_hf_model",
    "length_batches",
    "load_tokenizer",
    "open_session",
    "quantize_int8",
    "quiet_export",
    "write_model_dir",
]
