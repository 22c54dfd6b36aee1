"""Rewrites of the exported graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

_PASS_THROUGH = {"Cast", "Identity"}


def last_position_logits(path: Path) -> bool:
    """Make ``logits`` cover the last position only: a Slice on the hidden states before the
    LM head, so prefill does not multiply every prompt position by the vocabulary matrix.

    Edits the graph in place, leaving the external weight files as they are. Returns False
    when the graph already has the slice or its LM head is not a MatMul/Gemm.
    """
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get("logits")
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producers.get(node.input[0])
    if node is None or node.op_type not in ("MatMul", "Gemm"):
        return False
    initializers = {init.name for init in graph.initializer}
    data_index = 0 if node.input[0] not in initializers else 1
    hidden = node.input[data_index]
    if hidden.endswith("/last_position"):
        return False
    sliced = f"{hidden}/last_position"
    consts = {
        f"{sliced}/starts": -1,
        f"{sliced}/ends": np.iinfo(np.int64).max,
        f"{sliced}/axes": 1,
    }
    for name, value in consts.items():
        graph.initializer.append(numpy_helper.from_array(np.array([value], dtype=np.int64), name))
    slice_node = helper.make_node("Slice", [hidden, *consts], [sliced], name=f"{sliced}/Slice")
    position = list(graph.node).index(node)
    graph.node.insert(position, slice_node)
    node.input[data_index] = sliced
    onnx.save(model, str(path))
    return True


__all__ = ["last_position_logits"]
