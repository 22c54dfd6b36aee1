"""How much RAM an export needs, and how much this machine has, so an export that cannot
fit fails with a message instead of being killed by the kernel."""

from __future__ import annotations

from pathlib import Path

GB = 1024**3

#: Peak RSS as a multiple of the fp32 weight bytes, measured on Llama-3.2-1B's shape on CPU:
#: optimum export 12.3 GB for 4.9 GB of weights (2.5×); int8 quantize_dynamic 18.7 GB (3.8×).
#: Dequantising a GGUF (transformers, fp32) and saving the checkpoint: 1.5× (SmolLM2-135M:
#: 0.8 GB above the interpreter's own for 0.54 GB of fp32 weights). int8-block runs int4's
#: quantizer (MatMulNBits), taken at int4's factor.
PEAK_FACTOR = {"export": 2.5, "int8": 3.8, "int8-block": 2.5, "int4": 2.5, "parity": 2.0, "gguf": 1.5}
#: The same for onnxruntime-genai's builder (0.12.2): 6.7 GB building fp32, 13.6 GB building
#: int4 (it quantizes in the same process) on Llama-3.2-1B's shape.
GENAI_PEAK_FACTOR = {"fp32": 1.4, "fp16": 1.4, "int4": 2.8}


def parameter_count(source: str, **load: object) -> int:
    """Parameters of ``source``'s architecture, counted on PyTorch's meta device (no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source, **load)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def needed_bytes(
    params: int, *, dtype: str, device: str, quantize: str, builder: str = "optimum", gguf: bool = False
) -> tuple[int, str]:
    """(peak host RAM of the export, the step that needs it): the largest of its steps."""
    fp32 = params * 4
    steps = {"parity check": fp32 * PEAK_FACTOR["parity"]}
    if gguf:
        # transformers dequantises every tensor to fp32 in memory, then saves the checkpoint.
        steps["GGUF dequantisation"] = fp32 * PEAK_FACTOR["gguf"]
    if builder == "genai":
        built = "int4" if quantize == "int4" else dtype
        steps["onnxruntime-genai builder"] = fp32 * GENAI_PEAK_FACTOR[built]
        if quantize in ("int8", "int8-block"):
            steps[f"{quantize} quantization"] = fp32 * PEAK_FACTOR[quantize]
    else:
        # Exporting on a GPU keeps most of the PyTorch weights in GPU memory, not host RAM.
        steps["optimum export"] = (
            params
            * (2 if dtype == "fp16" else 4)
            * PEAK_FACTOR["export"]
            * (0.6 if device == "cuda" else 1.0)
        )
        if quantize != "none":
            steps[f"{quantize} quantization"] = fp32 * PEAK_FACTOR[quantize]
    step = max(steps, key=lambda k: steps[k])
    return int(steps[step]), step


def available_bytes() -> int | None:
    """RAM this process may still use: MemAvailable, capped by a cgroup limit; None if unknown."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


__all__ = ["GB", "GENAI_PEAK_FACTOR", "PEAK_FACTOR", "available_bytes", "needed_bytes", "parameter_count"]
