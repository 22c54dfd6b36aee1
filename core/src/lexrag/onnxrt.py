"""Which ONNX Runtime execution providers a plugin's session should ask for.

``onnxruntime.get_available_providers()`` lists CUDA for every onnxruntime-gpu install, GPU
or not, and asking for CUDA where it cannot start only logs a missing library. Every
plugin that opens a session (the local LLM, the ONNX embedder) asks here instead.
onnxruntime and onnx are imported only when a session is opened; the core does not
depend on them.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger("lexrag.onnxrt")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@cache
def cuda_usable() -> tuple[bool, str]:
    """(whether ONNX Runtime can really run CUDA here, why not): a one-node probe session
    is opened on CUDA and the providers it kept are looked at."""
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
    # The provider-creation failure is logged by the default logger, not the session's.
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=[CUDA, CPU])
    except Exception as exc:  # any failure to initialise CUDA means: not usable
        return False, f"CUDAExecutionProvider failed to start: {exc}"
    finally:
        ort.set_default_logger_severity(2)  # ONNX Runtime's default: warnings
    if CUDA not in session.get_providers():
        return False, "CUDAExecutionProvider could not start (no GPU, or CUDA/cuDNN libraries missing)"
    return True, ""


def execution_providers(device: str, *, cuda_options: dict[str, Any] | None = None) -> list[Any]:
    """The ``providers`` argument for an ``InferenceSession``: CUDA first when ``device`` is
    ``"cuda"`` and CUDA can run here, CPU otherwise (the fallback is logged, not silent)."""
    if device == "cuda":
        usable, why = cuda_usable()
        if usable:
            return [(CUDA, dict(cuda_options or {"device_id": 0})), CPU]
        log.warning("device = cuda asked for, running on CPU instead: %s", why)
    return [CPU]


def cpu_threads() -> int:
    """Intra-op threads for a CPU session set to 0 (``threads = 0``): one per physical core
    this process may run on (its affinity mask: ``taskset``, a container's cpuset), passed to
    onnxruntime as an explicit count. Left at 0, onnxruntime counts the machine's physical
    cores and pins its threads to them, which ignores the mask and, on 2 cores, decoded 4 %
    slower than the same count unpinned (plugins/local_provider/README.md)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no mask, no topology files
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:  # no topology (some containers): count the CPUs
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))


__all__ = ["CPU", "CUDA", "cpu_threads", "cuda_usable", "execution_providers"]
