"""Rewrites of the exported graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Ops between the LM head's matrix product and the ``logits`` output (dtype casts; int8's
#: rescaling Mul): followed through their first input.
_PASS_THROUGH = {"Cast", "Identity", "Mul"}
#: The LM head itself, fp32/fp16 or quantized; its first input is the hidden states.
_MATMULS = {"MatMul", "Gemm", "MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul"}


def _hidden_states_consumer(graph: onnx.GraphProto) -> onnx.NodeProto | None:
    """The node that reads the final hidden states on the way to ``logits``."""
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get("logits")
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producers.get(node.input[0])
    if node is None or node.op_type not in _MATMULS:
        return None
    if node.op_type == "MatMulInteger":
        # int8 dynamic: the activations are quantized by a DynamicQuantizeLinear first.
        quantizer = producers.get(node.input[0])
        if quantizer is None or quantizer.op_type != "DynamicQuantizeLinear":
            return None
        node = quantizer
    return node


def last_position_logits(path: Path, out: Path | None = None) -> bool:
    """Make ``logits`` cover the last position only: a Slice on the hidden states before the
    LM head, so prefill does not multiply every prompt position by the vocabulary matrix.

    Writes the graph to ``out`` (default: in place) beside the same external weight files.
    Returns False (and writes nothing) when the graph already has the slice or its LM
    head is not recognised.
    """
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    node = _hidden_states_consumer(graph)
    if node is None or node.input[0].endswith("/last_position"):
        return False
    hidden = node.input[0]
    sliced = f"{hidden}/last_position"
    consts = {f"{sliced}/starts": -1, f"{sliced}/ends": np.iinfo(np.int64).max, f"{sliced}/axes": 1}
    for name, value in consts.items():
        graph.initializer.append(numpy_helper.from_array(np.array([value], dtype=np.int64), name))
    slice_node = helper.make_node("Slice", [hidden, *consts], [sliced], name=f"{sliced}/Slice")
    graph.node.insert(list(graph.node).index(node), slice_node)
    node.input[0] = sliced
    onnx.save(model, str(out or path))
    return True


__all__ = ["last_position_logits"]
