"""``lexrag model …``: export models for the local provider."""

from __future__ import annotations

from pathlib import Path

import click

from .genai_builder import GENAI_PYTHON_ENV, GENAI_VERSION
from .parity import DEFAULT_MAX_TOP1_CHANGES
from .quantize import DEFAULT_CPU_QUANTIZE, default_quantize


@click.group("model")
def model_group() -> None:
    """Export and inspect models for the ``local`` provider."""


@model_group.command("export")
@click.argument("source")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "fp16"]),
    default="fp32",
    show_default=True,
    help="fp16 needs --device cuda (optimum exports fp16 only on a GPU).",
)
@click.option(
    "--quantize",
    type=click.Choice(["none", "int8", "int8-block", "int4"]),
    default=None,
    help=f"Weight quantization: int8 dynamic (fastest prefill), int8-block (8-bit MatMulNBits: batched "
    "answers equal solo ones, slower) or int4 MatMulNBits (fastest decode). "
    f"Default: {DEFAULT_CPU_QUANTIZE} with --device cpu (the lower end-to-end RAG latency in "
    "bench/bench_local.py), none with --device cuda.",
)
@click.option(
    "--builder",
    type=click.Choice(["optimum", "genai"]),
    default="optimum",
    show_default=True,
    help="optimum: optimum's export. genai: onnxruntime-genai's model builder, a fused graph "
    "(GroupQueryAttention, packed projections) that decodes faster; it runs under --genai-python.",
)
@click.option(
    "--genai-python",
    envvar=GENAI_PYTHON_ENV,
    default=None,
    help=f"Python interpreter with onnxruntime-genai=={GENAI_VERSION} installed, for --builder genai "
    f"(default: ${GENAI_PYTHON_ENV}, else this one). Keep it in its own virtual environment.",
)
@click.option(
    "--gguf-file",
    default=None,
    metavar="NAME",
    help="A GGUF file of the hub repository (or directory) SOURCE, e.g. "
    "llama-3.2-3b-instruct-frog-q4_k_m.gguf. A SOURCE ending in .gguf is a GGUF file itself.",
)
@click.option("--revision", default="main", show_default=True, help="Hub revision when SOURCE is a hub id.")
@click.option(
    "--no-memory-check", is_flag=True, help="Start even when the RAM estimate says it will not fit."
)
@click.option("--no-parity", is_flag=True, help="Skip the comparison with PyTorch.")
@click.option(
    "--max-top1-changes",
    type=click.FloatRange(0.0, 1.0),
    default=DEFAULT_MAX_TOP1_CHANGES,
    show_default=True,
    metavar="SHARE",
    help="The parity check refuses an export whose top-1 (greedy) token differs from PyTorch's "
    "at more than this share of the compared positions (8 prompts × 16 tokens; switches between near-tied tokens do not count).",
)
def export_command(
    source: str,
    out_dir: Path,
    device: str,
    dtype: str,
    quantize: str | None,
    builder: str,
    genai_python: str | None,
    gguf_file: str | None,
    revision: str,
    no_memory_check: bool,
    no_parity: bool,
    max_top1_changes: float,
) -> None:
    """Export SOURCE (a hub id such as phamhai/Llama-3.2-3B-Instruct-Frog, a local
    checkpoint directory, or a GGUF file: path/to/model.gguf, or a hub repo id with
    --gguf-file NAME) to ONNX in OUT_DIR, with its tokenizer, chat template and generation
    config. Peak RAM is about 2.5× the fp32 weights (3.8× with int8): a 3B model needs
    30 GB or more. Re-running with the same inputs reuses the export."""
    from .export import ExportOptions, export

    options = ExportOptions(
        source=source,
        out_dir=out_dir,
        device=device,  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        quantize=quantize or (default_quantize(device) if dtype == "fp32" else "none"),  # type: ignore[arg-type]
        builder=builder,  # type: ignore[arg-type]
        genai_python=genai_python,
        gguf_file=gguf_file,
        revision=revision,
        check_memory=not no_memory_check,
        parity=not no_parity,
        max_top1_changes=max_top1_changes,
    )
    result = export(options)
    for line in result.summary():
        click.echo(line)


__all__ = ["model_group"]
