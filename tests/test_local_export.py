"""``lexrag model export`` on the tiny Llama: files, parity, quantization, reuse, refusals."""

from __future__ import annotations

import json

import pytest

from lexrag.errors import ModelExportError

pytest.importorskip("onnxruntime")

from lexrag_local import quantize
from lexrag_local.engine import Engine
from lexrag_local.export import ExportOptions, export
from lexrag_local.memory import needed_bytes
from lexrag_local.parity import PARITY_PROMPTS, PARITY_STEPS, Parity
from lexrag_local.sampling import Sampler, SamplingParams


def test_export_writes_model_tokenizer_template_and_generation_config(tiny_export, tiny_llama):
    out = tiny_export.out_dir
    for name in ("model.onnx", "config.json", "tokenizer.json", "chat_template.jinja", "lexrag-export.json"):
        assert (out / name).is_file(), name
    assert (
        json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tiny_llama.eos_token_ids
    )
    parity = tiny_export.manifest["parity"]
    assert parity["ok"] and parity["top1_switched"] == 0 and parity["max_abs_diff"] < 1e-4
    assert parity["positions"] == len(PARITY_PROMPTS) * PARITY_STEPS
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
    assert "MatMulNBits" in graph_ops  # down_proj: 8-bit blocks (its inputs carry the outliers)
    assert not list(out.glob("*.dynamic*"))
    mtime = (out / "model.onnx").stat().st_mtime_ns
    again = cli("model", "export", str(tiny_llama_dir), str(out), "--quantize", "int8")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("reused")
    assert (out / "model.onnx").stat().st_mtime_ns == mtime


def test_int4_export_runs_and_a_changed_option_redoes_the_export(tiny_llama_dir, tmp_path):
    out = tmp_path / "model"
    export(ExportOptions(source=str(tiny_llama_dir), out_dir=out, quantize="int8"), quiet=True)
    # int4 changes a third of the random tiny model's greedy tokens (its parity check would
    # refuse it); quantization is judged on real weights in test_local_real_model.py.
    result = export(
        ExportOptions(source=str(tiny_llama_dir), out_dir=out, quantize="int4", max_top1_changes=1.0),
        quiet=True,
    )
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


# --- the parity check can fail ---------------------------------------------------------------


