"""Weight quantization of an exported model for CPU: int8 dynamic or int4 weight-only."""

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


def default_quantize(device: str) -> str:
    """The quantization used when none is asked for: ``DEFAULT_CPU_QUANTIZE`` on CPU, none on CUDA."""
    return DEFAULT_CPU_QUANTIZE if device == "cpu" else "none"


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization of every MatMul (weights int8, activations quantized per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        src,
        dst,
        op_types_to_quantize=["MatMul"],
        weight_type=QuantType.QInt8,
        use_external_data_format=True,
    )


def quantize_int4(src: Path, dst: Path) -> None:
    """Weight-only int4 (MatMulNBits, symmetric blocks of 32)."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ModuleNotFoundError as exc:
        raise ModelExportError(
            f"int4 quantization needs {exc.name!r}: `pip install onnx-ir` (lexrag-local depends on it)"
        ) from None
    quantizer = MatMulNBitsQuantizer(
        str(src),
        block_size=INT4_BLOCK,
        is_symmetric=True,
        accuracy_level=INT4_ACCURACY_LEVEL,
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=True)


QUANTIZERS = {"int8": quantize_int8, "int4": quantize_int4}

__all__ = [
    "DEFAULT_CPU_QUANTIZE",
    "INT4_ACCURACY_LEVEL",
    "INT4_BLOCK",
    "QUANTIZERS",
    "default_quantize",
    "quantize_int4",
    "quantize_int8",
]
