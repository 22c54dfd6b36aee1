"""The e5-small query adapter: a linear map W applied to a query vector, never to a passage.

``[embedders.e5-small] query_adapter`` selects it and ``query_adapter_alpha`` says how far the
query moves: normalise(q + α (W q − q)). Being part of the embedder, every retriever that embeds
a query through it (the embedded ``dense``, lexrag-postgres' ``pg-dense``) searches the same
vector. Passages keep their vectors, so an index records nothing new and needs nothing new.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from lexrag import FloatArray

BUILTIN_ADAPTER = "e5_small_query_adapter.npy"
"""The e5-small query adapter shipped in the package data (``lexrag_retrievers/data``), rebuilt
by ``bench/train_query_adapter.py``."""
BUILTIN_ADAPTER_SHA256 = "533d2cc7baf696561b36f69b13609f176a3e33da96467f08f7c09d941a84b284"
"""The sha256 of the shipped file (checked by the tests)."""


def builtin_adapter_path() -> Path:
    return Path(str(files("lexrag_retrievers") / "data" / BUILTIN_ADAPTER))


@cache
def load_adapter(path: Path) -> np.ndarray:
    """A query adapter W (a square matrix in a ``.npy`` file) as float32; ValueError when the
    file cannot be read or is not a square matrix."""
    try:
        w = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as a .npy matrix ({exc})") from None
    if w.ndim != 2 or w.shape[0] != w.shape[1] or not np.issubdtype(w.dtype, np.floating):
        raise ValueError(f"{path} holds a {w.dtype} array of shape {w.shape}, not a square float matrix")
    return np.asarray(w, dtype=np.float32)


def adapter_setting(value: Any, dim: int) -> Any:
    """``query_adapter`` as validated: "builtin", "none", or the path of a ``.npy`` file holding
    a ``dim`` × ``dim`` matrix (ValueError otherwise)."""
    if value in ("builtin", "none"):
        return value
    if not isinstance(value, str | Path):
        raise ValueError('expected "builtin", "none" or the path of a .npy file')
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f'no such file: {path} (expected "builtin", "none" or a .npy file)')
    w = load_adapter(path)
    if w.shape[0] != dim:
        raise ValueError(f"a {w.shape[0]} × {w.shape[1]} matrix, but the embedder gives {dim} dimensions")
    return path


def adapter_matrix(setting: str | Path) -> np.ndarray | None:
    """W for a validated ``query_adapter`` setting (None for "none")."""
    if setting == "none":
        return None
    return load_adapter(builtin_adapter_path() if setting == "builtin" else Path(setting))


def adapt(vector: FloatArray, w: np.ndarray | None, alpha: float) -> FloatArray:
    """normalise(q + α (W q − q)); ``vector`` itself without W or with α 0."""
    if w is None or alpha == 0:
        return vector
    moved = vector + alpha * (w @ vector - vector)
    return np.asarray(moved / max(float(np.linalg.norm(moved)), 1e-12), dtype=np.float32)


__all__ = [
    "BUILTIN_ADAPTER",
    "BUILTIN_ADAPTER_SHA256",
    "adapt",
    "adapter_matrix",
    "adapter_setting",
    "builtin_adapter_path",
    "load_adapter",
]
