"""``lexrag model export --builder genai``: onnxruntime-genai's builder's fused graph
(GroupQueryAttention, packed projections) run by lexrag's engine with its KV cache appended
in place, against the unfused optimum export and PyTorch on the tiny Llama.

The builder runs under a separate interpreter with onnxruntime-genai 0.12.2 installed
(``$LEXRAG_GENAI_PYTHON``, else ``.bench-venv/bin/python``, set up as bench/bench_local.py
says); without one these tests skip with that reason, except the error message test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from lexrag_local.engine import Engine
from lexrag_local.export import ExportOptions, export
from lexrag_local.model_files import load_tokenizer
from lexrag_local.sampling import Sampler, SamplingParams

GREEDY = SamplingParams(temperature=0.0)
QUESTION = "Người lao động có quyền nghỉ hằng năm bao nhiêu ngày?"


@pytest.fixture(scope="module")
def genai_fp32(tiny_genai_export):
    """The tiny model exported by onnxruntime-genai's builder (one export for the session)."""
    return tiny_genai_export


@pytest.fixture(scope="module")
def prompt(tiny_onnx_dir) -> list[int]:
    tokenizer = load_tokenizer(tiny_onnx_dir)
    return tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True)


def _ops(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def _greedy(engine: Engine, prompt: list[int], n: int) -> list[int]:
    return list(engine.decode(prompt, n, Sampler(GREEDY)))


def test_fused_graph_greedy_equals_the_unfused_export_and_pytorch(
    genai_fp32, tiny_onnx_dir, tiny_llama_dir, prompt
):
    import torch
    from transformers import AutoModelForCausalLM

    out = genai_fp32.out_dir
    ops = _ops(out / "model.onnx")
    assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization"} <= ops
    assert "Softmax" not in ops, "attention should be fused"
    assert genai_fp32.manifest["parity"]["ok"] and genai_fp32.manifest["options"]["builder"] == "genai"
    assert any("genai graph" in line for line in genai_fp32.summary())

    fused, unfused = Engine(out), Engine(tiny_onnx_dir)
    assert fused.shared_kv and not unfused.shared_kv
    n = 60
    ours = _greedy(fused, prompt, n)
    assert ours == _greedy(unfused, prompt, n)
    ids = torch.tensor([prompt])
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=n,
        min_new_tokens=n,
        eos_token_id=None,
    )[0, len(prompt) :]
    assert ours == reference.tolist()
    np.testing.assert_allclose(fused.prefill_logits(prompt), unfused.prefill_logits(prompt), atol=1e-4)


def test_in_place_cache_leaks_nothing_between_requests_and_fills_the_window(
    genai_fp32, tiny_onnx_dir, prompt
):
    fused, unfused = Engine(genai_fp32.out_dir), Engine(tiny_onnx_dir)
    other = prompt[:5] + prompt[-3:]
    first = _greedy(fused, prompt, 20)
    assert _greedy(fused, other, 20) == _greedy(unfused, other, 20)
    assert _greedy(fused, prompt, 20) == first
    assert fused.cache.capacity == fused.context_window  # planned once, for the whole window
    long_run = _greedy(fused, prompt, fused.cache.capacity - len(prompt))
    assert long_run == _greedy(unfused, prompt, len(long_run))


def test_genai_int4_and_int8_exports_decode(genai_python, tiny_llama_dir, tmp_path, prompt):
    for quantize, op in (("int4", "MatMulNBits"), ("int8", "MatMulInteger"), ("int8-block", "MatMulNBits")):
        result = export(
            ExportOptions(
                source=str(tiny_llama_dir),
                out_dir=tmp_path / quantize,
                quantize=quantize,
                builder="genai",
                genai_python=genai_python,
                # int4 changes many of the random tiny model's greedy tokens: not judged here.
                max_top1_changes=1.0 if quantize == "int4" else 0.1,
            ),
            quiet=True,
        )
        ops = _ops(result.out_dir / "model.onnx")
        assert {op, "GroupQueryAttention"} <= ops, ops
        if quantize == "int8-block":  # every MatMul in blocks: no activation scale over the batch
            assert not ops & {"MatMul", "MatMulInteger", "DynamicQuantizeLinear"}, ops
        assert result.manifest["parity"]["ok"], result.manifest["parity"]
        assert len(_greedy(Engine(result.out_dir), prompt, 8)) == 8


def test_missing_builder_is_a_clear_error(cli, tiny_llama_dir, tmp_path):
    out = tmp_path / "x"
    # This test suite's interpreter runs onnxruntime-gpu and so never has onnxruntime-genai.
    result = cli(
        "model",
        "export",
        str(tiny_llama_dir),
        str(out),
        "--builder",
        "genai",
        "--genai-python",
        sys.executable,
    )
    assert result.returncode == 1
    assert "onnxruntime-genai==0.12.2" in result.stderr and "--genai-python" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    missing = cli(
        "model",
        "export",
        str(tiny_llama_dir),
        str(out),
        "--builder",
        "genai",
        "--genai-python",
        str(tmp_path / "nope"),
    )
    assert missing.returncode == 1 and "cannot run" in missing.stderr and "Traceback" not in missing.stderr


def test_cpu_export_defaults_to_the_measured_quantization(cli, tiny_llama_dir, tmp_path):
    import json

    from lexrag_local.quantize import DEFAULT_CPU_QUANTIZE

    result = cli("model", "export", str(tiny_llama_dir), str(tmp_path / "d"), "--no-parity")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "d" / "lexrag-export.json").read_text())
    assert manifest["options"]["quantize"] == DEFAULT_CPU_QUANTIZE != "none"
    help_text = cli("model", "export", "--help").stdout
    assert f"Default: {DEFAULT_CPU_QUANTIZE} with --device cpu" in " ".join(help_text.split())
