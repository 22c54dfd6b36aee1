"""The second export path: onnxruntime-genai's model builder, which writes a fused graph
(GroupQueryAttention with rotary embedding inside, packed QKV projections,
SkipSimplifiedLayerNormalization) where optimum writes one op per PyTorch op.

onnxruntime-genai installs the CPU ``onnxruntime`` package, which must not sit beside
``onnxruntime-gpu`` in the environment that runs lexrag, so the builder runs in a
subprocess under another Python interpreter: ``--genai-python`` / ``LEXRAG_GENAI_PYTHON``,
or this one when it can import the builder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lexrag import ModelExportError

#: The release whose builder works offline with transformers 4.57 (0.18 does not import).
GENAI_VERSION = "0.12.2"
GENAI_PYTHON_ENV = "LEXRAG_GENAI_PYTHON"
_BUILDER = "onnxruntime_genai.models.builder"

#: Options handed to the builder: int4 in blocks of 32 with int8 activations (accuracy
#: level 4), as lexrag's own int4 quantizer does.
INT4_OPTIONS = ("int4_block_size=32", "int4_accuracy_level=4", "int4_is_symmetric=true")

HOW_TO_INSTALL = (
    f"the genai builder needs onnxruntime-genai=={GENAI_VERSION} in a separate virtual environment "
    "(it installs the CPU onnxruntime, which must not sit beside onnxruntime-gpu): "
    f"`python -m venv ~/genai-venv && ~/genai-venv/bin/pip install onnxruntime-genai=={GENAI_VERSION} "
    "torch transformers==4.57.*`, then pass --genai-python ~/genai-venv/bin/python "
    f"(or set {GENAI_PYTHON_ENV}); or export with --builder optimum"
)


def builder_python(explicit: str | None = None) -> str:
    """The interpreter that can run the builder, or a ModelExportError saying how to get one."""
    python = explicit or os.environ.get(GENAI_PYTHON_ENV) or sys.executable
    try:
        probe = subprocess.run(
            [python, "-c", f"import {_BUILDER}"], capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelExportError(f"cannot run {python}: {exc}; {HOW_TO_INSTALL}") from None
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise ModelExportError(f"{python} cannot import {_BUILDER} ({last}); {HOW_TO_INSTALL}")
    return python


def builder_precision(dtype: str, quantize: str) -> str:
    """The builder's ``-p``: int8 is built at fp32 and quantized by lexrag afterwards (the
    builder has no int8)."""
    if quantize == "int4":
        return "int4"
    return "fp16" if dtype == "fp16" else "fp32"


def build(
    source: str, work: Path, *, python: str, precision: str, device: str, revision: str = "main"
) -> Path:
    """Run the builder on ``source`` (a local checkpoint or a hub id) into ``work``; the
    graph it writes (``work/model.onnx`` and its data file)."""
    if not Path(source).is_dir() and revision != "main":
        raise ModelExportError(
            "--builder genai loads hub models at their main revision only; drop --revision"
        )
    src = ["-i", source] if Path(source).is_dir() else ["-m", source]
    options = [*INT4_OPTIONS] if precision == "int4" else []
    command = [
        python,
        "-m",
        _BUILDER,
        *src,
        "-o",
        str(work),
        "-p",
        precision,
        "-e",
        device,
        "-c",
        str(work / ".cache"),
        *(["--extra_options", *options] if options else []),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    model = work / "model.onnx"
    if result.returncode != 0 or not model.is_file():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        if result.returncode < 0:
            tail += f"\n(the builder was killed by signal {-result.returncode}: out of memory?)"
        raise ModelExportError(
            f"the onnxruntime-genai builder could not export {source} ({precision}, {device}):\n{tail}\n"
            "check that it is a Llama-family causal LM, or export with --builder optimum"
        )
    return model


__all__ = [
    "GENAI_PYTHON_ENV",
    "GENAI_VERSION",
    "HOW_TO_INSTALL",
    "build",
    "builder_precision",
    "builder_python",
]
