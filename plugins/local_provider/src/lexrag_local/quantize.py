"""Weight quantization of an exported model for CPU: int8 dynamic, int8 in blocks (batch-invariant),
or int4 weight-only."""

from __future__ import annotations

from pathlib import Path

from lexrag import ModelExportError

#: int4 block size and compute accuracy as onnxruntime-genai's builder uses for CPU:
#: blocks of 32 weights, int8 activations in MatMulNBits (accuracy_level 4).
INT4_BLOCK = 32
INT4_ACCURACY_LEVEL = 4

#: The CPU quantization ``lexrag model export`` uses when none is given, chosen by
#: bench/bench_local.py's end-to-end RAG latency (1,000-token prompt + 200 new tokens).
DEFAULT_CPU_QUANTIZE = "int8"

#: MatMuls whose inputs carry the large activation outliers of LLMs (the MLP's output
#: projection): dynamic int8 quantizes each activation tensor with one scale, which these
#: outliers ruin (SmolLM2-135M: the greedy token changed, beyond near-ties, at 7 of 64
#: parity positions, mean KL 0.32 nats). They get 8-bit weights in blocks of 32 instead
#: (MatMulNBits, activations quantized per block): 2 of 64, KL 0.05, at the same speed.
INT8_BLOCKWISE = ("down_proj",)


def default_quantize(device: str) -> str:
    """The quantization used when none is asked for: ``DEFAULT_CPU_QUANTIZE`` on CPU, none on CUDA."""
    return DEFAULT_CPU_QUANTIZE if device == "cpu" else "none"


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization of the MatMuls (weights int8, activations quantized per
    call), except those named in ``INT8_BLOCKWISE``: 8-bit weights in blocks of 32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    blockwise = [
        n.name for n in graph.node if n.op_type == "MatMul" and any(k in n.name for k in INT8_BLOCKWISE)
    ]
    dynamic = dst.with_name(dst.name + ".dynamic") if blockwise else dst
    quantize_dynamic(
        src,
        dynamic,
        op_types_to_quantize=["MatMul"],
        weight_type=QuantType.QInt8,
        nodes_to_exclude=blockwise,
        use_external_data_format=True,
    )
    if not blockwise:
        return
    _matmul_nbits(dynamic, dst, bits=8, nodes=blockwise)
    for leftover in dst.parent.glob(dynamic.name + "*"):
        leftover.unlink()


def quantize_int8_block(src: Path, dst: Path) -> None:
    """8-bit weights in blocks of 32 for every MatMul (MatMulNBits): its activations are
    quantized per row and block, never over the whole batch, so a sequence generated inside
    a batch gets the tokens it gets alone (dynamic int8 takes one activation scale over
    every row of a step). Slower than dynamic int8 on CPU: see the local provider's README."""
    _matmul_nbits(src, dst, bits=8)


def quantize_int4(src: Path, dst: Path) -> None:
    """Weight-only int4 (MatMulNBits, symmetric blocks of 32)."""
    _matmul_nbits(src, dst, bits=4)


def _matmul_nbits(src: Path, dst: Path, *, bits: int, nodes: list[str] | None = None) -> None:
    """Weight-only ``bits``-bit quantization (MatMulNBits, symmetric blocks of 32) of the
    MatMuls (only ``nodes`` if given)."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ModuleNotFoundError as exc:
        raise ModelExportError(
            f"{bits}-bit quantization needs {exc.name!r}: `pip install onnx-ir` (lexrag-local depends on it)"
        ) from None
    quantizer = MatMulNBitsQuantizer(
        str(src),
        bits=bits,
        block_size=INT4_BLOCK,
        is_symmetric=True,
        accuracy_level=INT4_ACCURACY_LEVEL,
        op_types_to_quantize=("MatMul",),
        nodes_to_include=nodes,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=True)


QUANTIZERS = {"int8": quantize_int8, "int8-block": quantize_int8_block, "int4": quantize_int4}

__all__ = [
    "DEFAULT_CPU_QUANTIZE",
    "INT4_ACCURACY_LEVEL",
    "INT4_BLOCK",
    "QUANTIZERS",
    "default_quantize",
    "quantize_int4",
    "quantize_int8",
    "quantize_int8_block",
]