def _one_bit(src, dst) -> None:
    """An absurd "quantization": every weight matrix becomes sign(w) × mean|w|."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 2 and w.dtype == np.float32 and min(w.shape) > 1:
            init.CopyFrom(numpy_helper.from_array(np.sign(w) * np.abs(w).mean(), init.name))
    onnx.save(model, str(dst), save_as_external_data=True, location=dst.name + ".data")


def test_an_export_whose_quantization_changes_the_tokens_is_refused(
    cli, tiny_llama_dir, tmp_path, monkeypatch
):
    monkeypatch.setitem(quantize.QUANTIZERS, "int8", _one_bit)
    out = tmp_path / "broken"
    with pytest.raises(ModelExportError) as refused:
        export(ExportOptions(source=str(tiny_llama_dir), out_dir=out, quantize="int8"), quiet=True)
    message = str(refused.value)
    assert "\n" not in message
    assert (
        "refused: the int8 weights change the top-1 token at" in message and "--max-top1-changes" in message
    )
    assert not (out / "model.onnx").exists() and not (out / "lexrag-export.json").exists()


def test_a_threshold_of_zero_refuses_any_changed_token_and_one_accepts_all(
    tiny_llama_dir, tmp_path, monkeypatch
):
    monkeypatch.setitem(quantize.QUANTIZERS, "int8", _one_bit)
    options = {"source": str(tiny_llama_dir), "quantize": "int8"}
    result = export(ExportOptions(**options, out_dir=tmp_path / "any", max_top1_changes=1.0), quiet=True)
    parity = result.manifest["parity"]
    assert parity["ok"] and parity["top1_changed"] > 0 and parity["tolerance"] is None
    with pytest.raises(ModelExportError, match="at most 0% allowed"):
        export(ExportOptions(**options, out_dir=tmp_path / "none", max_top1_changes=0.0), quiet=True)


def test_the_cli_takes_the_threshold_and_checks_its_range(cli, tiny_llama_dir, tmp_path):
    bad = cli("model", "export", str(tiny_llama_dir), str(tmp_path / "x"), "--max-top1-changes", "1.5")
    assert bad.returncode == 2 and "--max-top1-changes" in bad.stderr
    ok = cli(
        "model",
        "export",
        str(tiny_llama_dir),
        str(tmp_path / "y"),
        "--quantize",
        "none",
        "--max-top1-changes",
        "0",
    )
    assert ok.returncode == 0, ok.stderr
    assert "top-1 changed at 0/" in ok.stdout and "limit 0%" in ok.stdout


def test_parity_verdicts():
    def parity(**kw):
        base: dict = {"precision": "int8", "max_abs_diff": 1.0, "relative_diff": 0.5, "tolerance": None}
        base |= {
            "positions": 128,
            "top1_changed": 12,
            "top1_switched": 20,
            "max_top1_changes": 0.1,
            "prompts": 8,
        }
        return Parity(**{**base, **kw})

    assert parity().ok  # 12/128 = 9.4 %; the relative error of quantized weights is not enforced
    assert not parity(top1_changed=13).ok and "13 of 128 positions" in parity(top1_changed=13).failure()
    assert not parity(precision="fp32", tolerance=1e-4, top1_changed=0).ok  # a broken fp32 graph
    assert Parity.from_dict(parity().as_dict()) == parity()


# --- GGUF sources and generation defaults (the real model is in test_local_real_model.py) ----


def test_a_hub_gguf_is_fetched_by_repo_and_file_name(monkeypatch, tmp_path):
    import huggingface_hub

    from lexrag_local import gguf

    calls = []
    local = tmp_path / "llama-3.2-3b-instruct-frog-q4_k_m.gguf"
    local.write_bytes(b"GGUF")

    def download(repo, filename, revision=None):
        calls.append((repo, filename, revision))
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    repo = "phamhai/Llama-3.2-3B-Instruct-Frog-Q4_K_M-GGUF"
    assert gguf.is_gguf(repo, local.name) and gguf.is_gguf("x/model.Q4_K_M.GGUF", None)
    assert not gguf.is_gguf(repo, None)
    assert gguf.locate(repo, local.name, "main") == local
    assert calls == [(repo, local.name, "main")]
    assert gguf.locate(str(tmp_path), local.name, "main") == local  # a directory and a file name


def test_an_unreachable_hub_gguf_is_one_line(cli, tmp_path):
    result = cli(
        "model", "export", "phamhai/Llama-3.2-3B-Instruct-Frog-Q4_K_M-GGUF", str(tmp_path / "out"),
        "--gguf-file", "llama-3.2-3b-instruct-frog-q4_k_m.gguf", env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot get 'llama-3.2-3b-instruct-frog-q4_k_m.gguf' from the hub" in lines[0]


def test_a_missing_or_broken_gguf_file_is_one_line(cli, tmp_path):
    missing = cli("model", "export", str(tmp_path / "nope.gguf"), str(tmp_path / "out"))
    assert missing.returncode == 1 and missing.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'nope.gguf'}: no such GGUF file"
    ]
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    broken = cli("model", "export", str(junk), str(tmp_path / "out"))
    assert broken.returncode == 1 and len(broken.stderr.strip().splitlines()) == 1, broken.stderr
    assert "is not a readable GGUF file" in broken.stderr


@pytest.mark.parametrize(
    ("generation_config", "request_temperature", "expected"),
    [
        (None, None, 0.0),  # no generation_config.json (every GGUF export): greedy
        ({"eos_token_id": [2]}, None, 0.0),  # a file without do_sample: greedy, as in transformers
        ({"temperature": 0.6, "top_p": 0.9}, None, 0.0),  # temperature without do_sample: greedy
        ({"do_sample": True, "temperature": 0.6, "top_p": 0.9}, None, 0.6),  # the Frog's card
        (None, 0.8, 0.8),  # the request asks otherwise
        ({"do_sample": True, "temperature": 0.6}, 0.0, 0.0),
    ],
)
def test_a_model_samples_only_when_its_generation_config_or_the_request_says_so(
    tmp_path, generation_config, request_temperature, expected
):
    from lexrag import GenerationParams
    from lexrag_local.backend import resolve
    from lexrag_local.model_files import GenerationDefaults
    from lexrag_local.settings import LocalSettings

    config = {"eos_token_id": 2, "bos_token_id": 1}
    if generation_config is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation_config))
    defaults = GenerationDefaults.read(tmp_path, config)
    resolved = resolve(GenerationParams(temperature=request_temperature), LocalSettings(), defaults)
    assert resolved.temperature == pytest.approx(expected)
    assert defaults.eos_token_ids == (generation_config or {}).get("eos_token_id", [2])


def test_memory_estimate_of_a_gguf_export_counts_the_dequantisation():
    from lexrag_local.memory import PEAK_FACTOR

    need, step = needed_bytes(3_212_749_824, dtype="fp32", device="cpu", quantize="none", gguf=True)
    assert step == "optimum export" and need > 30e9  # the Frog GGUF: dequantised to 12.9 GB of fp32
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PEAK_FACTOR, "gguf", 9.0)
        assert needed_bytes(1_000, dtype="fp32", device="cpu", quantize="none", gguf=True)[1] == (
            "GGUF dequantisation"
        )
