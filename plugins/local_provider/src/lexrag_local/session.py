"""Opening an ONNX Runtime session on the execution provider that was asked for and can run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lexrag import ModelExportError, cpu_threads, execution_providers

log = logging.getLogger("lexrag.local")

#: The execution provider names as ONNX Runtime spells them.
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: The session option that lets idle intra-op threads spin.
SPINNING = "session.intra_op.allow_spinning"


def open_session(path: Path, *, device: str, threads: int = 0, spin: bool = False) -> Any:
    """An ``InferenceSession`` for ``path`` with the providers passed explicitly: CUDA first
    when ``device`` is "cuda" and CUDA can run, CPU otherwise (``lexrag.execution_providers``
    decides and logs the fallback). On CPU, ``threads`` intra-op threads (0: one per physical
    core this process may use, :func:`lexrag.cpu_threads`) and ``spin``: whether idle intra-op
    threads spin (``[providers.local] spin``)."""
    import onnxruntime as ort

    providers: list[Any] = execution_providers(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads or providers == [CPU]:
        # An explicit count: left at 0, onnxruntime pins one thread per physical core.
        options.intra_op_num_threads = threads or cpu_threads()
    if providers == [CPU]:
        # Spinning intra-op threads wait for the next op (and the next step) without sleeping.
        # 2 cores, batch 8 / 1 stream: on a quiet machine spinning gained 1.02-1.12x / 1.00-1.20x;
        # beside one other busy process it lost 1.55x / 1.77x (bench/bench_batching.py, the
        # local README): off unless the cores are the server's own.
        options.add_session_config_entry(SPINNING, "1" if spin else "0")
        # Not "session.dynamic_block_base": 4 gained 2 % while onnxruntime pinned its threads,
        # and lost 5 % (batch 8) and 4 % (one stream) with the explicit count, a process a side.
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad or odd files
        raise ModelExportError(
            f"ONNX Runtime cannot load {path}: {exc}; re-run `lexrag model export` "
            "(fp16 models need device = cuda)"
        ) from None
    log.info("local model %s runs on %s", path, ", ".join(session.get_providers()))
    return session


__all__ = ["CPU", "CUDA", "SPINNING", "open_session"]
