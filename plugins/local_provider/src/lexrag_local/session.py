"""Opening an ONNX Runtime session on the execution provider that was asked for and can run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lexrag import ModelExportError, execution_providers

log = logging.getLogger("lexrag.local")

#: The execution provider names as ONNX Runtime spells them.
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def open_session(path: Path, *, device: str, threads: int = 0) -> Any:
    """An ``InferenceSession`` for ``path`` with the providers passed explicitly: CUDA first
    when ``device`` is "cuda" and CUDA can run, CPU otherwise (``lexrag.execution_providers``
    decides and logs the fallback)."""
    import onnxruntime as ort

    providers: list[Any] = execution_providers(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if providers == [CPU]:
        # Idle intra-op threads would spin between the graph's ops and between decode steps,
        # taking the cores from the Python loop and from other processes: on 2 cores, decode
        # ran 1.6× faster without spinning (bench/bench_local.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad or odd files
        raise ModelExportError(
            f"ONNX Runtime cannot load {path}: {exc}; re-run `lexrag model export` "
            "(fp16 models need device = cuda)"
        ) from None
    log.info("local model %s runs on %s", path, ", ".join(session.get_providers()))
    return session


__all__ = ["CPU", "CUDA", "open_session"]
