"""``[providers.local] spin``: validated in the config and reaching the CPU session's options;
bench_batching's genai side with spinning off reaching onnxruntime-genai's session."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lexrag.config import load_config
from lexrag.errors import ConfigError
from lexrag.registry import build_provider, check_config

pytest.importorskip("onnxruntime")

from lexrag_local.session import DYNAMIC_BLOCK_BASE, SPINNING

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _spinning(registry, config_file, table: str) -> str:
    """The CPU session's spinning entry; every CPU session also gets the dynamic block base."""
    config_file.write_text(f'[llm]\nprovider = "local"\n[providers.local]\n{table}')
    provider = build_provider(check_config(load_config(config_file, env={}), registry), registry)

    async def load() -> str:
        try:
            worker = await provider.backend.worker()
            options = worker.engine.session.get_session_options()
            key, value = DYNAMIC_BLOCK_BASE
            assert options.get_session_config_entry(key) == value
            entry: str = options.get_session_config_entry(SPINNING)
            return entry
        finally:
            await provider.aclose()

    return asyncio.run(load())


def test_spin_setting_reaches_the_cpu_session(registry, tiny_onnx_dir, tmp_path):
    config_file = tmp_path / "lexrag.toml"
    model = f'model_dir = "{tiny_onnx_dir}"\n'
    assert _spinning(registry, config_file, model) == "0"
    assert _spinning(registry, config_file, model + "spin = true\n") == "1"
    config_file.write_text(f'[providers.local]\n{model}spin = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"\[providers.local\] spin"):
        check_config(load_config(config_file, env={}), registry)


def test_bench_genai_spin_off_reaches_genais_session(genai_python, tiny_llama_dir, tmp_path):
    """bench_batching's ``--genai-spin off`` side: the key it writes into genai_config.json's
    session_options reaches onnxruntime-genai's session (onnxruntime's verbose trace of the
    session options lists it); the default side leaves genai's spinning as it is."""
    from lexrag_local.genai_builder import build

    sys.path.insert(0, str(BENCH))
    import bench_batching

    built = tmp_path / "built"
    build(str(tiny_llama_dir), built, python=genai_python, precision="fp32", device="cpu")
    (built / "int8-full.onnx").symlink_to(built / "model.onnx")  # the file genai_dir names

    def trace(spin: bool) -> str:
        out = bench_batching.genai_dir(built, tmp_path / f"spin-{spin}", 2, spin=spin)
        config = json.loads((out / "genai_config.json").read_text())
        config["model"]["decoder"]["session_options"]["log_severity_level"] = 0
        (out / "genai_config.json").write_text(json.dumps(config))
        load = subprocess.run(
            [genai_python, "-c", f"import onnxruntime_genai as og; og.Model({str(out)!r})"],
            capture_output=True,
            text=True,
            check=True,
        )
        (line,) = [x for x in load.stderr.splitlines() if "Session Options {" in x]
        return line.split("config_options:", 1)[1]

    assert f"{SPINNING}: 0" in trace(False)
    assert SPINNING not in trace(True)
