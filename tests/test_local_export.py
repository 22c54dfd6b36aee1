"""``lexrag model export`` on the tiny Llama: files, parity, quantization, reuse, refusals."""

from __future__ import annotations

import json

import pytest

from lexrag.errors import ModelExportError

pytest.importorskip("onnxruntime")

from lexrag_local.engine import Engine
from lexrag_local.export import ExportOptions, export
from lexrag_local.memory import needed_bytes
from lexrag_local.sampling import Sampler, SamplingParams


def test_export_writes_model_tokenizer_template_and_generation_config(tiny_export, tiny_llama):
    out = tiny_export.out_dir
    for name in ("model.onnx", "config.json", "tokenizer.json", "chat_template.jinja", "lexrag-export.json"):
        assert (out / name).is_file(), name
    assert (
        json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tiny_llama.eos_token_ids
    )
    parity = tiny_export.manifest["parity"]
    assert parity["ok"] and parity["top1_match"] and parity["max_abs_diff"] < 1e-4
    assert any("parity vs PyTorch (fp32" in line and line.endswith(": ok") for line in tiny_export.summary())


def test_logits_cover_the_last_position_only(tiny_onnx_dir):
    import onnx

    graph = onnx.load(str(tiny_onnx_dir / "model.onnx"), load_external_data=False).graph
    assert any(node.op_type == "Slice" and node.output[0].endswith("/last_position") for node in graph.node)


def test_cli_export_int8_prints_parity_and_reuses_the_export(cli, tiny_llama_dir, tmp_path):
    out = tmp_path / "int8"
    first = cli("model", "export", str(tiny_llama_dir), str(out), "--quantize", "int8")
    assert first.returncode == 0, first.stderr
    assert "exported" in first.stdout and "parity vs PyTorch (int8" in first.stdout
    assert "✓ int8 quantization" in first.stderr
    graph_ops = _ops(out / "model.onnx")
    assert "MatMulInteger" in graph_ops or "DynamicQuantizeMatMul" in graph_ops
    mtime = (out / "model.onnx").stat().st_mtime_ns
    again = cli("model", "export", str(tiny_llama_dir), str(out), "--quantize", "int8")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("reused")
    assert (out / "model.onnx").stat().st_mtime_ns == mtime


def test_int4_export_runs_and_a_changed_option_redoes_the_export(tiny_llama_dir, tmp_path):
    out = tmp_path / "model"
    export(ExportOptions(source=str(tiny_llama_dir), out_dir=out, quantize="int8"), quiet=True)
    result = export(ExportOptions(source=str(tiny_llama_dir), out_dir=out, quantize="int4"), quiet=True)
    assert not result.reused
    assert "MatMulNBits" in _ops(out / "model.onnx")
    assert result.manifest["parity"]["precision"] == "int4"
    engine = Engine(out)
    tokens = list(engine.decode([0, 5, 6], 5, Sampler(SamplingParams(temperature=0.0))))
    assert len(tokens) == 5


def _ops(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def test_fp16_on_cpu_is_refused_with_the_reason(cli, tiny_llama_dir, tmp_path):
    result = cli("model", "export", str(tiny_llama_dir), str(tmp_path / "x"), "--dtype", "fp16")
    assert result.returncode == 1
    assert "fp16 export needs --device cuda" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_too_little_memory_fails_before_starting(tmp_path):
    from transformers import LlamaConfig

    source = tmp_path / "huge"
    LlamaConfig(
        vocab_size=128256,
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
    ).save_pretrained(source)
    with pytest.raises(ModelExportError, match=r"needs about \d+\.\d GB of RAM.*--no-memory-check"):
        export(ExportOptions(source=str(source), out_dir=tmp_path / "out"), quiet=True)
    assert not (tmp_path / "out").exists()


def test_memory_estimate_for_the_reference_shapes():
    # Llama-3.2-1B: 1.24 B parameters; measured 12.3 GB peak for the optimum export.
    need, step = needed_bytes(1_235_814_400, dtype="fp32", device="cpu", quantize="none")
    assert step == "optimum export" and 11e9 < need < 14e9
    need, step = needed_bytes(3_212_749_824, dtype="fp32", device="cpu", quantize="int8")
    assert step == "int8 quantization" and need > 30e9


def test_memory_estimate_for_the_genai_builder():
    # Llama-3.2-1B's shape: the builder peaked at 13.6 GB building int4, 6.7 GB building fp32.
    need, step = needed_bytes(1_235_814_400, dtype="fp32", device="cpu", quantize="int4", builder="genai")
    assert step == "onnxruntime-genai builder" and 12e9 < need < 16e9
    need, step = needed_bytes(1_235_814_400, dtype="fp32", device="cpu", quantize="int8", builder="genai")
    assert step == "int8 quantization"


def test_a_source_without_a_model_is_one_line(cli, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = cli("model", "export", str(empty), str(tmp_path / "out"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot read a model from '{empty}'"), (
        result.stderr
    )
    assert not (tmp_path / "out" / "model.onnx").exists()
