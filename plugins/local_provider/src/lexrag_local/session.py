"""Opening an ONNX Runtime session on the execution provider that was asked for and can run."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

from lexrag.errors import ModelExportError

log = logging.getLogger("lexrag.local")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@cache
def cuda_usable() -> tuple[bool, str]:
    """(whether ONNX Runtime can really run CUDA here, why not).

    ``get_available_providers()`` lists CUDA for every onnxruntime-gpu install, GPU or not,
    so this opens a one-node session on it and looks at what the session kept.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if CUDA not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the probe's "libcublas not found" is expected on CPU machines
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=[CUDA, CPU])
    except Exception as exc:  # any failure to initialise CUDA means: not usable
        return False, f"CUDAExecutionProvider failed to start: {exc}"
    if CUDA not in session.get_providers():
        return False, "CUDAExecutionProvider could not start (no GPU, or CUDA/cuDNN libraries missing)"
    return True, ""


def open_session(path: Path, *, device: str, threads: int = 0) -> Any:
    """An ``InferenceSession`` for ``path`` with the providers passed explicitly: CUDA first
    when ``device`` is "cuda" and CUDA can run, CPU otherwise (logged, not silent)."""
    import onnxruntime as ort

    providers: list[Any] = [CPU]
    if device == "cuda":
        usable, why = cuda_usable()
        if usable:
            providers = [(CUDA, {"device_id": 0}), CPU]
        else:
            log.warning("device = cuda asked for, running on CPU instead: %s", why)
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


__all__ = ["CPU", "CUDA", "cuda_usable", "open_session"]
