"""``[providers.local] spin``: validated in the config and reaching the CPU session's options."""

from __future__ import annotations

import asyncio

import pytest

from lexrag.config import load_config
from lexrag.errors import ConfigError
from lexrag.registry import build_provider, check_config

pytest.importorskip("onnxruntime")

from lexrag_local.session import SPINNING


def _spinning(registry, config_file, table: str) -> str:
    config_file.write_text(f'[llm]\nprovider = "local"\n[providers.local]\n{table}')
    provider = build_provider(check_config(load_config(config_file, env={}), registry), registry)

    async def load() -> str:
        try:
            worker = await provider.backend.worker()
            entry: str = worker.engine.session.get_session_options().get_session_config_entry(SPINNING)
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
